//! ULIDs: 48 bits of milliseconds and 80 random bits, in Crockford's base32 (26 characters),
//! so that ids sort by time.

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

pub fn ulid_at(ms: u64, random: u128) -> String {
    let value: u128 = ((ms as u128 & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1u128 << 80) - 1));
    (0..26).rev().map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char).collect()
}

/// A new ULID for now.
pub fn ulid() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    ulid_at(ms, u128::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_are_26_characters_and_sort_by_time() {
        assert_eq!(ulid_at(0, 0), "00000000000000000000000000");
        // The spec's example time 1469918176385 starts with 01ARYZ6S41.
        assert!(ulid_at(1_469_918_176_385, 0).starts_with("01ARYZ6S41"));
        let (a, b) = (ulid_at(1000, u128::MAX), ulid_at(1001, 0));
        assert!(a < b && a.len() == 26);
        assert_ne!(ulid(), ulid());
    }
}

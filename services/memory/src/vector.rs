//! Embeddings: storage format and the in-memory index that makes search by meaning fast.
//!
//! Vectors are stored at full precision (unit-length f32, little-endian BLOBs) in SQLite. For
//! search, memory keeps only each vector's *sign bits* in RAM (one bit per dimension: 48 bytes
//! for 384 dimensions, 48 MiB for a million episodes) and scans them by Hamming distance, which
//! tracks the angle between vectors (SimHash). The closest `rerank` candidates are then scored
//! exactly with their f32 vectors read back from SQLite. `benches/memory.rs` measures the
//! recall of this against an exact scan.

use std::collections::HashSet;

use crate::episode::EpisodeId;

/// f32 little-endian bytes of a vector.
pub fn to_blob(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// The vector of a BLOB, or None when its length is not `dim` f32s.
pub fn from_blob(b: &[u8], dim: usize) -> Option<Vec<f32>> {
    if b.len() != dim * 4 {
        return None;
    }
    Some(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// The unit vector in the direction of `v`; an error for empty, non-finite or zero vectors.
pub fn normalized(v: &[f32]) -> Result<Vec<f32>, String> {
    if v.is_empty() {
        return Err("is empty".into());
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!("component {i} is {}", v[i]));
    }
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Err("is all zeros".into());
    }
    Ok(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums let the compiler vectorise without reassociating.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Number of u64 words of a code for `dim` dimensions.
pub fn code_words(dim: usize) -> usize {
    dim.div_ceil(64)
}

/// Sign bits of `v`: bit `i % 64` of word `i / 64` is set when `v[i] > 0`.
pub fn code(v: &[f32]) -> Vec<u64> {
    let mut out = vec![0u64; code_words(v.len())];
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            out[i / 64] |= 1 << (i % 64);
        }
    }
    out
}

pub fn code_to_blob(c: &[u64]) -> Vec<u8> {
    c.iter().flat_map(|w| w.to_le_bytes()).collect()
}

pub fn code_from_blob(b: &[u8], words: usize) -> Option<Vec<u64>> {
    if b.len() != words * 8 {
        return None;
    }
    Some(
        b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect(),
    )
}

/// Sign-bit codes of the hot episodes, in id order, bounded to `max` entries (the oldest go
/// first; they stay findable by words).
pub struct VectorIndex {
    words: usize,
    codes: Vec<u64>,
    ids: Vec<EpisodeId>,
    /// Entries before this position are evicted; compacted away in batches.
    start: usize,
    max: usize,
}

impl VectorIndex {
    pub fn new(dim: usize, max: usize) -> Self {
        VectorIndex { words: code_words(dim), codes: Vec::new(), ids: Vec::new(), start: 0, max }
    }

    pub fn len(&self) -> usize {
        self.ids.len() - self.start
    }

    pub fn words(&self) -> usize {
        self.words
    }

    /// Adds one episode's code.
    pub fn push(&mut self, id: EpisodeId, code: &[u64]) {
        if self.max == 0 || code.len() != self.words {
            return;
        }
        if self.len() >= self.max {
            self.start += 1;
            // Compact once a tenth of the storage is dead: amortised O(1) per push.
            if self.start * 10 >= self.ids.len().max(10) {
                self.ids.drain(..self.start);
                self.codes.drain(..self.start * self.words);
                self.start = 0;
            }
        }
        self.ids.push(id);
        self.codes.extend_from_slice(code);
    }

    /// Drops the given ids (consolidation archived them).
    pub fn remove(&mut self, gone: &HashSet<EpisodeId>) {
        if gone.is_empty() {
            return;
        }
        let (ids, codes) = (std::mem::take(&mut self.ids), std::mem::take(&mut self.codes));
        for (i, id) in ids.into_iter().enumerate().skip(self.start) {
            if !gone.contains(&id) {
                self.ids.push(id);
                self.codes.extend_from_slice(&codes[i * self.words..(i + 1) * self.words]);
            }
        }
        self.start = 0;
    }

    /// The ids of (at most) `n` entries closest to `query` by Hamming distance, closest first.
    pub fn nearest(&self, query: &[u64], n: usize) -> Vec<EpisodeId> {
        if n == 0 || self.ids.is_empty() || query.len() != self.words {
            return Vec::new();
        }
        let codes = &self.codes[self.start * self.words..];
        let ids = &self.ids[self.start..];
        let bits = self.words * 64;
        // One pass computing every distance and a histogram of them; the histogram gives the
        // distance threshold that admits n entries, so no heap is needed.
        let mut dist = vec![0u16; ids.len()];
        let mut hist = vec![0u32; bits + 1];
        hamming_all(codes, query, &mut dist, &mut hist);
        let mut threshold = 0;
        let mut admitted = 0usize;
        while threshold <= bits {
            admitted += hist[threshold] as usize;
            if admitted >= n {
                break;
            }
            threshold += 1;
        }
        let mut picked: Vec<(u16, EpisodeId)> = Vec::with_capacity(admitted.min(ids.len()));
        for (d, id) in dist.iter().zip(ids.iter()) {
            if usize::from(*d) <= threshold {
                picked.push((*d, *id));
            }
        }
        // Closest first; among equals, newest first.
        picked.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        picked.truncate(n);
        picked.into_iter().map(|(_, id)| id).collect()
    }
}

fn hamming_all(codes: &[u64], query: &[u64], dist: &mut [u16], hist: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has POPCNT (checked just above).
            unsafe { hamming_all_popcnt(codes, query, dist, hist) };
            return;
        }
    }
    hamming_all_portable(codes, query, dist, hist);
}

#[inline(always)]
fn hamming_all_portable(codes: &[u64], query: &[u64], dist: &mut [u16], hist: &mut [u32]) {
    let words = query.len();
    if words == 6 {
        // 384 dimensions (MiniLM): unrolled.
        let q: [u64; 6] = query.try_into().expect("six words");
        for (c, d) in codes.chunks_exact(6).zip(dist.iter_mut()) {
            let h = (c[0] ^ q[0]).count_ones()
                + (c[1] ^ q[1]).count_ones()
                + (c[2] ^ q[2]).count_ones()
                + (c[3] ^ q[3]).count_ones()
                + (c[4] ^ q[4]).count_ones()
                + (c[5] ^ q[5]).count_ones();
            *d = h as u16;
            hist[h as usize] += 1;
        }
        return;
    }
    for (c, d) in codes.chunks_exact(words).zip(dist.iter_mut()) {
        let h: u32 = c.iter().zip(query).map(|(a, b)| (a ^ b).count_ones()).sum();
        *d = h as u16;
        hist[h as usize] += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn hamming_all_popcnt(codes: &[u64], query: &[u64], dist: &mut [u16], hist: &mut [u32]) {
    hamming_all_portable(codes, query, dist, hist)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_wrong_lengths_are_refused() {
        let v = vec![0.5f32, -1.25, 3.0];
        assert_eq!(from_blob(&to_blob(&v), 3), Some(v));
        assert_eq!(from_blob(&[0u8; 11], 3), None);
        let c = vec![1u64, u64::MAX];
        assert_eq!(code_from_blob(&code_to_blob(&c), 2), Some(c));
        assert_eq!(code_from_blob(&[0u8; 15], 2), None);
    }

    #[test]
    fn normalisation_refuses_zero_and_non_finite_vectors() {
        let n = normalized(&[3.0, 4.0]).unwrap();
        assert!((n[0] - 0.6).abs() < 1e-6 && (n[1] - 0.8).abs() < 1e-6);
        assert!(normalized(&[0.0, 0.0]).unwrap_err().contains("zeros"));
        assert!(normalized(&[1.0, f32::NAN]).unwrap_err().contains("component 1"));
        assert!(normalized(&[]).is_err());
    }

    #[test]
    fn codes_are_sign_bits() {
        let mut v = vec![-1.0f32; 130];
        v[0] = 1.0;
        v[64] = 0.5;
        v[129] = 2.0;
        assert_eq!(code(&v), vec![1, 1, 1 << 1]);
    }

    #[test]
    fn nearest_orders_by_hamming_distance_and_keeps_the_bound() {
        let mut idx = VectorIndex::new(128, 3);
        idx.push(1, &[0b1111, 0]); // distance 4 from the query below
        idx.push(2, &[0b0001, 0]); // 1
        idx.push(3, &[0b0000, 0]); // 0
        assert_eq!(idx.nearest(&[0, 0], 2), vec![3, 2]);
        assert_eq!(idx.nearest(&[0, 0], 10), vec![3, 2, 1]);
        idx.push(4, &[0, 0]); // evicts 1, the oldest
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.nearest(&[0, 0], 10), vec![4, 3, 2]);
        idx.remove(&[3].into_iter().collect());
        assert_eq!(idx.nearest(&[0, 0], 10), vec![4, 2]);
        assert!(idx.nearest(&[0], 10).is_empty(), "a query of the wrong length finds nothing");
    }

    #[test]
    fn hamming_distance_tracks_the_angle() {
        // Two vectors close in angle share most sign bits; an unrelated one shares about half.
        let a: Vec<f32> = (0..384).map(|i| ((i * 7919) % 97) as f32 - 48.0).collect();
        let near: Vec<f32> = a.iter().enumerate().map(|(i, x)| x + if i % 10 == 0 { 5.0 } else { 0.0 }).collect();
        let far: Vec<f32> = (0..384).map(|i| ((i * 104_729) % 89) as f32 - 44.0).collect();
        let mut idx = VectorIndex::new(384, 10);
        idx.push(1, &code(&far));
        idx.push(2, &code(&near));
        assert_eq!(idx.nearest(&code(&a), 1), vec![2]);
    }
}

//! Free space on the filesystem that will hold the blobs, checked before the first byte of a
//! pull is written, so a model that cannot fit fails at once instead of filling the state
//! partition that the rest of the system writes to.

use super::error::PullError;
use std::path::Path;

/// Bytes an unprivileged writer may still use on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64, PullError> {
    let st = rustix::fs::statvfs(dir).map_err(|e| PullError::io(dir, e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// One file of a pull, as far as space goes.
#[derive(Debug, Clone, Copy)]
pub struct SpaceItem {
    pub size: u64,
    /// Already verified and in blobs/: costs nothing.
    pub in_place: bool,
    /// Bytes of an `.incomplete` file that a resume keeps.
    pub partial: u64,
}

/// Bytes still to be written.
pub fn bytes_needed(items: &[SpaceItem]) -> u64 {
    items.iter().filter(|i| !i.in_place).map(|i| i.size.saturating_sub(i.partial)).sum()
}

/// Errors with [`PullError::NoSpace`] when `need` does not fit in `free`.
pub fn check(dir: &Path, need: u64, free: u64) -> Result<(), PullError> {
    if need > free {
        return Err(PullError::NoSpace { dir: dir.to_path_buf(), need, free });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_space_counts_only_what_is_left_to_write() {
        let items = [
            SpaceItem { size: 100, in_place: true, partial: 0 },
            SpaceItem { size: 100, in_place: false, partial: 40 },
            SpaceItem { size: 10, in_place: false, partial: 0 },
        ];
        assert_eq!(bytes_needed(&items), 70);
        assert!(check(Path::new("/m"), 70, 70).is_ok());
        let e = check(Path::new("/m"), 3 << 20, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("/m") && e.contains("needs 3.0 MiB more, 1.0 MiB is free"), "{e}");
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
    }
}

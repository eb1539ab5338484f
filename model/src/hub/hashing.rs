//! The hashes a file is checked against: sha256 (the hub's LFS ETag, or model.toml's), and
//! the git blob sha1 that is the ETag of a small, non-LFS file.

use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// What a file must hash to. A file with neither is refused: nothing unverified is installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub sha256: Option<String>,
    pub git_sha1: Option<String>,
}

impl Expected {
    /// The hashes that a blob's name stands for: a 64-hex name is a sha256, a 40-hex name a
    /// git blob sha1.
    pub fn from_blob_name(etag: &str) -> Expected {
        if super::manifest::is_sha256_hex(etag) {
            Expected { sha256: Some(etag.to_string()), git_sha1: None }
        } else if super::cache::is_commit_hash(etag) {
            Expected { sha256: None, git_sha1: Some(etag.to_string()) }
        } else {
            Expected::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sha256.is_none() && self.git_sha1.is_none()
    }

    /// The first mismatch as `(algorithm, expected, actual)`.
    pub fn mismatch(&self, got: &Digests) -> Option<(&'static str, String, String)> {
        if let Some(want) = &self.sha256 {
            if *want != got.sha256 {
                return Some(("sha256", want.clone(), got.sha256.clone()));
            }
        }
        if let (Some(want), Some(actual)) = (&self.git_sha1, &got.git_sha1) {
            if want != actual {
                return Some(("git-sha1", want.clone(), actual.clone()));
            }
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub git_sha1: Option<String>,
}

/// Hashes a file as it streams by.
pub struct FileHasher {
    sha256: Sha256,
    git_sha1: Option<Sha1>,
}

impl FileHasher {
    /// `git_size`: the file's full size, when its git blob sha1 is wanted (git hashes a
    /// `blob SIZE\0` header before the contents).
    pub fn new(git_size: Option<u64>) -> FileHasher {
        let git_sha1 = git_size.map(|n| {
            let mut h = Sha1::new();
            h.update(format!("blob {n}\0").as_bytes());
            h
        });
        FileHasher { sha256: Sha256::new(), git_sha1 }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        if let Some(h) = &mut self.git_sha1 {
            h.update(bytes);
        }
    }

    /// Feeds the first `len` bytes of a file (the part of a resumed download already on disk).
    pub fn update_from(&mut self, r: &mut impl Read, len: u64) -> std::io::Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = r.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shorter than expected"));
            }
            self.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(())
    }

    pub fn finish(self) -> Digests {
        Digests { sha256: hex(&self.sha256.finalize()), git_sha1: self.git_sha1.map(|h| hex(&h.finalize())) }
    }
}

/// Hashes a whole file on disk.
pub fn hash_file(path: &Path, want_git: bool) -> std::io::Result<Digests> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut h = FileHasher::new(want_git.then_some(len));
    h.update_from(&mut f, len)?;
    Ok(h.finish())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_hashing_matches_git_and_sha256() {
        let mut h = FileHasher::new(Some(6));
        h.update(b"hel");
        h.update(b"lo\n");
        let d = h.finish();
        // `printf 'hello\n' | sha256sum` and `git hash-object`.
        assert_eq!(d.sha256, "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
        assert_eq!(d.git_sha1.as_deref(), Some("ce013625030ba8dba906f756967f9e9ca394464a"));
        let want = Expected::from_blob_name("ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(want.mismatch(&d), None);
        let bad = Expected { sha256: Some("0".repeat(64)), git_sha1: None };
        assert_eq!(bad.mismatch(&d).map(|m| m.0), Some("sha256"));
        assert!(Expected::from_blob_name("not-a-hash").is_empty());
    }
}

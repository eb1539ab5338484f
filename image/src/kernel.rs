//! The kernel input: checks that a file is an x86 bzImage and reads its release string from
//! the boot protocol header, so that modules of another kernel are refused.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel {path}: not a Linux bzImage (no \"HdrS\" boot header)")]
    NotAKernel { path: PathBuf },
    #[error("kernel {path}: the boot header has no readable version string")]
    NoVersion { path: PathBuf },
}

/// A kernel image read into memory.
#[derive(Debug)]
pub struct Kernel {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// The release, as `uname -r` will print it (`6.1.0-56-cloud-amd64`).
    pub release: String,
}

impl Kernel {
    pub fn load(path: &Path) -> Result<Kernel, KernelError> {
        let bytes = std::fs::read(path).map_err(|source| KernelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let release = release(&bytes).map_err(|e| match e {
            HeaderProblem::NoMagic => KernelError::NotAKernel {
                path: path.to_path_buf(),
            },
            HeaderProblem::NoVersion => KernelError::NoVersion {
                path: path.to_path_buf(),
            },
        })?;
        Ok(Kernel {
            path: path.to_path_buf(),
            bytes,
            release,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HeaderProblem {
    NoMagic,
    NoVersion,
}

/// Reads the release from the x86 boot protocol header (Documentation/arch/x86/boot.rst):
/// "HdrS" at 0x202, and at 0x20e a pointer to the version string, relative to 0x200.
fn release(image: &[u8]) -> Result<String, HeaderProblem> {
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err(HeaderProblem::NoMagic);
    }
    let ptr = image
        .get(0x20e..0x210)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(HeaderProblem::NoVersion)?;
    let start = ptr as usize + 0x200;
    let text = image.get(start..).ok_or(HeaderProblem::NoVersion)?;
    let end = text
        .iter()
        .take(512)
        .position(|&b| b == 0 || b == b' ')
        .ok_or(HeaderProblem::NoVersion)?;
    let release = std::str::from_utf8(&text[..end]).map_err(|_| HeaderProblem::NoVersion)?;
    if release.is_empty() {
        return Err(HeaderProblem::NoVersion);
    }
    Ok(release.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(version: &str) -> Vec<u8> {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&(0x100u16).to_le_bytes());
        let s = format!("{version} (builder@host) #1 SMP\0");
        img[0x300..0x300 + s.len()].copy_from_slice(s.as_bytes());
        img
    }

    #[test]
    fn release_is_read_from_the_header() {
        assert_eq!(
            release(&fake("6.1.0-56-cloud-amd64")).unwrap(),
            "6.1.0-56-cloud-amd64"
        );
    }

    #[test]
    fn a_file_without_the_magic_is_not_a_kernel() {
        assert_eq!(release(b"#!/bin/sh\n"), Err(HeaderProblem::NoMagic));
        assert_eq!(release(&[0u8; 0x1000]), Err(HeaderProblem::NoMagic));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinuz");
        std::fs::write(&p, b"hello").unwrap();
        let err = Kernel::load(&p).unwrap_err().to_string();
        assert!(
            err.contains(&p.display().to_string()) && err.contains("not a Linux bzImage"),
            "{err}"
        );
    }

    #[test]
    fn the_installed_kernel_reads_as_its_directory_name() {
        let Some(entry) = std::fs::read_dir("/boot").ok().and_then(|d| {
            d.flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        }) else {
            eprintln!("skipping: no /boot/vmlinuz-* on this machine");
            return;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        match Kernel::load(&entry.path()) {
            Ok(k) => assert_eq!(k.release, name.trim_start_matches("vmlinuz-")),
            Err(KernelError::Read { .. }) => eprintln!("skipping: {name} is not readable"),
            Err(e) => panic!("{e}"),
        }
    }
}

//! The unified kernel image: systemd's EFI stub with `.osrel`, `.cmdline`, `.linux` and
//! `.initrd` sections added by `objcopy`, placed right after the stub's own sections.

use crate::command::{self, ToolError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's systemd-boot-efi package puts the stub.
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error("EFI stub {path}: cannot read: {source} (Debian package: systemd-boot-efi)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("EFI stub {path}: not a PE32+ image ({why})")]
    NotPe { path: PathBuf, why: &'static str },
    #[error("writing the UKI's sections into {dir}: {source}")]
    Write {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("reading back the UKI {path}: {source}")]
    ReadBack {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
}

/// What goes into the UKI besides the stub.
pub struct UkiParts<'a> {
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
    pub cmdline: &'a str,
    pub os_release: &'a str,
}

/// The stub's layout facts that placing new sections needs.
#[derive(Debug, PartialEq, Eq)]
pub struct StubLayout {
    pub image_base: u64,
    /// First address after the stub's last section.
    pub end: u64,
    /// File offset of the COFF TimeDateStamp, which objcopy may set from the clock.
    pub timestamp_offset: usize,
    /// File offset of the optional header's CheckSum.
    pub checksum_offset: usize,
}

/// New sections start on page boundaries: firmware maps PE sections page by page.
const ALIGN: u64 = 0x1000;

fn align(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Reads the PE32+ headers of the stub.
pub fn stub_layout(pe: &[u8]) -> Result<StubLayout, &'static str> {
    let u16_at = |o: usize| {
        pe.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or("truncated")
    };
    let u32_at = |o: usize| {
        pe.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
            .ok_or("truncated")
    };
    if pe.get(0..2) != Some(b"MZ") {
        return Err("no MZ header");
    }
    let pe_off = u32_at(0x3c)? as usize;
    if pe.get(pe_off..pe_off + 4) != Some(b"PE\0\0") {
        return Err("no PE signature");
    }
    let coff = pe_off + 4;
    let sections = u16_at(coff + 2)?;
    let opt = coff + 20;
    let opt_size = u16_at(coff + 16)?;
    if u16_at(opt)? != 0x20b {
        return Err("not PE32+");
    }
    let image_base = u32_at(opt + 24)? | (u32_at(opt + 28)? << 32);
    let table = opt + opt_size;
    let mut end = 0;
    for i in 0..sections {
        let s = table + i * 40;
        let (vsize, va, raw) = (u32_at(s + 8)?, u32_at(s + 12)?, u32_at(s + 16)?);
        end = end.max(va + vsize.max(raw));
    }
    Ok(StubLayout {
        image_base,
        end,
        timestamp_offset: coff + 4,
        checksum_offset: opt + 64,
    })
}

/// Builds the UKI at `out`, using `work` for the section files.
pub fn build(stub: &Path, parts: &UkiParts, work: &Path, out: &Path) -> Result<(), UkiError> {
    let stub_bytes = std::fs::read(stub).map_err(|source| UkiError::Read {
        path: stub.to_path_buf(),
        source,
    })?;
    let layout = stub_layout(&stub_bytes).map_err(|why| UkiError::NotPe {
        path: stub.to_path_buf(),
        why,
    })?;
    let sections: [(&str, &[u8]); 4] = [
        (".osrel", parts.os_release.as_bytes()),
        (".cmdline", parts.cmdline.as_bytes()),
        (".linux", parts.kernel),
        (".initrd", parts.initrd),
    ];
    let mut cmd = Command::new("objcopy");
    let mut vma = align(layout.end);
    for (name, data) in sections {
        let file = work.join(format!("section{name}"));
        std::fs::write(&file, data).map_err(|source| UkiError::Write {
            dir: work.to_path_buf(),
            source,
        })?;
        let mut add = std::ffi::OsString::from(format!("{name}="));
        add.push(&file);
        cmd.arg("--add-section").arg(add);
        cmd.arg("--change-section-vma")
            .arg(format!("{name}={:#x}", layout.image_base + vma));
        vma = align(vma + data.len() as u64);
    }
    cmd.arg(stub).arg(out);
    command::run(&mut cmd, "binutils")?;
    // objcopy stamps the PE header with the current time (binutils has no switch against it
    // for PE); put the stub's own fixed stamp back and recompute the checksum over it.
    let mut uki = std::fs::read(out).map_err(|source| UkiError::ReadBack {
        path: out.to_path_buf(),
        source,
    })?;
    let at = layout.timestamp_offset;
    if uki.get(at..at + 4) != stub_bytes.get(at..at + 4) {
        uki[at..at + 4].copy_from_slice(&stub_bytes[at..at + 4]);
        let sum = pe_checksum(&uki, layout.checksum_offset);
        uki[layout.checksum_offset..layout.checksum_offset + 4].copy_from_slice(&sum.to_le_bytes());
        std::fs::write(out, &uki).map_err(|source| UkiError::ReadBack {
            path: out.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// The PE image checksum (as Windows' CheckSumMappedFile computes it): the one's-complement
/// style sum of all 16-bit words except the checksum field, plus the file length.
fn pe_checksum(pe: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, pair) in pe.chunks(2).enumerate() {
        let at = i * 2;
        if at >= checksum_offset && at < checksum_offset + 4 {
            continue;
        }
        sum += u16::from_le_bytes([pair[0], *pair.get(1).unwrap_or(&0)]) as u64;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(pe.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_stub_layout_is_read() {
        let Ok(stub) = std::fs::read(DEFAULT_STUB) else {
            eprintln!("skipping: no {DEFAULT_STUB} (package systemd-boot-efi)");
            return;
        };
        let l = stub_layout(&stub).unwrap();
        assert_eq!(l.image_base, 0);
        assert!(l.end > 0x10000 && l.end < 0x100000, "{l:?}");
    }

    #[test]
    fn checksum_matches_the_one_in_the_debian_stub() {
        let Ok(stub) = std::fs::read(DEFAULT_STUB) else {
            eprintln!("skipping: no {DEFAULT_STUB} (package systemd-boot-efi)");
            return;
        };
        let l = stub_layout(&stub).unwrap();
        let stored = u32::from_le_bytes(
            stub[l.checksum_offset..l.checksum_offset + 4]
                .try_into()
                .unwrap(),
        );
        assert_eq!(pe_checksum(&stub, l.checksum_offset), stored);
    }

    #[test]
    fn not_a_pe_is_refused() {
        assert_eq!(stub_layout(b"\x7fELF"), Err("no MZ header"));
    }

    #[test]
    fn sections_land_after_the_stub_and_are_readable_by_objdump() {
        if !Path::new(DEFAULT_STUB).exists() {
            eprintln!("skipping: no {DEFAULT_STUB} (package systemd-boot-efi)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.efi");
        let kernel = vec![0x4b; 10_000];
        let initrd = vec![0x49; 3000];
        let parts = UkiParts {
            kernel: &kernel,
            initrd: &initrd,
            cmdline: "console=ttyS0",
            os_release: "ID=ghostos\n",
        };
        build(Path::new(DEFAULT_STUB), &parts, dir.path(), &out).unwrap();
        let first = std::fs::read(&out).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        build(Path::new(DEFAULT_STUB), &parts, dir.path(), &out).unwrap();
        assert_eq!(
            first,
            std::fs::read(&out).unwrap(),
            "two UKIs from the same parts differ"
        );
        let dump = Command::new("objdump")
            .arg("-h")
            .arg(&out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&dump.stdout);
        let vma = |name: &str| {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(name))
                .unwrap_or_else(|| panic!("{name}:\n{text}"));
            u64::from_str_radix(line.split_whitespace().nth(3).unwrap(), 16).unwrap()
        };
        let (osrel, cmdline, linux, initrd_at) = (
            vma(".osrel"),
            vma(".cmdline"),
            vma(".linux"),
            vma(".initrd"),
        );
        assert!(osrel >= 0x19000 && osrel % 0x1000 == 0, "{text}");
        assert_eq!(cmdline, osrel + 0x1000);
        assert_eq!(linux, cmdline + 0x1000);
        assert_eq!(initrd_at, linux + 0x3000);
    }
}

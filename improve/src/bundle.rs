//! A shippable generation: what a build host verified, carried to a machine without a
//! toolchain (`ghost improve export` there, `ghost improve install` here).
//!
//! ```text
//! ghost-improve-bundle 1\n          the magic line, with the format's version
//! {"unit":…,"generation":…,"host":…,"verdict":{…},"files":[{"path","size","sha256","mode"},…]}\n
//! the files' bytes, one after the other, in the header's order
//! ```
//!
//! `verdict` is the build host's (its bench numbers included); `files` are the generation's
//! `bin/` and `source/`. Reading checks everything — the magic line, the unit, every size and
//! SHA-256, nothing after the last file, and that no binary needs a dynamic loader (the image
//! is fully static) — before a caller writes anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crucible::{Outcome, Verdict};

pub const MAGIC: &str = "ghost-improve-bundle 1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub unit: String,
    /// The generation it was on the build host.
    pub generation: u64,
    /// The build host's name.
    pub host: String,
    /// The build host's verdict on it.
    pub verdict: Verdict,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the generation's directory: `bin/NAME`, `source/…`.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub mode: u32,
}

/// A bundle read and verified: its header and each file's bytes.
#[derive(Debug)]
pub struct Bundle {
    pub header: Header,
    pub data: Vec<Vec<u8>>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// This machine's name (the kernel's).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "unknown".into())
}

/// The files of a generation's directory that ship: `bin/` and `source/` (no `target/`),
/// sorted, as (relative path, absolute path).
fn files_of(gen_dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
        let dir = root.join(rel);
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = format!("{rel}/{name}");
            let kind = e.file_type().map_err(|err| format!("{}: {err}", e.path().display()))?;
            if kind.is_dir() && name != "target" && name != ".git" {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                out.push((path, e.path()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(gen_dir, "bin", &mut out)?;
    if gen_dir.join("source").is_dir() {
        walk(gen_dir, "source", &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// Writes the bundle of generation `generation` (its directory `gen_dir`, the build host's
/// `verdict`) to `to`, atomically; returns its header.
pub fn write(unit: &str, generation: u64, gen_dir: &Path, verdict: &Verdict, to: &Path) -> Result<Header, String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut files = Vec::new();
    let mut data = Vec::new();
    for (rel, abs) in files_of(gen_dir)? {
        let bytes = std::fs::read(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
        let mode = std::fs::metadata(&abs).map_err(|e| format!("{}: {e}", abs.display()))?.permissions().mode() & 0o777;
        files.push(FileEntry { path: rel, size: bytes.len() as u64, sha256: sha256_hex(&bytes), mode });
        data.push(bytes);
    }
    let header = Header { unit: unit.to_string(), generation, host: hostname(), verdict: verdict.clone(), files };
    let tmp = to.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let json = serde_json::to_string(&header).map_err(|e| e.to_string())?;
    let wrote = (|| -> std::io::Result<()> {
        writeln!(f, "{MAGIC}")?;
        writeln!(f, "{json}")?;
        for d in &data {
            f.write_all(d)?;
        }
        f.sync_all()
    })();
    wrote.map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, to).map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(header)
}

/// Whether an ELF executable asks for a program interpreter (a dynamic loader): its
/// `PT_INTERP` path, if it has one. Not ELF (a script, a text file): `None`.
pub fn interpreter(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return None; // only 64-bit little-endian ELF is looked into (what the image runs)
    }
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |o: usize| bytes.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize);
    let (phoff, phentsize, phnum) = (u64_at(32)?, u16_at(54)?, u16_at(56)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if bytes.get(ph..ph + 4)? == 3u32.to_le_bytes() {
            let (off, size) = (u64_at(ph + 8)?, u64_at(ph + 32)?);
            let path = bytes.get(off..off + size)?;
            return Some(String::from_utf8_lossy(path).trim_end_matches('\0').to_string());
        }
    }
    None
}

/// Reads and verifies the bundle at `path` for `unit`; nothing is written. Each error names
/// the file (and the entry in it).
pub fn read(path: &Path, unit: &str) -> Result<Bundle, String> {
    let at = |why: String| format!("{}: {why}", path.display());
    let bytes = std::fs::read(path).map_err(|e| at(e.to_string()))?;
    let line = |from: usize| bytes[from..].iter().position(|&b| b == b'\n').map(|i| (&bytes[from..from + i], from + i + 1));
    let Some((magic, rest)) = line(0).filter(|(m, _)| m.starts_with(b"ghost-improve-bundle ")) else {
        return Err(at(format!("not a crucible bundle (it does not start with `{MAGIC}`)")));
    };
    if magic != MAGIC.as_bytes() {
        return Err(at(format!("a bundle of another format ({}); this ghost reads `{MAGIC}`", String::from_utf8_lossy(magic))));
    }
    let (json, mut offset) = line(rest).ok_or_else(|| at("truncated: its header ends early".into()))?;
    let header: Header = serde_json::from_slice(json).map_err(|e| at(format!("its header is not readable: {e}")))?;
    if header.unit != unit {
        return Err(at(format!("a bundle of unit {:?}, not of {unit:?}", header.unit)));
    }
    if !matches!(header.verdict.outcome, Outcome::Kept | Outcome::Seeded) {
        return Err(at(format!("generation {} was not verified on {} (its verdict: {:?})", header.generation, header.host, header.verdict.outcome)));
    }
    let mut data = Vec::new();
    for f in &header.files {
        let ok_path = (f.path.starts_with("bin/") || f.path.starts_with("source/")) && !f.path.split('/').any(|c| c.is_empty() || c == "." || c == "..");
        if !ok_path {
            return Err(at(format!("{:?} is not a path inside a generation (bin/ or source/)", f.path)));
        }
        let end = offset.checked_add(f.size as usize).filter(|&e| e <= bytes.len()).ok_or_else(|| at(format!("truncated: {} needs {} bytes, {} are left", f.path, f.size, bytes.len() - offset)))?;
        let body = &bytes[offset..end];
        let sum = sha256_hex(body);
        if sum != f.sha256 {
            return Err(at(format!("{} is corrupted: SHA-256 {sum}, the header says {}", f.path, f.sha256)));
        }
        if f.path.starts_with("bin/") {
            if let Some(interp) = interpreter(body) {
                return Err(at(format!("{} is dynamically linked (it asks for {interp}): the image has no dynamic loader; build it for a static target (target = \"x86_64-unknown-linux-musl\")", f.path)));
            }
        }
        data.push(body.to_vec());
        offset = end;
    }
    if offset != bytes.len() {
        return Err(at(format!("{} bytes after the last file: not the bundle its header describes", bytes.len() - offset)));
    }
    Ok(Bundle { header, data })
}

impl Bundle {
    /// Writes every file under `dir` with its mode.
    pub fn unpack(&self, dir: &Path) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        for (f, bytes) in self.header.files.iter().zip(&self.data) {
            let to = dir.join(&f.path);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(&to, bytes).map_err(|e| format!("{}: {e}", to.display()))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(f.mode & 0o777)).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crucible::Stage;

    fn verdict(outcome: Outcome) -> Verdict {
        Verdict {
            unit: "sample".into(),
            candidate: "c1".into(),
            origin: "file:faster.patch".into(),
            outcome,
            stage: Stage::Probation,
            reason: "27% less time".into(),
            generation: Some(1),
            bench: Some(serde_json::json!({ "gain": 0.27 })),
            seconds: serde_json::json!({}),
            limits: String::new(),
            unix_ms: 1,
        }
    }

    /// An ELF64 header with one program header: PT_INTERP (`dynamic`) or PT_LOAD.
    fn elf(dynamic: bool) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56 + 32];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        b[64..68].copy_from_slice(&(if dynamic { 3u32 } else { 1u32 }).to_le_bytes());
        let interp = b"/lib64/ld-linux-x86-64.so.2\0";
        b[64 + 8..64 + 16].copy_from_slice(&120u64.to_le_bytes());
        b[64 + 32..64 + 40].copy_from_slice(&(interp.len() as u64).to_le_bytes());
        b[120..120 + interp.len()].copy_from_slice(interp);
        b
    }

    fn generation(dir: &Path, dynamic: bool) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let g = dir.join("1");
        std::fs::create_dir_all(g.join("bin")).unwrap();
        std::fs::create_dir_all(g.join("source/src")).unwrap();
        std::fs::create_dir_all(g.join("source/target/release")).unwrap();
        std::fs::write(g.join("bin/ghost-sample"), elf(dynamic)).unwrap();
        std::fs::set_permissions(g.join("bin/ghost-sample"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(g.join("source/src/lib.rs"), "pub fn sieve() {}\n").unwrap();
        std::fs::write(g.join("source/target/release/junk"), "not shipped").unwrap();
        g
    }

    #[test]
    fn a_bundle_round_trips_with_modes_and_without_target() {
        let t = tempfile::tempdir().unwrap();
        let g = generation(t.path(), false);
        let file = t.path().join("sample-1.bundle");
        let h = write("sample", 1, &g, &verdict(Outcome::Kept), &file).unwrap();
        assert_eq!(h.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["bin/ghost-sample", "source/src/lib.rs"]);
        assert!(std::fs::read(&file).unwrap().starts_with(b"ghost-improve-bundle 1\n{"));
        let b = read(&file, "sample").unwrap();
        assert_eq!((b.header.generation, b.header.verdict.bench.clone().unwrap()["gain"].as_f64()), (1, Some(0.27)));
        let out = t.path().join("out");
        b.unpack(&out).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(out.join("bin/ghost-sample")).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read_to_string(out.join("source/src/lib.rs")).unwrap(), "pub fn sieve() {}\n");
    }

    #[test]
    fn corrupted_truncated_foreign_dynamic_and_unverified_bundles_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let g = generation(t.path(), false);
        let file = t.path().join("b");
        write("sample", 1, &g, &verdict(Outcome::Kept), &file).unwrap();
        let good = std::fs::read(&file).unwrap();
        let try_bytes = |bytes: &[u8], unit: &str| {
            let f = t.path().join("try.bundle");
            std::fs::write(&f, bytes).unwrap();
            read(&f, unit).unwrap_err()
        };
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let e = try_bytes(&flipped, "sample");
        assert!(e.contains("try.bundle: source/src/lib.rs is corrupted: SHA-256"), "{e}");
        let e = try_bytes(&good[..good.len() - 5], "sample");
        assert!(e.contains("try.bundle: truncated: source/src/lib.rs needs 18 bytes, 13 are left"), "{e}");
        let e = try_bytes(&[&good[..], b"x"].concat(), "sample");
        assert!(e.contains("1 bytes after the last file"), "{e}");
        let e = try_bytes(&good, "other");
        assert!(e.contains("a bundle of unit \"sample\", not of \"other\""), "{e}");
        let e = try_bytes(b"#!/bin/sh\necho hi\n", "sample");
        assert!(e.contains("not a crucible bundle"), "{e}");
        let e = try_bytes(&[b"ghost-improve-bundle 9\n".as_slice(), &good[23..]].concat(), "sample");
        assert!(e.contains("another format (ghost-improve-bundle 9)"), "{e}");
        // Refused at the build host: never shipped as verified.
        write("sample", 1, &g, &verdict(Outcome::Refused), &file).unwrap();
        assert!(read(&file, "sample").unwrap_err().contains("generation 1 was not verified"));
        // A binary linked against a loader the image does not have.
        let d = tempfile::tempdir().unwrap();
        let g = generation(d.path(), true);
        write("sample", 1, &g, &verdict(Outcome::Kept), &file).unwrap();
        let e = read(&file, "sample").unwrap_err();
        assert!(e.contains("bin/ghost-sample is dynamically linked (it asks for /lib64/ld-linux-x86-64.so.2): the image has no dynamic loader"), "{e}");
    }

    #[test]
    fn the_interpreter_of_real_binaries_is_found() {
        // The test binary itself: static with musl, dynamic with glibc.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = interpreter(&me);
        assert_eq!(interp.is_some(), cfg!(target_env = "gnu"), "{interp:?}");
        assert_eq!(interpreter(b"#!/bin/sh\n"), None);
    }
}

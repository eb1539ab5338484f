//! Shared libraries of an extra binary, found the way `ldd` finds them: the binary's own ELF
//! interpreter is asked to resolve them (`ld.so --list`), so RUNPATH, ld.so.conf and the
//! multiarch directories are all honoured exactly as at run time.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum LibsError {
    #[error("extra binary {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("extra binary {path}: not a 64-bit ELF file")]
    NotElf { path: PathBuf },
    #[error("extra binary {path}: cannot run its loader {interp}: {source}")]
    Loader {
        path: PathBuf,
        interp: String,
        source: std::io::Error,
    },
    #[error("extra binary {path}: libraries not found: {missing}")]
    NotFound { path: PathBuf, missing: String },
    #[error("extra binary {path}: its loader failed: {stderr}")]
    LoaderFailed { path: PathBuf, stderr: String },
}

/// The files a dynamically linked binary needs at run time, as absolute paths: its
/// interpreter first, then the libraries. Empty for a static binary.
pub fn runtime_files(binary: &Path) -> Result<Vec<PathBuf>, LibsError> {
    let bytes = std::fs::read(binary).map_err(|source| LibsError::Read {
        path: binary.to_path_buf(),
        source,
    })?;
    let Some(interp) = interpreter(&bytes).ok_or_else(|| LibsError::NotElf {
        path: binary.to_path_buf(),
    })?
    else {
        return Ok(Vec::new());
    };
    let out = Command::new(&interp)
        .arg("--list")
        .arg(binary)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .output()
        .map_err(|source| LibsError::Loader {
            path: binary.to_path_buf(),
            interp: interp.clone(),
            source,
        })?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let (found, missing) = parse_list(&listing);
    if !missing.is_empty() {
        return Err(LibsError::NotFound {
            path: binary.to_path_buf(),
            missing: missing.join(", "),
        });
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(LibsError::LoaderFailed {
            path: binary.to_path_buf(),
            stderr,
        });
    }
    let mut files = vec![PathBuf::from(&interp)];
    files.extend(
        found
            .into_iter()
            .map(PathBuf::from)
            .filter(|p| p != Path::new(&interp)),
    );
    Ok(files)
}

/// The PT_INTERP path of a little-endian ELF64 file: `None` if not ELF64, `Some(None)` if static.
fn interpreter(elf: &[u8]) -> Option<Option<String>> {
    if elf.get(0..5) != Some(b"\x7fELF\x02") || elf.get(5) != Some(&1) {
        return None;
    }
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        const PT_INTERP: u32 = 3;
        if elf
            .get(ph..ph + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            == Some(PT_INTERP)
        {
            let (off, size) = (u64_at(ph + 8)?, u64_at(ph + 32)?);
            let raw = elf.get(off..off + size)?;
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            return Some(Some(String::from_utf8_lossy(&raw[..end]).into_owned()));
        }
    }
    Some(None)
}

/// Splits `ld.so --list` output into resolved paths and names that were not found.
fn parse_list(listing: &str) -> (Vec<String>, Vec<String>) {
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for line in listing.lines().map(str::trim) {
        if let Some((name, target)) = line.split_once(" => ") {
            if target.starts_with("not found") {
                missing.push(name.to_string());
            } else if let Some(path) = target.split(" (").next().filter(|p| p.starts_with('/')) {
                found.push(path.to_string());
            }
        } else if line.starts_with('/') {
            // The interpreter itself: "/lib64/ld-linux-x86-64.so.2 (0x...)".
            found.push(line.split(" (").next().unwrap_or(line).to_string());
        }
        // Anything else (linux-vdso.so.1) is provided by the kernel.
    }
    (found, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_is_parsed() {
        let (found, missing) = parse_list(
            "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\tlibgone.so.1 => not found\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n",
        );
        assert_eq!(
            found,
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert_eq!(missing, ["libgone.so.1"]);
    }

    #[test]
    fn a_dynamic_system_binary_needs_libc_and_its_loader() {
        let bin = Path::new("/bin/ls");
        if !bin.exists() {
            eprintln!("skipping: no /bin/ls");
            return;
        }
        let files = runtime_files(bin).unwrap();
        assert!(files[0].to_string_lossy().contains("ld-linux"), "{files:?}");
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().contains("libc.so")),
            "{files:?}"
        );
    }

    #[test]
    fn a_static_binary_needs_nothing() {
        let bin = Path::new("/bin/busybox");
        if !bin.exists() || interpreter(&std::fs::read(bin).unwrap()) != Some(None) {
            eprintln!("skipping: no static /bin/busybox");
            return;
        }
        assert!(runtime_files(bin).unwrap().is_empty());
    }

    #[test]
    fn a_script_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tool.sh");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        let err = runtime_files(&p).unwrap_err().to_string();
        assert!(
            err.contains("tool.sh") && err.contains("not a 64-bit ELF"),
            "{err}"
        );
    }

    #[test]
    fn an_unresolvable_library_is_named() {
        // Copy a dynamic binary and point its RUNPATH nowhere is not possible without patchelf;
        // instead ask for a binary that needs a library this machine cannot have.
        let Ok(cc) = which("cc") else {
            eprintln!("skipping: no C compiler to make a binary with a missing library");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let lib_src = dir.path().join("g.c");
        std::fs::write(&lib_src, "int ghost_missing(void){return 0;}\n").unwrap();
        let lib = dir.path().join("libghostmissing.so");
        let ok = Command::new(&cc)
            .arg("-shared")
            .arg("-fPIC")
            .arg("-o")
            .arg(&lib)
            .arg(&lib_src)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let main_src = dir.path().join("m.c");
        std::fs::write(
            &main_src,
            "int ghost_missing(void);int main(void){return ghost_missing();}\n",
        )
        .unwrap();
        let bin = dir.path().join("needs-missing");
        let ok = ok
            && Command::new(&cc)
                .arg("-o")
                .arg(&bin)
                .arg(&main_src)
                .arg(format!("-L{}", dir.path().display()))
                .arg("-lghostmissing")
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !ok {
            eprintln!("skipping: could not compile the test binary");
            return;
        }
        std::fs::remove_file(&lib).unwrap();
        let err = runtime_files(&bin).unwrap_err().to_string();
        assert!(
            err.contains("needs-missing") && err.contains("libghostmissing.so"),
            "{err}"
        );
    }

    fn which(name: &str) -> Result<PathBuf, ()> {
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
            .ok_or(())
    }
}

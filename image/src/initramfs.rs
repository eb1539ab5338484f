//! The initramfs: what PID 1 needs before it has mounted anything, as an in-memory cpio
//! archive, compressed with zstd.

use crate::cpio::{Archive, Entry, Node};
use crate::modules::{ModuleIndex, Selection};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("initramfs tree {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("initramfs tree {path}: not a file, directory or symbolic link")]
    Special { path: PathBuf },
    #[error("{what} {path}: cannot read: {source}")]
    Input {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("compressing the initramfs: {0}")]
    Compress(std::io::Error),
}

/// Directories PID 1 mounts on or writes to before anything else exists.
const DIRS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "var/lib/ghost",
    "var/log",
    "etc",
    "usr/bin",
    "sbin",
    "root",
];

/// Starts the archive: the skeleton, the device nodes the kernel opens before devtmpfs is
/// mounted, and `/init` with `/sbin/init` pointing at it.
pub fn skeleton(init: Vec<u8>) -> Archive {
    let mut a = Archive::new();
    for d in DIRS {
        a.insert(d, Entry::dir());
    }
    a.insert(
        "tmp",
        Entry {
            node: Node::Dir,
            mode: 0o1777,
        },
    );
    a.insert(
        "dev/console",
        Entry {
            node: Node::CharDev(5, 1),
            mode: 0o600,
        },
    );
    a.insert(
        "dev/null",
        Entry {
            node: Node::CharDev(1, 3),
            mode: 0o666,
        },
    );
    a.insert("init", Entry::file(init, 0o755));
    // A symbolic link, not a second copy: the archive stays hardlink-free and small.
    a.insert(
        "sbin/init",
        Entry {
            node: Node::Symlink("../init".into()),
            mode: 0o777,
        },
    );
    a
}

/// Adds the tree at `root` (the repository's `initramfs/`) under `/`. Modes are normalised
/// to 0755/0644 by the owner's execute bit, so the builder's umask does not leak in.
pub fn add_tree(a: &mut Archive, root: &Path) -> Result<(), TreeError> {
    add_tree_at(a, root, "", &[])
}

/// Adds a source tree at `dest` (e.g. `usr/src/ghost/sample`), leaving out `target/` and
/// `.git/` (build outputs and history are not sources).
pub fn add_source_tree(a: &mut Archive, root: &Path, dest: &str) -> Result<(), TreeError> {
    a.insert(dest, Entry::dir());
    add_tree_at(a, root, dest, &["target", ".git"])
}

/// Adds the tree at `root` under `dest` ("" for /), skipping directories named in `skip`.
fn add_tree_at(a: &mut Archive, root: &Path, dest: &str, skip: &[&str]) -> Result<(), TreeError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TreeError::Read { path, source }
        };
        for e in std::fs::read_dir(&dir).map_err(read_err(&dir))? {
            let e = e.map_err(read_err(&dir))?;
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let rel = if dest.is_empty() {
                rel
            } else {
                format!("{}/{rel}", dest.trim_matches('/'))
            };
            let meta = std::fs::symlink_metadata(&path).map_err(read_err(&path))?;
            use std::os::unix::fs::PermissionsExt;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(read_err(&path))?;
                a.insert(
                    &rel,
                    Entry {
                        node: Node::Symlink(target.to_string_lossy().into_owned()),
                        mode: 0o777,
                    },
                );
            } else if meta.is_dir() {
                if skip.iter().any(|s| e.file_name() == *s) {
                    continue;
                }
                a.insert(&rel, Entry::dir());
                stack.push(path);
            } else if meta.is_file() {
                let data = std::fs::read(&path).map_err(read_err(&path))?;
                let mode = if meta.permissions().mode() & 0o100 != 0 {
                    0o755
                } else {
                    0o644
                };
                a.insert(&rel, Entry::file(data, mode));
            } else {
                return Err(TreeError::Special { path });
            }
        }
    }
    Ok(())
}

/// Adds the selected modules, a `modules.dep` covering exactly them, and `modules.builtin`.
pub fn add_modules(
    a: &mut Archive,
    index: &ModuleIndex,
    sel: &Selection,
    release: &str,
) -> Result<(), TreeError> {
    let base = format!("lib/modules/{release}");
    for rel in &sel.files {
        let path = index.dir.join(rel);
        let data = std::fs::read(&path).map_err(|source| TreeError::Input {
            what: "module",
            path,
            source,
        })?;
        a.insert(&format!("{base}/{rel}"), Entry::file(data, 0o644));
    }
    a.insert(
        &format!("{base}/modules.dep"),
        Entry::file(sel.modules_dep.clone().into_bytes(), 0o644),
    );
    a.insert(
        &format!("{base}/modules.builtin"),
        Entry::file(index.builtin_text.clone().into_bytes(), 0o644),
    );
    Ok(())
}

/// Adds a binary at `/usr/bin/NAME` and the files it needs at run time at their own paths.
pub fn add_binary(
    a: &mut Archive,
    binary: &Path,
    runtime_files: &[PathBuf],
) -> Result<(), TreeError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TreeError::Input {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    a.insert(
        &format!("usr/bin/{name}"),
        Entry::file(read("binary", binary)?, 0o755),
    );
    for lib in runtime_files {
        a.insert(
            &lib.to_string_lossy(),
            Entry::file(read("shared library", lib)?, 0o755),
        );
    }
    Ok(())
}

/// The archive as newc bytes and zstd-compressed (one frame, with a checksum).
pub fn compress(a: &Archive, mtime: u64, level: i32) -> Result<(Vec<u8>, usize), TreeError> {
    let raw = a.to_bytes(mtime);
    let mut enc = zstd::stream::Encoder::new(Vec::new(), level).map_err(TreeError::Compress)?;
    enc.include_checksum(true).map_err(TreeError::Compress)?;
    enc.set_pledged_src_size(Some(raw.len() as u64))
        .map_err(TreeError::Compress)?;
    std::io::Write::write_all(&mut enc, &raw).map_err(TreeError::Compress)?;
    Ok((enc.finish().map_err(TreeError::Compress)?, raw.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeleton_has_what_the_kernel_and_pid1_need() {
        let a = skeleton(b"init".to_vec());
        assert_eq!(a.get("dev/console").unwrap().node, Node::CharDev(5, 1));
        assert_eq!(a.get("dev/null").unwrap().node, Node::CharDev(1, 3));
        assert_eq!(
            a.get("sbin/init").unwrap().node,
            Node::Symlink("../init".into())
        );
        for d in [
            "proc",
            "sys",
            "run",
            "tmp",
            "var/lib/ghost",
            "etc",
            "usr/bin",
        ] {
            assert_eq!(a.get(d).unwrap().node, Node::Dir, "{d}");
        }
    }

    #[test]
    fn tree_modes_are_normalised_and_links_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/ghost/services")).unwrap();
        std::fs::write(
            dir.path().join("etc/ghost/ghost.toml"),
            "hostname = \"ghost\"\n",
        )
        .unwrap();
        std::fs::set_permissions(
            dir.path().join("etc/ghost/ghost.toml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("etc/run.sh"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::os::unix::fs::symlink("ghost/ghost.toml", dir.path().join("etc/link")).unwrap();
        let mut a = Archive::new();
        add_tree(&mut a, dir.path()).unwrap();
        assert_eq!(a.get("etc/ghost/ghost.toml").unwrap().mode, 0o644);
        assert_eq!(a.get("etc/run.sh").unwrap().mode, 0o755);
        assert_eq!(a.get("etc/ghost/services").unwrap().node, Node::Dir);
        assert_eq!(
            a.get("etc/link").unwrap().node,
            Node::Symlink("ghost/ghost.toml".into())
        );
    }

    #[test]
    fn a_source_tree_goes_to_its_place_without_build_outputs() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["src", "target/release", ".git"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("Cargo.toml"), "[package]\n").unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        std::fs::write(dir.path().join("target/release/big"), "x").unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "ref").unwrap();
        let mut a = Archive::new();
        add_source_tree(&mut a, dir.path(), "usr/src/ghost/sample").unwrap();
        assert_eq!(a.get("usr/src/ghost/sample").unwrap().node, Node::Dir);
        assert_eq!(a.get("usr/src/ghost/sample/src/lib.rs").unwrap().mode, 0o644);
        assert!(a.get("usr/src/ghost/sample/Cargo.toml").is_some());
        let paths: Vec<&str> = a.paths().collect();
        assert!(!paths.iter().any(|p| p.contains("target") || p.contains(".git")), "{paths:?}");
    }

    #[test]
    fn compressed_archive_decompresses_to_the_archive() {
        let a = skeleton(b"init".to_vec());
        let (z, raw_len) = compress(&a, 5, 3).unwrap();
        let raw = zstd::stream::decode_all(&z[..]).unwrap();
        assert_eq!(raw.len(), raw_len);
        assert_eq!(raw, a.to_bytes(5));
    }
}

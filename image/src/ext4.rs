//! The state partition: an ext4 file system labelled GHOST_STATE, made by `mke2fs -d` in a
//! plain file, with every value mke2fs would take from chance or the clock given.

use crate::command::{self, ToolError};
use crate::gpt::Guid;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const LABEL: &str = "GHOST_STATE";

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("creating the state file system {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listing the state contents {path}: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
}

/// Makes `path` an ext4 file system of `bytes`, holding the tree `contents` (if any).
pub fn make_state(
    path: &Path,
    bytes: u64,
    uuid: Guid,
    hash_seed: Guid,
    epoch: u64,
    contents: Option<&Path>,
) -> Result<(), Ext4Error> {
    // e2fsprogs reads a fake time of 0 as "no fake time" and takes the clock instead.
    let epoch = epoch.max(1);
    let file = std::fs::File::create(path).map_err(|source| Ext4Error::Create {
        path: path.to_path_buf(),
        source,
    })?;
    file.set_len(bytes).map_err(|source| Ext4Error::Create {
        path: path.to_path_buf(),
        source,
    })?;
    drop(file);
    let mut mke2fs = Command::new("mke2fs");
    // E2FSPROGS_FAKE_TIME: every time mke2fs itself stamps (superblock, root, lost+found).
    mke2fs.env("E2FSPROGS_FAKE_TIME", epoch.to_string());
    mke2fs.args(["-q", "-F", "-t", "ext4", "-L", LABEL]);
    // -U and hash_seed are otherwise random; root_owner keeps the builder's uid out;
    // nodiscard because a discard on a plain file only punches holes we do not need.
    mke2fs.arg("-U").arg(uuid.to_string());
    mke2fs
        .arg("-E")
        .arg(format!("hash_seed={hash_seed},root_owner=0:0,nodiscard"));
    if let Some(dir) = contents {
        mke2fs.arg("-d").arg(dir);
    }
    mke2fs.arg(path);
    command::run(&mut mke2fs, "e2fsprogs")?;
    fix_times(path, contents, epoch)
}

/// mke2fs stamps the superblock's last-write time from the clock despite
/// E2FSPROGS_FAKE_TIME, and `-d` copies each file's atime and ctime from the host (where
/// ctime cannot be set). debugfs, which honours the fake time when it closes the file
/// system, sets all three times of every inode from `contents` (or of / alone) to `epoch`.
fn fix_times(image: &Path, contents: Option<&Path>, epoch: u64) -> Result<(), Ext4Error> {
    let mut script = String::new();
    let mut stack = match contents {
        Some(dir) => vec![(dir.to_path_buf(), String::new())],
        None => vec![(PathBuf::new(), String::new())],
    };
    while let Some((host, inside)) = stack.pop() {
        let target = if inside.is_empty() {
            "/".to_string()
        } else {
            inside.clone()
        };
        for field in ["atime", "ctime", "mtime"] {
            script.push_str(&format!("sif \"{target}\" {field} @{epoch}\n"));
        }
        if contents.is_some() && host.is_dir() && !host.is_symlink() {
            let entries = std::fs::read_dir(&host).map_err(|source| Ext4Error::List {
                path: host.clone(),
                source,
            })?;
            for e in entries {
                let e = e.map_err(|source| Ext4Error::List {
                    path: host.clone(),
                    source,
                })?;
                stack.push((
                    e.path(),
                    format!("{inside}/{}", e.file_name().to_string_lossy()),
                ));
            }
        }
    }
    let script_path = image.with_extension("debugfs");
    std::fs::write(&script_path, script).map_err(|source| Ext4Error::Create {
        path: script_path.clone(),
        source,
    })?;
    let result = command::run(
        Command::new("debugfs")
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(image),
        "e2fsprogs",
    );
    let _ = std::fs::remove_file(&script_path);
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools_present() -> bool {
        let ok = Command::new("mke2fs").arg("-V").output().is_ok()
            && Command::new("e2fsck").arg("-V").output().is_ok();
        if !ok {
            eprintln!("skipping: needs mke2fs and e2fsck (e2fsprogs)");
        }
        ok
    }

    #[test]
    fn state_fs_is_clean_labelled_holds_the_tree_and_is_reproducible() {
        if !tools_present() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("models/tiny")).unwrap();
        std::fs::write(tree.join("models/tiny/config.json"), b"{\"hidden\": 8}").unwrap();
        let (uuid, seed) = (Guid::derive(b"t", "fs"), Guid::derive(b"t", "hash"));
        let (a, b) = (dir.path().join("a.ext4"), dir.path().join("b.ext4"));
        make_state(&a, 32 << 20, uuid, seed, 1_700_000_000, Some(&tree)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        make_state(&b, 32 << 20, uuid, seed, 1_700_000_000, Some(&tree)).unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "two state file systems from the same inputs differ"
        );

        let fsck = Command::new("e2fsck").arg("-fn").arg(&a).output().unwrap();
        assert!(
            fsck.status.success(),
            "{}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let label = Command::new("e2label").arg(&a).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), LABEL);
        let cat = Command::new("debugfs")
            .arg("-R")
            .arg("cat /models/tiny/config.json")
            .arg(&a)
            .output()
            .unwrap();
        assert_eq!(cat.stdout, b"{\"hidden\": 8}");
        let dump = Command::new("dumpe2fs").arg("-h").arg(&a).output().unwrap();
        let text = String::from_utf8_lossy(&dump.stdout);
        assert!(
            text.contains(&format!("Filesystem UUID:          {uuid}")),
            "{text}"
        );
    }

    #[test]
    fn empty_state_fs_is_clean_and_reproducible() {
        if !tools_present() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.ext4"), dir.path().join("b.ext4"));
        make_state(
            &a,
            16 << 20,
            Guid::derive(b"e", "fs"),
            Guid::derive(b"e", "hash"),
            0,
            None,
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        make_state(
            &b,
            16 << 20,
            Guid::derive(b"e", "fs"),
            Guid::derive(b"e", "hash"),
            0,
            None,
        )
        .unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "two empty state file systems differ"
        );
        let fsck = Command::new("e2fsck").arg("-fn").arg(&a).output().unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }
}

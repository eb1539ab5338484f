//! A reproducible newc ("070701") cpio writer: entries sorted by path, owned by root, one
//! fixed mtime, device nodes as records, and no hard links, so that the same tree always
//! gives the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// What one archive member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A character device, as (major, minor).
    CharDev(u32, u32),
}

/// One archive member: its kind and permission bits (without the file-type bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub node: Node,
    pub mode: u32,
}

impl Entry {
    pub fn dir() -> Entry {
        Entry {
            node: Node::Dir,
            mode: 0o755,
        }
    }
    pub fn file(data: Vec<u8>, mode: u32) -> Entry {
        Entry {
            node: Node::File(data),
            mode,
        }
    }
}

/// The members of an archive, keyed by path without a leading `/`.
///
/// Sorting by path bytes puts every directory before its contents, because a parent's path
/// is a prefix of its children's.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds (or replaces) `path`, and every missing parent directory of it.
    pub fn insert(&mut self, path: &str, entry: Entry) {
        let path = path.trim_matches('/');
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries
                .entry(parent.clone())
                .or_insert_with(Entry::dir);
        }
        self.entries.insert(path.to_string(), entry);
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.trim_matches('/'))
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Total size of the file contents, for the summary.
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| {
                if let Node::File(d) = &e.node {
                    d.len() as u64
                } else {
                    0
                }
            })
            .sum()
    }

    /// Writes the archive in newc format with every mtime set to `mtime`.
    pub fn write_to(&self, out: &mut impl Write, mtime: u64) -> io::Result<()> {
        let mut w = Writer { out, written: 0 };
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            w.member(ino as u32 + 1, path, entry, mtime)?;
        }
        w.trailer()
    }

    pub fn to_bytes(&self, mtime: u64) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = self.write_to(&mut v, mtime);
        v
    }
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Serialises members; tracks the offset for the 4-byte padding newc requires.
struct Writer<'a, W: Write> {
    out: &'a mut W,
    written: u64,
}

impl<W: Write> Writer<'_, W> {
    fn member(&mut self, ino: u32, path: &str, entry: &Entry, mtime: u64) -> io::Result<()> {
        let perm = entry.mode & 0o7777;
        let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &entry.node {
            Node::Dir => (S_IFDIR | perm, 2, &[], (0, 0)),
            Node::File(d) => (S_IFREG | perm, 1, d, (0, 0)),
            Node::Symlink(target) => (S_IFLNK | 0o777, 1, target.as_bytes(), (0, 0)),
            Node::CharDev(major, minor) => (S_IFCHR | perm, 1, &[], (*major, *minor)),
        };
        self.header(
            ino,
            mode,
            nlink,
            mtime as u32,
            data.len() as u32,
            rdev,
            path,
        )?;
        self.put(data)?;
        self.pad()
    }

    fn trailer(&mut self) -> io::Result<()> {
        self.header(0, 0, 1, 0, 0, (0, 0), "TRAILER!!!")?;
        self.pad()
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        mtime: u32,
        size: u32,
        rdev: (u32, u32),
        name: &str,
    ) -> io::Result<()> {
        // Fields: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check.
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            mtime,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        let mut h = String::with_capacity(110 + name.len() + 1);
        h.push_str("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        h.push_str(name);
        h.push('\0');
        self.put(h.as_bytes())?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.insert(
            "/init",
            Entry::file(b"#!/bin/sh\necho hi\n".to_vec(), 0o755),
        );
        a.insert(
            "etc/ghost/ghost.toml",
            Entry::file(b"hostname = \"ghost\"\n".to_vec(), 0o644),
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
        a.insert(
            "sbin/init",
            Entry {
                node: Node::Symlink("../init".into()),
                mode: 0o777,
            },
        );
        a.insert("proc", Entry::dir());
        a.insert("etc-other", Entry::file(vec![0xff; 5], 0o600));
        a
    }

    fn system_cpio_available() -> bool {
        let ok = Command::new("cpio")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            eprintln!("skipping: no `cpio` on PATH to read the archive back");
        }
        ok
    }

    #[test]
    fn parents_are_added_and_sorted_first() {
        let a = sample();
        let paths: Vec<_> = a.paths().collect();
        assert_eq!(
            paths,
            [
                "dev",
                "dev/console",
                "dev/null",
                "etc",
                "etc-other",
                "etc/ghost",
                "etc/ghost/ghost.toml",
                "init",
                "proc",
                "sbin",
                "sbin/init"
            ]
        );
    }

    #[test]
    fn same_tree_same_bytes_and_mtime_is_the_given_one() {
        let a = sample().to_bytes(1_700_000_000);
        assert_eq!(a, sample().to_bytes(1_700_000_000));
        assert_ne!(a, sample().to_bytes(1_700_000_001));
        assert_eq!(a.len() % 4, 0);
    }

    #[test]
    fn system_cpio_lists_what_was_written() {
        if !system_cpio_available() {
            return;
        }
        let bytes = sample().to_bytes(1_700_000_000);
        let out = Command::new("cpio")
            .args(["-itv", "--quiet"])
            .env("TZ", "UTC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&bytes)?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 11, "{listing}");
        let line = |name: &str| {
            *lines
                .iter()
                .find(|l| l.ends_with(name))
                .unwrap_or_else(|| panic!("{name} missing:\n{listing}"))
        };
        assert!(line(" dev/console").starts_with("crw-------"), "{listing}");
        assert!(line(" dev/console").contains("5,   1"), "{listing}");
        assert!(line(" dev/null").starts_with("crw-rw-rw-"), "{listing}");
        assert!(line(" dev/null").contains("1,   3"), "{listing}");
        assert!(
            line(" sbin/init -> ../init").starts_with("lrwxrwxrwx"),
            "{listing}"
        );
        assert!(
            line(" init").starts_with("-rwxr-xr-x   1 root     root           18 Nov 14  2023"),
            "{listing}"
        );
        assert!(
            line(" etc/ghost").starts_with("drwxr-xr-x   2 root     root"),
            "{listing}"
        );
    }

    #[test]
    fn system_cpio_extracts_the_same_contents() {
        if !system_cpio_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let bytes = sample().to_bytes(1_700_000_000);
        // Device nodes cannot be made without privileges; extract only regular files and links.
        let mut child = Command::new("cpio")
            .args([
                "-i",
                "--quiet",
                "--make-directories",
                "--no-absolute-filenames",
                "init",
                "etc/*",
                "etc-other",
                "sbin/*",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&bytes).unwrap();
        }
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read(dir.path().join("init")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            std::fs::read(dir.path().join("etc/ghost/ghost.toml")).unwrap(),
            b"hostname = \"ghost\"\n"
        );
        assert_eq!(
            std::fs::read(dir.path().join("etc-other")).unwrap(),
            vec![0xff; 5]
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("sbin/init"))
                .unwrap()
                .to_str(),
            Some("../init")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("init"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}

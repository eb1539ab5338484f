//! The snapshot store: create, list, diff, restore (with its journal), recover, prune.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ghost_audit::util::{hex, sync_dir, write_atomic};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// An operator's (`ghostctl snapshot create`): never pruned.
    Manual,
    Hourly,
    /// Before a risky tool call.
    BeforeAction,
    /// The state a restore replaced.
    BeforeRestore,
}

impl Trigger {
    pub fn parse(s: &str) -> Option<Trigger> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// An SQLite database, copied with the backup API and restored through it.
    Database,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The system path (`/etc/ghost/ghost.toml`), whatever the root.
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A large file (≥ 4 MiB, the memory database) is stored as 1 MiB chunks, each an object
    /// named by its own hash: a database that changed in a few pages costs a few chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<String>>,
}

impl Entry {
    /// Same content and metadata (what a restore would not need to touch).
    fn same(&self, other: &Entry) -> bool {
        self.kind == other.kind && self.sha256 == other.sha256 && self.target == other.target && self.mode == other.mode && self.uid == other.uid && self.gid == other.gid
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub v: u32,
    pub id: String,
    pub description: String,
    pub trigger: Trigger,
    pub created_ms: u64,
    /// The roots and databases it covers (system paths); a root absent then is absent after a
    /// restore too.
    pub roots: Vec<String>,
    pub databases: Vec<String>,
    pub entries: Vec<Entry>,
    /// Bytes of all its files, and bytes this snapshot added to the store (the rest were there).
    pub total_bytes: u64,
    pub new_bytes: u64,
}

/// What differs between two states.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// ghost.toml's `[snapshots]`: `hourly = true`, `keep = 24` (automatic ones; manual ones are
/// never pruned), `paths = [...]` (more roots), `databases = [...]` (default: the agent's
/// memory), `store = "/var/lib/ghost/snapshots"` (a path shared between machines or
/// containers makes one's snapshots visible and restorable on the others).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub hourly: bool,
    pub keep: usize,
    pub paths: Vec<String>,
    pub databases: Vec<String>,
    pub store: String,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { hourly: true, keep: 24, paths: Vec::new(), databases: DEFAULT_DATABASES.iter().map(|s| s.to_string()).collect(), store: STORE.to_string() }
    }
}

fn absolute(p: &str) -> bool {
    p.starts_with('/') && !p.split('/').any(|c| c == "..")
}

impl Policy {
    /// From the `[snapshots]` table of the ghost.toml at `path` (absent: the defaults).
    pub fn load(path: &Path) -> Result<Policy, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policy::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let table: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        let mut p = Policy::default();
        let Some(s) = table.get("snapshots") else { return Ok(p) };
        let origin = path.display();
        let s = s.as_table().ok_or_else(|| format!("{origin}: snapshots: must be a table"))?;
        for (key, v) in s {
            match key.as_str() {
                "hourly" => p.hourly = v.as_bool().ok_or_else(|| format!("{origin}: snapshots.hourly: must be true or false"))?,
                "keep" => p.keep = v.as_integer().filter(|n| (1..=10_000).contains(n)).ok_or_else(|| format!("{origin}: snapshots.keep: must be a whole number from 1 to 10000"))? as usize,
                "paths" | "databases" => {
                    let list = v.as_array().and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect::<Option<Vec<_>>>());
                    let list = list.filter(|l| l.iter().all(|p| absolute(p))).ok_or_else(|| format!("{origin}: snapshots.{key}: must be an array of absolute paths"))?;
                    if key == "paths" {
                        p.paths = list;
                    } else {
                        p.databases = list;
                    }
                }
                "store" => p.store = v.as_str().filter(|s| absolute(s) && *s != "/").ok_or_else(|| format!("{origin}: snapshots.store: must be an absolute path"))?.to_string(),
                other => return Err(format!("{origin}: snapshots.{other}: unknown key (hourly, keep, paths, databases, store)")),
            }
        }
        Ok(p)
    }
}

/// The roots every snapshot covers.
pub const DEFAULT_ROOTS: [&str; 3] = ["/etc/ghost", "/var/lib/ghost/etc", "/var/lib/ghost/agent/goals.json"];
pub const DEFAULT_DATABASES: [&str; 1] = ["/var/lib/ghost/memory.db"];
const STORE: &str = "/var/lib/ghost/snapshots";
/// Files this large or larger are stored in chunks of [`CHUNK`] bytes.
const CHUNKED_FROM: u64 = 4 << 20;
const CHUNK: u64 = 1 << 20;
/// Where this machine keeps a restore's journal (see [`Store::restore`]).
const RESTORE: &str = "/var/lib/ghost/.snapshot-restore";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn err(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

fn valid_id(id: &str) -> bool {
    id.len() == 26 && id.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// A planned step of a restore; each is idempotent, so a journal can be replayed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Op {
    Mkdir { path: String, mode: u32, uid: u32, gid: u32 },
    /// Rename the staged `from` (beside the target, same filesystem) over `path`.
    Put { from: String, path: String },
    Chmod { path: String, mode: u32, uid: u32, gid: u32 },
    Delete { path: String },
    /// Copy the staged database into the live one with the backup API.
    Db { from: String, path: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    id: String,
    ops: Vec<Op>,
}

pub struct Store {
    root: PathBuf,
    dir: PathBuf,
    /// The store's system path (left out of every snapshot).
    store: String,
    /// This machine's restore journal and list of staged files: never in a shared store, so
    /// that one machine's interrupted restore is never replayed on another.
    restore_dir: PathBuf,
    /// Objects written in `tmp/`, not yet named (see [`Store::put_object`]).
    staged: std::sync::Mutex<Vec<(PathBuf, String)>>,
    pub roots: Vec<String>,
    pub databases: Vec<String>,
    pub policy: Policy,
}

impl Store {
    /// The store of the system at `root` (`/` on a real system); finishes or drops a restore
    /// that a crash interrupted.
    pub fn open(root: &Path) -> Result<Store, String> {
        let policy = Policy::load(&root.join("etc/ghost/ghost.toml"))?;
        let mut roots: Vec<String> = DEFAULT_ROOTS.iter().map(|s| s.to_string()).collect();
        roots.extend(policy.paths.iter().cloned());
        let s = Store { root: root.to_path_buf(), dir: root.join(policy.store.trim_start_matches('/')), roots, databases: policy.databases.clone(), store: policy.store.clone(), restore_dir: root.join(RESTORE.trim_start_matches('/')), staged: Default::default(), policy };
        for p in ["objects", "manifests", "tmp"].iter().map(|d| s.dir.join(d)).chain([s.restore_dir.clone()]) {
            std::fs::create_dir_all(&p).map_err(err(&p))?;
        }
        if let Some(note) = s.recover()? {
            eprintln!("ghost snapshot: {note}");
        }
        Ok(s)
    }

    /// A system path under the root.
    fn host(&self, sys: &str) -> PathBuf {
        self.root.join(sys.trim_start_matches('/'))
    }

    fn object(&self, sha: &str) -> PathBuf {
        self.dir.join("objects").join(&sha[..2]).join(sha)
    }

    /// Copies `src` into the store while hashing it; returns (sha256 of the whole, size, bytes
    /// new to the store, the chunks' hashes when it was stored in chunks).
    fn store_file(&self, src: &Path) -> Result<(String, u64, u64, Option<Vec<String>>), String> {
        let len = std::fs::metadata(src).map_err(err(src))?.len();
        if len >= CHUNKED_FROM {
            return self.store_chunked(src);
        }
        let mut f = std::fs::File::open(src).map_err(err(src))?;
        let mut data = Vec::with_capacity(len as usize);
        f.read_to_end(&mut data).map_err(err(src))?;
        let (sha, new) = self.put_object(&data)?;
        Ok((sha, data.len() as u64, new, None))
    }

    fn store_chunked(&self, src: &Path) -> Result<(String, u64, u64, Option<Vec<String>>), String> {
        let mut f = std::fs::File::open(src).map_err(err(src))?;
        let mut whole = Sha256::new();
        let mut chunks = Vec::new();
        let (mut size, mut new) = (0u64, 0u64);
        let mut buf = vec![0u8; CHUNK as usize];
        loop {
            // A whole chunk (or the last, short one).
            let mut filled = 0;
            while filled < buf.len() {
                let n = f.read(&mut buf[filled..]).map_err(err(src))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            whole.update(&buf[..filled]);
            let (sha, added) = self.put_object(&buf[..filled])?;
            chunks.push(sha);
            size += filled as u64;
            new += added;
            if filled < buf.len() {
                break;
            }
        }
        Ok((hex(&whole.finalize()), size, new, Some(chunks)))
    }

    /// Stages `data` as the object named by its hash (once); returns the hash and the bytes it
    /// adds (0 when it is there or staged already). Staged objects reach `objects/` in
    /// [`Store::commit_objects`]: written without a sync each, made durable together, and only
    /// then given their names — so an object under its name is always whole, even after a crash.
    fn put_object(&self, data: &[u8]) -> Result<(String, u64), String> {
        let sha = hex(&Sha256::digest(data));
        let obj = self.object(&sha);
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        if obj.exists() || staged.iter().any(|(_, s)| *s == sha) {
            return Ok((sha, 0));
        }
        let tmp = self.dir.join("tmp").join(tmp_name("obj"));
        let written = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).and_then(|mut out| out.write_all(data)).map_err(err(&tmp));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        staged.push((tmp, sha.clone()));
        Ok((sha, data.len() as u64))
    }

    /// Makes the staged objects durable (one `syncfs`), names them, and makes the names
    /// durable (another): before a manifest can refer to them.
    fn commit_objects(&self) -> Result<(), String> {
        let staged = std::mem::take(&mut *self.staged.lock().unwrap_or_else(|p| p.into_inner()));
        if staged.is_empty() {
            return Ok(());
        }
        let syncfs = |dir: &Path| -> Result<(), String> {
            let d = std::fs::File::open(dir).map_err(err(dir))?;
            if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) } != 0 {
                return Err(format!("{}: syncfs: {}", dir.display(), std::io::Error::last_os_error()));
            }
            Ok(())
        };
        let result = (|| -> Result<(), String> {
            syncfs(&self.dir)?;
            for (tmp, sha) in &staged {
                let obj = self.object(sha);
                let parent = obj.parent().expect("objects/xx");
                std::fs::create_dir_all(parent).map_err(err(parent))?;
                std::fs::rename(tmp, &obj).map_err(err(&obj))?;
            }
            syncfs(&self.dir)
        })();
        if result.is_err() {
            for (tmp, _) in &staged {
                let _ = std::fs::remove_file(tmp);
            }
        }
        result
    }

    /// The object names an entry's content is stored under.
    fn objects_of(e: &Entry) -> Vec<&str> {
        match (&e.chunks, &e.sha256) {
            (Some(c), _) => c.iter().map(String::as_str).collect(),
            (None, Some(s)) => vec![s.as_str()],
            _ => Vec::new(),
        }
    }

    fn hash_file(path: &Path) -> Result<(String, u64), String> {
        let mut f = std::fs::File::open(path).map_err(err(path))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0;
        loop {
            let n = f.read(&mut buf).map_err(err(path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        Ok((hex(&h.finalize()), size))
    }

    /// Paths the walk leaves out: the store itself, and the databases with their companions.
    fn excluded(&self, sys: &str) -> bool {
        [self.store.as_str(), RESTORE].iter().any(|x| sys == *x || sys.starts_with(&format!("{x}/"))) || self.databases.iter().any(|d| sys == d || [format!("{d}-wal"), format!("{d}-shm"), format!("{d}-journal")].iter().any(|c| c == sys))
    }

    /// Every entry under the roots now; with `store`, files are copied into the store as they
    /// are hashed. Returns the entries and the new bytes.
    fn walk(&self, roots: &[String], store: bool) -> Result<(Vec<Entry>, u64), String> {
        let mut out = Vec::new();
        let mut new_bytes = 0;
        for r in roots {
            self.walk_one(r, store, &mut out, &mut new_bytes)?;
        }
        Ok((out, new_bytes))
    }

    fn walk_one(&self, sys: &str, store: bool, out: &mut Vec<Entry>, new_bytes: &mut u64) -> Result<(), String> {
        if self.excluded(sys) {
            return Ok(());
        }
        let host = self.host(sys);
        let md = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", host.display())),
        };
        let ft = md.file_type();
        let mut e = Entry { path: sys.to_string(), kind: Kind::File, mode: md.mode() & 0o7777, uid: md.uid(), gid: md.gid(), size: 0, sha256: None, target: None, chunks: None };
        if ft.is_dir() {
            e.kind = Kind::Dir;
            out.push(e);
            let mut names: Vec<String> = std::fs::read_dir(&host).map_err(err(&host))?.flatten().map(|d| d.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            for n in names {
                self.walk_one(&format!("{}/{n}", sys.trim_end_matches('/')), store, out, new_bytes)?;
            }
        } else if ft.is_symlink() {
            e.kind = Kind::Symlink;
            e.target = Some(std::fs::read_link(&host).map_err(err(&host))?.to_string_lossy().into_owned());
            out.push(e);
        } else if ft.is_file() {
            let (sha, size) = if store {
                let (sha, size, new, chunks) = self.store_file(&host)?;
                *new_bytes += new;
                e.chunks = chunks;
                (sha, size)
            } else {
                Self::hash_file(&host)?
            };
            e.sha256 = Some(sha);
            e.size = size;
            out.push(e);
        }
        // Sockets, pipes and devices are not state to keep.
        Ok(())
    }

    /// A consistent copy of the database at `sys` (SQLite's online backup), into the store.
    fn store_db(&self, sys: &str) -> Result<Option<(Entry, u64)>, String> {
        let host = self.host(sys);
        let md = match std::fs::metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", host.display())),
        };
        let tmp = self.dir.join("tmp").join(tmp_name("db"));
        let copy = (|| -> rusqlite::Result<()> {
            let src = rusqlite::Connection::open_with_flags(&host, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            src.busy_timeout(std::time::Duration::from_secs(10))?;
            let mut dst = rusqlite::Connection::open(&tmp)?;
            let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
            b.run_to_completion(1024, std::time::Duration::from_millis(5), None)
        })();
        if let Err(e) = copy {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("{}: a consistent copy (SQLite backup) failed: {e}", host.display()));
        }
        let stored = self.store_file(&tmp);
        remove_db_companions(&tmp);
        let _ = std::fs::remove_file(&tmp);
        let (sha, size, new, chunks) = stored?;
        Ok(Some((Entry { path: sys.to_string(), kind: Kind::Database, mode: md.mode() & 0o7777, uid: md.uid(), gid: md.gid(), size, sha256: Some(sha), target: None, chunks }, new)))
    }

    /// Takes a snapshot of the configured roots and databases now.
    pub fn create(&self, description: &str, trigger: Trigger) -> Result<Manifest, String> {
        self.create_covering(&self.roots, &self.databases, description, trigger)
    }

    /// Takes a snapshot of just `roots` and `databases` (system paths): what one risky call
    /// can touch. A restore of it puts back those and nothing else.
    pub fn create_covering(&self, roots: &[String], databases: &[String], description: &str, trigger: Trigger) -> Result<Manifest, String> {
        if let Some(bad) = roots.iter().chain(databases).find(|p| !p.starts_with('/') || p.split('/').any(|c| c == "..")) {
            return Err(format!("{bad:?}: a snapshot covers absolute paths only"));
        }
        let made = self.create_unchecked(roots, databases, description, trigger);
        if made.is_err() {
            // What was staged for it goes with it.
            for (tmp, _) in std::mem::take(&mut *self.staged.lock().unwrap_or_else(|p| p.into_inner())) {
                let _ = std::fs::remove_file(tmp);
            }
        }
        made
    }

    fn create_unchecked(&self, roots: &[String], databases: &[String], description: &str, trigger: Trigger) -> Result<Manifest, String> {
        let (mut entries, mut new_bytes) = self.walk(roots, true)?;
        for d in databases {
            if let Some((e, new)) = self.store_db(d)? {
                entries.push(e);
                new_bytes += new;
            }
        }
        let total_bytes = entries.iter().map(|e| e.size).sum();
        let m = Manifest {
            v: 1,
            id: crate::ulid(),
            description: description.to_string(),
            trigger,
            created_ms: now_ms(),
            roots: roots.to_vec(),
            databases: databases.to_vec(),
            entries,
            total_bytes,
            new_bytes,
        };
        self.commit_objects()?;
        let path = self.dir.join("manifests").join(format!("{}.json", m.id));
        let text = serde_json::to_vec_pretty(&m).map_err(|e| e.to_string())?;
        write_atomic(&path, &text, 0o600).map_err(err(&path))?;
        Ok(m)
    }

    /// Every snapshot, oldest first.
    pub fn list(&self) -> Result<Vec<Manifest>, String> {
        let dir = self.dir.join("manifests");
        let mut ids: Vec<String> = std::fs::read_dir(&dir).map_err(err(&dir))?.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string)).filter(|i| valid_id(i)).collect();
        ids.sort();
        ids.iter().map(|i| self.load(i)).collect()
    }

    pub fn load(&self, id: &str) -> Result<Manifest, String> {
        if !valid_id(id) {
            return Err(format!("{id:?} is not a snapshot id (26 characters, as `ghostctl snapshot list` shows)"));
        }
        let path = self.dir.join("manifests").join(format!("{id}.json"));
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(format!("no snapshot {id} (see `ghostctl snapshot list`)")),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        serde_json::from_slice(&text).map_err(|e| format!("{}: damaged manifest: {e}", path.display()))
    }

    /// The current state's entries (hashed, not stored) under the configured roots, databases
    /// included as they are now.
    pub fn scan(&self) -> Result<Vec<Entry>, String> {
        self.scan_covering(&self.roots, &self.databases)
    }

    pub fn scan_covering(&self, roots: &[String], databases: &[String]) -> Result<Vec<Entry>, String> {
        let (mut entries, _) = self.walk(roots, false)?;
        for d in databases {
            let host = self.host(d);
            if let Ok(md) = std::fs::metadata(&host) {
                entries.push(Entry { path: d.clone(), kind: Kind::Database, mode: md.mode() & 0o7777, uid: md.uid(), gid: md.gid(), size: md.len(), sha256: None, target: None, chunks: None });
            }
        }
        Ok(entries)
    }

    /// What changed from `a` to `b`. Databases count as changed when two snapshots' copies
    /// differ; against the current state only their presence is compared.
    pub fn diff(a: &[Entry], b: &[Entry]) -> Diff {
        let am: BTreeMap<&str, &Entry> = a.iter().map(|e| (e.path.as_str(), e)).collect();
        let bm: BTreeMap<&str, &Entry> = b.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut d = Diff::default();
        for (p, e) in &bm {
            match am.get(p) {
                None => d.added.push(p.to_string()),
                // A live database is not copied to compare: only two snapshots' copies are.
                Some(old) if e.kind == Kind::Database && (old.sha256.is_none() || e.sha256.is_none()) => {}
                Some(old) if !old.same(e) => d.changed.push(p.to_string()),
                _ => {}
            }
        }
        d.removed = am.keys().filter(|p| !bm.contains_key(*p)).map(|p| p.to_string()).collect();
        d
    }

    /// Checks that every object of `m` is there with the bytes its hash names.
    pub fn check(&self, m: &Manifest) -> Result<(), String> {
        for e in &m.entries {
            for sha in Self::objects_of(e) {
                let obj = self.object(sha);
                let (got, _) = Self::hash_file(&obj).map_err(|why| format!("snapshot {} is damaged: the content of {} is missing ({why})", m.id, e.path))?;
                if got != sha {
                    return Err(format!("snapshot {} is damaged: the content of {} does not match its hash ({})", m.id, e.path, obj.display()));
                }
            }
        }
        Ok(())
    }

    /// Restores snapshot `id`: checks it, snapshots the current state, stages, commits the
    /// journal, applies it. Returns the restored manifest and the snapshot taken before.
    pub fn restore(&self, id: &str) -> Result<(Manifest, Manifest, usize), String> {
        let m = self.load(id)?;
        self.check(&m)?;
        // The same ground as the snapshot, no more: a restore never touches what it did not cover.
        let before = self.create_covering(&m.roots, &m.databases, &format!("before restoring {id}"), Trigger::BeforeRestore)?;
        let now = self.scan_covering(&m.roots, &m.databases)?;
        let now_map: BTreeMap<&str, &Entry> = now.iter().map(|e| (e.path.as_str(), e)).collect();
        let want: BTreeMap<&str, &Entry> = m.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut staged: Vec<String> = Vec::new();
        let mut ops = Vec::new();
        let stage_list = self.restore_dir.join("staged.json");
        let mut n = 0usize;
        let mut stage = |e: &Entry, staged: &mut Vec<String>| -> Result<String, String> {
            let target = self.host(&e.path);
            let parent = target.parent().ok_or_else(|| format!("{}: no parent directory", e.path))?;
            let name = target.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            n += 1;
            let sys_parent = Path::new(&e.path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            let from_sys = format!("{}/.{name}.ghost-restore-{n}", sys_parent.trim_end_matches('/'));
            staged.push(from_sys.clone());
            // Record what is about to be staged first, so a crash before the commit can clean it.
            write_atomic(&stage_list, &serde_json::to_vec(&*staged).unwrap_or_default(), 0o600).map_err(err(&stage_list))?;
            let from = self.host(&from_sys);
            std::fs::create_dir_all(parent).map_err(err(parent))?;
            let _ = std::fs::remove_file(&from);
            match e.kind {
                Kind::Symlink => std::os::unix::fs::symlink(e.target.as_deref().unwrap_or(""), &from).map_err(err(&from))?,
                _ => {
                    // The content, from its object or its chunks in order.
                    let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&from).map_err(err(&from))?;
                    for sha in Self::objects_of(e) {
                        let obj = self.object(sha);
                        let mut part = std::fs::File::open(&obj).map_err(err(&obj))?;
                        std::io::copy(&mut part, &mut out).map_err(err(&from))?;
                    }
                    drop(out);
                    let f = std::fs::OpenOptions::new().write(true).open(&from).map_err(err(&from))?;
                    f.set_permissions(std::fs::Permissions::from_mode(e.mode)).map_err(err(&from))?;
                    let _ = std::os::unix::fs::fchown(&f, Some(e.uid), Some(e.gid));
                    f.sync_all().map_err(err(&from))?;
                }
            }
            Ok(from_sys)
        };
        // Directories first (parents before children: entries are in walk order).
        for e in m.entries.iter().filter(|e| e.kind == Kind::Dir) {
            match now_map.get(e.path.as_str()) {
                Some(cur) if cur.kind == Kind::Dir => {
                    if !cur.same(e) {
                        ops.push(Op::Chmod { path: e.path.clone(), mode: e.mode, uid: e.uid, gid: e.gid });
                    }
                }
                Some(_) => {
                    ops.push(Op::Delete { path: e.path.clone() });
                    ops.push(Op::Mkdir { path: e.path.clone(), mode: e.mode, uid: e.uid, gid: e.gid });
                }
                None => ops.push(Op::Mkdir { path: e.path.clone(), mode: e.mode, uid: e.uid, gid: e.gid }),
            }
        }
        for e in m.entries.iter().filter(|e| matches!(e.kind, Kind::File | Kind::Symlink)) {
            let cur = now_map.get(e.path.as_str());
            if cur.is_some_and(|c| c.same(e)) {
                continue;
            }
            if cur.is_some_and(|c| c.kind == Kind::Dir) {
                ops.push(Op::Delete { path: e.path.clone() });
            }
            let from = stage(e, &mut staged)?;
            ops.push(Op::Put { from, path: e.path.clone() });
        }
        for e in m.entries.iter().filter(|e| e.kind == Kind::Database) {
            let from = stage(e, &mut staged)?;
            ops.push(Op::Db { from, path: e.path.clone() });
        }
        // What is there now and was not then goes, deepest first.
        let mut gone: Vec<&str> = now.iter().filter(|e| e.kind != Kind::Database && !want.contains_key(e.path.as_str())).map(|e| e.path.as_str()).collect();
        gone.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        ops.extend(gone.into_iter().map(|p| Op::Delete { path: p.to_string() }));
        let count = ops.len();
        if std::env::var("GHOST_SNAPSHOT_CRASH_AFTER").as_deref() == Ok("staged") {
            // Fault injection for the tests: a kill -9 after staging, before the commit.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        // The commit point.
        let journal = Journal { id: m.id.clone(), ops };
        let jpath = self.restore_dir.join("journal.json");
        write_atomic(&jpath, &serde_json::to_vec(&journal).map_err(|e| e.to_string())?, 0o600).map_err(err(&jpath))?;
        self.apply(&journal)?;
        Ok((m, before, count))
    }

    /// Runs the journal's operations (again: each is idempotent), then drops it and the list
    /// of staged files.
    fn apply(&self, j: &Journal) -> Result<(), String> {
        let crash_after: Option<usize> = std::env::var("GHOST_SNAPSHOT_CRASH_AFTER").ok().and_then(|v| v.parse().ok());
        for (i, op) in j.ops.iter().enumerate() {
            if crash_after == Some(i) {
                // Fault injection for the tests: a kill -9 in the middle of a restore.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            self.apply_one(op)?;
        }
        let touched: BTreeSet<PathBuf> = j.ops.iter().filter_map(|op| match op {
            Op::Put { path, .. } | Op::Delete { path } | Op::Mkdir { path, .. } => self.host(path).parent().map(Path::to_path_buf),
            _ => None,
        }).collect();
        for d in touched {
            let _ = sync_dir(&d);
        }
        for f in ["journal.json", "staged.json"] {
            let p = self.restore_dir.join(f);
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(format!("{}: {e}", p.display()));
                }
            }
        }
        sync_dir(&self.restore_dir).map_err(err(&self.restore_dir))
    }

    fn apply_one(&self, op: &Op) -> Result<(), String> {
        match op {
            Op::Mkdir { path, mode, uid, gid } => {
                let p = self.host(path);
                std::fs::create_dir_all(&p).map_err(err(&p))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).map_err(err(&p))?;
                let _ = std::os::unix::fs::chown(&p, Some(*uid), Some(*gid));
            }
            Op::Chmod { path, mode, uid, gid } => {
                let p = self.host(path);
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).map_err(err(&p))?;
                let _ = std::os::unix::fs::chown(&p, Some(*uid), Some(*gid));
            }
            Op::Put { from, path } => {
                let (from, to) = (self.host(from), self.host(path));
                // Replayed after a crash: the rename already happened when `from` is gone.
                if std::fs::symlink_metadata(&from).is_ok() {
                    std::fs::rename(&from, &to).map_err(err(&to))?;
                }
            }
            Op::Delete { path } => {
                let p = self.host(path);
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p).map_err(err(&p))?,
                    Ok(_) => std::fs::remove_file(&p).map_err(err(&p))?,
                    Err(_) => {}
                }
            }
            Op::Db { from, path } => {
                let (from, to) = (self.host(from), self.host(path));
                if std::fs::metadata(&from).is_ok() {
                    let copy = (|| -> rusqlite::Result<()> {
                        let src = rusqlite::Connection::open_with_flags(&from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                        let mut dst = rusqlite::Connection::open(&to)?;
                        dst.busy_timeout(std::time::Duration::from_secs(10))?;
                        let b = rusqlite::backup::Backup::new(&src, &mut dst)?;
                        b.run_to_completion(1024, std::time::Duration::from_millis(5), None)
                    })();
                    copy.map_err(|e| format!("{}: restoring through SQLite's backup: {e}", to.display()))?;
                    remove_db_companions(&from);
                    std::fs::remove_file(&from).map_err(err(&from))?;
                }
            }
        }
        Ok(())
    }

    /// After a crash: a committed restore is finished; staged files of one that never committed
    /// are removed. Returns what it did, if anything.
    pub fn recover(&self) -> Result<Option<String>, String> {
        let jpath = self.restore_dir.join("journal.json");
        if let Ok(text) = std::fs::read(&jpath) {
            let j: Journal = serde_json::from_slice(&text).map_err(|e| format!("{}: damaged restore journal: {e}", jpath.display()))?;
            self.apply(&j)?;
            return Ok(Some(format!("finished the restore of {} that was interrupted ({} steps replayed)", j.id, j.ops.len())));
        }
        let spath = self.restore_dir.join("staged.json");
        if let Ok(text) = std::fs::read(&spath) {
            let staged: Vec<String> = serde_json::from_slice(&text).unwrap_or_default();
            for s in &staged {
                remove_db_companions(&self.host(s));
                let _ = std::fs::remove_file(self.host(s));
            }
            std::fs::remove_file(&spath).map_err(err(&spath))?;
            return Ok(Some(format!("dropped a restore that was interrupted before it began changing anything ({} staged files removed)", staged.len())));
        }
        Ok(None)
    }

    /// Keeps the newest `policy.keep` snapshots of each automatic trigger (manual ones stay),
    /// then removes the objects no snapshot names. Returns (snapshots removed, objects removed).
    pub fn prune(&self) -> Result<(usize, usize), String> {
        let all = self.list()?;
        let mut removed = 0;
        for t in [Trigger::Hourly, Trigger::BeforeAction, Trigger::BeforeRestore] {
            let of: Vec<&Manifest> = all.iter().filter(|m| m.trigger == t).collect();
            for m in of.iter().take(of.len().saturating_sub(self.policy.keep)) {
                let p = self.dir.join("manifests").join(format!("{}.json", m.id));
                std::fs::remove_file(&p).map_err(err(&p))?;
                removed += 1;
            }
        }
        let live: HashSet<String> = self.list()?.iter().flat_map(|m| m.entries.iter().flat_map(|e| Self::objects_of(e).into_iter().map(str::to_string).collect::<Vec<_>>())).collect();
        let mut objects = 0;
        let odir = self.dir.join("objects");
        for sub in std::fs::read_dir(&odir).map_err(err(&odir))?.flatten() {
            for o in std::fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                if !live.contains(&o.file_name().to_string_lossy().into_owned()) {
                    std::fs::remove_file(o.path()).map_err(err(&o.path()))?;
                    objects += 1;
                }
            }
        }
        Ok((removed, objects))
    }
}

/// A copy of a WAL-mode database keeps its mode: opening it leaves `-wal` and `-shm` beside it.
fn remove_db_companions(db: &Path) {
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// A temporary name no other thread or process picks: pid, a per-process counter, random bits.
fn tmp_name(kind: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut r = [0u8; 8];
    let _ = getrandom::fill(&mut r);
    format!("{kind}.{}.{n}.{:016x}", std::process::id(), u64::from_le_bytes(r))
}

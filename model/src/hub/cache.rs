//! The hub's cache layout under /var/lib/ghost/models, the same one `huggingface_hub` and
//! hf-hub write, so their tools can read ours:
//!
//! ```text
//! models--ORG--NAME/
//!   blobs/ETAG                 file contents, named by the hub's ETag (sha256 for LFS files,
//!                              the git blob sha1 otherwise); only verified files get here
//!   blobs/ETAG.incomplete      a download in progress; resumed from its length
//!   refs/REVISION              the commit a branch or tag pointed to when it was pulled
//!   snapshots/COMMIT/FILE  ->  ../../blobs/ETAG (relative symlink)
//! ```

use super::error::PullError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The models directory (`GHOST_ROOT/var/lib/ghost/models`).
#[derive(Debug, Clone)]
pub struct ModelCache {
    root: PathBuf,
}

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    pub repo: String,
    dir: PathBuf,
}

impl ModelCache {
    pub fn new(root: impl Into<PathBuf>) -> ModelCache {
        ModelCache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn repo(&self, repo: &str) -> RepoCache {
        RepoCache { repo: repo.to_string(), dir: self.root.join(repo_folder(repo)) }
    }

    /// Every repository folder in the cache, sorted by repo id.
    pub fn repos(&self) -> Vec<RepoCache> {
        let Ok(rd) = std::fs::read_dir(&self.root) else { return Vec::new() };
        let mut out: Vec<RepoCache> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let rest = name.strip_prefix("models--")?;
                let (org, model) = rest.split_once("--")?;
                Some(RepoCache { repo: format!("{org}/{model}"), dir: e.path() })
            })
            .collect();
        out.sort_by(|a, b| a.repo.cmp(&b.repo));
        out
    }

    /// The file of a pulled model, if it is in place: what the loaders open.
    pub fn snapshot_file(&self, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
        let r = self.repo(repo);
        let commit = if is_commit_hash(revision) { revision.to_string() } else { r.read_ref(revision)? };
        let p = r.snapshot_file(&commit, file);
        p.is_file().then_some(p)
    }
}

impl RepoCache {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs")
    }
    pub fn blob(&self, etag: &str) -> PathBuf {
        self.blobs_dir().join(etag)
    }
    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.blobs_dir().join(format!("{etag}.incomplete"))
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }
    pub fn snapshot_file(&self, commit: &str, file: &str) -> PathBuf {
        self.snapshots_dir().join(commit).join(file)
    }
    pub fn ref_file(&self, revision: &str) -> PathBuf {
        self.dir.join("refs").join(revision)
    }

    pub fn read_ref(&self, revision: &str) -> Option<String> {
        let s = std::fs::read_to_string(self.ref_file(revision)).ok()?;
        let s = s.trim();
        is_commit_hash(s).then(|| s.to_string())
    }

    /// Points `refs/REVISION` at `commit` (write to a temporary name, then rename).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), PullError> {
        let path = self.ref_file(revision);
        create_parent(&path)?;
        let tmp = tmp_name(&path);
        let mut f = std::fs::File::create(&tmp).map_err(|e| PullError::io(&tmp, e))?;
        f.write_all(commit.as_bytes()).map_err(|e| PullError::io(&tmp, e))?;
        f.sync_all().map_err(|e| PullError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| PullError::io(&path, e))
    }

    /// Makes `snapshots/COMMIT/FILE` a relative symlink to `blobs/ETAG`, replacing any
    /// previous link atomically (symlink to a temporary name, then rename over).
    pub fn link_snapshot(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf, PullError> {
        let link = self.snapshot_file(commit, file);
        create_parent(&link)?;
        let target = snapshot_link_target(file, etag);
        let tmp = tmp_name(&link);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| PullError::io(&tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| PullError::io(&link, e))?;
        Ok(link)
    }

    /// `(revision, commit)` for every ref.
    pub fn refs(&self) -> Vec<(String, String)> {
        let base = self.dir.join("refs");
        let mut out = Vec::new();
        walk_files(&base, &mut |p| {
            if let (Ok(rel), Ok(s)) = (p.strip_prefix(&base), std::fs::read_to_string(p)) {
                if !rel.to_string_lossy().contains(".tmp.") {
                    out.push((rel.to_string_lossy().into_owned(), s.trim().to_string()));
                }
            }
        });
        out.sort();
        out
    }

    /// Commits that have a snapshot folder.
    pub fn snapshot_commits(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.snapshots_dir()) else { return Vec::new() };
        let mut v: Vec<String> = rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
        v.sort();
        v
    }

    /// `(file, link target's blob name)` for every file of a snapshot, sorted; a regular file
    /// where a link belongs has no blob name.
    pub fn snapshot_files(&self, commit: &str) -> Vec<(String, Option<String>)> {
        let base = self.snapshots_dir().join(commit);
        let mut out = Vec::new();
        walk_files(&base, &mut |p| {
            let Ok(rel) = p.strip_prefix(&base) else { return };
            let rel = rel.to_string_lossy().into_owned();
            if rel.contains(".tmp.") {
                return;
            }
            let blob = std::fs::read_link(p).ok().and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
            out.push((rel, blob));
        });
        out.sort();
        out
    }

    /// `(etag, bytes so far)` of downloads in progress.
    pub fn partials(&self) -> Vec<(String, u64)> {
        let Ok(rd) = std::fs::read_dir(self.blobs_dir()) else { return Vec::new() };
        let mut v: Vec<(String, u64)> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let etag = name.strip_suffix(".incomplete")?.to_string();
                Some((etag, e.metadata().ok()?.len()))
            })
            .collect();
        v.sort();
        v
    }
}

/// `ORG/NAME` → `models--ORG--NAME`.
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// `../../blobs/ETAG`, with one more `..` per directory level of `file`.
pub fn snapshot_link_target(file: &str, etag: &str) -> PathBuf {
    let depth = file.split('/').count() + 1;
    let mut p = PathBuf::new();
    for _ in 0..depth {
        p.push("..");
    }
    p.join("blobs").join(etag)
}

pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `ORG/NAME` with the hub's characters only: what makes a safe folder name.
pub fn validate_repo_id(repo: &str) -> Result<(), String> {
    let ok_part = |p: &str| {
        !p.is_empty() && p.len() <= 96 && p != "." && p != ".." && !p.contains("--") && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match repo.split_once('/') {
        Some((org, name)) if ok_part(org) && ok_part(name) => Ok(()),
        _ => Err(format!("{repo:?} is not a hub repo id of the form ORG/NAME")),
    }
}

/// A revision becomes a path under refs/: no empty, `.` or `..` parts.
pub fn validate_revision(rev: &str) -> Result<(), String> {
    if rev.is_empty() || rev.starts_with('/') || rev.split('/').any(|p| p.is_empty() || p == "." || p == "..") || rev.contains(['\0', '\\']) {
        return Err(format!("{rev:?} is not a usable revision name"));
    }
    Ok(())
}

/// A repo file path becomes a path under snapshots/: relative, no `.`/`..`/empty parts, so
/// a hub listing cannot make us write outside the cache.
pub fn validate_file_path(file: &str) -> Result<(), String> {
    if file.is_empty() || file.starts_with('/') || file.split('/').any(|p| p.is_empty() || p == "." || p == "..") || file.contains(['\0', '\\']) {
        return Err(format!("{file:?} is not a relative path inside the repo"));
    }
    Ok(())
}

fn create_parent(path: &Path) -> Result<(), PullError> {
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| PullError::io(dir, e)),
        None => Ok(()),
    }
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".tmp.{}", std::process::id()));
    PathBuf::from(s)
}

fn walk_files(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(&p, f),
            Ok(_) => f(&p),
            Err(_) => {}
        }
    }
}

/// fsync a directory, so a rename or new link in it survives a power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), PullError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| PullError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_cache_layout_paths() {
        let c = ModelCache::new("/var/lib/ghost/models");
        let r = c.repo("Qwen/Qwen2.5-0.5B");
        assert_eq!(r.dir(), Path::new("/var/lib/ghost/models/models--Qwen--Qwen2.5-0.5B"));
        assert_eq!(r.blob("abc"), Path::new("/var/lib/ghost/models/models--Qwen--Qwen2.5-0.5B/blobs/abc"));
        assert_eq!(r.incomplete("abc"), Path::new("/var/lib/ghost/models/models--Qwen--Qwen2.5-0.5B/blobs/abc.incomplete"));
        assert_eq!(r.ref_file("main"), Path::new("/var/lib/ghost/models/models--Qwen--Qwen2.5-0.5B/refs/main"));
        assert_eq!(r.snapshot_file("c0ffee", "sub/x.json"), Path::new("/var/lib/ghost/models/models--Qwen--Qwen2.5-0.5B/snapshots/c0ffee/sub/x.json"));
        assert_eq!(snapshot_link_target("config.json", "e1"), Path::new("../../blobs/e1"));
        assert_eq!(snapshot_link_target("onnx/model.onnx", "e1"), Path::new("../../../blobs/e1"));
    }

    #[test]
    fn hub_cache_links_resolve_and_list() {
        let dir = std::env::temp_dir().join(format!("ghost-hub-cache-{}", std::process::id()));
        let c = ModelCache::new(&dir);
        let r = c.repo("org/m");
        std::fs::create_dir_all(r.blobs_dir()).unwrap();
        std::fs::write(r.blob("e1"), b"one").unwrap();
        std::fs::write(r.blob("e2"), b"two").unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        r.link_snapshot(commit, "a.json", "e1").unwrap();
        r.link_snapshot(commit, "deep/b.bin", "e2").unwrap();
        r.link_snapshot(commit, "a.json", "e2").unwrap(); // replaced in place
        r.write_ref("main", commit).unwrap();
        assert_eq!(std::fs::read(r.snapshot_file(commit, "deep/b.bin")).unwrap(), b"two");
        assert_eq!(std::fs::read(r.snapshot_file(commit, "a.json")).unwrap(), b"two");
        assert_eq!(c.snapshot_file("org/m", "main", "deep/b.bin"), Some(r.snapshot_file(commit, "deep/b.bin")));
        assert_eq!(c.snapshot_file("org/m", "main", "missing"), None);
        assert_eq!(r.refs(), vec![("main".to_string(), commit.to_string())]);
        assert_eq!(r.snapshot_files(commit), vec![("a.json".into(), Some("e2".into())), ("deep/b.bin".into(), Some("e2".into()))]);
        assert_eq!(c.repos().len(), 1);
        assert_eq!(c.repos()[0].repo, "org/m");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hub_cache_rejects_escaping_names() {
        for bad in ["../x", "a/../../x", "/etc/passwd", "a//b", "", "a/./b"] {
            assert!(validate_file_path(bad).is_err(), "{bad}");
        }
        assert!(validate_file_path("onnx/model.onnx").is_ok());
        for bad in ["a", "a/b/c", "../b", "a/..", "a--b/c", "a/ b"] {
            assert!(validate_repo_id(bad).is_err(), "{bad}");
        }
        assert!(validate_repo_id("Qwen/Qwen2.5-0.5B-Instruct_GGUF").is_ok());
        assert!(validate_revision("refs/pr/1").is_ok());
        assert!(validate_revision("../main").is_err());
    }
}

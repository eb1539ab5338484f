//! Pulling one model: resolve the revision to a commit (refusing a pinned one that moved),
//! read every file's metadata, check free space, then fetch, verify and link each file, and
//! point the ref at the commit last — so a ref only ever names a complete snapshot.

use super::cache::{is_commit_hash, sync_dir, validate_file_path, ModelCache, RepoCache};
use super::client::{FileMeta, HubClient};
use super::download::{fetch_blob, BlobJob};
use super::error::PullError;
use super::hashing::{hash_file, Expected};
use super::ledger::{Ledger, Verified};
use super::manifest::ModelSpec;
use super::progress::Progress;
use super::retry::Backoff;
use super::space;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub backoff: Backoff,
    /// Seconds since the epoch, recorded in the ledger.
    pub now_unix: u64,
}

#[derive(Debug, Clone)]
pub struct PulledFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// The snapshot path loaders open.
    pub path: PathBuf,
    /// False when the blob was already in place.
    pub downloaded: bool,
}

#[derive(Debug, Clone)]
pub struct PullReport {
    pub repo: String,
    pub revision: String,
    pub commit: String,
    pub files: Vec<PulledFile>,
}

struct Planned {
    name: String,
    meta: FileMeta,
    expected: Expected,
}

pub fn pull(client: &HubClient, cache: &ModelCache, spec: &ModelSpec, opts: &PullOptions, progress: &mut dyn Progress) -> Result<PullReport, PullError> {
    let repo = cache.repo(&spec.repo);
    let rev = &spec.revision;
    let b = &opts.backoff;
    let sleep = std::thread::sleep;

    let info = b.run(&format!("{}@{rev}", spec.repo), progress, |_| client.repo_info(&spec.repo, rev), sleep)?;
    let commit = info.commit.clone();
    let pinned = spec.commit.as_ref().map(|c| (c, "model.toml")).or(is_commit_hash(rev).then_some((rev, "the revision itself")));
    if let Some((pin, by)) = pinned {
        if *pin != commit {
            return Err(PullError::RevisionMoved { repo: spec.repo.clone(), revision: rev.clone(), pinned_by: by.to_string(), pinned: pin.clone(), actual: commit });
        }
    }
    if let Some(old) = repo.read_ref(rev).filter(|old| *old != commit) {
        progress.note(&format!("{}: {rev} moved from {old} to {commit} since the last pull; fetching {commit}", spec.repo));
    }

    let names: Vec<String> = if spec.files.is_empty() { info.files.clone() } else { spec.files.iter().map(|f| f.name.clone()).collect() };
    for n in &names {
        if !info.files.contains(n) {
            return Err(PullError::FileNotFound { repo: spec.repo.clone(), revision: rev.clone(), file: n.clone(), endpoint: client.endpoint().to_string() });
        }
        validate_file_path(n).map_err(|m| PullError::Protocol { url: client.endpoint().to_string(), message: format!("{}: the hub lists {m}", spec.repo) })?;
    }

    let mut planned = Vec::with_capacity(names.len());
    for name in &names {
        let meta = b.run(&format!("{}: {name}", spec.repo), progress, |_| client.file_meta(&spec.repo, &commit, name), sleep)?;
        if let Some(c) = meta.commit.as_ref().filter(|c| **c != commit) {
            return Err(PullError::RevisionMoved { repo: spec.repo.clone(), revision: rev.clone(), pinned_by: "the hub's revision info a moment earlier".into(), pinned: commit, actual: c.clone() });
        }
        let manifest_sha = spec.files.iter().find(|f| f.name == *name).and_then(|f| f.sha256.clone());
        if let (Some(m), Some(h)) = (&manifest_sha, &meta.sha256) {
            if m != h {
                return Err(PullError::ManifestDisagrees { repo: spec.repo.clone(), file: name.clone(), manifest: m.clone(), hub: h.clone() });
            }
        }
        let git_sha1 = if meta.sha256.is_none() { Expected::from_blob_name(&meta.etag).git_sha1 } else { None };
        let expected = Expected { sha256: manifest_sha.or(meta.sha256.clone()), git_sha1 };
        if expected.is_empty() {
            return Err(PullError::Protocol {
                url: client.endpoint().to_string(),
                message: format!("{}: {name}: the hub gives no hash (ETag {:?}) and model.toml has no sha256 for it; an unverifiable file is not installed", spec.repo, meta.etag),
            });
        }
        planned.push(Planned { name: name.clone(), meta, expected });
    }

    let blobs = repo.blobs_dir();
    std::fs::create_dir_all(&blobs).map_err(|e| PullError::io(&blobs, e))?;
    let items: Vec<space::SpaceItem> = planned
        .iter()
        .map(|p| space::SpaceItem {
            size: p.meta.size,
            in_place: repo.blob(&p.meta.etag).is_file(),
            partial: std::fs::metadata(repo.incomplete(&p.meta.etag)).map(|m| m.len().min(p.meta.size)).unwrap_or(0),
        })
        .collect();
    // Two names may share one blob; counting it twice errs on the safe side.
    space::check(&blobs, space::bytes_needed(&items), space::free_bytes(&blobs)?)?;

    let mut files = Vec::with_capacity(planned.len());
    for p in &planned {
        let job = BlobJob { repo: &repo, file: &p.name, commit: &commit, etag: &p.meta.etag, size: p.meta.size, expected: &p.expected };
        let (sha256, downloaded) = if repo.blob(&p.meta.etag).is_file() {
            (check_in_place(&repo, &job, opts.now_unix)?, false)
        } else {
            let d = b.run(&format!("{}: {}", spec.repo, p.name), progress, |pr| fetch_blob(client, &job, pr), sleep)?;
            Ledger::record(&repo, &p.meta.etag, Verified { sha256: d.sha256.clone(), size: p.meta.size, verified_unix: opts.now_unix })?;
            (d.sha256, true)
        };
        let path = repo.link_snapshot(&commit, &p.name, &p.meta.etag)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        progress.finished(&p.name, p.meta.size);
        files.push(PulledFile { name: p.name.clone(), size: p.meta.size, sha256, path, downloaded });
    }
    if !is_commit_hash(rev) {
        repo.write_ref(rev, &commit)?;
    }
    Ok(PullReport { repo: spec.repo.clone(), revision: rev.clone(), commit, files })
}

/// A blob already in place is trusted only if the ledger vouches for it with the expected
/// hash; otherwise it is hashed now (a blob some other tool wrote), and a bad one removed.
fn check_in_place(repo: &RepoCache, job: &BlobJob, now_unix: u64) -> Result<String, PullError> {
    let ledger = Ledger::load(repo);
    if let Some(v) = ledger.blobs.get(job.etag) {
        if job.expected.sha256.as_ref().is_none_or(|s| *s == v.sha256) && v.size == job.size {
            return Ok(v.sha256.clone());
        }
    }
    let blob = repo.blob(job.etag);
    let d = hash_file(&blob, job.expected.git_sha1.is_some()).map_err(|e| PullError::io(&blob, e))?;
    if let Some((algo, expected, actual)) = job.expected.mismatch(&d) {
        let _ = std::fs::remove_file(&blob);
        return Err(PullError::HashMismatch { repo: repo.repo.clone(), file: job.file.to_string(), algo, expected, actual });
    }
    Ledger::record(repo, job.etag, Verified { sha256: d.sha256.clone(), size: job.size, verified_unix: now_unix })?;
    Ok(d.sha256)
}

/// For callers without a clock of their own.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

//! What the cache holds, for `ghost model list`: every snapshot's files with size, hash and
//! whether it was verified, and downloads still in progress.

use super::cache::{ModelCache, RepoCache};
use super::hashing::Expected;
use super::ledger::Ledger;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Hashed and matched, by a pull or a verify, and unchanged in size since.
    Verified,
    /// In place but never checked by us (another tool put it there), or changed since.
    Unverified,
    /// The snapshot link points at no blob.
    Missing,
}

#[derive(Debug, Clone, Serialize)]
pub struct CachedFile {
    pub name: String,
    pub size: Option<u64>,
    pub blob: Option<String>,
    /// `sha256:HEX` or `git-sha1:HEX`: what `verify` checks it against.
    pub hash: Option<String>,
    pub state: FileState,
}

#[derive(Debug, Clone, Serialize)]
pub struct CachedSnapshot {
    pub commit: String,
    /// Branches and tags that point here.
    pub refs: Vec<String>,
    pub files: Vec<CachedFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Partial {
    pub blob: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CachedRepo {
    pub repo: String,
    pub snapshots: Vec<CachedSnapshot>,
    pub partial: Vec<Partial>,
}

pub fn list(cache: &ModelCache) -> Vec<CachedRepo> {
    cache.repos().iter().map(list_repo).collect()
}

pub fn list_repo(repo: &RepoCache) -> CachedRepo {
    let ledger = Ledger::load(repo);
    let refs = repo.refs();
    let snapshots = repo
        .snapshot_commits()
        .into_iter()
        .map(|commit| {
            let files = repo
                .snapshot_files(&commit)
                .into_iter()
                .map(|(name, blob)| {
                    let size = blob.as_ref().and_then(|b| std::fs::metadata(repo.blob(b)).ok()).map(|m| m.len());
                    let entry = blob.as_ref().and_then(|b| ledger.blobs.get(b));
                    let state = match (size, entry) {
                        (None, _) => FileState::Missing,
                        (Some(s), Some(v)) if v.size == s => FileState::Verified,
                        _ => FileState::Unverified,
                    };
                    let hash = match entry {
                        Some(v) => Some(format!("sha256:{}", v.sha256)),
                        None => blob.as_deref().map(Expected::from_blob_name).and_then(|e| match (e.sha256, e.git_sha1) {
                            (Some(s), _) => Some(format!("sha256:{s}")),
                            (None, Some(g)) => Some(format!("git-sha1:{g}")),
                            _ => None,
                        }),
                    };
                    CachedFile { name, size, blob, hash, state }
                })
                .collect();
            let refs = refs.iter().filter(|(_, c)| *c == commit).map(|(r, _)| r.clone()).collect();
            CachedSnapshot { commit, refs, files }
        })
        .collect();
    let partial = repo.partials().into_iter().map(|(blob, bytes)| Partial { blob, bytes }).collect();
    CachedRepo { repo: repo.repo.clone(), snapshots, partial }
}

//! What can go wrong while pulling from a hub, each case naming its repo, file, URL or path,
//! and whether trying again later could help (see [`PullError::is_transient`]).

use super::progress::format_bytes;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{repo}: repository not found on {endpoint}")]
    RepoNotFound { repo: String, endpoint: String },

    #[error("{repo}: revision {revision:?} not found on {endpoint}")]
    RevisionNotFound { repo: String, revision: String, endpoint: String },

    #[error("{repo}@{revision}: file {file:?} not found on {endpoint}")]
    FileNotFound { repo: String, revision: String, file: String, endpoint: String },

    #[error("{repo}: revision {revision:?} moved: {pinned_by} pins commit {pinned}, the hub now answers {actual}; pin the new commit or ask for {pinned} itself")]
    RevisionMoved { repo: String, revision: String, pinned_by: String, pinned: String, actual: String },

    #[error("{repo}: {file}: hash mismatch: expected {algo} {expected}, got {actual}; the file was not moved into place")]
    HashMismatch { repo: String, file: String, algo: &'static str, expected: String, actual: String },

    #[error("{repo}: {file}: model.toml expects sha256 {manifest}, but the hub announces {hub}")]
    ManifestDisagrees { repo: String, file: String, manifest: String, hub: String },

    #[error("not enough free space on {dir}: this pull needs {} more, {} is free", format_bytes(*need), format_bytes(*free))]
    NoSpace { dir: PathBuf, need: u64, free: u64 },

    #[error("{repo}: {file}: disk full while writing {path} ({written} of {total} bytes); the partial file was removed to give the space back")]
    DiskFull { repo: String, file: String, path: PathBuf, written: u64, total: u64 },

    #[error("{url}: HTTP {status}{detail}")]
    Http { url: String, status: u16, detail: String },

    #[error("{url}: {message}")]
    Transport { url: String, message: String },

    #[error("{url}: unexpected answer: {message}")]
    Protocol { url: String, message: String },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: another `ghost model pull` is downloading this file right now")]
    Busy { path: PathBuf },

    #[error("{what}: gave up after {attempts} attempts: {last}")]
    GaveUp { what: String, attempts: u32, last: Box<PullError> },
}

impl PullError {
    /// Whether the same request may succeed later: the hub was unreachable, overloaded or
    /// dropped the connection. A missing repo, a bad hash or a full disk is not retried.
    pub fn is_transient(&self) -> bool {
        match self {
            PullError::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            PullError::Transport { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> PullError {
        PullError::Io { path: path.into(), source }
    }
}

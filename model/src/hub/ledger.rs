//! What was verified, per repository: `models--ORG--NAME/ghost-verified.json` maps a blob to
//! its sha256, size and when it was last checked. `list` reads it; `verify` re-hashes against
//! it (a blob without an entry is checked against its own name, the hub's hash). The hub's
//! tools ignore the file.

use super::cache::RepoCache;
use super::error::PullError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub sha256: String,
    pub size: u64,
    /// Seconds since the epoch of the last successful check.
    pub verified_unix: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    #[serde(default)]
    pub blobs: BTreeMap<String, Verified>,
}

pub fn ledger_path(repo: &RepoCache) -> PathBuf {
    repo.dir().join("ghost-verified.json")
}

impl Ledger {
    /// A missing or unreadable ledger is empty: every blob is then "unverified" until checked.
    pub fn load(repo: &RepoCache) -> Ledger {
        std::fs::read(ledger_path(repo)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub fn save(&self, repo: &RepoCache) -> Result<(), PullError> {
        let path = ledger_path(repo);
        let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
        let text = serde_json::to_vec_pretty(self).map_err(|e| PullError::io(&path, std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| PullError::io(&tmp, e))?;
        f.write_all(&text).and_then(|_| f.sync_all()).map_err(|e| PullError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| PullError::io(&path, e))
    }

    /// Records one verified blob, re-reading the ledger first so concurrent pulls of
    /// different repos (or files) do not lose each other's entries.
    pub fn record(repo: &RepoCache, etag: &str, entry: Verified) -> Result<(), PullError> {
        let mut l = Ledger::load(repo);
        l.blobs.insert(etag.to_string(), entry);
        l.save(repo)
    }
}

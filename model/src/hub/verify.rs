//! `ghost model verify`: re-hash every blob a snapshot uses against what was recorded for it
//! (the ledger's sha256, and the hub's hash that names the blob).

use super::cache::{ModelCache, RepoCache};
use super::error::PullError;
use super::hashing::{hash_file, Expected};
use super::ledger::{Ledger, Verified};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok { sha256: String, size: u64 },
    /// `algo`, expected, actual.
    Mismatch { algo: &'static str, expected: String, actual: String },
    /// The snapshot names a blob that is not there.
    Missing,
    /// Nothing recorded to check against (a blob name that is no hash, and no ledger entry).
    NoRecord,
    Unreadable(String),
}

#[derive(Debug, Clone)]
pub struct Checked {
    pub repo: String,
    pub commit: String,
    pub file: String,
    pub outcome: Outcome,
}

/// Checks every file of every snapshot (of `only` when given); each blob is hashed once.
/// Blobs that check out are (re)recorded as verified at `now_unix`.
pub fn verify(cache: &ModelCache, only: Option<&str>, now_unix: u64) -> Result<Vec<Checked>, PullError> {
    let mut out = Vec::new();
    for repo in cache.repos().into_iter().filter(|r| only.is_none_or(|o| o == r.repo)) {
        let mut ledger = Ledger::load(&repo);
        let mut done: std::collections::BTreeMap<String, Outcome> = Default::default();
        let mut changed = BTreeSet::new();
        for commit in repo.snapshot_commits() {
            for (file, blob) in repo.snapshot_files(&commit) {
                let outcome = match &blob {
                    None => Outcome::Missing,
                    Some(b) => done.entry(b.clone()).or_insert_with(|| check_blob(&repo, &ledger, b)).clone(),
                };
                if let Some(b) = blob {
                    match &outcome {
                        Outcome::Ok { sha256, size } => {
                            ledger.blobs.insert(b.clone(), Verified { sha256: sha256.clone(), size: *size, verified_unix: now_unix });
                            changed.insert(b);
                        }
                        Outcome::Mismatch { .. } => {
                            // No longer vouched for: `list` shows it unverified from now on.
                            ledger.blobs.remove(&b);
                            changed.insert(b);
                        }
                        _ => {}
                    }
                }
                out.push(Checked { repo: repo.repo.clone(), commit: commit.clone(), file, outcome });
            }
        }
        if !changed.is_empty() {
            ledger.save(&repo)?;
        }
    }
    Ok(out)
}

fn check_blob(repo: &RepoCache, ledger: &Ledger, blob: &str) -> Outcome {
    let path = repo.blob(blob);
    if !path.is_file() {
        return Outcome::Missing;
    }
    let mut want = Expected::from_blob_name(blob);
    if let Some(v) = ledger.blobs.get(blob) {
        want.sha256 = Some(v.sha256.clone());
    }
    if want.is_empty() {
        return Outcome::NoRecord;
    }
    match hash_file(&path, want.git_sha1.is_some()) {
        Err(e) => Outcome::Unreadable(e.to_string()),
        Ok(d) => match want.mismatch(&d) {
            Some((algo, expected, actual)) => Outcome::Mismatch { algo, expected, actual },
            None => Outcome::Ok { sha256: d.sha256, size: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) },
        },
    }
}

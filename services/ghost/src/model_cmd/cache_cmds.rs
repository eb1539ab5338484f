//! `ghost model list [--json]` and `ghost model verify [REPO]`: read-only views of the cache
//! (verify also refreshes the ledger of what checked out).

use crate::paths::GhostRoot;
use clap::Args;
use ghost_model::hub::inventory::{self, FileState};
use ghost_model::hub::progress::format_bytes;
use ghost_model::hub::verify::Outcome;
use ghost_model::hub::{self, ModelCache};
use std::process::ExitCode;

#[derive(Args)]
pub struct ListArgs {
    /// One JSON array of repos, each with snapshots (commit, refs, files) and partial downloads.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Only this ORG/NAME.
    repo: Option<String>,
}

pub fn list(a: ListArgs, root: &GhostRoot) -> anyhow::Result<ExitCode> {
    let cache = ModelCache::new(root.models_dir());
    let repos = inventory::list(&cache);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&repos)?);
        return Ok(ExitCode::SUCCESS);
    }
    if repos.is_empty() {
        println!("no models in {}", cache.root().display());
    }
    for r in &repos {
        for s in &r.snapshots {
            let refs = if s.refs.is_empty() { String::new() } else { format!(" ({})", s.refs.join(", ")) };
            println!("{}@{}{refs}", r.repo, s.commit);
            let width = s.files.iter().map(|f| f.name.len()).max().unwrap_or(0);
            for f in &s.files {
                let size = f.size.map(format_bytes).unwrap_or_else(|| "-".into());
                let state = match f.state {
                    FileState::Verified => "verified",
                    FileState::Unverified => "unverified",
                    FileState::Missing => "missing",
                };
                println!("  {:width$}  {size:>10}  {state:<10}  {}", f.name, f.hash.as_deref().unwrap_or("-"));
            }
        }
        for p in &r.partial {
            println!("{}: downloading {} ({} so far)", r.repo, p.blob, format_bytes(p.bytes));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(a: VerifyArgs, root: &GhostRoot) -> anyhow::Result<ExitCode> {
    let cache = ModelCache::new(root.models_dir());
    let checked = hub::verify::verify(&cache, a.repo.as_deref(), hub::pull::now_unix())?;
    if checked.is_empty() {
        println!("nothing to verify in {}", cache.root().display());
        return Ok(if a.repo.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    }
    let mut bad = 0;
    for c in &checked {
        let at = format!("{}@{} {}", c.repo, c.commit, c.file);
        match &c.outcome {
            Outcome::Ok { sha256, size } => println!("ok        {at}  {}  sha256:{sha256}", format_bytes(*size)),
            Outcome::Mismatch { algo, expected, actual } => {
                bad += 1;
                println!("MISMATCH  {at}: expected {algo} {expected}, actual {actual}");
            }
            Outcome::Missing => {
                bad += 1;
                println!("MISSING   {at}: its blob is not in the cache");
            }
            Outcome::NoRecord => {
                bad += 1;
                println!("UNKNOWN   {at}: no recorded hash to check it against");
            }
            Outcome::Unreadable(e) => {
                bad += 1;
                println!("UNREADABLE {at}: {e}");
            }
        }
    }
    if bad > 0 {
        eprintln!("ghost model verify: {bad} of {} files failed verification", checked.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

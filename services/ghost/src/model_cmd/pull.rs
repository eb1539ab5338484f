//! `ghost model pull [REPO [--revision R] [--file F]…] [--endpoint URL]`.

use crate::paths::GhostRoot;
use anyhow::bail;
use clap::Args;
use ghost_model::hub::progress::format_bytes;
use ghost_model::hub::{self, Backoff, ConsoleProgress, HubClient, Manifest, ModelCache, ModelSpec, PullOptions};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct PullArgs {
    /// ORG/NAME on the hub; without it, every model of /etc/ghost/model.toml.
    repo: Option<String>,
    /// Branch, tag or commit of REPO.
    #[arg(long, default_value = "main", requires = "repo")]
    revision: String,
    /// A file of REPO to fetch (repeatable); without it, every file of the revision.
    #[arg(long = "file", value_name = "FILE", requires = "repo")]
    files: Vec<String>,
    /// The hub; else HF_ENDPOINT, else https://huggingface.co.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// model.toml to read instead of GHOST_ROOT/etc/ghost/model.toml.
    #[arg(long, value_name = "PATH", conflicts_with = "repo")]
    manifest: Option<std::path::PathBuf>,
    /// Retries of a request that failed for a reason that may pass (unreachable hub, 5xx,
    /// dropped connection); each resumes where the last one stopped.
    #[arg(long, default_value_t = Backoff::default().retries)]
    retries: u32,
    /// First retry delay; it doubles on each retry.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    retry_delay_ms: u64,
    /// Longest retry delay.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    retry_max_delay_ms: u64,
    /// A hub that sends nothing for this long has dropped the connection.
    #[arg(long, value_name = "S", default_value_t = 30)]
    read_timeout_s: u64,
}

pub fn run(a: PullArgs, root: &GhostRoot) -> anyhow::Result<ExitCode> {
    let specs = match &a.repo {
        Some(repo) => vec![ModelSpec::new(repo, &a.revision, &a.files).map_err(anyhow::Error::msg)?],
        None => {
            let path = a.manifest.clone().unwrap_or_else(|| root.model_toml());
            if !path.exists() {
                bail!("nothing to pull: {} does not exist; name a REPO or write that file", path.display());
            }
            let m = Manifest::load(&path)?;
            if m.models.is_empty() {
                bail!("nothing to pull: {} lists no [[model]]", path.display());
            }
            m.models
        }
    };
    let endpoint = hub::endpoint_from(a.endpoint.as_deref(), std::env::var("HF_ENDPOINT").ok().as_deref());
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let client = HubClient::new(&endpoint, Duration::from_secs(a.read_timeout_s.max(1)), token);
    let cache = ModelCache::new(root.models_dir());
    let opts = PullOptions {
        backoff: Backoff { retries: a.retries, base: Duration::from_millis(a.retry_delay_ms), max: Duration::from_millis(a.retry_max_delay_ms) },
        now_unix: hub::pull::now_unix(),
    };
    let mut progress = ConsoleProgress::for_stderr();
    let mut failed = 0;
    for spec in &specs {
        eprintln!("pulling {}@{} from {endpoint}", spec.repo, spec.revision);
        match hub::pull(&client, &cache, spec, &opts, &mut progress) {
            Ok(r) => {
                let total: u64 = r.files.iter().map(|f| f.size).sum();
                let fetched: u64 = r.files.iter().filter(|f| f.downloaded).map(|f| f.size).sum();
                println!(
                    "pulled {}@{} (revision {}): {} file{}, {} ({} downloaded), verified",
                    r.repo,
                    r.commit,
                    r.revision,
                    r.files.len(),
                    if r.files.len() == 1 { "" } else { "s" },
                    format_bytes(total),
                    format_bytes(fetched)
                );
            }
            Err(e) => {
                // Most errors name the repo already; say it once.
                let msg = e.to_string();
                if msg.contains(&spec.repo) {
                    eprintln!("ghost model pull: {msg}");
                } else {
                    eprintln!("ghost model pull: {}: {msg}", spec.repo);
                }
                failed += 1;
            }
        }
    }
    if failed > 0 {
        let what = if specs.len() == 1 { "the pull failed".to_string() } else { format!("{failed} of {} models failed", specs.len()) };
        bail!("{what}; {} holds only files that were verified", cache.root().display());
    }
    Ok(ExitCode::SUCCESS)
}

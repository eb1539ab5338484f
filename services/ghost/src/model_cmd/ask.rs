//! `ghost model ask --need classify|decide|plan|code [--json] [--max-tokens N] TEXT…`: one
//! request through the intelligence router (`[router]` of /etc/ghost/model.toml; ledger and
//! call log in /var/lib/ghost/router). Prints the answer; when layers were passed over, a line
//! on stderr says which and why. `--json` prints one object: text, layer, model, fallbacks,
//! note, latency_ms, tokens, cost_usd, warnings. TEXT `-` reads the request from stdin.

use crate::paths::GhostRoot;
use anyhow::{bail, Context};
use clap::Args;
use ghost_model::router::{Need, Reason, Request, Router, RouterConfig, SystemClock, MAX_TOKENS_LIMIT};
use serde_json::json;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct AskArgs {
    /// What the request needs: classify, decide, plan or code (decides the layer tried first).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["classify", "decide", "plan", "code"]))]
    need: String,
    /// Print one JSON object instead of the answer's text.
    #[arg(long)]
    json: bool,
    /// The most tokens the answer may have.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_TOKENS_LIMIT)))]
    max_tokens: u32,
    /// Sampling temperature, 0 to 2.
    #[arg(long, default_value_t = 0.2)]
    temperature: f32,
    /// A system message before the request.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// The request (words are joined with spaces); `-` reads it from stdin.
    #[arg(required = true, value_name = "TEXT")]
    text: Vec<String>,
}

/// The router of `/etc/ghost/model.toml` (local layers only without one).
pub fn router_for(root: &GhostRoot) -> anyhow::Result<Router> {
    let resolve = |p: &Path| root.resolve(p);
    let manifest = root.model_toml();
    let cfg = if manifest.exists() { RouterConfig::load(&manifest, &resolve)? } else { RouterConfig::local_only(&resolve) };
    Ok(Router::from_config(&cfg, root.router_dir(), Arc::new(SystemClock)))
}

pub fn run(a: AskArgs, root: &GhostRoot) -> anyhow::Result<ExitCode> {
    let need: Need = a.need.parse().map_err(anyhow::Error::msg)?;
    let text = if a.text.len() == 1 && a.text[0] == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the request from stdin")?;
        s
    } else {
        a.text.join(" ")
    };
    if text.trim().is_empty() {
        bail!("the request is empty");
    }
    let router = router_for(root)?;
    let mut req = Request::new(need, text).max_tokens(a.max_tokens).temperature(a.temperature);
    if let Some(s) = a.system {
        req.messages.insert(0, ghost_model::router::Message::system(s));
    }
    let r = router.route(&req, None)?;
    if a.json {
        let fallbacks: Vec<_> = r
            .fallbacks
            .iter()
            .map(|f| {
                let (kind, detail) = match &f.reason {
                    Reason::NotConfigured => ("not_configured", "not configured".to_string()),
                    Reason::Down(d) => ("down", d.clone()),
                    Reason::Failed(d) => ("failed", d.clone()),
                    Reason::OverBudget(d) => ("over_budget", d.clone()),
                };
                json!({"layer": f.layer, "kind": kind, "reason": detail})
            })
            .collect();
        let v = json!({
            "text": r.text,
            "layer": r.layer,
            "model": r.model,
            "fallbacks": fallbacks,
            "note": r.note,
            "latency_ms": r.latency.as_millis() as u64,
            "tokens": {"prompt": r.tokens.prompt, "completion": r.tokens.completion},
            "cost_usd": r.cost_usd,
            "warnings": r.warnings,
        });
        println!("{v}");
    } else {
        if let Some(n) = &r.note {
            eprintln!("ghost: {n}");
        }
        for w in &r.warnings {
            eprintln!("ghost: warning: {w}");
        }
        println!("{}", r.text);
    }
    Ok(ExitCode::SUCCESS)
}

//! `ghost snapshot`: the state that matters, kept and put back (reference:
//! services/snapshot/src/lib.rs). `ghostctl snapshot …` hands over to it.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use ghost_snapshot::{Manifest, Store, Trigger};
use serde_json::json;

use crate::paths::GhostRoot;

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
    /// Machine-readable output (one JSON value)
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Take a snapshot now
    Create {
        /// What it is for
        #[arg(short = 'm', long = "message", value_name = "TEXT", default_value = "")]
        message: String,
        /// manual (kept forever), hourly, before-action (pruned to the newest `keep` of each)
        #[arg(long, default_value = "manual")]
        trigger: String,
    },
    /// Every snapshot, oldest first
    List,
    /// One snapshot: what it holds
    Show { id: String },
    /// What changed from snapshot ID to snapshot ID2, or to the current state
    Diff { id: String, id2: Option<String> },
    /// Put snapshot ID back (the current state is snapshotted first); ghost-init reloads
    Restore { id: String },
    /// Drop automatic snapshots beyond ghost.toml's [snapshots] keep, and unused content
    Prune,
}

fn row(m: &Manifest) -> serde_json::Value {
    json!({
        "id": m.id, "created_ms": m.created_ms, "trigger": m.trigger, "description": m.description,
        "files": m.entries.iter().filter(|e| e.sha256.is_some()).count(), "total_bytes": m.total_bytes, "new_bytes": m.new_bytes,
    })
}

fn when(ms: u64) -> String {
    ghost_model::router::budget::rfc3339(ms)
}

pub fn run(args: SnapshotArgs, root: &GhostRoot) -> anyhow::Result<ExitCode> {
    let store = Store::open(root.dir()).map_err(anyhow::Error::msg)?;
    let json = args.json;
    match args.command {
        SnapshotCommand::Create { message, trigger } => {
            let Some(t) = Trigger::parse(&trigger) else { bail!("--trigger: {trigger:?} is not manual, hourly, before-action or before-restore") };
            let m = store.create(&message, t).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", row(&m));
            } else {
                println!("{}  {} files, {} bytes ({} new)", m.id, row(&m)["files"], m.total_bytes, m.new_bytes);
            }
        }
        SnapshotCommand::List => {
            let all = store.list().map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::Value::Array(all.iter().map(row).collect()));
            } else if all.is_empty() {
                println!("no snapshots yet (ghostctl snapshot create -m TEXT)");
            } else {
                println!("{:<26}  {:<24}  {:<14}  {:>6}  {:>10}  DESCRIPTION", "ID", "CREATED", "TRIGGER", "FILES", "NEW BYTES");
                for m in &all {
                    let r = row(m);
                    println!("{:<26}  {:<24}  {:<14}  {:>6}  {:>10}  {}", m.id, when(m.created_ms), r["trigger"].as_str().unwrap_or(""), r["files"], m.new_bytes, m.description);
                }
            }
        }
        SnapshotCommand::Show { id } => {
            let m = store.load(&id).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string(&m)?);
            } else {
                println!("{}  {}  {:?}  {}", m.id, when(m.created_ms), m.trigger, m.description);
                for e in &m.entries {
                    println!("  {:<8} {:o} {:>9}  {}", format!("{:?}", e.kind).to_lowercase(), e.mode, e.size, e.path);
                }
            }
        }
        SnapshotCommand::Diff { id, id2 } => {
            let a = store.load(&id).map_err(anyhow::Error::msg)?;
            let b = match &id2 {
                Some(i) => store.load(i).map_err(anyhow::Error::msg)?.entries,
                None => store.scan_covering(&a.roots, &a.databases).map_err(anyhow::Error::msg)?,
            };
            let d = Store::diff(&a.entries, &b);
            if json {
                println!("{}", serde_json::to_string(&d)?);
            } else {
                let to = id2.as_deref().unwrap_or("now");
                println!("{id} → {to}: {} added, {} removed, {} changed", d.added.len(), d.removed.len(), d.changed.len());
                d.added.iter().for_each(|p| println!("+ {p}"));
                d.removed.iter().for_each(|p| println!("- {p}"));
                d.changed.iter().for_each(|p| println!("~ {p}"));
            }
        }
        SnapshotCommand::Restore { id } => {
            let (m, before, steps) = store.restore(&id).map_err(anyhow::Error::msg)?;
            let reload = reload();
            if json {
                println!("{}", json!({ "restored": m.id, "before": before.id, "steps": steps, "reload": reload }));
            } else {
                println!("restored {} ({steps} steps); the state before is snapshot {}", m.id, before.id);
                match reload {
                    Ok(()) => println!("ghost-init reloaded the service files"),
                    Err(e) => println!("ghost-init was not told to reload: {e}"),
                }
            }
        }
        SnapshotCommand::Prune => {
            let (s, o) = store.prune().map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", json!({ "snapshots_removed": s, "objects_removed": o }));
            } else {
                println!("{s} snapshots and {o} unused objects removed (keeping {} of each automatic kind)", store.policy.keep);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Tells ghost-init to read the service files again.
fn reload() -> Result<(), String> {
    ghostctl::client::control_request(&ghost_proto::Request::Reload).map(|_| ()).map_err(|f| f.to_string())
}

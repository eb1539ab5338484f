//! `ghost improve`: the crucible from the command line (reference: improve/README.md).
//!
//! Units are described in `/etc/ghost/improve/UNIT.toml` (or the state partition's
//! `/var/lib/ghost/etc/improve/UNIT.toml`, which overrides it); generations live under
//! `/var/lib/ghost/generations/UNIT/`; proposals wait in `/var/lib/ghost/improve/proposals/UNIT/`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use ghost_improve::crucible::{next_proposal, take_proposal, tell_agent as tell_agent_of, ControlSocket, Crucible, Outcome, Supervisor, Verdict};
use ghost_improve::unit::Unit;

use crate::paths::GhostRoot;

#[derive(Args, Debug)]
pub struct ImproveArgs {
    #[command(subcommand)]
    command: ImproveCommand,
}

#[derive(Subcommand, Debug)]
enum ImproveCommand {
    /// Build and test the unit's source as generation 0 (once, before any candidate)
    Seed { unit: String },
    /// Judge one candidate: a patch file, or the oldest waiting proposal
    Run {
        unit: String,
        /// A unified diff against the running generation's source (-p1: a/PATH, b/PATH)
        #[arg(long, value_name = "FILE")]
        patch: Option<PathBuf>,
        /// Where proposals wait (default /var/lib/ghost/improve/proposals/UNIT)
        #[arg(long, value_name = "DIR", conflicts_with = "patch")]
        proposals: Option<PathBuf>,
        /// Ask the model router (need `code`) for the candidate
        #[arg(long, conflicts_with_all = ["patch", "proposals"])]
        from_model: bool,
        /// What the model is asked to achieve
        #[arg(long, value_name = "TEXT", default_value = "make the benchmark faster without changing any result")]
        goal: String,
        /// Do not restart the service (a build host: judge and keep the binary only)
        #[arg(long)]
        no_service: bool,
        #[arg(long)]
        json: bool,
    },
    /// Which generation each unit runs, and its last verdict
    Status {
        unit: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every verdict of a unit, oldest first
    History {
        unit: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a verified generation (default: the current one) to one file for a machine
    /// without a toolchain
    Export {
        unit: String,
        generation: Option<u64>,
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Verify a build host's bundle and swap it in as the next generation (restart, probation,
    /// rollback as `run` does)
    Install {
        unit: String,
        file: PathBuf,
        /// Do not restart the service (install the binary and switch `current` only)
        #[arg(long)]
        no_service: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write a unit's source cut out of a workspace (PID 1: `--members init,init/proto` of the
    /// ghostos tree): only those members, with the workspace's lock file and profiles
    #[command(name = "workspace-source")]
    WorkspaceSource {
        /// The workspace (its Cargo.toml and Cargo.lock)
        repo: PathBuf,
        /// Member paths, comma-separated
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Put the previous good generation back
    Rollback {
        unit: String,
        #[arg(long)]
        json: bool,
    },
}

fn say(line: &str) {
    eprintln!("ghost improve: {line}");
}

/// The agent puts the verdict in the audit trail and memory; without it, history.jsonl keeps it.
fn tell_agent(v: &Verdict) {
    match tell_agent_of(v) {
        Ok(r) => say(&format!("recorded by the agent: audit seq {}, memory {}", r["audit_seq"], r["memory_id"])),
        Err(e) => say(&format!("WARNING: the agent did not record the verdict ({e}); it is in the unit's history.jsonl only")),
    }
}

fn print_verdict(v: &Verdict, json: bool) {
    tell_agent(v);
    show(v, json);
}

fn show(v: &Verdict, json: bool) {
    if json {
        println!("{}", serde_json::to_string(v).unwrap_or_default());
        return;
    }
    let gen = v.generation.map(|g| format!(" generation {g}")).unwrap_or_default();
    println!("{} {}{gen}: {:?} at {:?}: {}", v.unit, v.candidate, v.outcome, v.stage, v.reason);
}

pub fn run(args: ImproveArgs, root: &GhostRoot) -> anyhow::Result<ExitCode> {
    let units = root.path("/etc/ghost/improve");
    let generations = root.path("/var/lib/ghost/generations");
    let control = ControlSocket;
    // The image's unit file, or the operator's copy on the state partition (/var/lib/ghost/etc/
    // improve/UNIT.toml) where there is one: the overlay ghost-init reads services from too.
    let load = |name: &str| {
        let file = root.etc(&format!("improve/{name}.toml"));
        Unit::load(file.parent().unwrap_or(&units), name).map_err(anyhow::Error::msg)
    };
    match args.command {
        ImproveCommand::Seed { unit } => {
            let c = Crucible::new(load(&unit)?, &generations, None, &say);
            let v = c.seed().map_err(anyhow::Error::msg)?;
            print_verdict(&v, false);
            Ok(ExitCode::SUCCESS)
        }
        ImproveCommand::Run { unit, patch, proposals, from_model, goal, no_service, json } => {
            let u = load(&unit)?;
            let sv: Option<&dyn Supervisor> = if no_service || (u.service.is_none() && !u.reexec) { None } else { Some(&control) };
            let c = Crucible::new(u, &generations, sv, &say);
            let (file, origin) = match patch {
                None if from_model => ask_model(&c, root, &goal)?,
                Some(p) => {
                    let origin = format!("file:{}", p.display());
                    (p, origin)
                }
                None => {
                    let dir = proposals.unwrap_or_else(|| root.path(&format!("/var/lib/ghost/improve/proposals/{unit}")));
                    let Some(p) = next_proposal(&dir) else { bail!("no proposal waits in {} (*.patch or *.diff)", dir.display()) };
                    let taken = take_proposal(&dir, &p).map_err(anyhow::Error::msg)?;
                    (taken, format!("proposals:{}", p.display()))
                }
            };
            let v = c.try_candidate(&file, &origin).map_err(anyhow::Error::msg).with_context(|| format!("candidate {}", file.display()))?;
            print_verdict(&v, json);
            // 0 kept, 4 refused or rolled back: a script can tell "judged and not taken" from an error (1).
            Ok(if v.outcome == Outcome::Kept { ExitCode::SUCCESS } else { ExitCode::from(4) })
        }
        ImproveCommand::Status { unit, json } => {
            let names: Vec<String> = match unit {
                Some(u) => vec![u],
                None => {
                    let overlay = root.path("/var/lib/ghost/etc/improve");
                    let mut v: Vec<String> = [&units, &overlay].iter().flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten()).filter_map(|e| e.file_name().to_str()?.strip_suffix(".toml").map(str::to_string)).collect();
                    v.sort();
                    v.dedup();
                    v
                }
            };
            let mut rows = Vec::new();
            for name in names {
                let c = Crucible::new(load(&name)?, &generations, None, &say);
                let history = c.history();
                let refused = history.iter().filter(|v| v.outcome == Outcome::Refused).count();
                let rolled_back = history.iter().filter(|v| v.outcome == Outcome::RolledBack).count();
                rows.push(serde_json::json!({
                    "unit": name, "generation": c.current(), "verdicts": history.len(),
                    "refused": refused, "rolled_back": rolled_back, "last": history.last(),
                }));
            }
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else if rows.is_empty() {
                println!("no improvable units in {}", units.display());
            } else {
                for r in rows {
                    let gen = r["generation"].as_u64().map_or("none (ghost improve seed UNIT)".to_string(), |g| g.to_string());
                    let last = r["last"]["reason"].as_str().map(|s| format!("; last: {} {}", r["last"]["outcome"].as_str().unwrap_or(""), s)).unwrap_or_default();
                    println!("{}: generation {gen}; {} verdicts, {} refused, {} rolled back{last}", r["unit"].as_str().unwrap_or(""), r["verdicts"], r["refused"], r["rolled_back"]);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ImproveCommand::History { unit, json } => {
            let c = Crucible::new(load(&unit)?, &generations, None, &say);
            for v in c.history() {
                show(&v, json);
            }
            Ok(ExitCode::SUCCESS)
        }
        ImproveCommand::WorkspaceSource { repo, members, to } => {
            ghost_improve::workspace::subset(&repo, &members, &to).map_err(anyhow::Error::msg)?;
            println!("{}: the workspace {} with {}", to.display(), repo.display(), members.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        ImproveCommand::Export { unit, generation, to } => {
            let c = Crucible::new(load(&unit)?, &generations, None, &say);
            let h = c.export(generation, &to).map_err(anyhow::Error::msg)?;
            let bytes: u64 = h.files.iter().map(|f| f.size).sum();
            println!("{unit} generation {} ({:?} on {}) → {}: {} files, {bytes} bytes", h.generation, h.verdict.outcome, h.host, to.display(), h.files.len());
            Ok(ExitCode::SUCCESS)
        }
        ImproveCommand::Install { unit, file, no_service, json } => {
            let u = load(&unit)?;
            let sv: Option<&dyn Supervisor> = if no_service || (u.service.is_none() && !u.reexec) { None } else { Some(&control) };
            let c = Crucible::new(u, &generations, sv, &say);
            let v = c.install(&file).map_err(anyhow::Error::msg)?;
            print_verdict(&v, json);
            // As `run`: 0 kept (or seeded), 4 rolled back, 1 an error (nothing installed).
            Ok(if v.outcome == Outcome::RolledBack { ExitCode::from(4) } else { ExitCode::SUCCESS })
        }
        ImproveCommand::Rollback { unit, json } => {
            let u = load(&unit)?;
            let sv: Option<&dyn Supervisor> = if u.service.is_some() || u.reexec { Some(&control) } else { None };
            let c = Crucible::new(u, &generations, sv, &say);
            let v = c.rollback().map_err(anyhow::Error::msg)?;
            print_verdict(&v, json);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A candidate from the model router: the prompt holds the running generation's source; the
/// answer's diff (or, without one, the whole answer, which the patch stage then refuses) is
/// written where proposals wait and judged like any other.
fn ask_model(c: &Crucible, root: &GhostRoot, goal: &str) -> anyhow::Result<(PathBuf, String)> {
    use ghost_model::router::{Message, Need, Request};
    let Some(gen) = c.current() else { bail!("{} has no generation yet: run `ghost improve seed {}` first", c.unit.name, c.unit.name) };
    let source = c.dir.join(gen.to_string()).join("source");
    let prompt = ghost_improve::candidate::prompt(&c.unit, &source, goal);
    let router = crate::model_cmd::ask::router_for(root)?;
    let mut req = Request::new(Need::Code, prompt).max_tokens(4096).temperature(0.2);
    req.messages.insert(0, Message::system("You are a careful Rust performance engineer. You answer with one unified diff."));
    say(&format!("asking the model router for a candidate ({} bytes of prompt)", req.last_user_text().len()));
    let r = router.route(&req, None)?;
    if let Some(n) = &r.note {
        say(n);
    }
    let dir = root.path(&format!("/var/lib/ghost/improve/proposals/{}/done", c.unit.name));
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let file = dir.join(format!("model-{}.patch", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)));
    let text = ghost_improve::candidate::extract_diff(&r.text).unwrap_or_else(|| r.text.clone());
    std::fs::write(&file, text).with_context(|| file.display().to_string())?;
    Ok((file, format!("model:{}:{}", r.layer.as_str(), r.model)))
}

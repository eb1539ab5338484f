//! ghost: the multi-call userland of ghostos. One subcommand family per file: `model`, `agent`;
//! `wizard` and `console` live in ghost-console; `improve` (the crucible) drives
//! ghost-improve.

mod agent_cmd;
mod improve_cmd;
mod snapshot_cmd;
mod model_cmd;
mod paths;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ghost", version, about = "The ghostos userland", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local model: fetch it from a hub, list and verify what is cached.
    Model(model_cmd::ModelArgs),
    /// The agent: watches the machine, heals what breaks, remembers why (a supervised service)
    Agent(agent_cmd::AgentArgs),
    /// The first-boot setup wizard (on /dev/console; unattended with a seed file)
    Wizard(ghost_console::wizard::WizardArgs),
    /// The operator TUI (on /dev/tty2 and the serial port)
    Console(ghost_console::tui::ConsoleArgs),
    /// The crucible: judge a candidate against the running code, swap it in only when it is
    /// correct and faster, roll back on misbehaviour
    Improve(improve_cmd::ImproveArgs),
    /// Snapshots of the state that matters: create, list, show, diff, restore, prune
    Snapshot(snapshot_cmd::SnapshotArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = paths::GhostRoot::from_env();
    let result = match cli.command {
        Command::Model(args) => model_cmd::run(args, &root),
        Command::Agent(args) => agent_cmd::run(args, &root),
        Command::Wizard(args) => ghost_console::wizard::run(args),
        Command::Console(args) => ghost_console::tui::run(args),
        Command::Improve(args) => improve_cmd::run(args, &root),
        Command::Snapshot(args) => snapshot_cmd::run(args, &root),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ghost: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

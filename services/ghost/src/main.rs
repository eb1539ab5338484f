//! ghost: the multi-call userland of ghostos. One subcommand family per file: `model` now;
//! `agent`, `wizard`, `console` and `improve` arrive with their issues as siblings of it.

mod agent_cmd;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = paths::GhostRoot::from_env();
    let result = match cli.command {
        Command::Model(args) => model_cmd::run(args, &root),
        Command::Agent(args) => agent_cmd::run(args, &root),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ghost: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

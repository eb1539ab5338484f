//! `ghost model …`: one file per command (pull; list and verify of the cache); `generate`,
//! `embed` and `serve` slot in beside them.

mod cache_cmds;
mod pull;

use crate::paths::GhostRoot;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Fetch what /etc/ghost/model.toml lists, or REPO, into /var/lib/ghost/models.
    Pull(pull::PullArgs),
    /// What is in the cache: repo, revision, files, sizes, verified or not.
    List(cache_cmds::ListArgs),
    /// Re-hash every cached file against its recorded hash; non-zero exit on any mismatch.
    Verify(cache_cmds::VerifyArgs),
}

pub fn run(args: ModelArgs, root: &GhostRoot) -> anyhow::Result<ExitCode> {
    match args.command {
        ModelCommand::Pull(a) => pull::run(a, root),
        ModelCommand::List(a) => cache_cmds::list(a, root),
        ModelCommand::Verify(a) => cache_cmds::verify(a, root),
    }
}

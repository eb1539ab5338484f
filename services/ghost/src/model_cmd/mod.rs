//! `ghost model …`: one file per command (pull; list and verify of the cache; generate; embed;
//! serve), and `local`, which finds the pulled files model.toml names.

pub(crate) mod ask;
mod cache_cmds;
mod embed;
mod generate;
mod local;
mod pull;
mod serve;

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
    /// One completion from the local model, streamed to stdout.
    Generate(generate::GenerateArgs),
    /// Sentence vectors from the local embedding model.
    Embed(embed::EmbedArgs),
    /// The model service: first-boot download, then an OpenAI-compatible API on
    /// /run/ghost/model.sock (and optionally TCP).
    Serve(serve::ServeArgs),
    /// One request through the intelligence router: the cheapest layer that can serve it.
    Ask(ask::AskArgs),
}

pub fn run(args: ModelArgs, root: &GhostRoot) -> anyhow::Result<ExitCode> {
    match args.command {
        ModelCommand::Pull(a) => pull::run(a, root),
        ModelCommand::List(a) => cache_cmds::list(a, root),
        ModelCommand::Verify(a) => cache_cmds::verify(a, root),
        ModelCommand::Generate(a) => generate::run(a, root),
        ModelCommand::Embed(a) => embed::run(a, root),
        ModelCommand::Serve(a) => serve::run(a, root),
        ModelCommand::Ask(a) => ask::run(a, root),
    }
}

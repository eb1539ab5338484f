//! `ghost console`: the operator TUI.

use std::process::ExitCode;

/// `ghost console` arguments.
#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {}

pub fn run(_args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("ghost console is not built yet")
}

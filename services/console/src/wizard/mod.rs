//! `ghost wizard`: the first-boot setup wizard.

use std::process::ExitCode;

/// `ghost wizard` arguments.
#[derive(clap::Args, Debug)]
pub struct WizardArgs {}

pub fn run(_args: WizardArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("ghost wizard is not built yet")
}

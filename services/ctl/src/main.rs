//! The `ghostctl` binary: parses the command line, runs the command, and turns the outcome into
//! the documented exit code (see `ghostctl --help`).

use clap::Parser;
use ghostctl::cli::Cli;
use ghostctl::failure::Failure;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match ghostctl::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if let Failure::Daemon(m) | Failure::Unreachable(m) = &f {
                eprintln!("ghostctl: {m}");
            }
            ExitCode::from(f.exit_code())
        }
    }
}

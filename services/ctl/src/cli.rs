//! The command line of ghostctl (clap derive): the commands of DESIGN.md section 4, the global
//! `--socket` and `--json`, and the exit codes that `--help` documents.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Shown at the end of `ghostctl --help`; services/ctl/README.md says the same.
pub const EXIT_CODES: &str = "\
Exit status:
  0  ok
  1  ghost-init answered with an error (unknown service, bad request, reload with file errors),
     or import-unit could not read the unit or write the output
  2  usage error
  3  cannot reach the control socket (missing, permission denied, no reply)
  4  status NAME only: the service exists but is not running (like `systemctl is-active`)

Socket: --socket PATH, else $GHOST_SOCKET, else $GHOST_ROOT/run/ghost/control.sock when
GHOST_ROOT is set, else /run/ghost/control.sock.";

#[derive(Parser, Debug)]
#[command(name = "ghostctl", version, about = "Operate ghost-init through its control socket", after_help = EXIT_CODES)]
pub struct Cli {
    /// The control socket to talk to
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Machine-readable output: status prints the services array, logs and events one JSON
    /// object per line, reload the report
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum Command {
    /// All services as a table, or one service in detail (exit 4 when it is not running)
    Status { name: Option<String> },
    /// Start a stopped service
    Start { name: String },
    /// Stop a service (it stays stopped until started)
    Stop { name: String },
    /// Stop and start a service again
    Restart { name: String },
    /// The last lines a service (or every service) wrote
    Logs {
        name: Option<String>,
        /// Keep printing new lines as they come
        #[arg(short, long)]
        follow: bool,
        /// How many lines of the past to show (ghost-init's default: 50)
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
    },
    /// Every state change, exit, restart, health change and OOM from now on
    Events,
    /// Re-read the service files and apply only what changed
    Reload,
    /// Stop every service and power off
    Poweroff,
    /// Stop every service and reboot
    Reboot,
    /// Convert a systemd .service file into a ghost service file, listing what was not carried over
    #[command(name = "import-unit")]
    ImportUnit {
        /// The systemd unit, e.g. /lib/systemd/system/redis-server.service
        file: PathBuf,
        /// Write the service file here (atomically) instead of to stdout
        #[arg(short, long, value_name = "OUT.toml")]
        output: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ghostctl").chain(args.iter().copied()))
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let c = parse(&["logs", "redis", "-f", "-n", "5", "--json", "--socket", "/tmp/s"]).unwrap();
        assert!(c.json);
        assert_eq!(c.socket, Some(PathBuf::from("/tmp/s")));
        assert_eq!(c.command, Command::Logs { name: Some("redis".into()), follow: true, lines: Some(5) });
        let c = parse(&["--json", "status"]).unwrap();
        assert_eq!((c.json, c.command), (true, Command::Status { name: None }));
        let c = parse(&["import-unit", "x.service", "-o", "x.toml"]).unwrap();
        assert_eq!(c.command, Command::ImportUnit { file: "x.service".into(), output: Some("x.toml".into()) });
    }

    #[test]
    fn usage_errors_exit_2_and_help_documents_the_exit_codes() {
        for bad in [&["restart"][..], &["nosuch"], &["logs", "-n", "many"], &[]] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit status:") && help.contains("4  status NAME only"), "{help}");
        Cli::command().debug_assert();
    }
}

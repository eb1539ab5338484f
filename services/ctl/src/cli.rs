//! The command line of ghostctl (clap derive): the commands of DESIGN.md section 4 for
//! ghost-init and for the agent, the global `--socket`, `--agent-socket` and `--json`, and the
//! exit codes that `--help` documents.

use clap::{Parser, Subcommand};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// Shown at the end of `ghostctl --help`; services/ctl/README.md says the same.
pub const EXIT_CODES: &str = "\
Exit status:
  0  ok (a tool call ran, or its dry run was allowed)
  1  ghost-init or the agent answered with an error (unknown service, bad request, reload with
     file errors, unknown approval id), a tool call ran and failed, the audit trail is not
     intact, or import-unit could not read the unit or write the output
  2  usage error (also --args that is not a JSON object)
  3  cannot reach the control socket or the agent's socket (missing, permission denied, no reply)
  4  status NAME only: the service exists but is not running (like `systemctl is-active`)
  5  tool call, approve: the agent's policy denied the call
  6  tool call, approve: the call waits for an operator's approval (ghostctl approve ID)

Sockets: ghost-init's: --socket PATH, else $GHOST_SOCKET, else
$GHOST_ROOT/run/ghost/control.sock when GHOST_ROOT is set, else /run/ghost/control.sock.
The agent's (agent, tool, pending, approve, deny, audit, memory, decisions, why, goals, goal,
tell, proposals, accept, chat, shell): --agent-socket PATH, else $GHOST_AGENT_SOCKET, else $GHOST_ROOT/run/ghost/agent.sock
when GHOST_ROOT is set, else /run/ghost/agent.sock.";

#[derive(Parser, Debug)]
#[command(name = "ghostctl", version, about = "Operate ghost-init through its control socket, and the agent through its own", after_help = EXIT_CODES)]
pub struct Cli {
    /// The control socket to talk to
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The agent's socket to talk to
    #[arg(long, global = true, value_name = "PATH")]
    pub agent_socket: Option<PathBuf>,
    /// Machine-readable output: status prints the services array, logs and events one JSON
    /// object per line, reload the report; the agent's commands print the agent's result as
    /// one line
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
    /// PID 1 itself: its program, uptime and re-executions
    Init,
    /// Replace PID 1's program without a reboot, keeping every service (its checks run first;
    /// a new program that fails them puts the previous one back): BINARY, or the running one
    Reexec {
        /// The new ghost-init (an absolute path)
        binary: Option<String>,
    },
    /// Convert a systemd .service file into a ghost service file, listing what was not carried over
    #[command(name = "import-unit")]
    ImportUnit {
        /// The systemd unit, e.g. /lib/systemd/system/redis-server.service
        file: PathBuf,
        /// Write the service file here (atomically) instead of to stdout
        #[arg(short, long, value_name = "OUT.toml")]
        output: Option<PathBuf>,
    },
    /// The crucible: `status [UNIT]`, `history UNIT`, `run UNIT [--patch FILE | --from-model]`,
    /// `rollback UNIT` (runs `ghost improve …`, the userland beside ghostctl or on PATH)
    Improve {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Snapshots: `create [-m TEXT]`, `list`, `show ID`, `diff ID [ID]`, `restore ID`, `prune`
    /// (runs `ghost snapshot …`, the userland beside ghostctl or on PATH)
    Snapshot {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    #[command(flatten)]
    Agent(AgentCommand),
}

/// The commands that go to the agent's socket rather than to ghost-init.
#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum AgentCommand {
    /// The agent's heartbeat figures: beats, decisions (how many without a model), repairs, errors
    #[command(name = "agent")]
    Status,
    /// Tools through the agent's policy, approvals and audit trail
    Tool {
        #[command(subcommand)]
        command: ToolCommand,
    },
    /// Tool calls that wait for an operator's approval
    Pending,
    /// Let a waiting tool call run (exit codes as for tool call)
    Approve { id: String },
    /// Refuse a waiting tool call
    Deny {
        id: String,
        /// Why, for the audit trail
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
    /// The agent's signed audit trail
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The agent's episodic memory
    Memory {
        #[command(subcommand)]
        command: MemoryCommand,
    },
    /// The newest decisions (by rule or by model), newest first
    Decisions {
        /// How many
        #[arg(short = 'n', long = "limit", value_name = "N")]
        limit: Option<usize>,
    },
    /// Why something happened: the chain of causes behind a decision, action or observation
    Why { id: String },
    /// The agent's goal stack
    Goals,
    /// Add or drop a goal
    Goal {
        #[command(subcommand)]
        command: GoalCommand,
    },
    /// Tell the agent something (it becomes an observation from the operator)
    Tell {
        #[arg(required = true, value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Rules the agent learned from the model's calls that worked, waiting to be accepted
    Proposals,
    /// Accept a learned rule: it moves into /etc/ghost/rules and decides without a model
    Accept { name: String },
    /// Ask the agent something: its steps and answer stream as they come (without a model it
    /// answers from memory and the audit trail, and says so)
    Chat {
        #[arg(required = true, value_name = "MESSAGE")]
        message: Vec<String>,
    },
    /// A conversation with the agent: one message per line, the conversation kept as it goes,
    /// lines saved in $HOME/.ghost_history; `exit` or end of input leaves
    Shell,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum ToolCommand {
    /// Call one tool (exit 0 ran or dry run, 1 it failed, 5 denied, 6 waits for approval)
    Call {
        /// The tool, e.g. fs.read
        name: String,
        /// The tool's arguments, a JSON object
        #[arg(long, value_name = "JSON", default_value = "{}", value_parser = json_object)]
        args: Map<String, Value>,
        /// Why the call is made (kept in the audit trail)
        #[arg(long, value_name = "TEXT")]
        why: String,
        /// Ask the policy only; nothing runs
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum AuditCommand {
    /// Check the whole trail: hash chain, signatures, order, nothing missing (exit 1 if not intact)
    Verify,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum MemoryCommand {
    /// Search episodic memory (words and meaning)
    Search {
        #[arg(required = true, value_name = "QUERY")]
        query: Vec<String>,
        /// How many results at most
        #[arg(short = 'n', long, value_name = "N")]
        limit: Option<usize>,
    },
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum GoalCommand {
    /// Put a goal on the stack; prints its id
    Add {
        text: String,
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        priority: Option<i32>,
        /// A predicate checked each beat: service:NAME:running, disk:PATH:below:PCT
        #[arg(long, value_name = "PRED")]
        check: Option<String>,
        /// The goal this one serves
        #[arg(long, value_name = "ID")]
        parent: Option<String>,
    },
    /// Take a goal off the stack
    Drop {
        id: String,
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
}

/// `--args`: JSON, and an object, checked here so that a typo is a usage error naming the flag.
fn json_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("a JSON object is needed ({{\"path\":\"/etc/hostname\"}}), not {}", kind_of(&other))),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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
        assert!(help.contains("Exit status:") && help.contains("4  status NAME only") && help.contains("6  tool call"), "{help}");
        Cli::command().debug_assert();
    }

    #[test]
    fn agent_commands_parse_flat_with_their_own_socket() {
        let c = parse(&["tool", "call", "fs.read", "--args", r#"{"path":"/etc/hostname"}"#, "--why", "look", "--dry-run", "--agent-socket", "/tmp/a"]).unwrap();
        assert_eq!(c.agent_socket, Some(PathBuf::from("/tmp/a")));
        let mut args = Map::new();
        args.insert("path".into(), "/etc/hostname".into());
        assert_eq!(c.command, Command::Agent(AgentCommand::Tool { command: ToolCommand::Call { name: "fs.read".into(), args, why: "look".into(), dry_run: true } }));
        let c = parse(&["tool", "call", "x", "--why", "w"]).unwrap();
        assert_eq!(c.command, Command::Agent(AgentCommand::Tool { command: ToolCommand::Call { name: "x".into(), args: Map::new(), why: "w".into(), dry_run: false } }));
        assert_eq!(parse(&["agent", "--json"]).unwrap().command, Command::Agent(AgentCommand::Status));
        let c = parse(&["memory", "search", "disk", "full", "-n", "3"]).unwrap();
        assert_eq!(c.command, Command::Agent(AgentCommand::Memory { command: MemoryCommand::Search { query: vec!["disk".into(), "full".into()], limit: Some(3) } }));
        let c = parse(&["goal", "add", "keep redis up", "--priority", "-2", "--check", "service:redis:running"]).unwrap();
        assert_eq!(
            c.command,
            Command::Agent(AgentCommand::Goal { command: GoalCommand::Add { text: "keep redis up".into(), priority: Some(-2), check: Some("service:redis:running".into()), parent: None } })
        );
        assert_eq!(parse(&["deny", "r-1"]).unwrap().command, Command::Agent(AgentCommand::Deny { id: "r-1".into(), reason: String::new() }));
        assert_eq!(parse(&["decisions", "-n", "5"]).unwrap().command, Command::Agent(AgentCommand::Decisions { limit: Some(5) }));
    }

    #[test]
    fn bad_tool_args_are_a_usage_error_that_names_the_flag() {
        for (bad, says) in [("{\"path\":", "not JSON"), ("[1,2]", "not an array"), ("\"x\"", "not a string"), ("path=/x", "not JSON")] {
            let e = parse(&["tool", "call", "fs.read", "--args", bad, "--why", "w"]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
            let text = e.to_string();
            assert!(text.contains("--args") && text.contains(says), "{bad}: {text}");
        }
        for bad in [&["tool", "call", "fs.read"][..], &["tell"], &["memory", "search"], &["approve"], &["audit"]] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }
}

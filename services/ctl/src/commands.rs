//! What each ghostctl command for ghost-init does: the request it sends, what it prints (human
//! or `--json`), and how it ends. Streams end cleanly when ghost-init closes them or nobody
//! reads stdout. The agent's commands are in agent_commands.rs.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use ghost_proto::{Request, State, StreamItem};

use crate::cli::{Cli, Command};
use crate::client::{socket_path_from_env, Connection, Endpoint, SocketPath};
use crate::failure::Failure;
use crate::import_unit::{import_unit, names_from_path};
use crate::style::Style;
use crate::sys::{wait_readable_or_stdout_gone, Wake};
use crate::{agent_commands, human, render, table};

/// How the output looks, decided once per run.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub style: Style,
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    let output = Output { json: cli.json, style: Style::from_env() };
    let stdout = io::stdout();
    let fd = stdout.as_fd();
    let mut out = stdout.lock();
    match &cli.command {
        Command::ImportUnit { file, output: target } => import(file, target.as_deref(), &mut out),
        Command::Improve { args } => hand_over("improve", args, cli.json),
        Command::Snapshot { args } => hand_over("snapshot", args, cli.json),
        Command::Agent(command) => agent_commands::run(command, &socket_path_from_env(Endpoint::Agent, cli.agent_socket.as_deref()), output, &mut out),
        command => run_remote(command, &socket_path_from_env(Endpoint::Control, cli.socket.as_deref()), output, &mut out, fd),
    }
}

/// Every command that talks to ghost-init; `stdout_fd` is watched while a stream is idle.
pub fn run_remote(command: &Command, socket: &SocketPath, output: Output, out: &mut dyn Write, stdout_fd: BorrowedFd<'_>) -> Result<(), Failure> {
    let mut conn = Connection::open(socket)?;
    match command {
        Command::Status { name } => {
            let reply = conn.request(&Request::Status { name: name.clone() })?;
            let services = reply.services.unwrap_or_default();
            if output.json {
                json_line(out, &services)?;
            } else if let (Some(_), [one]) = (name, services.as_slice()) {
                print(out, &table::status_detail(one, output.style))?;
            } else {
                print(out, &table::status_table(&services, output.style))?;
            }
            if let Some(name) = name {
                // Like `systemctl is-active`: only a service that is up counts.
                match services.iter().find(|s| &s.name == name) {
                    None => return Err(Failure::Daemon(format!("ghost-init returned no status for `{name}`"))),
                    Some(s) if s.state != State::Running => return Err(Failure::NotRunning),
                    Some(_) => {}
                }
            }
        }
        Command::Start { name } | Command::Stop { name } | Command::Restart { name } => {
            let req = match command {
                Command::Start { .. } => Request::Start { name: name.clone() },
                Command::Stop { .. } => Request::Stop { name: name.clone() },
                _ => Request::Restart { name: name.clone() },
            };
            conn.request(&req)?;
            if output.json {
                print(out, "{\"ok\":true}\n")?;
            }
        }
        Command::Poweroff | Command::Reboot => {
            let req = if *command == Command::Poweroff { Request::Poweroff } else { Request::Reboot };
            conn.request(&req)?;
            if output.json {
                print(out, "{\"ok\":true}\n")?;
            }
        }
        Command::Init => {
            let info = conn.request(&Request::Init)?.init.unwrap_or_default();
            if output.json {
                json_line(out, &info)?;
            } else {
                print(out, &render::init_info(&info))?;
            }
        }
        Command::Reexec { binary } => reexec(&mut conn, socket, binary.clone(), output, out)?,
        Command::Reload => {
            let reply = conn.request(&Request::Reload)?;
            let report = reply.reload.unwrap_or_default();
            if output.json {
                json_line(out, &report)?;
            } else {
                print(out, &render::reload_report(&report))?;
            }
            if !report.errors.is_empty() {
                return Err(Failure::Daemon(format!("{} service file(s) could not be used; the rest was applied", report.errors.len())));
            }
        }
        Command::Logs { name, follow, lines } => {
            let reply = conn.request(&Request::Logs { name: name.clone(), lines: *lines, follow: *follow })?;
            let today = human::today();
            for l in reply.logs.unwrap_or_default() {
                if output.json {
                    json_line(out, &l)?;
                } else {
                    print(out, &(render::log_line(&l, output.style, today) + "\n"))?;
                }
            }
            if *follow {
                follow_stream(&mut conn, output, out, stdout_fd)?;
            }
        }
        Command::Events => {
            conn.request(&Request::Events)?;
            follow_stream(&mut conn, output, out, stdout_fd)?;
        }
        Command::ImportUnit { .. } => unreachable!("import-unit runs without a socket"),
        Command::Improve { .. } | Command::Snapshot { .. } => unreachable!("improve and snapshot run the userland"),
        Command::Agent(_) => unreachable!("the agent's commands go to the agent's socket"),
    }
    Ok(())
}

/// `reexec`: says how it went (exit 1 when the previous program came back).
fn reexec(conn: &mut Connection, socket: &SocketPath, binary: Option<String>, output: Output, out: &mut dyn Write) -> Result<(), Failure> {
    let info = crate::client::reexec_and_wait(conn, socket, binary)?;
    if output.json {
        json_line(out, &info)?;
    } else {
        print(out, &render::init_info(&info))?;
    }
    match info.last_reexec.and_then(|r| r.fell_back) {
        Some(why) => Err(Failure::Daemon(format!("the new program failed its checks and the previous one runs again: {why}"))),
        None => Ok(()),
    }
}

/// Prints stream items until ghost-init closes the stream (a clean end) or stdout goes away.
fn follow_stream(conn: &mut Connection, output: Output, out: &mut dyn Write, stdout_fd: BorrowedFd<'_>) -> Result<(), Failure> {
    loop {
        if !conn.has_buffered() {
            match wait_readable_or_stdout_gone(conn.socket_fd(), stdout_fd) {
                Ok(Wake::StdoutGone) => return Err(Failure::StdoutClosed),
                Ok(Wake::Readable) => {}
                Err(e) => return Err(Failure::Unreachable(format!("waiting on the control socket: {e}"))),
            }
        }
        let Some(item) = conn.next_item()? else {
            if !output.json {
                eprintln!("ghostctl: ghost-init ended the stream");
            }
            return Ok(());
        };
        let today = human::today();
        // JSON: the log line or event itself, as `logs` without -f prints them; a drop notice
        // keeps its stream form, `{"dropped":N}`.
        match (&item, output.json) {
            (StreamItem::Log(l), true) => json_line(out, l)?,
            (StreamItem::Event(e), true) => json_line(out, e)?,
            (StreamItem::Dropped(_), true) => json_line(out, &item)?,
            (StreamItem::Log(l), false) => print(out, &(render::log_line(l, output.style, today) + "\n"))?,
            (StreamItem::Event(e), false) => print(out, &(render::event_line(e, output.style, today) + "\n"))?,
            (StreamItem::Dropped(n), false) => print(out, &(output.style.red(&format!("-- {n} line(s) dropped: this reader was too slow --")) + "\n"))?,
        }
    }
}

/// `import-unit FILE [-o OUT]`: the service file to stdout or written atomically to OUT; what
/// was not carried over goes to stderr.
fn import(file: &Path, target: Option<&Path>, out: &mut dyn Write) -> Result<(), Failure> {
    let (_, unit_name) = names_from_path(file).map_err(Failure::Daemon)?;
    let text = std::fs::read_to_string(file).map_err(|e| Failure::Daemon(format!("{}: {e}", file.display())))?;
    let imported = import_unit(&text, &unit_name, &|p| p.is_file()).map_err(|e| Failure::Daemon(format!("{}: {e}", file.display())))?;
    let toml = imported.to_toml(&file.display().to_string());
    let mut err = io::stderr().lock();
    for line in imported.report() {
        let _ = writeln!(err, "{line}");
    }
    match target {
        None => print(out, &toml)?,
        Some(path) => {
            write_atomically(path, toml.as_bytes()).map_err(|e| Failure::Daemon(format!("cannot write {}: {e}", path.display())))?;
            let _ = writeln!(err, "ghostctl: wrote {} (service `{}`)", path.display(), imported.name);
        }
    }
    Ok(())
}

/// Writes a temporary file beside `path`, syncs it and renames it over `path`, so that a
/// reader (ghost-init reloading) sees the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    // Hidden and ending in .tmp: ghost-init, which reads *.toml, never takes it for a service.
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn print(out: &mut dyn Write, text: &str) -> Result<(), Failure> {
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).map_err(Failure::from_stdout)
}

/// One value as one line of JSON (`--json`).
pub(crate) fn json_line<T: serde::Serialize>(out: &mut dyn Write, v: &T) -> Result<(), Failure> {
    let text = serde_json::to_string(v).map_err(|e| Failure::Daemon(format!("cannot encode the output as JSON: {e}")))?;
    print(out, &(text + "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::socket_path;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::{UnixListener, UnixStream};

    /// A one-connection fake ghost-init: answers each request line with the next canned text.
    fn fake_server(answers: Vec<&'static str>) -> (tempfile::TempDir, SocketPath, std::thread::JoinHandle<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut got = Vec::new();
            for a in answers {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                got.push(line.trim_end().to_string());
                let _ = w.write_all(a.as_bytes());
            }
            got
        });
        (dir, socket_path(Endpoint::Control, Some(&path), None, None), handle)
    }

    const PLAIN: Output = Output { json: false, style: Style::PLAIN };
    const JSON: Output = Output { json: true, style: Style::PLAIN };

    fn run_with(command: Command, answers: Vec<&'static str>, output: Output) -> (Result<(), Failure>, String, Vec<String>) {
        let (_dir, socket, server) = fake_server(answers);
        let (keep_open, _reader) = UnixStream::pair().unwrap();
        let mut out = Vec::new();
        let r = run_remote(&command, &socket, output, &mut out, keep_open.as_fd());
        (r, String::from_utf8(out).unwrap(), server.join().unwrap())
    }

    #[test]
    fn status_of_one_service_exits_4_unless_it_runs() {
        let stopped = r#"{"ok":true,"services":[{"name":"web","state":"stopped","restarts":0}]}"#.to_string() + "\n";
        let (r, text, sent) = run_with(Command::Status { name: Some("web".into()) }, vec![Box::leak(stopped.into_boxed_str())], PLAIN);
        assert_eq!(r, Err(Failure::NotRunning));
        assert_eq!(r.unwrap_err().exit_code(), 4);
        assert!(text.starts_with("web\n  state:"), "{text}");
        assert_eq!(sent, [r#"{"cmd":"status","name":"web"}"#]);
        let (r, text, _) = run_with(Command::Status { name: Some("web".into()) }, vec!["{\"ok\":true,\"services\":[{\"name\":\"web\",\"state\":\"running\",\"pid\":7,\"restarts\":1}]}\n"], JSON);
        assert_eq!(r, Ok(()));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v[0]["pid"], 7);
        let (r, _, _) = run_with(Command::Status { name: Some("nope".into()) }, vec!["{\"ok\":false,\"error\":\"no service named `nope`\"}\n"], PLAIN);
        assert_eq!(r.unwrap_err().exit_code(), 1);
    }

    #[test]
    fn logs_follow_prints_backlog_and_stream_then_ends_when_the_server_closes() {
        let answers = vec![
            "{\"ok\":true,\"stream\":\"logs\"}\n{\"log\":{\"service\":\"a\",\"ts_ms\":1000,\"stream\":\"stdout\",\"text\":\"hello\"}}\n{\"dropped\":2}\n",
        ];
        let (r, text, sent) = run_with(Command::Logs { name: Some("a".into()), follow: true, lines: Some(5) }, answers.clone(), JSON);
        assert_eq!(r, Ok(()));
        assert_eq!(sent, [r#"{"cmd":"logs","name":"a","lines":5,"follow":true}"#]);
        assert_eq!(text, "{\"service\":\"a\",\"ts_ms\":1000,\"stream\":\"stdout\",\"text\":\"hello\"}\n{\"dropped\":2}\n");
        let (_, text, _) = run_with(Command::Logs { name: Some("a".into()), follow: true, lines: Some(5) }, answers, PLAIN);
        assert!(text.contains(" a | hello\n") && text.contains("2 line(s) dropped"), "{text}");
    }

    #[test]
    fn a_stream_ends_when_nobody_reads_stdout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // The server answers and then stays silent with the connection open.
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(s.try_clone().unwrap()).read_line(&mut line).unwrap();
            s.write_all(b"{\"ok\":true,\"stream\":\"events\"}\n").unwrap();
            std::thread::sleep(std::time::Duration::from_secs(5));
        });
        let (stdout, reader) = UnixStream::pair().unwrap();
        drop(reader);
        let t = std::time::Instant::now();
        let r = run_remote(&Command::Events, &socket_path(Endpoint::Control, Some(&path), None, None), PLAIN, &mut Vec::new(), stdout.as_fd());
        assert_eq!(r, Err(Failure::StdoutClosed));
        assert_eq!(Failure::StdoutClosed.exit_code(), 0);
        assert!(t.elapsed().as_secs() < 3, "it should not wait for the next event");
        drop(server);
    }

    #[test]
    fn reload_with_file_errors_exits_1_after_printing_the_report() {
        let (r, text, _) = run_with(Command::Reload, vec!["{\"ok\":true,\"reload\":{\"added\":[\"a\"],\"removed\":[],\"changed\":[],\"unchanged\":[],\"errors\":[\"b.toml: key `x`\"]}}\n"], PLAIN);
        assert!(text.contains("added     a") && text.contains("error: b.toml"), "{text}");
        assert_eq!(r.unwrap_err().exit_code(), 1);
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.toml");
        std::fs::write(&p, "old").unwrap();
        write_atomically(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomically(&dir.path().join("no/such/dir/x.toml"), b"x").is_err());
    }
}

/// `ghostctl improve|snapshot ARGS` is `ghost improve|snapshot ARGS`: the crucible (cargo, the
/// model router) and snapshots (SQLite's backup API) live in the userland; ghostctl, static
/// and small, hands over.
fn hand_over(command: &str, args: &[String], json: bool) -> Result<(), Failure> {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("ghost"))).filter(|p| p.is_file());
    let ghost = beside.unwrap_or_else(|| "ghost".into());
    let mut c = std::process::Command::new(&ghost);
    c.arg(command).args(args);
    if json && !args.iter().any(|a| a == "--json") {
        c.arg("--json");
    }
    let e = c.exec();
    Err(Failure::Daemon(format!("{}: {e} (`ghostctl {command}` runs `ghost {command}`, the userland)", ghost.display())))
}

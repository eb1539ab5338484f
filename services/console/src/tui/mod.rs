//! `ghost console`: the operator TUI (ratatui on crossterm).
//!
//! The state is a pure [`app::App`] changed by keys ([`app::App::handle_key`]) and by what the
//! pollers report ([`app::Update`]); [`view::render`] draws it. I/O lives in [`poll`]: one
//! thread per source feeding one channel, which the loop blocks on together with the
//! terminal's keys, so the screen is redrawn when something changes and at least every second.
//!
//! Paths: `GHOST_ROOT` (default `/`) prefixes every system path; the control socket is
//! `--socket`, else `GHOST_SOCKET`, else `ROOT/run/ghost/control.sock`; the agent's is
//! `--agent-socket`, else `GHOST_AGENT_SOCKET`, else `ROOT/run/ghost/agent.sock` — found as
//! ghostctl finds them.

pub mod app;
pub mod poll;
pub mod system;
pub mod theme;
pub mod view;

#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::Sender;

use anyhow::Context;
use ghostctl::client::{socket_path_from_env, Endpoint};

use app::{App, Command};
use poll::{Msg, Pollers};

/// `ghost console` arguments.
#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {
    /// ghost-init's control socket (default: GHOST_SOCKET, else ROOT/run/ghost/control.sock)
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The agent's socket (default: GHOST_AGENT_SOCKET, else ROOT/run/ghost/agent.sock)
    #[arg(long, value_name = "PATH")]
    pub agent_socket: Option<PathBuf>,
}

pub fn run(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!("ghost console needs a terminal on stdin and stdout (they are not one here); on the machine ghost-init runs it on /dev/tty2 (ghost.toml [console])");
    }
    ensure_size();
    let root = std::env::var_os("GHOST_ROOT").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    let control = socket_path_from_env(Endpoint::Control, args.socket.as_deref());
    let agent = socket_path_from_env(Endpoint::Agent, args.agent_socket.as_deref());
    let mut app = App::new(theme::Theme::from_env(), control.path.display().to_string(), agent.path.display().to_string());

    let (tx, rx) = std::sync::mpsc::channel();
    let pollers = poll::spawn(control, agent, system::Paths::under(&root), tx.clone()).context("cannot start the console's poller threads")?;
    spawn_input(tx)?;

    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = (|| -> anyhow::Result<()> {
        loop {
            app.now_ms = now_ms();
            terminal.draw(|f| view::render(&app, f)).context("cannot draw")?;
            let Ok(first) = rx.recv() else { anyhow::bail!("every poller stopped") };
            let mut next = Some(first);
            // Everything that is already there, then one frame.
            while let Some(msg) = next {
                match msg {
                    Msg::Input(crossterm::event::Event::Key(k)) if k.kind != crossterm::event::KeyEventKind::Release => {
                        for c in app.handle_key(k) {
                            dispatch(&pollers, c);
                        }
                    }
                    Msg::Input(crossterm::event::Event::Resize(..)) => {
                        terminal.autoresize().context("cannot resize")?;
                    }
                    Msg::Input(_) => {}
                    Msg::InputGone(e) => anyhow::bail!("the terminal cannot be read: {e}"),
                    Msg::Update(u) => app.apply(u),
                }
                if app.quit {
                    return Ok(());
                }
                next = rx.try_recv().ok();
            }
        }
    })();
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

fn dispatch(p: &Pollers, c: Command) {
    match c {
        Command::Control(r) => {
            let _ = p.control.send(r);
        }
        Command::Agent(r) => {
            let _ = p.agent.send(r);
        }
        Command::FollowLogs { name, generation } => p.logs.follow(name, generation),
    }
}

fn spawn_input(tx: Sender<Msg>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("console-input".into())
        .spawn(move || loop {
            let msg = match crossterm::event::read() {
                Ok(e) => Msg::Input(e),
                Err(e) => {
                    let _ = tx.send(Msg::InputGone(e.to_string()));
                    return;
                }
            };
            if tx.send(msg).is_err() {
                return;
            }
        })
        .context("cannot start the input thread")?;
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A terminal that reports 0×0 (a serial line nobody sized, when run by hand; ghost-init does
/// the same for its `terminal` services) gets 80×24, as `stty rows 24 cols 80` would do.
fn ensure_size() {
    // SAFETY: an all-zero winsize is valid; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is valid for the call; fd 1 is open (checked to be a terminal).
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && (ws.ws_row == 0 || ws.ws_col == 0) {
        ws.ws_row = 24;
        ws.ws_col = 80;
        // SAFETY: as above.
        unsafe { libc::ioctl(1, libc::TIOCSWINSZ, &ws) };
    }
}

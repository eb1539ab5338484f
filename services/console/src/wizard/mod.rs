//! `ghost wizard`: the first-boot setup wizard.
//!
//! ghost-init runs it on /dev/console on a first boot, before the services start, and waits
//! for it. It asks for the host name, the network (DHCP, static with its address, gateway
//! and name servers, or off), the language model to fetch (or none: stay offline), the
//! security mode, the operator's group or SSH key, and the time zone; it shows a summary, and
//! only its confirmation writes the overlay files on the state partition
//! (`/var/lib/ghost/etc/ghost.toml`, `model.toml`, `timezone`), all or nothing (see
//! [`output`]). A seed file answers it unattended (see [`seed`]).
//!
//! Exit codes (ghost-init reports them on the console):
//! - 0: the configuration was written (or, with `--check`, the seed is valid; with
//!   `--unattended` and no seed, nothing to do)
//! - 1: it could not be written (the old configuration stays)
//! - 2: usage, or a seed with a wrong value (`FILE: key: reason` on stderr; nothing written)
//! - 3: the operator left without saving (nothing written)
//! - 4: no key for `--idle-timeout-s` seconds (nothing written)
//! - 5: standard input is not a terminal and there is no seed (nothing written)

pub mod answers;
pub mod catalog;
pub mod output;
pub mod seed;
pub mod ui;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use answers::{Answers, Env};
use ui::{Outcome, Wizard};

pub const EXIT_WRITE_FAILED: u8 = 1;
pub const EXIT_USAGE_OR_SEED: u8 = 2;
pub const EXIT_LEFT: u8 = 3;
pub const EXIT_IDLE: u8 = 4;
pub const EXIT_NO_TERMINAL: u8 = 5;

/// `ghost wizard` arguments.
#[derive(clap::Args, Debug)]
#[command(after_help = "Writes GHOST_ROOT/var/lib/ghost/etc/{ghost.toml,model.toml,timezone} once the summary is confirmed, all or nothing.\n\
Exit codes: 0 written (--check: the seed is valid), 1 could not write, 2 usage or a seed with problems (FILE: key: reason),\n\
3 left without saving, 4 no key for --idle-timeout-s, 5 not a terminal and no seed. Nothing is written unless 0.")]
pub struct WizardArgs {
    /// Answers from this seed file instead of the screens (without a terminal, --unattended or
    /// --check: GHOST_ROOT/var/lib/ghost/seed.toml, then GHOST_ROOT/boot/efi/ghost-seed.toml, when one exists).
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// Check the seed and print what it would write; write nothing.
    #[arg(long)]
    pub check: bool,
    /// Never ask: apply a seed if there is one, else do nothing (exit 0).
    #[arg(long)]
    pub unattended: bool,
    /// Give up (exit 4, nothing written) after this many seconds without a key; 0: never.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub idle_timeout_s: u64,
}

pub fn run(args: WizardArgs) -> anyhow::Result<ExitCode> {
    let root = std::env::var_os("GHOST_ROOT").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
    Ok(ExitCode::from(run_in(&args, &Env::new(root))))
}

fn run_in(args: &WizardArgs, env: &Env) -> u8 {
    // A seed on the machine answers when nobody can (no terminal, --unattended, --check); a
    // person at a terminal gets the screens even where an install left its seed behind.
    let at_terminal = std::io::stdin().is_terminal() && !args.unattended && !args.check;
    let seed = args.seed.clone().or_else(|| if at_terminal { None } else { seed::discover(env) });
    if let Some(path) = seed {
        return from_seed(&path, args.check, env);
    }
    if args.check {
        eprintln!("ghost wizard: --check needs a seed file (--seed FILE, or one at {})", seed::searched(env));
        return EXIT_USAGE_OR_SEED;
    }
    if args.unattended {
        println!("ghost wizard: no seed file (looked at {}); nothing written, the current settings stay", seed::searched(env));
        return 0;
    }
    if !std::io::stdin().is_terminal() {
        eprintln!(
            "ghost wizard: standard input is not a terminal and there is no seed file (looked at {}); nothing written",
            seed::searched(env)
        );
        return EXIT_NO_TERMINAL;
    }
    let mut w = Wizard::new(env.clone(), Answers::current(env));
    w.idle_timeout_s = (args.idle_timeout_s > 0).then_some(args.idle_timeout_s);
    w.color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::env::var("TERM").ok().as_deref() != Some("dumb");
    let idle = (args.idle_timeout_s > 0).then(|| Duration::from_secs(args.idle_timeout_s));
    match interactive(&mut w, idle) {
        Ok(Ended::Confirmed) => write(&w.answers, env),
        Ok(Ended::Quit) => {
            println!("ghost wizard: left without saving; nothing written");
            EXIT_LEFT
        }
        Ok(Ended::Idle) => {
            println!("ghost wizard: no key for {} s; nothing written, the current settings stay", args.idle_timeout_s);
            EXIT_IDLE
        }
        Err(e) => {
            eprintln!("ghost wizard: the terminal failed: {e}; nothing written");
            EXIT_WRITE_FAILED
        }
    }
}

fn from_seed(path: &std::path::Path, check: bool, env: &Env) -> u8 {
    let answers = match seed::load(path, env) {
        Ok(a) => a,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            eprintln!("ghost wizard: the seed has problems; nothing written");
            return EXIT_USAGE_OR_SEED;
        }
    };
    println!("ghost wizard: answers from {}", path.display());
    for (k, v) in ui::summary(&answers) {
        println!("  {k:<10} {v}");
    }
    if check {
        for (name, _) in output::render(&answers, env) {
            println!("ghost wizard: --check: would write {}", env.overlay().join(name).display());
        }
        return 0;
    }
    write(&answers, env)
}

fn write(a: &Answers, env: &Env) -> u8 {
    match output::write(a, env) {
        Ok(paths) => {
            println!("ghost wizard: wrote {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
            0
        }
        Err(e) => {
            eprintln!("ghost wizard: {e}; the previous configuration stays");
            EXIT_WRITE_FAILED
        }
    }
}

enum Ended {
    Confirmed,
    Quit,
    Idle,
}

/// Restores the terminal however the wizard ends (an early return, a panic).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
        // The Linux console has no alternate screen: clear ours, so that boot's lines that
        // follow are not written over the wizard's last screen.
        let _ = crossterm::execute!(
            std::io::stdout(),
            crossterm::terminal::Clear(crossterm::terminal::ClearType::All),
            crossterm::cursor::MoveTo(0, 0),
            crossterm::terminal::LeaveAlternateScreen,
            crossterm::cursor::Show
        );
    }
}

fn interactive(w: &mut Wizard, idle: Option<Duration>) -> std::io::Result<Ended> {
    use crossterm::event::{self, Event, KeyEventKind};
    crossterm::terminal::enable_raw_mode()?;
    let _guard = TerminalGuard;
    crossterm::execute!(std::io::stdout(), crossterm::terminal::EnterAlternateScreen, crossterm::cursor::Hide)?;
    let mut term = ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))?;
    let mut last_key = Instant::now();
    loop {
        term.draw(|f| w.draw(f))?;
        let wait = match idle {
            Some(limit) => match limit.checked_sub(last_key.elapsed()) {
                Some(left) => left,
                None => return Ok(Ended::Idle),
            },
            None => Duration::from_secs(3600),
        };
        if !event::poll(wait)? {
            continue;
        }
        match event::read()? {
            // Ctrl-L redraws the whole screen (kernel messages on the console can scribble on it).
            Event::Key(k) if k.code == crossterm::event::KeyCode::Char('l') && k.modifiers.contains(crossterm::event::KeyModifiers::CONTROL) => {
                last_key = Instant::now();
                term.clear()?;
            }
            Event::Key(k) if k.kind != KeyEventKind::Release => {
                last_key = Instant::now();
                match w.key(k) {
                    Outcome::Continue => {}
                    Outcome::Confirmed => return Ok(Ended::Confirmed),
                    Outcome::Quit => return Ok(Ended::Quit),
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(seed: Option<PathBuf>, check: bool, unattended: bool) -> WizardArgs {
        WizardArgs { seed, check, unattended, idle_timeout_s: 0 }
    }

    #[test]
    fn a_good_seed_writes_and_a_bad_one_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let env = Env::new(d.path());
        let bad = d.path().join("bad.toml");
        std::fs::write(&bad, "hostname = \"box\"\n[network]\nmode = \"static\"\naddress = \"10.0.0.300/24\"\n").unwrap();
        assert_eq!(run_in(&args(Some(bad), false, false), &env), EXIT_USAGE_OR_SEED);
        assert!(!env.overlay().join("ghost.toml").exists());
        let good = d.path().join("good.toml");
        std::fs::write(&good, "hostname = \"box\"\n").unwrap();
        assert_eq!(run_in(&args(Some(good.clone()), true, false), &env), 0);
        assert!(!env.overlay().join("ghost.toml").exists(), "--check wrote");
        assert_eq!(run_in(&args(Some(good), false, false), &env), 0);
        assert!(std::fs::read_to_string(env.overlay().join("ghost.toml")).unwrap().contains("hostname = \"box\""));
    }

    #[test]
    fn unattended_without_a_seed_does_nothing_and_check_needs_one() {
        let d = tempfile::tempdir().unwrap();
        let env = Env::new(d.path());
        assert_eq!(run_in(&args(None, false, true), &env), 0);
        assert!(!env.overlay().exists());
        assert_eq!(run_in(&args(None, true, false), &env), EXIT_USAGE_OR_SEED);
        // A discovered seed answers unattended.
        std::fs::create_dir_all(d.path().join("var/lib/ghost")).unwrap();
        std::fs::write(d.path().join("var/lib/ghost/seed.toml"), "timezone = \"UTC\"\nhostname = \"seeded\"\n").unwrap();
        assert_eq!(run_in(&args(None, false, true), &env), 0);
        assert!(std::fs::read_to_string(env.overlay().join("ghost.toml")).unwrap().contains("seeded"));
    }
}

//! The first-boot wizard step: on a first boot, before the services, ghost-init runs
//! `/usr/bin/ghost wizard` and waits for it through the event loop (signals and reaping go on),
//! then reads the configuration again (the wizard writes its overlay in /var/lib/ghost/etc)
//! and boots the rest. Bounded twice: the wizard gives up by itself after
//! [`IDLE_TIMEOUT_S`] without a key (exit 4, nothing written), and PID 1 kills it past
//! [`INTERACTIVE_BOUND`] (or [`UNATTENDED_BOUND`] for a seed) whatever it is doing.
//!
//! Which way it runs is [`plan`], a pure function of the boot's facts:
//! - not a first boot, or no /usr/bin/ghost in the image: not at all;
//! - `ghost.wizard=skip`, `ghost.poweroff_after_ready=1` (a boot that powers itself off has
//!   nobody at the console), or hosted mode (the console is not ours): unattended when a seed
//!   file exists (`ghost wizard --unattended`), else not at all;
//! - otherwise unattended when a seed file exists (an automated install meant it), else on
//!   /dev/console, interactive.

use std::time::{Duration, Instant};

use crate::init::{Init, Phase};
use crate::say;
use crate::supervisor::Exit;

/// Seconds without a key after which the wizard leaves the current settings and exits.
pub const IDLE_TIMEOUT_S: u64 = 300;
/// PID 1's own limit on an interactive wizard.
pub const INTERACTIVE_BOUND: Duration = Duration::from_secs(60 * 60);
/// PID 1's limit on applying a seed.
pub const UNATTENDED_BOUND: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub first_boot: bool,
    pub skip: bool,
    pub poweroff_after_ready: bool,
    pub hosted: bool,
    pub have_ghost: bool,
    pub have_seed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Not run; the line to say, if any.
    Skip(Option<String>),
    /// `ghost wizard --unattended`: the seed, output on PID 1's console.
    Unattended,
    /// `ghost wizard` on /dev/console.
    Interactive,
}

pub fn plan(f: &Facts) -> Plan {
    if !f.first_boot {
        return Plan::Skip(None);
    }
    let unattended_why = if f.skip {
        Some("ghost.wizard=skip")
    } else if f.poweroff_after_ready {
        Some("ghost.poweroff_after_ready=1 (an unattended boot)")
    } else if f.hosted {
        Some("hosted mode")
    } else {
        None
    };
    if !f.have_ghost {
        // Hosted roots without the userland are most tests: nothing to say there.
        return Plan::Skip((!f.hosted).then(|| "wizard: skipped: no /usr/bin/ghost in this image; the current settings stay".to_string()));
    }
    match unattended_why {
        Some(_) if f.have_seed => Plan::Unattended,
        Some(_) if f.hosted => Plan::Skip(None),
        Some(why) => Plan::Skip(Some(format!("wizard: skipped ({why}) and no seed file; the current settings stay"))),
        None if f.have_seed => Plan::Unattended,
        None => Plan::Interactive,
    }
}

/// A wizard that PID 1 waits for.
pub struct WizardRun {
    pub pid: i32,
    pub started: Instant,
    pub bound: Instant,
    pub killed: bool,
}

/// What an exit of `ghost wizard` means, for the console (exit codes of services/console's wizard).
pub fn verdict(exit: Exit, killed: bool) -> Result<Option<&'static str>, String> {
    match exit {
        Exit::Code(0) => Ok(None),
        Exit::Code(3) => Ok(Some("left without saving; the current settings stay")),
        Exit::Code(1) => Err("the configuration could not be written (reason above); the previous one stays".into()),
        Exit::Code(2) => Err("the seed file has problems (listed above); nothing was written".into()),
        Exit::Code(4) => Err(format!("no key at the console for {IDLE_TIMEOUT_S} s; the current settings stay")),
        Exit::Code(5) => Err("the console is not a terminal and there is no seed file; the current settings stay".into()),
        Exit::Code(127) => Err("/usr/bin/ghost could not be run; the current settings stay".into()),
        Exit::Code(n) => Err(format!("exit code {n}; the current settings stay")),
        Exit::Signal(_) if killed => Err("it ran past its time and was stopped; the current settings stay".into()),
        Exit::Signal(s) => Err(format!("killed by signal {s}; the current settings stay")),
    }
}

impl Init {
    /// Starts the wizard when this boot wants one; true when boot now waits for it.
    pub fn start_wizard(&mut self) -> bool {
        let ghost = self.paths.at("usr/bin/ghost");
        let facts = Facts {
            first_boot: self.first_boot,
            skip: self.cmdline.wizard_skip,
            poweroff_after_ready: self.cmdline.poweroff_after_ready,
            hosted: self.hosted,
            have_ghost: ghost.is_file(),
            have_seed: ghost_proto::settings::SEED_PATHS.iter().any(|p| self.paths.at(p).is_file()),
        };
        let interactive = match plan(&facts) {
            Plan::Skip(line) => {
                if let Some(l) = line {
                    say!("{l}");
                }
                return false;
            }
            Plan::Unattended => false,
            Plan::Interactive => true,
        };
        let mut argv = vec![ghost.display().to_string(), "wizard".to_string()];
        if interactive {
            argv.extend(["--idle-timeout-s".to_string(), IDLE_TIMEOUT_S.to_string()]);
        } else {
            argv.push("--unattended".into());
        }
        let mut env = vec![("GHOST_ROOT".to_string(), self.paths.root().display().to_string())];
        let tty = interactive.then(|| {
            let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
            let dev = active.split_whitespace().last().map(|d| format!("/dev/{d}")).unwrap_or_default();
            env.push(("TERM".into(), crate::service_file::term_for(&dev).into()));
            "/dev/console"
        });
        let started = Instant::now();
        match crate::spawn::spawn_with(&argv, &env, tty) {
            Ok(pid) => {
                say!("wizard: {} (pid {pid})", if interactive { "on the console; boot goes on once it is answered" } else { "answering from the seed file" });
                let bound = started + if interactive { INTERACTIVE_BOUND } else { UNATTENDED_BOUND };
                self.wizard = Some(WizardRun { pid, started, bound, killed: false });
                true
            }
            Err(e) => {
                say!("wizard failed: {e}; the current settings stay");
                false
            }
        }
    }

    /// The wizard ended: say how, read the configuration again, boot the rest.
    pub fn wizard_exited(&mut self, exit: Exit) {
        let Some(run) = self.wizard.take() else { return };
        let ms = run.started.elapsed().as_millis();
        match verdict(exit, run.killed) {
            Ok(note) => {
                if let Some(n) = note {
                    say!("wizard: {n}");
                }
                say!("wizard ok in {ms} ms");
            }
            Err(why) => say!("wizard failed: {why}"),
        }
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        let overlay = self.paths.state().join("etc/ghost.toml");
        if overlay.exists() {
            say!("config: using the overlay {}", overlay.display());
            let _ = self.reload_config();
        }
        self.boot_services();
    }

    /// Past its bound, the wizard (and whatever it started) is killed; its exit is reaped as usual.
    pub fn wizard_tick(&mut self, now: Instant) {
        if let Some(run) = &mut self.wizard {
            if now >= run.bound && !run.killed {
                run.killed = true;
                say!("wizard: still running after {} s; stopping it", run.started.elapsed().as_secs());
                if crate::sys::kill(-run.pid, libc::SIGKILL).is_err() {
                    let _ = crate::sys::kill(run.pid, libc::SIGKILL);
                }
            }
        }
    }

    pub fn wizard_deadline(&self) -> Option<Instant> {
        self.wizard.as_ref().filter(|r| !r.killed).map(|r| r.bound)
    }

    /// Shutdown while the wizard runs: it is asked to stop too (it writes nothing then).
    pub fn stop_wizard(&mut self) {
        if let Some(run) = &self.wizard {
            if crate::sys::kill(-run.pid, libc::SIGTERM).is_err() {
                let _ = crate::sys::kill(run.pid, libc::SIGTERM);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts { first_boot: true, skip: false, poweroff_after_ready: false, hosted: false, have_ghost: true, have_seed: false }
    }

    #[test]
    fn a_first_boot_at_the_console_is_interactive() {
        assert_eq!(plan(&facts()), Plan::Interactive);
        // A seed is an automated install's answer: it wins over the screens.
        assert_eq!(plan(&Facts { have_seed: true, ..facts() }), Plan::Unattended);
        assert_eq!(plan(&Facts { first_boot: false, ..facts() }), Plan::Skip(None));
    }

    #[test]
    fn unattended_boots_use_a_seed_or_say_why_nothing_runs() {
        for f in [Facts { skip: true, ..facts() }, Facts { poweroff_after_ready: true, ..facts() }] {
            assert_eq!(plan(&Facts { have_seed: true, ..f.clone() }), Plan::Unattended);
            let Plan::Skip(Some(line)) = plan(&f) else { panic!("{f:?}") };
            assert!(line.contains("no seed file"), "{line}");
        }
        let Plan::Skip(Some(line)) = plan(&Facts { skip: true, ..facts() }) else { panic!() };
        assert!(line.contains("ghost.wizard=skip"), "{line}");
        // Hosted: never the console; a seed is applied, and without one nothing is said.
        assert_eq!(plan(&Facts { hosted: true, have_seed: true, ..facts() }), Plan::Unattended);
        assert_eq!(plan(&Facts { hosted: true, ..facts() }), Plan::Skip(None));
        assert_eq!(plan(&Facts { hosted: true, have_ghost: false, have_seed: true, ..facts() }), Plan::Skip(None));
        let Plan::Skip(Some(line)) = plan(&Facts { have_ghost: false, ..facts() }) else { panic!() };
        assert!(line.contains("no /usr/bin/ghost"), "{line}");
    }

    #[test]
    fn every_exit_is_explained() {
        assert_eq!(verdict(Exit::Code(0), false), Ok(None));
        assert!(verdict(Exit::Code(3), false).unwrap().unwrap().contains("without saving"));
        assert!(verdict(Exit::Code(2), false).unwrap_err().contains("seed"));
        assert!(verdict(Exit::Code(4), false).unwrap_err().contains("no key at the console for 300 s"));
        assert!(verdict(Exit::Code(5), false).unwrap_err().contains("not a terminal"));
        assert!(verdict(Exit::Signal(9), true).unwrap_err().contains("ran past its time"));
        assert!(verdict(Exit::Signal(11), false).unwrap_err().contains("signal 11"));
    }
}

//! ghost-init: PID 1 of ghostos, or (with `--hosted`) the same supervisor as an ordinary
//! process. See shared/DESIGN.md sections 1 and 4.

mod boot;
mod cgroup;
mod cmdline;
mod config;
mod control;
mod identity;
mod init;
mod log;
mod logbook;
mod modules;
mod network;
mod mounts;
mod notify;
mod paths;
mod power_button;
mod probe;
mod procfs;
mod reactor;
mod reexec;
mod rescue;
mod service_file;
mod shutdown;
mod spawn;
mod state;
mod supervisor;
mod sys;
mod wizard;

use std::path::PathBuf;
use std::time::Instant;

const USAGE: &str = "\
usage: ghost-init                      as the kernel's init (PID 1)
       ghost-init --hosted --root DIR [--cmdline 'ghost.KEY=VALUE ...']
                                       the same supervisor as an ordinary process, every path under DIR
       ghost-init --version | --help
internal (a re-execution of PID 1, `ghostctl reexec`):
       ghost-init --reexec-check FD      can this program take over the handover on FD?
       ghost-init --resume FD [--fallback FD2 | --fell-back WHY]";

#[derive(Debug, Default, PartialEq)]
struct Args {
    hosted: bool,
    root: Option<PathBuf>,
    cmdline: String,
    /// Words the kernel passed that are not ours (it hands unknown boot words to init).
    ignored: Vec<String>,
    help: bool,
    version: bool,
    /// A re-execution: the handover's descriptor, the previous program's, and (when this
    /// is the previous program again) why the new one could not take over.
    resume: Option<i32>,
    fallback: Option<i32>,
    fell_back: Option<String>,
    reexec_check: Option<i32>,
}

fn fd_arg(flag: &str, v: Option<String>) -> Result<i32, String> {
    v.and_then(|s| s.parse().ok()).filter(|&n: &i32| n >= 0).ok_or_else(|| format!("{flag} needs a descriptor number"))
}

/// Hand-written rather than clap: PID 1 takes four flags, and clap would double its size.
fn parse_args(args: impl Iterator<Item = String>, strict: bool) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args;
    while let Some(w) = it.next() {
        match w.as_str() {
            "--hosted" => a.hosted = true,
            "--root" => a.root = Some(it.next().ok_or("--root needs a directory")?.into()),
            "--cmdline" => a.cmdline = it.next().ok_or("--cmdline needs a string")?,
            "--help" | "-h" => a.help = true,
            "--version" | "-V" => a.version = true,
            "--resume" => a.resume = Some(fd_arg("--resume", it.next())?),
            "--fallback" => a.fallback = Some(fd_arg("--fallback", it.next())?),
            "--fell-back" => a.fell_back = Some(it.next().ok_or("--fell-back needs a reason")?),
            "--reexec-check" => a.reexec_check = Some(fd_arg("--reexec-check", it.next())?),
            other if other.starts_with("--root=") => a.root = Some(other["--root=".len()..].into()),
            other if other.starts_with("--cmdline=") => a.cmdline = other["--cmdline=".len()..].into(),
            other if strict => return Err(format!("unknown argument `{other}`")),
            other => a.ignored.push(other.to_string()),
        }
    }
    if a.hosted && a.root.is_none() {
        return Err("--hosted needs --root DIR".into());
    }
    if a.root.is_some() && !a.hosted {
        return Err("--root is only for --hosted".into());
    }
    Ok(a)
}

fn main() {
    let start = Instant::now();
    let pid1 = std::process::id() == 1;
    // As the kernel's init, tolerate the boot words the kernel passes on; otherwise be strict.
    let strict = !pid1 || std::env::args().skip(1).any(|a| a == "--hosted" || a == "--resume");
    let args = match parse_args(std::env::args().skip(1), strict) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ghost-init: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if args.help {
        println!("{USAGE}");
        return;
    }
    if args.version {
        println!("ghost-init {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if let Some(fd) = args.reexec_check {
        std::process::exit(reexec::check_main(fd));
    }
    if let Some(fd) = args.resume {
        resume(fd, args.fallback, args.fell_back, start);
    }
    if !args.hosted && !pid1 {
        eprintln!("ghost-init: not PID 1; run it as the kernel's init, or as `ghost-init --hosted --root DIR`\n{USAGE}");
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        say!("PANIC{at}: {}", boot::panic_text(info.payload()));
    }));
    for w in &args.ignored {
        say!("ignoring the boot argument `{w}`");
    }
    let root = match &args.root {
        Some(r) => match std::fs::canonicalize(r) {
            Ok(p) if p.is_dir() => p,
            _ => {
                eprintln!("ghost-init: --root {}: not a directory", r.display());
                std::process::exit(2);
            }
        },
        None => PathBuf::from("/"),
    };
    let reactor = match reactor::Reactor::new() {
        Ok(r) => r,
        Err(e) => {
            say!("cannot set up signal handling: {e}");
            if args.hosted {
                std::process::exit(1);
            }
            last_resort();
        }
    };
    if args.hosted {
        if let Err(e) = sys::set_child_subreaper() {
            say!("cannot become a child subreaper ({e}); orphans of services will not be reaped here");
        }
    } else if let Err(e) = sys::hand_ctrl_alt_del_to_init() {
        say!("Ctrl-Alt-Del stays with the kernel: {e}");
    }
    let mut init = init::Init::new(args.hosted, paths::Paths::new(root), &args.cmdline, reactor, start);
    let action = init.run();
    init.finish(action);
    std::process::exit(0);
}

/// A re-executed PID 1: takes over from the previous program, or hands back to it.
fn resume(fd: i32, fallback: Option<i32>, fell_back: Option<String>, start: Instant) -> ! {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        say!("PANIC{at}: {}", boot::panic_text(info.payload()));
    }));
    let why = match reactor::Reactor::new() {
        Err(e) => format!("cannot set up signal handling: {e}"),
        Ok(reactor) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reexec::resume(fd, fell_back.clone(), reactor, start))) {
            Ok(Ok(mut init)) => {
                // SAFETY: closing the handover, the previous program's descriptor and the
                // originals of the adopted copies: ours, and no longer needed.
                unsafe {
                    libc::close(fd);
                    if let Some(old) = fallback {
                        libc::close(old);
                    }
                    for o in std::mem::take(&mut init.reexec.originals) {
                        libc::close(o);
                    }
                }
                let action = init.serve_events();
                init.finish(action);
                std::process::exit(0);
            }
            Ok(Err((why, _reactor))) => why,
            Err(p) => format!("panicked: {}", boot::panic_text(&*p)),
        },
    };
    let why = if fell_back.is_some() { format!("{why} (and this is the previous program already)") } else { reexec::fall_back(fd, fallback, &why) };
    say!("re-exec: cannot go on: {why}");
    if std::process::id() == 1 {
        say!("re-exec: PID 1 keeps reaping; the services run on unsupervised until a reboot");
        last_resort();
    }
    std::process::exit(1);
}

/// PID 1 without its event loop: keep reaping, forever. Never returns, never exits.
fn last_resort() -> ! {
    loop {
        let mut status = 0;
        // SAFETY: blocking waitpid into a valid int; with no children it fails and we pause.
        if unsafe { libc::waitpid(-1, &mut status, 0) } < 0 {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str], strict: bool) -> Result<Args, String> {
        parse_args(v.iter().map(|s| s.to_string()), strict)
    }

    #[test]
    fn hosted_needs_root_and_flags_parse() {
        let a = args(&["--hosted", "--root", "/tmp/x", "--cmdline", "ghost.debug=1"], true).unwrap();
        assert!(a.hosted);
        assert_eq!(a.root, Some("/tmp/x".into()));
        assert_eq!(a.cmdline, "ghost.debug=1");
        assert_eq!(args(&["--hosted"], true).unwrap_err(), "--hosted needs --root DIR");
        assert_eq!(args(&["--root", "/x"], true).unwrap_err(), "--root is only for --hosted");
        assert!(args(&["--hosted", "--root=/r", "--cmdline=a b"], true).unwrap().cmdline == "a b");
    }

    #[test]
    fn kernel_words_are_ignored_as_pid1_but_rejected_otherwise() {
        assert_eq!(args(&["splash", "ro"], false).unwrap().ignored, ["splash", "ro"]);
        assert!(args(&["splash"], true).unwrap_err().contains("`splash`"));
    }
}

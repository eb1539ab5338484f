//! PID 1 benchmarks (issues 2 and 8): stripped size, resident memory at idle, exec → `boot
//! complete` in a PID namespace with 10 trivial services, and a re-execution of PID 1 with
//! those 10 services running. Each figure is printed beside a
//! baseline measured in the same run, as a ratio, for BENCHMARKS.md.
//!
//! Run: `CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release -p ghost-init -p ghostctl
//! --target x86_64-unknown-linux-musl && cargo bench -p ghost-tests --bench pid1`

use ghost_tests::measure::rss_kib;
use ghost_tests::{workspace_root, Ghost, Isolation, Root};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 30;

fn release_init() -> std::path::PathBuf {
    let p = workspace_root().join("target/x86_64-unknown-linux-musl/release/ghost-init");
    assert!(p.is_file(), "build the release static ghost-init first (see the module docs): {}", p.display());
    p
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Wall time from spawn to the first stderr line containing `needle`.
fn time_to_line(mut cmd: Command, needle: &str) -> (Duration, String) {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let mut found = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap_or_default();
        if found.is_none() && line.contains(needle) {
            found = Some((t.elapsed(), line));
        }
    }
    let _ = child.wait();
    found.unwrap_or_else(|| panic!("no line containing {needle:?}"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    std::env::set_var("GHOST_BIN_DIR", release_init().parent().unwrap());
    let init = release_init();

    // 1. Size: the stripped static binary beside busybox-static (a whole userland in one binary).
    let size = std::fs::metadata(&init).unwrap().len();
    let busybox = std::fs::metadata("/bin/busybox").map(|m| m.len()).unwrap_or(0);

    // 2. exec → boot complete with 10 services, as PID 1 of a fresh PID namespace.
    let root = Root::new();
    for i in 0..10 {
        root.service(&format!("svc{i}"), "exec = [\"/bin/sleep\", \"1000\"]\n");
    }
    let mut wall = Vec::new();
    let mut inner = Vec::new();
    let mut base = Vec::new();
    for _ in 0..RUNS {
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount-proc"]).arg(&init).args(["--hosted", "--root"]).arg(root.path());
        c.args(["--cmdline", "ghost.poweroff_after_ready=1 ghost.debug=1"]);
        let (t, _) = time_to_line(c, "boot complete in");
        wall.push(t.as_secs_f64() * 1e3);
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount-proc"]).arg(&init).args(["--hosted", "--root"]).arg(root.path());
        c.args(["--cmdline", "ghost.poweroff_after_ready=1 ghost.debug=1"]);
        let (_, line) = time_to_line(c, "us from exec");
        let us: f64 = line.split("complete: ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
        inner.push(us / 1e3);
        // Baseline: the same namespace set-up running a program that prints one line at once.
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount-proc", "/bin/sh", "-c", "echo ready >&2"]);
        let (t, _) = time_to_line(c, "ready");
        base.push(t.as_secs_f64() * 1e3);
    }

    // 3. Resident memory at idle, 10 services running, beside one of its `sleep` services.
    let g = Ghost::start(&root, Isolation::PidNamespace, "");
    g.console.wait_for("boot complete", Duration::from_secs(10));
    let sleeper = g.processes().into_iter().find(|p| p.cmdline == "/bin/sleep 1000").expect("a service");
    let (rss, rss_sleep) = (rss_kib(g.pid), rss_kib(sleeper.pid));

    // 4. Re-exec of PID 1 with the 10 services: PID 1's own clock (execve of the old program →
    // the new one serving), and `ghostctl reexec` end to end (request → the new program
    // answers), beside `ghostctl init` (one request from a fresh client) in the same run.
    let ctl = |args: &[&str]| {
        let t = Instant::now();
        let out = Command::new(ghost_tests::bin("ghostctl")).arg("--socket").arg(root.path().join("run/ghost/control.sock")).args(args).output().expect("ghostctl");
        assert!(out.status.success(), "ghostctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (t.elapsed().as_secs_f64() * 1e3, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let pids = || ghost_tests::control(&root, "{\"cmd\":\"status\"}").services.unwrap().into_iter().map(|s| s.pid).collect::<Vec<_>>();
    let before = pids();
    let (mut rx_inner, mut rx_wall, mut rx_base) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (ms, out) = ctl(&["--json", "reexec"]);
        let info: ghost_proto::InitInfo = serde_json::from_str(out.trim()).expect("reexec --json");
        rx_inner.push(info.last_reexec.expect("report").took_us as f64 / 1e3);
        rx_wall.push(ms);
        rx_base.push(ctl(&["--json", "init"]).0);
    }
    assert_eq!(pids(), before, "every service kept its process through {RUNS} re-execs");
    g.signal(libc::SIGTERM);
    drop(g);

    let (w, i, b) = (median(wall), median(inner), median(base));
    println!("| measure | ghost-init | baseline | ratio |");
    println!("| --- | --- | --- | --- |");
    println!("| stripped size | {:.2} MiB | busybox-static {:.2} MiB | {:.2} |", size as f64 / 1048576.0, busybox as f64 / 1048576.0, size as f64 / busybox as f64);
    println!("| resident memory at idle, 10 services | {rss} KiB | /bin/sleep {rss_sleep} KiB | {:.2} |", rss as f64 / rss_sleep as f64);
    println!("| exec → boot complete, 10 services (ghost-init's own clock), median of {RUNS} | {i:.2} ms | | |");
    println!("| spawn → `boot complete` line, 10 services, median of {RUNS} | {w:.2} ms | unshare + sh echo {b:.2} ms | {:.2} |", w / b);
    let (ri, rw, rb) = (median(rx_inner), median(rx_wall), median(rx_base));
    println!("| re-exec, 10 services kept (PID 1's own clock: execve → serving), median of {RUNS} | {ri:.2} ms | | |");
    println!("| `ghostctl reexec` end to end (check, exec, the new program answering), median of {RUNS} | {rw:.2} ms | `ghostctl init` {rb:.2} ms | {:.2} |", rw / rb);
}

//! Supervisor benchmarks (issue 3), each beside a baseline measured in the same run:
//! restart latency (kill → the new process running) over many restarts, PID 1 CPU and memory
//! at idle with 50 services and 1 s probes on 20 of them, and log throughput with the status
//! reply latency under a flood, and the longest gap a client sees while a service is
//! restarted with `overlap = true` (issue 8) beside the same restart without it.
//!
//! Run: `CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release -p ghost-init --target
//! x86_64-unknown-linux-musl && cargo bench -p ghost-tests --bench supervisor`

use ghost_tests::measure::{cpu_ticks, percentile, rss_kib};
use ghost_tests::{control, status, wait_for_control, workspace_root, Ghost, Isolation, Root};
use std::time::{Duration, Instant};

const RESTARTS: usize = 300;

fn mono_ns() -> u128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// The last complete line (the writer may be half-way through the next one).
fn last_line(path: &std::path::Path) -> Option<(i32, u128)> {
    let text = std::fs::read_to_string(path).ok()?;
    let complete = &text[..text.rfind('\n')?];
    let l = complete.lines().last()?;
    let (p, t) = l.split_once(' ')?;
    Some((p.parse().ok()?, t.parse().ok()?))
}

/// Restarts of the swappable service (tests/lib.rs) with a client asking all the time:
/// (longest gap between two answers in ms, failed requests, requests), over `n` restarts.
fn swap_gaps(overlap: bool, n: usize) -> (f64, usize, usize) {
    let root = Root::new();
    let sock = root.path().join("swap.sock");
    std::fs::write(root.path().join("swappable.py"), ghost_tests::SWAPPABLE).unwrap();
    root.service("swap", &format!("exec = [\"/usr/bin/python3\", \"{}\", \"{}\"]\nready = \"notify\"\noverlap = {overlap}\n", root.path().join("swappable.py").display(), sock.display()));
    let g = Ghost::start(&root, Isolation::Subreaper, "ghost.debug=1");
    wait_for_control(&root, Duration::from_secs(10));
    assert!(ghost_tests::eventually(Duration::from_secs(10), || status(&root, "swap").state == ghost_proto::State::Running));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (path, halt) = (sock.clone(), stop.clone());
    let client = std::thread::spawn(move || {
        let (mut last_ok, mut gap, mut failed, mut total) = (Instant::now(), Duration::ZERO, 0, 0);
        while !halt.load(std::sync::atomic::Ordering::SeqCst) {
            total += 1;
            match ghost_tests::ask_swappable(&path) {
                Ok(_) => {
                    gap = gap.max(last_ok.elapsed());
                    last_ok = Instant::now();
                }
                Err(_) => failed += 1,
            }
        }
        (gap.as_secs_f64() * 1e3, failed, total)
    });
    for i in 0..n {
        let before = status(&root, "swap").pid;
        assert!(control(&root, "{\"cmd\":\"restart\",\"name\":\"swap\"}").ok);
        assert!(ghost_tests::eventually(Duration::from_secs(20), || {
            let s = status(&root, "swap");
            s.state == ghost_proto::State::Running && s.pid != before && before.is_some_and(|p| std::fs::metadata(format!("/proc/{p}")).is_err())
        }), "restart {i} did not finish: {:?}\n{}", status(&root, "swap"), g.console.text());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    client.join().unwrap()
}

/// Restart latency: kill -9 → the new process's first instruction, for a service that had
/// been healthy (restart_reset_s = 0: every run counts as healthy, so every restart is the
/// immediate "first restart after a healthy run").
fn restart_latency() -> (f64, f64, f64) {
    let root = Root::new();
    let stamp = root.path().join("stamps");
    root.service("r", &format!("exec = [\"{}\", \"{}\"]\nrestart_reset_s = 0\n", env!("CARGO_BIN_EXE_restartee"), stamp.display()));
    let mut g = Ghost::start(&root, Isolation::Subreaper, "");
    wait_for_control(&root, Duration::from_secs(10));
    let mut lat = Vec::new();
    while last_line(&stamp).is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    for _ in 0..RESTARTS {
        let (pid, _) = last_line(&stamp).unwrap();
        let t0 = mono_ns();
        // SAFETY: kill(2) on our service's pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        let (_, t1) = loop {
            if let Some((p, t)) = last_line(&stamp) {
                if p != pid {
                    break (p, t);
                }
            }
            assert!(Instant::now() < deadline, "no restart within 5 s");
            std::thread::sleep(Duration::from_micros(200));
        };
        lat.push((t1 - t0) as f64 / 1e6);
    }
    g.signal(libc::SIGTERM);
    g.wait_exit(Duration::from_secs(10));
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    (percentile(&mut lat.clone(), 0.5), percentile(&mut lat, 0.99), mean)
}

/// Baseline for restart latency: the same program forked and exec'd by this process.
fn spawn_baseline() -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let stamp = dir.path().join("stamps");
    let mut lat = Vec::new();
    for _ in 0..100 {
        let lines = || std::fs::read_to_string(&stamp).map(|t| t.matches('\n').count()).unwrap_or(0);
        let before = lines();
        let t0 = mono_ns();
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_restartee")).arg(&stamp).spawn().unwrap();
        while lines() <= before {
            std::thread::sleep(Duration::from_micros(200));
        }
        let (_, t1) = last_line(&stamp).unwrap();
        lat.push((t1 - t0) as f64 / 1e6);
        let _ = c.kill();
        let _ = c.wait();
    }
    (percentile(&mut lat.clone(), 0.5), percentile(&mut lat, 0.99))
}

/// PID 1's CPU share and memory over `secs` with 50 services, `probed` of them with 1 s probes.
fn idle(probed: usize, secs: u64) -> (f64, u64) {
    let root = Root::new();
    for i in 0..50 {
        let health = if i < probed { "health = { exec = [\"/bin/true\"], interval_s = 1, timeout_s = 1, failures = 3 }\n" } else { "" };
        root.service(&format!("s{i:02}"), &format!("exec = [\"/bin/sleep\", \"10000\"]\n{health}"));
    }
    let mut g = Ghost::start(&root, Isolation::Subreaper, "");
    wait_for_control(&root, Duration::from_secs(10));
    g.console.wait_for("boot complete", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2)); // let start-up settle before measuring idle
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let c0 = cpu_ticks(g.pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = (cpu_ticks(g.pid) - c0) as f64 / hz / t0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_kib(g.pid);
    g.signal(libc::SIGTERM);
    g.wait_exit(Duration::from_secs(20));
    (cpu, rss)
}

/// Status round trips (ms) from a fresh connection each, `n` times.
fn status_latency(root: &Root, n: usize) -> (f64, f64) {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = control(root, "{\"cmd\":\"status\"}");
            assert!(r.ok);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (percentile(&mut v.clone(), 0.5), percentile(&mut v, 0.99))
}

/// A service printing as fast as it can: captured lines per second, and status latency then.
fn flood() -> (f64, (f64, f64), (f64, f64)) {
    let root = Root::new();
    root.service("quiet", "exec = [\"/bin/sleep\", \"10000\"]\n");
    root.service("flood", "exec = [\"/usr/bin/yes\", \"a log line of about sixty bytes, written as fast as possible\"]\nlog_max_size = \"64M\"\nlog_keep = 1\n");
    let mut g = Ghost::start(&root, Isolation::Subreaper, "");
    wait_for_control(&root, Duration::from_secs(10));
    // The baseline: the same request with the flood paused (SIGSTOP on yes).
    let pid = status(&root, "flood").pid.unwrap();
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let quiet = status_latency(&root, 200);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let log = root.path().join("var/log/ghost/flood.log");
    let size = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let (s0, t0) = (size(), Instant::now());
    let loud = status_latency(&root, 200);
    std::thread::sleep(Duration::from_secs(2));
    let bytes = size().saturating_sub(s0);
    let line_len = std::fs::read_to_string(&log).ok().and_then(|t| t.lines().last().map(|l| l.len() + 1)).unwrap_or(100);
    let lines_per_s = bytes as f64 / line_len as f64 / t0.elapsed().as_secs_f64();
    g.signal(libc::SIGTERM);
    g.wait_exit(Duration::from_secs(20));
    (lines_per_s, quiet, loud)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let init = workspace_root().join("target/x86_64-unknown-linux-musl/release/ghost-init");
    assert!(init.is_file(), "build the release static ghost-init first: {}", init.display());
    std::env::set_var("GHOST_BIN_DIR", init.parent().unwrap());

    let (p50, p99, mean) = restart_latency();
    let (b50, b99) = spawn_baseline();
    let (cpu_quiet, _) = idle(0, 10);
    let (cpu_probed, rss50) = idle(20, 10);
    let (lps, quiet, loud) = flood();

    let (og, of, ot) = swap_gaps(true, 20);
    let (pg, pf, pt) = swap_gaps(false, 20);
    println!("| measure | ghost-init | baseline (same run) | ratio | target |");
    println!("| --- | --- | --- | --- | --- |");
    println!("| restart latency p50, {RESTARTS} kill -9 → new process running | {p50:.2} ms | fork+exec by the bench itself {b50:.2} ms | {:.2} | |", p50 / b50);
    println!("| restart latency p99 (mean {mean:.2} ms) | {p99:.2} ms | {b99:.2} ms | {:.2} | ≤ 5 ms |", p99 / b99);
    println!("| PID 1 CPU, 50 services, 1 s exec probes on 20, 10 s | {cpu_probed:.2} % of a core | no probes {cpu_quiet:.2} % | | ≤ 1 % |");
    println!("| PID 1 resident memory, 50 services | {} KiB | | | ≤ 3 MiB |", rss50);
    println!("| log lines captured per second from one `yes` | {lps:.0} | | | |");
    println!("| 20 restarts of a notify service with `overlap = true`: longest gap between answers (failed / asked) | {og:.2} ms ({of} / {ot}) | the same restarts without overlap {pg:.2} ms ({pf} / {pt}) | {:.3} | 0 failed |", og / pg);
    println!("| status reply p50 / p99 during the flood | {:.2} / {:.2} ms | flood paused {:.2} / {:.2} ms | {:.2} (p99) | |", loud.0, loud.1, quiet.0, quiet.1, loud.1 / quiet.1);
}

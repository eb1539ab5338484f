//! Crucible benchmarks (issue 8) on the sample unit (improve/sample), each beside a baseline
//! measured in the same run:
//! - one full cycle (patch, sandboxed build, sandboxed tests, interleaved benchmark, swap,
//!   probation) against the same build and tests run by hand without the crucible;
//! - the service's downtime during the swap, as a client asking all the time sees it (its
//!   longest gap between answers), against a plain `ghostctl restart` of the same service;
//! - how long after a bad swap the old generation serves again (probation catches the crash,
//!   then rollback).
//!
//! Run: `cargo build -p ghost && CC_x86_64_unknown_linux_musl=musl-gcc cargo build -p ghost-init
//! -p ghostctl --target x86_64-unknown-linux-musl && cargo bench -p ghost-tests --bench improve`
//! (`GHOST_BENCH_REPS`, default 3).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ghost_tests::{bin, eventually, free_port, wait_for_control, workspace_root, Ghost, Isolation, Root};

fn ask(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if writeln!(s, "100").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.trim() == "25"
}

/// Asks the service until stopped; returns the longest gap between two answers.
fn watch(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let mut last = Instant::now();
        let mut gap = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            if ask(port) {
                gap = gap.max(last.elapsed());
                last = Instant::now();
            }
        }
        gap
    })
}

struct World {
    root: Root,
    port: u16,
    _ghost: Ghost,
}

fn world() -> World {
    let root = Root::new();
    let port = free_port();
    let units = root.path().join("etc/ghost/improve");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(units.join("sample.toml"), format!("source = \"{}\"\nbinary = \"ghost-sample\"\nbench = \"ghost-sample-bench\"\nservice = \"sample\"\nmin_gain = 0.2\nrounds = 6\nprobation_s = 3\n", workspace_root().join("improve/sample").display())).unwrap();
    let exe = root.path().join("var/lib/ghost/generations/sample/current/bin/ghost-sample");
    root.service("sample", &format!("exec = [\"{}\", \"{port}\"]\nready = \"tcp:{port}\"\nrestart = \"always\"\nrestart_delay_ms = 50\n", exe.display()));
    assert!(improve(&root, &["seed", "sample"]).status.success());
    let ghost = Ghost::start(&root, Isolation::Subreaper, "");
    wait_for_control(&root, Duration::from_secs(10));
    assert!(eventually(Duration::from_secs(20), || ask(port)));
    World { root, port, _ghost: ghost }
}

fn improve(root: &Root, args: &[&str]) -> std::process::Output {
    Command::new(bin("ghost")).arg("improve").args(args).env("GHOST_ROOT", root.path()).env("GHOST_SOCKET", root.path().join("run/ghost/control.sock")).output().unwrap()
}

fn verdict(w: &World, patch: &str) -> serde_json::Value {
    let p = workspace_root().join("improve/sample/patches").join(format!("{patch}.patch"));
    let out = improve(&w.root, &["run", "sample", "--patch", p.to_str().unwrap(), "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let reps: usize = std::env::var("GHOST_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let (mut cycle, mut by_hand, mut swap_gap, mut restart_gap, mut back) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let w = world();
        // Baseline: ghostctl restart of the same service, as the client sees it.
        let stop = Arc::new(AtomicBool::new(false));
        let h = watch(w.port, stop.clone());
        let gen0_pid = ghost_tests::status(&w.root, "sample").pid;
        let st = Command::new(bin("ghostctl")).args(["restart", "sample"]).env("GHOST_ROOT", w.root.path()).output().unwrap();
        assert!(st.status.success());
        assert!(eventually(Duration::from_secs(10), || ghost_tests::status(&w.root, "sample").pid != gen0_pid && ask(w.port)));
        stop.store(true, Ordering::Relaxed);
        restart_gap.push(h.join().unwrap().as_secs_f64() * 1e3);

        // Baseline: the candidate's build and tests by hand, no sandbox, no benchmark, no swap.
        let t = tempfile::tempdir().unwrap();
        let src = w.root.path().join("var/lib/ghost/generations/sample/0/source");
        let copy = t.path().join("src");
        assert!(Command::new("cp").arg("-r").arg(&src).arg(&copy).status().unwrap().success());
        let p = workspace_root().join("improve/sample/patches/faster.patch");
        let s = Instant::now();
        assert!(Command::new("patch").args(["-p1", "--batch", "--silent", "-d"]).arg(&copy).arg("-i").arg(&p).status().unwrap().success());
        for args in [&["build", "--release", "--offline", "--bins", "--quiet"][..], &["test", "--release", "--offline", "--quiet"][..]] {
            let o = Command::new("cargo").args(args).current_dir(&copy).env("CARGO_TARGET_DIR", copy.join("target")).output().unwrap();
            assert!(o.status.success());
        }
        by_hand.push(s.elapsed().as_secs_f64());

        // The crucible's cycle, with a client asking all along.
        let stop = Arc::new(AtomicBool::new(false));
        let h = watch(w.port, stop.clone());
        let s = Instant::now();
        let v = verdict(&w, "faster");
        cycle.push(s.elapsed().as_secs_f64());
        stop.store(true, Ordering::Relaxed);
        swap_gap.push(h.join().unwrap().as_secs_f64() * 1e3);
        assert_eq!(v["outcome"], "kept", "{v}");

        // A bad swap: from the swap to the old generation serving again.
        let w = world();
        let v = verdict(&w, "crashes");
        assert_eq!(v["outcome"], "rolled-back", "{v}");
        back.push((v["seconds"]["probation"].as_f64().unwrap() + v["seconds"]["rollback"].as_f64().unwrap()) * 1e3);
    }
    let (c, b) = (median(cycle.clone()), median(by_hand.clone()));
    let (g, r) = (median(swap_gap.clone()), median(restart_gap.clone()));
    println!("crucible on the sample unit, median of {reps}");
    println!("full cycle:                 {c:.2} s   (build + tests by hand: {b:.2} s; ratio {:.2})", c / b);
    println!("downtime during the swap:   {g:.1} ms (ghostctl restart: {r:.1} ms; ratio {:.2})", g / r);
    println!("bad swap → old one serving: {:.0} ms (probation caught the crash, then rollback)", median(back.clone()));
    println!("raw: cycle {cycle:.2?} by_hand {by_hand:.2?} swap_gap {swap_gap:.1?} restart_gap {restart_gap:.1?} back {back:.0?}");
}

//! Download throughput of `ghost model pull` from the local hub mirror, beside `curl -L` of the
//! same file from the same mirror in the same run (the baseline), both writing to the same
//! filesystem. ghost also hashes (sha256) and fsyncs what it writes; curl does neither.
//!
//! Run: `cargo build --release -p ghost && cargo bench -p ghost-tests --bench model_pull`
//! (GHOST_BIN_DIR picks another build; GHOST_BENCH_MIB sets the file size, default 256).

#[path = "../hub_mirror.rs"]
mod hub_mirror;

use ghost_tests::workspace_root;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 5;

fn ghost_bin() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("GHOST_BIN_DIR") {
        return std::path::PathBuf::from(d).join("ghost");
    }
    let release = workspace_root().join("target/release/ghost");
    if release.is_file() {
        return release;
    }
    eprintln!("note: no release build of ghost; timing the debug build (its sha256 is much slower)");
    ghost_tests::bin("ghost")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib: usize = std::env::var("GHOST_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let repo_dir = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let bytes: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(repo_dir.path().join("model.bin"), &bytes).unwrap();
    drop(bytes);
    let commit = hub_mirror::commit_id("bench");
    let mirror = hub_mirror::Mirror::start(&[("bench/model", repo_dir.path(), &commit)]);
    let ghost = ghost_bin();
    let work = tempfile::tempdir().unwrap();

    let mut ghost_t = Vec::new();
    let mut curl_t = Vec::new();
    for run in 0..RUNS {
        let root = work.path().join(format!("root{run}"));
        let t = Instant::now();
        let st = Command::new(&ghost)
            .args(["model", "pull", "bench/model", "--file", "model.bin", "--retries", "0", "--endpoint", &mirror.url()])
            .env("GHOST_ROOT", &root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        ghost_t.push(t.elapsed());
        assert!(st.success(), "ghost model pull failed");
        std::fs::remove_dir_all(&root).unwrap();

        let out = work.path().join(format!("curl{run}.bin"));
        let t = Instant::now();
        let st = Command::new("curl")
            .args(["-sSfL", "-o"])
            .arg(&out)
            .arg(format!("{}/bench/model/resolve/main/model.bin", mirror.url()))
            .status()
            .expect("curl is installed");
        curl_t.push(t.elapsed());
        assert!(st.success(), "curl failed");
        std::fs::remove_file(&out).unwrap();
    }
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    let (g, c) = (median(ghost_t), median(curl_t));
    println!("download of a {mib} MiB LFS file from the local mirror, median of {RUNS} runs ({}):", ghost.display());
    println!("  ghost model pull   {:>8.1} MiB/s  ({:.2} s, sha256 + fsync included)", rate(g), g.as_secs_f64());
    println!("  curl -L (baseline) {:>8.1} MiB/s  ({:.2} s)", rate(c), c.as_secs_f64());
    println!("  ratio ghost/curl   {:>8.2}", rate(g) / rate(c));
}

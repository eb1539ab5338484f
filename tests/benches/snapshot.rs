//! Snapshot benchmarks (issue 9): a state of 1,000 configuration files and a 100 MB memory
//! database; the first snapshot, an incremental one (10 files and 100 rows changed) and a
//! restore, each beside `tar` doing the same copy in the same run (the baseline).
//!
//! Run: `cargo build -p ghost && cargo bench -p ghost-tests --bench snapshot`
//! (`GHOST_BENCH_DB_MB`, default 100). `GHOST_BIN_DIR=target/x86_64-unknown-linux-musl/userland`
//! runs the image's optimised `ghost` (built by `qemu/run`) instead of the debug one.

use std::process::Command;
use std::time::Instant;

use ghost_tests::{bin, Root};

fn ghost(root: &Root, args: &[&str]) -> serde_json::Value {
    let o = Command::new(bin("ghost")).arg("snapshot").args(args).arg("--json").env("GHOST_ROOT", root.path()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

/// tar, then fsync of what it wrote (the snapshot store fsyncs every object it adds).
fn tar(args: &[&str], dir: &std::path::Path) {
    let st = Command::new("tar").args(args).current_dir(dir).status().unwrap();
    assert!(st.success());
    if args[0] == "-cf" {
        assert!(Command::new("sync").arg(args[1]).status().unwrap().success());
    } else {
        assert!(Command::new("sync").arg("-f").arg(dir).status().unwrap().success());
    }
}

fn main() {
    let mb: usize = std::env::var("GHOST_BENCH_DB_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let root = Root::new();
    let conf = root.path().join("etc/ghost/conf.d");
    std::fs::create_dir_all(&conf).unwrap();
    for i in 0..1000 {
        let body: String = (0..40).map(|l| format!("key_{l} = \"value {i} {l} {}\"\n", "x".repeat(i % 17))).collect();
        std::fs::write(conf.join(format!("{i:04}.toml")), body).unwrap();
    }
    std::fs::create_dir_all(root.path().join("var/lib/ghost")).unwrap();
    let dbp = root.path().join("var/lib/ghost/memory.db");
    let db = rusqlite::Connection::open(&dbp).unwrap();
    db.pragma_update(None, "journal_mode", "wal").unwrap();
    db.execute_batch(&format!("CREATE TABLE episodes (id INTEGER PRIMARY KEY, text TEXT, b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) INSERT INTO episodes (text, b) SELECT 'episode ' || i, randomblob(4000) FROM n;", mb * 256)).unwrap();
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    let db_bytes = std::fs::metadata(&dbp).unwrap().len();
    let scratch = tempfile::tempdir().unwrap();
    let tarball = scratch.path().join("state.tar");
    let tarball = tarball.to_str().unwrap();

    let (first, t_first) = timed(|| ghost(&root, &["create", "-m", "first"]));
    let ((), t_tar1) = timed(|| tar(&["-cf", tarball, "etc/ghost", "var/lib/ghost/memory.db"], root.path()));

    for i in 0..10 {
        std::fs::write(conf.join(format!("{i:04}.toml")), format!("changed = {i}\n")).unwrap();
    }
    db.execute_batch("UPDATE episodes SET text = text || ' (edited)' WHERE id % 1000 = 0 AND id <= 100000;").unwrap();
    let (incr, t_incr) = timed(|| ghost(&root, &["create", "-m", "incremental"]));
    let ((), t_tar2) = timed(|| tar(&["-cf", tarball, "etc/ghost", "var/lib/ghost/memory.db"], root.path()));

    let ((), t_restore) = timed(|| {
        ghost(&root, &["restore", first["id"].as_str().unwrap()]);
    });
    let out = scratch.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let ((), t_untar) = timed(|| tar(&["-xf", tarball], &out));
    let store = root.path().join("var/lib/ghost/snapshots");
    let du = Command::new("du").args(["-sb"]).arg(&store).output().unwrap();
    let store_bytes: u64 = String::from_utf8_lossy(&du.stdout).split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0);

    println!("snapshots of 1,000 files + a {:.0} MB memory database (SQLite WAL)", db_bytes as f64 / 1e6);
    println!("| measure | ghost snapshot | tar (same data, same run) | ratio |");
    println!("| --- | --- | --- | --- |");
    println!("| first snapshot | {t_first:.2} s, {:.1} MB new | {t_tar1:.2} s | {:.2} |", first["new_bytes"].as_f64().unwrap() / 1e6, t_first / t_tar1);
    println!("| incremental (10 files, 100 rows) | {t_incr:.2} s, {:.2} MB new | {t_tar2:.2} s (a full copy) | {:.2} |", incr["new_bytes"].as_f64().unwrap() / 1e6, t_incr / t_tar2);
    println!("| restore of the first | {t_restore:.2} s (with a snapshot of the state it replaces) | {t_untar:.2} s (tar -x) | {:.2} |", t_restore / t_untar);
    println!("store after three snapshots (first, incremental, before-restore): {:.1} MB", store_bytes as f64 / 1e6);
}

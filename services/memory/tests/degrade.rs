//! Bad days: a full database, a full disk (a real tmpfs in a private mount namespace), a
//! database locked by another connection, a directory that does not exist. Memory must go
//! in-process with a loud warning, keep accepting records, and write every one of them back
//! when the file is writable again; nothing already written may be touched.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ghost_memory::{Episode, EpisodeKind as K, Memory, MemoryError, Mode, Options, Place, PlaybookSpec};

/// Options that collect warnings, wait only briefly for locks and retry only when asked.
fn collecting() -> (Options, Arc<Mutex<Vec<String>>>) {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let sink = warnings.clone();
    let opts = Options {
        busy_timeout: Duration::from_millis(50),
        retry_every: Duration::from_secs(3600),
        on_warning: Some(Arc::new(move |m: &str| sink.lock().unwrap().push(m.to_owned()))),
        ..Options::default()
    };
    (opts, warnings)
}

fn all_text(w: &Arc<Mutex<Vec<String>>>) -> String {
    w.lock().unwrap().join("\n")
}

/// Every (id, text) must be in the database at `path`, opened afresh.
fn assert_all_written(path: &Path, expected: &[(i64, String)]) {
    let m = Memory::open(path, collecting().0).unwrap();
    assert_eq!(m.health().mode, Mode::Durable);
    for (id, text) in expected {
        let e = m.get(*id).unwrap().unwrap_or_else(|| panic!("episode {id} ({text}) was lost"));
        assert_eq!(&e.episode.text, text, "episode {id}");
        assert_eq!(e.place, Place::Hot);
    }
    assert_eq!(m.health().hot_episodes, expected.len() as u64, "and nothing more");
}

#[test]
fn a_full_database_degrades_to_in_process_and_flushes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let (mut opts, warnings) = collecting();
    // The hard cap stands in for a full disk: SQLite reports SQLITE_FULL as it would there.
    opts.max_db_bytes = Some(256 * 1024);
    let m = Memory::open(&path, opts).unwrap();
    let mut accepted: Vec<(i64, String)> = Vec::new();
    let filler = "x".repeat(2000);
    let mut n = 0;
    while m.health().mode == Mode::Durable {
        assert!(n < 1000, "the cap was never reached");
        let text = format!("observation {n} {filler}");
        accepted.push((m.record(&Episode::new(K::Observation, "disk", text.clone())).unwrap(), text));
        n += 1;
    }
    let h = m.health();
    assert!(h.reason.as_deref().unwrap().contains("disk full"), "{h:?}");
    assert_eq!(h.pending, 1, "the record that hit the cap is held, not lost");
    let w = all_text(&warnings);
    assert!(w.contains(&path.display().to_string()) && w.contains("IN-PROCESS ONLY"), "{w}");

    // In-process: records keep their ids, are found, and link to written ones.
    let before = accepted[0].0;
    let dec = m.record(&Episode::new(K::Decision, "agent", "rotate the logs to free space").caused_by(before)).unwrap();
    accepted.push((dec, "rotate the logs to free space".into()));
    for i in 0..5 {
        let text = format!("held {i}");
        accepted.push((m.record(&Episode::new(K::Note, "agent", text.clone())).unwrap(), text));
    }
    assert_eq!(m.get(dec).unwrap().unwrap().place, Place::Pending);
    let r = m.search("rotate logs", 5).unwrap();
    assert!(r.in_process && r.hits[0].episode.id == dec, "{r:?}");
    assert_eq!(m.chain(dec).unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), vec![before, dec]);
    assert!(matches!(m.flush(), Err(MemoryError::Unavailable { .. })), "still full");
    assert!(matches!(m.consolidate(), Err(MemoryError::Unavailable { .. })));

    // Space again: everything held is written back, with the same ids.
    m.set_max_db_bytes(None).unwrap();
    let report = m.flush().unwrap();
    assert_eq!(report.episodes, 7);
    assert!(report.renumbered.is_empty());
    let h = m.health();
    assert_eq!((h.mode, h.pending), (Mode::Durable, 0));
    assert!(all_text(&warnings).contains("writable again; wrote back 7 episodes"), "{}", all_text(&warnings));
    assert_eq!(m.get(dec).unwrap().unwrap().place, Place::Hot);
    drop(m);
    assert_all_written(&path, &accepted);
}

#[test]
fn a_locked_database_degrades_and_flushes_back_when_the_lock_goes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let (opts, warnings) = collecting();
    let m = Memory::open(&path, opts).unwrap();
    let a = m.record(&Episode::new(K::Observation, "nginx", "nginx exited")).unwrap();
    m.upsert_playbook(&PlaybookSpec { name: "restart-nginx".into(), description: "restart it".into(), trigger: "nginx exited".into(), steps: serde_json::json!([]) }).unwrap();

    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let b = m.record(&Episode::new(K::Action, "agent", "restarted nginx").caused_by(a)).unwrap();
    let h = m.health();
    assert_eq!(h.mode, Mode::InProcess);
    assert!(h.reason.as_deref().unwrap().contains("locked"), "{h:?}");
    assert!(all_text(&warnings).contains("IN-PROCESS ONLY"));
    m.record_outcome("restart-nginx", true).unwrap();
    assert_eq!(m.playbook("restart-nginx").unwrap().unwrap().success_count, 1, "held outcomes count already");
    assert_eq!(m.recent(1).unwrap()[0].id, b);
    let still = m.flush().unwrap_err();
    assert!(still.to_string().contains("still not writable") && still.to_string().contains(&path.display().to_string()), "{still}");

    locker.execute_batch("COMMIT").unwrap();
    let report = m.flush().unwrap();
    assert_eq!((report.episodes, report.playbook_updates), (1, 1));
    assert_eq!(m.health().mode, Mode::Durable);
    assert_eq!(m.playbook("restart-nginx").unwrap().unwrap().success_count, 1, "counted once, not twice");
    drop(m);
    let m = Memory::open(&path, collecting().0).unwrap();
    assert_eq!(m.chain(b).unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(m.playbook("restart-nginx").unwrap().unwrap().success_count, 1);
}

#[test]
fn records_retry_the_database_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let (mut opts, _warnings) = collecting();
    opts.retry_every = Duration::ZERO;
    let m = Memory::open(&path, opts).unwrap();
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let a = m.record(&Episode::new(K::Note, "agent", "while locked")).unwrap();
    assert_eq!(m.health().mode, Mode::InProcess);
    locker.execute_batch("COMMIT").unwrap();
    let b = m.record(&Episode::new(K::Note, "agent", "after the lock")).unwrap();
    assert_eq!(m.health().mode, Mode::Durable, "the next record wrote the held one back first");
    drop(m);
    assert_all_written(&path, &[(a, "while locked".into()), (b, "after the lock".into())]);
}

#[test]
fn a_database_that_cannot_be_opened_starts_in_process_and_is_written_later() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state"); // not mounted yet
    let path = state.join("memory.db");
    let (opts, warnings) = collecting();
    let m = Memory::open(&path, opts).unwrap();
    let h = m.health();
    assert_eq!(h.mode, Mode::InProcess);
    assert!(h.reason.as_deref().unwrap().contains("cannot be opened"), "{h:?}");
    assert!(all_text(&warnings).contains(&path.display().to_string()));
    let a = m.record(&Episode::new(K::Observation, "agent", "booted without a state partition")).unwrap();
    let b = m.record(&Episode::new(K::Decision, "agent", "wait for the state partition").caused_by(a)).unwrap();
    assert_eq!(m.chain(b).unwrap().len(), 2);
    assert_eq!(m.instant().iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, b]);
    assert!(m.flush().is_err());

    std::fs::create_dir(&state).unwrap();
    assert_eq!(m.flush().unwrap().episodes, 2);
    let c = m.record(&Episode::new(K::Note, "agent", "state partition is there")).unwrap();
    assert!(c > b);
    drop(m);
    assert_all_written(&path, &[(a, "booted without a state partition".into()), (b, "wait for the state partition".into()), (c, "state partition is there".into())]);
}

#[test]
fn a_full_in_process_buffer_refuses_rather_than_loses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("memory.db");
    let (mut opts, _w) = collecting();
    opts.max_pending = 3;
    let m = Memory::open(&path, opts).unwrap();
    for i in 0..3 {
        m.record(&Episode::new(K::Note, "agent", format!("held {i}"))).unwrap();
    }
    let e = m.record(&Episode::new(K::Note, "agent", "one too many")).unwrap_err();
    assert!(e.to_string().contains("in-process buffer is full"), "{e}");
    assert_eq!(m.health().pending, 3);
}

// ---- a real full disk ----

const CHILD_ENV: &str = "GHOST_MEMORY_TMPFS_DIR";

/// Whether this machine lets a test mount a tmpfs in a private mount namespace (root and
/// util-linux's unshare), as tests/model_pull.rs does.
fn mount_namespaces_available() -> bool {
    let ok = Command::new("unshare")
        .args(["--mount", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: cannot mount a tmpfs in a private mount namespace (needs root and unshare)");
    }
    ok
}

#[test]
fn a_real_full_disk_degrades_and_flushes_back() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        full_disk_child(Path::new(&dir));
        println!("CHILD-DONE");
        return;
    }
    if !mount_namespaces_available() {
        return;
    }
    // This test binary again, in a private mount namespace where DIR is a 3 MiB tmpfs.
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", "mount -t tmpfs -o size=3m tmpfs \"$DIR\" && exec \"$EXE\" --exact a_real_full_disk_degrades_and_flushes_back --nocapture --test-threads=1"])
        .env("DIR", dir.path())
        .env("EXE", &exe)
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("CHILD-DONE"), "{text}");
    println!("{text}");
}

fn full_disk_child(dir: &Path) {
    let path = dir.join("memory.db");
    let (opts, warnings) = collecting();
    let m = Memory::open(&path, opts).unwrap();
    let mut accepted: Vec<(i64, String)> = Vec::new();
    for i in 0..10 {
        let text = format!("before the disk filled {i}");
        accepted.push((m.record(&Episode::new(K::Observation, "disk", text.clone())).unwrap(), text));
    }
    // Something else fills the disk.
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let big = "y".repeat(3000);
    let mut n = 0;
    while m.health().mode == Mode::Durable {
        assert!(n < 5000, "the disk never filled");
        let text = format!("while filling {n} {big}");
        accepted.push((m.record(&Episode::new(K::Observation, "disk", text.clone())).unwrap(), text));
        n += 1;
    }
    let reason = m.health().reason.unwrap();
    println!("disk filled after {n} records while filling: {reason}");
    assert!(reason.contains("disk full") || reason.contains("I/O"), "{reason}");
    assert!(all_text(&warnings).contains("IN-PROCESS ONLY"));
    for i in 0..20 {
        let text = format!("held while full {i}");
        accepted.push((m.record(&Episode::new(K::Note, "agent", text.clone())).unwrap(), text));
    }
    assert!(m.flush().is_err(), "still full");

    std::fs::remove_file(&filler).unwrap();
    let report = m.flush().unwrap();
    assert_eq!(report.episodes, 21, "the record that hit the full disk and the 20 after it");
    drop(m);
    assert_all_written(&path, &accepted);
}

#[test]
fn closing_memory_writes_back_what_it_holds_or_says_what_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let (opts, warnings) = collecting();
    let m = Memory::open(&path, opts.clone()).unwrap();
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let a = m.record(&Episode::new(K::Note, "agent", "held at shutdown")).unwrap();
    locker.execute_batch("COMMIT").unwrap();
    drop(m); // the lock is gone: the held record is written on the way out
    assert_all_written(&path, &[(a, "held at shutdown".into())]);

    let m = Memory::open(&path, opts).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    m.record(&Episode::new(K::Note, "agent", "cannot be saved")).unwrap();
    drop(m);
    let w = all_text(&warnings);
    assert!(w.contains("1 records held in-process are LOST as memory closes"), "{w}");
}

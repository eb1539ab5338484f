//! Snapshots end to end through `ghost snapshot` (and `ghostctl snapshot`): content-addressed
//! copies of /etc/ghost, the wizard's overlay, the goals and the memory database, restored
//! exactly, atomically across a kill -9, and refused when damaged.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use ghost_tests::{bin, Root};
use serde_json::Value;

fn ghost(root: &Root, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin("ghost"));
    c.arg("snapshot").args(args).env("GHOST_ROOT", root.path()).env("GHOST_SOCKET", root.path().join("run/ghost/control.sock"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn json(root: &Root, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let o = ghost(root, &all, &[]);
    assert!(o.status.success(), "ghost snapshot {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn write(root: &Root, rel: &str, text: &str) {
    let p = root.path().join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn read(root: &Root, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.path().join(rel)).ok()
}

fn db(root: &Root) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(root.path().join("var/lib/ghost/memory.db")).unwrap();
    c.pragma_update(None, "journal_mode", "wal").unwrap();
    c
}

fn notes(root: &Root) -> Vec<String> {
    let c = db(root);
    let mut s = c.prepare("SELECT text FROM notes ORDER BY id").unwrap();
    s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

/// A small system: configuration, the wizard's overlay, goals, and a memory database in WAL mode.
fn system() -> Root {
    let root = Root::new();
    write(&root, "etc/ghost/ghost.toml", "hostname = \"ghost\"\n");
    write(&root, "etc/ghost/services/web.toml", "exec = [\"/bin/true\"]\n");
    write(&root, "etc/ghost/rules/local.toml", "# rules\n");
    write(&root, "var/lib/ghost/etc/ghost.toml", "hostname = \"box\"\n");
    write(&root, "var/lib/ghost/agent/goals.json", "[]\n");
    std::os::unix::fs::symlink("web.toml", root.path().join("etc/ghost/services/www.toml")).unwrap();
    let c = db(&root);
    c.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes (text) VALUES ('one'), ('two');").unwrap();
    root
}

/// Changes everything a snapshot covers.
fn mess_up(root: &Root) {
    write(root, "etc/ghost/ghost.toml", "hostname = \"changed\"\n");
    write(root, "etc/ghost/services/new.toml", "exec = [\"/bin/false\"]\n");
    std::fs::remove_file(root.path().join("etc/ghost/rules/local.toml")).unwrap();
    std::fs::set_permissions(root.path().join("etc/ghost/services/web.toml"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(root.path().join("etc/ghost/services/www.toml")).unwrap();
    std::os::unix::fs::symlink("new.toml", root.path().join("etc/ghost/services/www.toml")).unwrap();
    std::fs::remove_dir_all(root.path().join("var/lib/ghost/etc")).unwrap();
    db(root).execute_batch("INSERT INTO notes (text) VALUES ('three'); DELETE FROM notes WHERE text = 'one';").unwrap();
}

fn assert_is_base(root: &Root, id: &str) {
    assert_eq!(read(root, "etc/ghost/ghost.toml").as_deref(), Some("hostname = \"ghost\"\n"));
    assert_eq!(read(root, "etc/ghost/services/new.toml"), None, "what was added since is gone");
    assert_eq!(read(root, "etc/ghost/rules/local.toml").as_deref(), Some("# rules\n"));
    assert_eq!(read(root, "var/lib/ghost/etc/ghost.toml").as_deref(), Some("hostname = \"box\"\n"));
    let mode = std::fs::metadata(root.path().join("etc/ghost/services/web.toml")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "modes come back");
    assert_eq!(std::fs::read_link(root.path().join("etc/ghost/services/www.toml")).unwrap(), Path::new("web.toml"));
    assert_eq!(notes(root), ["one", "two"], "the memory database is the snapshot's");
    let d = json(root, &["diff", id]);
    assert_eq!(d, serde_json::json!({ "added": [], "removed": [], "changed": [] }), "nothing differs from the snapshot");
    let strays: Vec<_> = walk(root.path()).into_iter().filter(|p| p.contains(".ghost-restore-")).collect();
    assert!(strays.is_empty(), "no staged files left: {strays:?}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p.display().to_string());
    }
    out
}

#[test]
fn a_restore_brings_back_exactly_the_snapshots_state_and_keeps_the_one_it_replaced() {
    let root = system();
    let base = json(&root, &["create", "-m", "base"]);
    let id = base["id"].as_str().unwrap().to_string();
    assert!(base["files"].as_u64().unwrap() >= 5 && base["new_bytes"].as_u64().unwrap() > 0, "{base}");
    // Nothing changed: a second snapshot stores nothing new.
    let again = json(&root, &["create", "-m", "again"]);
    assert_eq!(again["new_bytes"], 0, "unchanged files cost nothing: {again}");
    mess_up(&root);
    let d = json(&root, &["diff", &id]);
    assert_eq!(d["added"], serde_json::json!(["/etc/ghost/services/new.toml"]), "{d}");
    assert!(d["removed"].as_array().unwrap().iter().any(|p| p == "/etc/ghost/rules/local.toml"), "{d}");
    assert!(d["changed"].as_array().unwrap().iter().any(|p| p == "/etc/ghost/ghost.toml"), "{d}");
    let r = json(&root, &["restore", &id]);
    assert_eq!(r["restored"], id.as_str());
    assert_is_base(&root, &id);
    // The state it replaced is a snapshot too, and restoring it brings the mess back.
    let before = r["before"].as_str().unwrap().to_string();
    let list = json(&root, &["list"]);
    assert!(list.as_array().unwrap().iter().any(|m| m["id"] == before.as_str() && m["trigger"] == "before-restore"), "{list}");
    json(&root, &["restore", &before]);
    assert_eq!(read(&root, "etc/ghost/ghost.toml").as_deref(), Some("hostname = \"changed\"\n"));
    assert_eq!(notes(&root), ["two", "three"]);
}

#[test]
fn a_kill_9_in_the_middle_of_a_restore_leaves_the_old_or_the_new_state() {
    for (crash, finished) in [("3", true), ("staged", false)] {
        let root = system();
        let id = json(&root, &["create", "-m", "base"])["id"].as_str().unwrap().to_string();
        mess_up(&root);
        let o = ghost(&root, &["restore", &id], &[("GHOST_SNAPSHOT_CRASH_AFTER", crash)]);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(o.status.signal(), Some(libc::SIGKILL), "the fault hook {crash} killed it: {}", String::from_utf8_lossy(&o.stderr));
        // The next snapshot command finds the interrupted restore and finishes or drops it.
        let o = ghost(&root, &["list"], &[]);
        let said = String::from_utf8_lossy(&o.stderr);
        if finished {
            assert!(said.contains("finished the restore of"), "{said}");
            assert_is_base(&root, &id);
        } else {
            assert!(said.contains("dropped a restore that was interrupted before it began"), "{said}");
            assert_eq!(read(&root, "etc/ghost/ghost.toml").as_deref(), Some("hostname = \"changed\"\n"), "the old state, untouched");
            assert_eq!(notes(&root), ["two", "three"]);
            assert!(walk(root.path()).iter().all(|p| !p.contains(".ghost-restore-")), "staged files removed");
        }
    }
}

#[test]
fn damaged_content_and_unknown_ids_are_refused_and_nothing_changes() {
    let root = system();
    let m = json(&root, &["create", "-m", "base"]);
    let id = m["id"].as_str().unwrap().to_string();
    let shown = json(&root, &["show", &id]);
    let sha = shown["entries"].as_array().unwrap().iter().find(|e| e["path"] == "/etc/ghost/ghost.toml").unwrap()["sha256"].as_str().unwrap().to_string();
    let obj = root.path().join("var/lib/ghost/snapshots/objects").join(&sha[..2]).join(&sha);
    std::fs::write(&obj, "hostname = \"evil\"\n").unwrap();
    mess_up(&root);
    let o = ghost(&root, &["restore", &id], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("is damaged: the content of /etc/ghost/ghost.toml does not match its hash"), "{err}");
    assert_eq!(read(&root, "etc/ghost/ghost.toml").as_deref(), Some("hostname = \"changed\"\n"), "nothing was restored");
    assert_eq!(json(&root, &["list"]).as_array().unwrap().len(), 1, "no before-restore snapshot either");
    for (bad, want) in [("01ARYZ6S41TSV4RRFFQ69G5FAV", "no snapshot 01ARYZ6S41TSV4RRFFQ69G5FAV"), ("../../etc", "is not a snapshot id")] {
        let o = ghost(&root, &["restore", bad], &[]);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(want), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn automatic_snapshots_are_pruned_to_the_policy_and_manual_ones_stay() {
    let root = system();
    write(&root, "etc/ghost/ghost.toml", "hostname = \"ghost\"\n[snapshots]\nkeep = 2\n");
    let manual = json(&root, &["create", "-m", "keep me"])["id"].as_str().unwrap().to_string();
    let mut hourly = Vec::new();
    for i in 0..4 {
        write(&root, "etc/ghost/rules/local.toml", &format!("# version {i}\n"));
        hourly.push(json(&root, &["create", "--trigger", "hourly"])["id"].as_str().unwrap().to_string());
    }
    let p = json(&root, &["prune"]);
    assert_eq!(p["snapshots_removed"], 2, "{p}");
    assert!(p["objects_removed"].as_u64().unwrap() >= 2, "the old versions' content goes: {p}");
    let ids: Vec<String> = json(&root, &["list"]).as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, vec![manual.clone(), hourly[2].clone(), hourly[3].clone()]);
    // What is left still restores.
    json(&root, &["restore", &hourly[2]]);
    assert_eq!(read(&root, "etc/ghost/rules/local.toml").as_deref(), Some("# version 2\n"));
    // A bad policy is named.
    write(&root, "etc/ghost/ghost.toml", "[snapshots]\nkeep = 0\n");
    let o = ghost(&root, &["list"], &[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("snapshots.keep: must be a whole number from 1 to 10000"), "{}", String::from_utf8_lossy(&o.stderr));
    // ghostctl snapshot is the same command.
    write(&root, "etc/ghost/ghost.toml", "hostname = \"ghost\"\n");
    let path = format!("{}:{}", bin("ghost").parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let o = Command::new(bin("ghostctl")).args(["snapshot", "list", "--json"]).env("GHOST_ROOT", root.path()).env("PATH", path).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(v.as_array().unwrap().len(), 4);
}

#[test]
fn a_large_database_is_kept_in_chunks_so_a_small_change_costs_little() {
    let root = system();
    // About 8 MiB of memory: over the 4 MiB from which files are kept in 1 MiB chunks.
    db(&root).execute_batch("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) INSERT INTO blobs (b) SELECT randomblob(4000) FROM n;").unwrap();
    let first = json(&root, &["create", "-m", "big"]);
    let size: u64 = std::fs::metadata(root.path().join("var/lib/ghost/memory.db")).unwrap().len();
    assert!(size > 6 << 20, "{size}");
    assert!(first["new_bytes"].as_u64().unwrap() >= size, "{first}");
    // A few rows change: the next snapshot stores a few chunks, not the whole database again.
    db(&root).execute_batch("UPDATE notes SET text = 'one, edited' WHERE text = 'one';").unwrap();
    let second = json(&root, &["create", "-m", "small change"]);
    let new = second["new_bytes"].as_u64().unwrap();
    assert!(new > 0 && new < size / 4, "{new} new bytes for a database of {size}: {second}");
    // The first comes back whole.
    json(&root, &["restore", first["id"].as_str().unwrap()]);
    assert_eq!(notes(&root), ["one", "two"]);
    let n: i64 = db(&root).query_row("SELECT count(*) FROM blobs", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 2000);
}

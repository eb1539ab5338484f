use super::*;
use crate::tools::ToolCall;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    identity: Arc<Identity>,
    clock: Arc<AtomicU64>,
}

/// 2025-01-01T23:59:58Z in milliseconds.
const NEW_YEARS_EVE: u64 = 1_735_775_998_000;

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let identity = Arc::new(Identity::load_or_create(&tmp.path().join("agent"), "ghost").unwrap().identity);
    let dir = tmp.path().join("audit");
    Fixture { dir, identity, clock: Arc::new(AtomicU64::new(NEW_YEARS_EVE)), _tmp: tmp }
}

impl Fixture {
    fn open(&self) -> Opened {
        let clock = self.clock.clone();
        AuditLog::open_with_clock(
            &self.dir,
            self.identity.clone(),
            Box::new(move || UNIX_EPOCH + Duration::from_millis(clock.load(Ordering::SeqCst))),
        )
        .unwrap()
    }

    fn verify(&self) -> Report {
        verify(&self.dir, &self.identity.public_key()).unwrap()
    }

    /// A log of `n` records in one file.
    fn with_records(&self, n: usize) -> AuditLog {
        let log = self.open().log;
        for i in 0..n {
            log.append(entry(i)).unwrap();
        }
        log
    }

    fn only_file(&self) -> PathBuf {
        let files = log_files(&self.dir).unwrap();
        assert_eq!(files.len(), 1);
        files[0].clone()
    }
}

fn entry(i: usize) -> Entry {
    let call = ToolCall::new("service.restart", json!({ "name": format!("svc{i}") }), "it crashed");
    let why = Why {
        rule: Some("restart-on-crash".into()),
        layer: None,
        memory_ids: vec![format!("{i}")],
        text: format!("crash #{i}"),
    };
    let policy = PolicyRecord {
        verdict: Verdict::Allow,
        reason: "medium risk".into(),
        rule: "mode.normal.low-risk".into(),
        mode: Mode::Normal,
    };
    Entry::tool_call("agent", &call, why, Some(policy), Outcome::new(Status::Ok, json!({ "state": "running" })))
}

fn edit_lines(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    f(&mut lines);
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn kinds(r: &Report) -> Vec<(ProblemKind, Option<u64>, usize)> {
    r.problems.iter().map(|p| (p.kind, p.seq, p.line)).collect()
}

#[test]
fn records_chain_across_days_and_reopens_and_verify() {
    let f = fixture();
    let log = f.open().log;
    for i in 0..3 {
        let r = log.append(entry(i)).unwrap();
        assert_eq!(r.seq, i as u64);
        f.clock.fetch_add(1000, Ordering::SeqCst);
    }
    // The third record was written on the 2nd of January.
    let files: Vec<String> =
        log_files(&f.dir).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(files, ["audit-2025-01-01.jsonl", "audit-2025-01-02.jsonl"]);
    drop(log);
    let opened = f.open();
    assert!(opened.notes.is_empty(), "{:?}", opened.notes);
    assert_eq!(opened.log.next_seq(), 3);
    let r = opened
        .log
        .append(Entry::decision(
            "agent",
            "keep redis",
            json!({"goal": 1}),
            Why { layer: Some("reflect".into()), text: "it matters".into(), ..Why::default() },
        ))
        .unwrap();
    assert_eq!(r.seq, 3);
    let records = read_records(&f.dir).unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0].prev_hash, GENESIS);
    for w in records.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    assert_eq!(records[2].ts, "2025-01-02T00:00:00.000Z");
    assert_eq!(records[1].who.agent, f.identity.id.to_string());
    assert_eq!(records[0].why.memory_ids, ["0"]);
    let report = f.verify();
    assert!(report.ok(), "{report}");
    assert_eq!((report.records, report.last_seq), (4, Some(3)));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(report.to_string().contains("audit trail ok: 4 records in 2 files"));
}

#[test]
fn a_changed_record_is_named() {
    let f = fixture();
    f.with_records(5);
    let path = f.only_file();
    edit_lines(&path, |l| *l = l.clone().into_iter().map(|x| x.replace("crash #2", "crash #9")).collect());
    let r = f.verify();
    assert_eq!(kinds(&r), [(ProblemKind::Changed, Some(2), 3)], "{r}");
    assert!(
        r.problems[0]
            .to_string()
            .starts_with("audit-2025-01-01.jsonl:3: seq 2: changed: content does not match its hash"),
        "{r}"
    );

    // Changed and re-hashed by someone without the key: the signature gives it away.
    let f = fixture();
    f.with_records(5);
    let path = f.only_file();
    edit_lines(&path, |lines| {
        let mut v: Value = serde_json::from_str(&lines[1]).unwrap();
        v["what"]["args"]["name"] = json!("sshd");
        v["hash"] = json!(util::hex(&record_hash(&v)));
        lines[1] = util::canonical_json(&v);
    });
    let r = f.verify();
    assert_eq!(r.problems[0].kind, ProblemKind::Changed);
    assert_eq!((r.problems[0].seq, r.problems[0].line), (Some(1), 2));
    assert!(r.problems[0].detail.contains("signature does not verify"), "{r}");
    // ... and the next record no longer chains to it.
    assert!(r.problems.iter().any(|p| p.seq == Some(2) && p.detail.contains("prev_hash")), "{r}");
}

#[test]
fn a_removed_record_is_named_wherever_it_was() {
    // In the middle: a gap.
    let f = fixture();
    f.with_records(5);
    edit_lines(&f.only_file(), |l| {
        l.remove(2);
    });
    let r = f.verify();
    assert_eq!(kinds(&r), [(ProblemKind::Removed, Some(2), 3)], "{r}");
    assert!(r.problems[0].detail.contains("seq 2 is missing (before seq 3)"), "{r}");

    // At the start.
    let f = fixture();
    f.with_records(3);
    edit_lines(&f.only_file(), |l| {
        l.remove(0);
    });
    let r = f.verify();
    assert_eq!(kinds(&r), [(ProblemKind::Removed, Some(0), 1)], "{r}");
    assert!(r.problems[0].detail.contains("at the start"), "{r}");

    // At the end: only head.json knows.
    let f = fixture();
    f.with_records(5);
    edit_lines(&f.only_file(), |l| {
        l.truncate(3);
    });
    let r = f.verify();
    assert_eq!(kinds(&r), [(ProblemKind::Removed, Some(3), 3)], "{r}");
    assert!(r.problems[0].detail.contains("seqs 3..4 are missing at the end of the trail"), "{r}");
    let e = AuditLog::open(&f.dir, f.identity.clone()).unwrap_err();
    assert!(e.to_string().contains("head.json names 4"), "{e}");

    // A whole day's file.
    let f = fixture();
    let log = f.open().log;
    log.append(entry(0)).unwrap();
    f.clock.fetch_add(2000, Ordering::SeqCst);
    log.append(entry(1)).unwrap();
    f.clock.fetch_add(86_400_000, Ordering::SeqCst);
    log.append(entry(2)).unwrap();
    std::fs::remove_file(f.dir.join("audit-2025-01-02.jsonl")).unwrap();
    let r = f.verify();
    assert_eq!(kinds(&r), [(ProblemKind::Removed, Some(1), 1)], "{r}");
    assert_eq!(r.problems[0].file, "audit-2025-01-03.jsonl");
}

#[test]
fn reordered_records_are_named() {
    let f = fixture();
    f.with_records(5);
    edit_lines(&f.only_file(), |l| l.swap(1, 2));
    let r = f.verify();
    assert_eq!(kinds(&r), [(ProblemKind::Reordered, Some(1), 3)], "{r}");
    assert!(r.problems[0].detail.contains("comes after seq 2 (audit-2025-01-01.jsonl:2)"), "{r}");

    let f = fixture();
    f.with_records(5);
    edit_lines(&f.only_file(), |l| {
        let first = l.remove(0);
        l.push(first);
    });
    let r = f.verify();
    assert_eq!(kinds(&r), [(ProblemKind::Reordered, Some(0), 5)], "{r}");
}

#[test]
fn duplicated_and_malformed_lines_are_named() {
    let f = fixture();
    f.with_records(3);
    edit_lines(&f.only_file(), |l| {
        let copy = l[1].clone();
        l.insert(2, copy);
        l.insert(1, "{not json".into());
    });
    let r = f.verify();
    assert_eq!(kinds(&r), [(ProblemKind::Malformed, None, 2), (ProblemKind::Duplicate, Some(1), 4)], "{r}");
}

#[test]
fn a_torn_tail_is_reported_then_repaired_and_audited_on_open() {
    let f = fixture();
    let log = f.with_records(3);
    drop(log);
    // A crash in the middle of the fourth append: half a line, head.json still at seq 2.
    let path = f.only_file();
    let last_line = std::fs::read_to_string(&path).unwrap().lines().last().unwrap().to_string();
    let half = &last_line.replace("\"seq\":2", "\"seq\":3")[..last_line.len() / 2];
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(half.as_bytes()).unwrap();
    let r = f.verify();
    assert_eq!(kinds(&r), [(ProblemKind::TornTail, None, 4)], "{r}");
    assert!(r.problems[0].detail.contains("incomplete"), "{r}");

    let opened = f.open();
    assert!(opened.notes.iter().any(|n| n.contains("torn last line")), "{:?}", opened.notes);
    assert_eq!(opened.log.next_seq(), 4, "the repair is itself recorded as seq 3");
    let records = read_records(&f.dir).unwrap();
    match &records[3].what {
        What::Audit { event, detail } => {
            assert_eq!(event, "torn_tail_repaired");
            assert_eq!(detail["bytes"], half.len());
        }
        other => panic!("{other:?}"),
    }
    let torn: Vec<_> = std::fs::read_dir(f.dir.join(TORN_DIR)).unwrap().collect();
    assert_eq!(torn.len(), 1);
    let r = f.verify();
    assert!(r.ok(), "{r}");
    assert!(r.warnings.iter().any(|w| w.starts_with("torn/")), "{:?}", r.warnings);
}

#[test]
fn a_cut_committed_record_is_damage_not_a_torn_tail() {
    let f = fixture();
    f.with_records(3);
    let path = f.only_file();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 20).unwrap();
    let r = f.verify();
    assert_eq!(kinds(&r), [(ProblemKind::TornTail, None, 3), (ProblemKind::Removed, Some(2), 2)], "{r}");
    let e = AuditLog::open(&f.dir, f.identity.clone()).unwrap_err();
    assert!(matches!(e, AuditError::Damaged { .. }), "{e}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len - 20, "a damaged trail is left as it is");
}

#[test]
fn a_changed_last_record_stops_the_writer() {
    let f = fixture();
    f.with_records(2);
    edit_lines(&f.only_file(), |l| l[1] = l[1].replace("svc1", "svc7"));
    let e = AuditLog::open(&f.dir, f.identity.clone()).unwrap_err();
    assert!(e.to_string().contains(":2: content does not match its hash"), "{e}");
}

#[test]
fn another_key_verifies_nothing() {
    let f = fixture();
    f.with_records(3);
    let other = fixture();
    let r = verify(&f.dir, &other.identity.public_key()).unwrap();
    let changed = r.problems.iter().filter(|p| p.kind == ProblemKind::Changed).count();
    assert_eq!(changed, 3, "{r}");
    assert!(r.problems.iter().any(|p| p.kind == ProblemKind::BadHead), "{r}");
}

#[test]
fn concurrent_appends_keep_one_chain() {
    let f = fixture();
    let log = Arc::new(f.open().log);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    log.append(entry(t * 100 + i)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = f.verify();
    assert!(r.ok(), "{r}");
    assert_eq!((r.records, r.last_seq), (100, Some(99)));
}

#[test]
fn a_verification_beside_a_writer_sees_a_consistent_trail() {
    // ghostctl audit verify runs while the agent appends: every verification must find the
    // trail intact, never a head naming a record it has not read yet (CI saw exactly that).
    let f = fixture();
    let log = Arc::new(f.open().log);
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                log.append(entry(i)).unwrap();
            }
        })
    };
    let mut verified = 0;
    while !writer.is_finished() {
        let r = f.verify();
        assert!(r.ok(), "verification {verified} beside the writer: {r}");
        verified += 1;
    }
    writer.join().unwrap();
    let r = f.verify();
    assert!(r.ok() && r.warnings.is_empty(), "{r}");
    assert_eq!(r.last_seq, Some(299));
    assert!(verified > 0);
}

#[test]
fn long_strings_are_recorded_abridged_with_their_hash() {
    let big = "x".repeat(100_000);
    let call = ToolCall::new("fs.write", json!({ "path": "/tmp/big", "content": big }), "");
    let e = Entry::tool_call("agent", &call, Why::default(), None, Outcome::new(Status::Ok, Value::Null));
    let What::ToolCall { args, .. } = &e.what else { panic!() };
    let content = args["content"].as_str().unwrap();
    assert!(content.len() < 400, "{}", content.len());
    assert!(content.contains("[100000 bytes, sha256 "), "{content}");
    assert_eq!(args["path"], "/tmp/big");
}

#[test]
fn an_empty_or_missing_trail_verifies_and_a_stray_head_is_damage() {
    let f = fixture();
    assert!(f.verify().ok());
    let log = f.open().log;
    assert_eq!(log.next_seq(), 0);
    drop(log);
    std::fs::write(f.dir.join(HEAD_FILE), "{\"seq\":3,\"hash\":\"00\",\"sig\":\"00\"}").unwrap();
    assert!(AuditLog::open(&f.dir, f.identity.clone()).is_err());
    let r = f.verify();
    assert_eq!(r.problems[0].kind, ProblemKind::BadHead, "{r}");
}

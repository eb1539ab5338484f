//! The agent's engram memory, in one SQLite file (`/var/lib/ghost/memory.db`):
//!
//! - **instant**: a bounded in-process ring of the latest episodes, always available;
//! - **episodic**: every observation, decision, action and outcome, with the links that make
//!   up decision chains (`chain` answers the agent's `why ID`);
//! - **semantic**: FTS5 (BM25) over the episode texts, and embeddings from a pluggable
//!   [`Embed`] (the model server's `/v1/embeddings` in the agent), combined by a normalised
//!   weighted sum (`Memory::search_with`);
//! - **procedural**: playbooks with success and failure counts; those with enough successes
//!   at a high enough rate are *verified* (the "truth crystals").
//!
//! A budget keeps the hot tables bounded: [`Memory::consolidate`] moves old, low-salience
//! episodes to an archive table, leaving a summary episode per span.
//!
//! When the file cannot be opened or written (disk full, locked beyond the busy timeout,
//! read-only, I/O errors), memory carries on **in-process**: it warns loudly (the warning
//! callback, and [`Memory::health`]), keeps accepting records with stable ids, serves them
//! from memory, and writes them back as soon as the file is writable again ([`Memory::flush`],
//! also tried by `record` every `retry_every`). Nothing accepted is lost unless the process
//! dies before the write-back; nothing already written is touched.
//!
//! `Memory` is `Send + Sync`; its methods take `&self` and serialise on one internal lock.
//! Embedding runs outside that lock.

mod consolidate;
mod episode;
mod error;
mod playbook;
mod schema;
mod store;
mod text;
mod vector;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use consolidate::{Budget, ConsolidationReport, SUMMARY_SOURCE};
pub use episode::{now_ms, Episode, EpisodeId, EpisodeKind, Links, Place, StoredEpisode};
pub use error::MemoryError;
pub use playbook::{Playbook, PlaybookHit, PlaybookSpec, VerifyRule};
pub use schema::VERSION as SCHEMA_VERSION;

use vector::VectorIndex;

/// Turns texts into vectors. The agent implements it over the model server's
/// `/v1/embeddings`; tests over ghost-model's MiniLM. One vector per text, in order; every
/// vector of one database must have the same length.
pub trait Embed: Send + Sync {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
}

/// A warning sink: called with one line each time memory changes state or loses a capability.
pub type WarnFn = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
pub struct Options {
    /// How long a write waits for another connection's lock before memory goes in-process.
    pub busy_timeout: Duration,
    /// `PRAGMA synchronous = FULL` (each commit survives power loss) rather than NORMAL.
    pub synchronous_full: bool,
    /// SQLite page cache, KiB.
    pub cache_kib: u32,
    /// A hard cap on the file (`PRAGMA max_page_count`): past it, writes fail as on a full
    /// disk and memory goes in-process. None: no cap beyond the disk.
    pub max_db_bytes: Option<u64>,
    /// Episodes kept in the instant ring.
    pub instant_capacity: usize,
    pub budget: Budget,
    /// Records accepted in-process while the database is unavailable, at most; past it
    /// `record` fails rather than accept what it could lose.
    pub max_pending: usize,
    /// While in-process, `record` retries the database at most this often.
    pub retry_every: Duration,
    /// Episodes whose codes the in-memory vector index holds (48 bytes each at 384
    /// dimensions); the oldest drop out past it and are then found by words only.
    pub vector_index_max: usize,
    /// Candidates from the sign-bit scan that are re-scored with their exact vectors.
    pub rerank: usize,
    /// Embed each episode as it is recorded (when an embedder is set). Otherwise, or when the
    /// embedder fails, episodes wait for `embed_pending`.
    pub embed_on_record: bool,
    pub verify: VerifyRule,
    /// Where warnings go; None: standard error, prefixed `ghost-memory: WARNING:`.
    pub on_warning: Option<WarnFn>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            busy_timeout: Duration::from_secs(2),
            synchronous_full: true,
            cache_kib: 32 * 1024,
            max_db_bytes: None,
            instant_capacity: 256,
            budget: Budget::default(),
            max_pending: 100_000,
            retry_every: Duration::from_secs(30),
            vector_index_max: 1_000_000,
            rerank: 200,
            embed_on_record: true,
            verify: VerifyRule::default(),
            on_warning: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SearchMode {
    /// Words and meaning (a normalised weighted sum, see `Memory::search_with`); words only
    /// when no embedder is available.
    Hybrid,
    Words,
    /// Meaning only; an error without an embedder.
    Meaning,
}

#[derive(Clone, Debug)]
pub struct SearchOptions {
    pub limit: usize,
    pub mode: SearchMode,
}

impl SearchOptions {
    pub fn new(limit: usize, mode: SearchMode) -> Self {
        SearchOptions { limit, mode }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub episode: StoredEpisode,
    /// 0.5 × max(similarity, 0) + 0.5 × lexical in hybrid search; lexical alone for words,
    /// similarity alone for meaning. Larger is better.
    pub score: f64,
    /// 1-based rank in the BM25 list, when it is in it.
    pub word_rank: Option<usize>,
    /// 1-based rank by cosine similarity, when it is in that list.
    pub meaning_rank: Option<usize>,
    /// The IDF-weighted share of the query's words it holds (0 to 1; see `search_with`); for a
    /// record held in-process, the plain share of query words it contains.
    pub lexical: Option<f64>,
    /// Cosine similarity of its embedding and the query's.
    pub similarity: Option<f32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    pub hits: Vec<Hit>,
    /// True when meaning took no part (no embedder, it failed, or words were asked for).
    pub words_only: bool,
    /// Why a hybrid search fell back to words, or what else limited it.
    pub note: Option<String>,
    /// True while memory is in-process (the results include records not yet written).
    pub in_process: bool,
}

/// A query over hot and pending episodes; empty fields match everything.
#[derive(Clone, Debug, Default)]
pub struct EpisodeFilter {
    pub kinds: Vec<EpisodeKind>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub source: Option<String>,
    pub limit: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Records go to the database as they come.
    Durable,
    /// The database is unavailable: records are held in-process until it is back.
    InProcess,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub path: PathBuf,
    pub mode: Mode,
    /// Why memory is in-process.
    pub reason: Option<String>,
    pub in_process_since_ms: Option<i64>,
    /// Records (episodes and playbook updates) waiting to be written back.
    pub pending: usize,
    pub hot_episodes: u64,
    pub max_hot_episodes: u64,
    pub embedding_dim: Option<usize>,
    pub vector_index: usize,
    pub embedder: bool,
    pub last_warning: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlushReport {
    pub episodes: usize,
    pub playbook_updates: usize,
    /// Pending episodes whose id another writer had taken meanwhile: (old id, new id).
    pub renumbered: Vec<(EpisodeId, EpisodeId)>,
}

enum Pending {
    Episode(StoredEpisode),
    Playbook { spec: PlaybookSpec, at_ms: i64 },
    Outcome { name: String, success: bool, at_ms: i64 },
}

struct Unavailable {
    reason: String,
    since_ms: i64,
}

enum ConnectError {
    Refused(MemoryError),
    Unavailable(String),
}

struct Inner {
    conn: Option<rusqlite::Connection>,
    unavailable: Option<Unavailable>,
    pending: Vec<Pending>,
    /// Position in `pending` of each held episode.
    held: HashMap<EpisodeId, usize>,
    ring: VecDeque<StoredEpisode>,
    next_id: i64,
    dim: Option<usize>,
    index: Option<VectorIndex>,
    hot: u64,
    last_try: Option<Instant>,
    outbox: Vec<String>,
    last_warning: Option<String>,
    /// The last embedder problem warned about (so it is warned once, not per record).
    embed_problem: Option<String>,
}

impl Inner {
    fn warn(&mut self, msg: String) {
        self.last_warning = Some(msg.clone());
        self.outbox.push(msg);
    }

    fn held(&self, id: EpisodeId) -> Option<&StoredEpisode> {
        match self.held.get(&id).and_then(|i| self.pending.get(*i)) {
            Some(Pending::Episode(e)) => Some(e),
            _ => None,
        }
    }

    fn pending_episodes(&self) -> impl DoubleEndedIterator<Item = &StoredEpisode> {
        self.pending.iter().filter_map(|p| match p {
            Pending::Episode(e) => Some(e),
            _ => None,
        })
    }

    fn remember(&mut self, e: StoredEpisode, capacity: usize) {
        if capacity == 0 {
            return;
        }
        while self.ring.len() >= capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(e);
    }
}

pub struct Memory {
    path: PathBuf,
    in_memory: bool,
    opts: Options,
    inner: Mutex<Inner>,
    embedder: RwLock<Option<Arc<dyn Embed>>>,
}

/// How many links `chain` follows up and down at most.
const MAX_CHAIN: usize = 256;

impl Memory {
    /// Opens (creating) the database at `path`. A database that cannot be opened or written
    /// is not an error: memory starts in-process and says so (see the crate docs). Errors are
    /// a database from a newer ghostos, a file of another application, and an SQLite without
    /// FTS5.
    pub fn open(path: &Path, opts: Options) -> Result<Memory, MemoryError> {
        Self::start(path.to_owned(), false, opts)
    }

    /// A memory that lives only in this process (an SQLite in-memory database).
    pub fn in_memory() -> Memory {
        Self::in_memory_with(Options::default())
    }

    pub fn in_memory_with(opts: Options) -> Memory {
        match Self::start(PathBuf::from(":memory:"), true, opts.clone()) {
            Ok(m) => m,
            // A fresh in-memory database has no schema to refuse; should SQLite still fail,
            // memory runs in-process without it rather than panic.
            Err(e) => {
                let m = Self::unopened(PathBuf::from(":memory:"), true, opts);
                {
                    let mut g = m.lock();
                    g.unavailable = Some(Unavailable { reason: e.to_string(), since_ms: now_ms() });
                    g.warn(format!(":memory:: {e}; memory is in-process only"));
                }
                m.flush_warnings();
                m
            }
        }
    }

    fn unopened(path: PathBuf, in_memory: bool, opts: Options) -> Memory {
        let inner = Inner {
            conn: None,
            unavailable: None,
            pending: Vec::new(),
            held: HashMap::new(),
            ring: VecDeque::new(),
            next_id: 1,
            dim: None,
            index: None,
            hot: 0,
            last_try: None,
            outbox: Vec::new(),
            last_warning: None,
            embed_problem: None,
        };
        Memory { path, in_memory, opts, inner: Mutex::new(inner), embedder: RwLock::new(None) }
    }

    fn start(path: PathBuf, in_memory: bool, opts: Options) -> Result<Memory, MemoryError> {
        let m = Self::unopened(path, in_memory, opts);
        {
            let mut g = m.lock();
            match m.connect(&mut g) {
                Ok(()) => {}
                Err(ConnectError::Refused(e)) => return Err(e),
                Err(ConnectError::Unavailable(reason)) => {
                    // No id is known to be free: start far above any sequential id (unix ms
                    // × 1000), so ids handed out now do not collide when written back.
                    g.next_id = now_ms().max(1) * 1000;
                    g.last_try = Some(Instant::now());
                    m.go_in_process(&mut g, reason);
                }
            }
        }
        m.flush_warnings();
        Ok(m)
    }

    /// The file (":memory:" for an in-memory memory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets (or removes) the embedder used by `record`, `search` and `embed_pending`.
    pub fn set_embedder(&self, embedder: Option<Arc<dyn Embed>>) {
        *self.embedder.write().unwrap_or_else(|e| e.into_inner()) = embedder;
    }

    fn embedder(&self) -> Option<Arc<dyn Embed>> {
        self.embedder.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends queued warnings to the sink, outside the lock (a sink may call back into memory).
    fn flush_warnings(&self) {
        let msgs = std::mem::take(&mut self.lock().outbox);
        for m in msgs {
            match &self.opts.on_warning {
                Some(f) => f(&m),
                None => eprintln!("ghost-memory: WARNING: {m}"),
            }
        }
    }

    fn done<T>(&self, g: MutexGuard<'_, Inner>, r: T) -> T {
        drop(g);
        self.flush_warnings();
        r
    }

    fn sqlite_err(&self, op: impl Into<String>, e: rusqlite::Error) -> MemoryError {
        if store::is_unavailable(&e) {
            MemoryError::Unavailable { path: self.path.clone(), reason: store::reason(&e) }
        } else {
            MemoryError::Sqlite { path: self.path.clone(), op: op.into(), source: e }
        }
    }

    fn connect(&self, g: &mut Inner) -> Result<(), ConnectError> {
        let path = &self.path;
        let classify = |op: &str, e: rusqlite::Error| {
            if store::is_unavailable(&e) {
                ConnectError::Unavailable(store::reason(&e))
            } else {
                ConnectError::Refused(MemoryError::Sqlite { path: path.clone(), op: op.into(), source: e })
            }
        };
        let co = store::ConnOptions {
            busy_timeout: self.opts.busy_timeout,
            synchronous_full: self.opts.synchronous_full,
            cache_kib: self.opts.cache_kib,
            max_db_bytes: self.opts.max_db_bytes,
        };
        let mut conn = store::connect(path, self.in_memory, &co).map_err(|e| classify("opening", e))?;
        match schema::migrate(&mut conn, path) {
            Err(e) => return Err(classify("reading the schema version", e)),
            Ok(Err(e)) => return Err(ConnectError::Refused(e)),
            Ok(Ok(())) => {}
        }
        let dim = match store::meta(&conn, "embedding_dim").map_err(|e| classify("reading meta", e))? {
            None => None,
            Some(s) => match s.parse::<usize>() {
                Ok(d) if d > 0 => Some(d),
                _ => {
                    return Err(ConnectError::Refused(MemoryError::BadRow {
                        path: path.clone(),
                        what: "meta.embedding_dim".into(),
                        reason: format!("{s:?} is not a dimension"),
                    }))
                }
            },
        };
        let max = store::max_id(&conn).map_err(|e| classify("reading the largest id", e))?;
        let hot = store::hot_count(&conn).map_err(|e| classify("counting episodes", e))?;
        let index = match dim {
            Some(d) => {
                let mut idx = VectorIndex::new(d, self.opts.vector_index_max);
                store::codes(&conn, idx.words(), |id, c| idx.push(id, &c))
                    .map_err(|e| classify("loading the vector index", e))?;
                Some(idx)
            }
            None => None,
        };
        g.next_id = g.next_id.max(max + 1);
        g.hot = hot;
        g.dim = dim;
        g.index = index;
        g.conn = Some(conn);
        Ok(())
    }

    fn go_in_process(&self, g: &mut Inner, reason: String) {
        if let Some(u) = &mut g.unavailable {
            u.reason = reason;
            return;
        }
        let pending = g.pending.len();
        g.warn(format!(
            "{}: {reason}; memory is IN-PROCESS ONLY from now on ({pending} records held): new records are kept in memory \
             and written back when the database is writable again; if this process ends first they are lost",
            self.path.display()
        ));
        g.unavailable = Some(Unavailable { reason, since_ms: now_ms() });
    }

    // ---------------------------------------------------------------- recording

    /// Records one episode; returns its id. See `record_batch`.
    pub fn record(&self, episode: &Episode) -> Result<EpisodeId, MemoryError> {
        let ids = self.record_batch(std::slice::from_ref(episode))?;
        ids.into_iter().next().ok_or_else(|| MemoryError::invalid("episode", "was not recorded"))
    }

    /// Records episodes in one transaction, embedding them first when an embedder is set
    /// (an embedder failure is warned about once and the episodes wait for `embed_pending`).
    /// While the database is unavailable the episodes are held in-process and still get ids.
    /// Errors: invalid fields (named), a `caused_by` that names no episode, and a full
    /// in-process buffer.
    pub fn record_batch(&self, batch: &[Episode]) -> Result<Vec<EpisodeId>, MemoryError> {
        validate_batch(batch)?;
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; batch.len()];
        let mut problem = None;
        if let (true, Some(embedder)) = (self.opts.embed_on_record, self.embedder()) {
            let texts: Vec<&str> = batch.iter().map(|e| e.text.as_str()).collect();
            match embed_all(embedder.as_ref(), &texts) {
                Ok(vs) => vectors = vs.into_iter().map(Some).collect(),
                Err(e) => problem = Some(e),
            }
        }
        let mut g = self.lock();
        if let Some(p) = problem {
            if g.embed_problem.as_deref() != Some(p.as_str()) {
                g.embed_problem = Some(p.clone());
                g.warn(format!("{}: embedder: {p}; episodes are recorded without embeddings until embed_pending", self.path.display()));
            }
        } else if vectors.iter().any(Option::is_some) {
            g.embed_problem = None;
        }
        // The embedder's vectors must fit this database; if not, record without them.
        if let (Some(d), Some(Some(v))) = (g.dim, vectors.first()) {
            if v.len() != d {
                let e = MemoryError::DimensionMismatch { path: self.path.clone(), what: "the embedder's vector".into(), expected: d, got: v.len() };
                let msg = format!("{e}; episodes are recorded without embeddings");
                if g.embed_problem.as_deref() != Some(msg.as_str()) {
                    g.embed_problem = Some(msg.clone());
                    g.warn(msg);
                }
                vectors.iter_mut().for_each(|v| *v = None);
            }
        }
        let r = self.ingest(&mut g, batch, vectors);
        self.done(g, r)
    }

    /// Records episodes with vectors the caller computed (one per episode, the database's
    /// dimension; normalised here). A vector of the wrong dimension is an error.
    pub fn record_batch_with_vectors(&self, batch: &[Episode], vectors: &[Vec<f32>]) -> Result<Vec<EpisodeId>, MemoryError> {
        validate_batch(batch)?;
        if vectors.len() != batch.len() {
            return Err(MemoryError::invalid("vectors", format!("{} vectors for {} episodes", vectors.len(), batch.len())));
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut unit = Vec::with_capacity(vectors.len());
        for (i, v) in vectors.iter().enumerate() {
            unit.push(Some(vector::normalized(v).map_err(|r| MemoryError::invalid(format!("vectors[{i}]"), r))?));
        }
        let mut g = self.lock();
        let want = g.dim.unwrap_or(vectors[0].len().max(1));
        if let Some(i) = vectors.iter().position(|v| v.len() != want) {
            let e = MemoryError::DimensionMismatch { path: self.path.clone(), what: format!("vectors[{i}]"), expected: want, got: vectors[i].len() };
            return self.done(g, Err(e));
        }
        let r = self.ingest(&mut g, batch, unit);
        self.done(g, r)
    }

    fn ingest(&self, g: &mut Inner, batch: &[Episode], vectors: Vec<Option<Vec<f32>>>) -> Result<Vec<EpisodeId>, MemoryError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.maybe_retry(g);
        for (i, e) in batch.iter().enumerate() {
            if let Some(c) = e.links.caused_by {
                if self.known_absent(g, c) {
                    let field = if batch.len() == 1 { "links.caused_by".to_owned() } else { format!("batch[{i}].links.caused_by") };
                    return Err(MemoryError::invalid(field, format!("episode {c} does not exist")));
                }
            }
        }
        let n = batch.len() as i64;
        if g.unavailable.is_none() && g.conn.is_some() {
            let codes: Vec<Option<Vec<u64>>> = vectors.iter().map(|v| v.as_deref().map(vector::code)).collect();
            let new_dim = if g.dim.is_none() { vectors.iter().flatten().next().map(Vec::len) } else { None };
            let mut first = g.next_id;
            let conn = g.conn.as_mut().expect("checked above");
            let written = (|| -> rusqlite::Result<Vec<EpisodeId>> {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                // Ids are taken under the write lock: another process sharing the database
                // (another machine or container on the same path) may have written since.
                first = first.max(store::max_id(&tx)? + 1);
                let ids: Vec<EpisodeId> = (first..first + n).collect();
                if let Some(d) = new_dim {
                    store::set_meta(&tx, "embedding_dim", &d.to_string())?;
                }
                for (k, e) in batch.iter().enumerate() {
                    let vector = match (&vectors[k], &codes[k]) {
                        (Some(v), Some(c)) => Some((v.as_slice(), c.as_slice())),
                        _ => None,
                    };
                    store::insert_episode(&tx, &store::NewEpisode { id: ids[k], episode: e, vector })?;
                }
                tx.commit()?;
                Ok(ids)
            })();
            match written {
                Ok(ids) => {
                    g.next_id = first + n;
                    if let Some(d) = new_dim {
                        g.dim = Some(d);
                        g.index = Some(VectorIndex::new(d, self.opts.vector_index_max));
                    }
                    if let Some(idx) = &mut g.index {
                        for (id, c) in ids.iter().zip(&codes) {
                            if let Some(c) = c {
                                idx.push(*id, c);
                            }
                        }
                    }
                    g.hot += batch.len() as u64;
                    for (id, e) in ids.iter().zip(batch) {
                        g.remember(StoredEpisode { id: *id, episode: e.clone(), place: Place::Hot }, self.opts.instant_capacity);
                    }
                    if self.opts.budget.auto && g.hot > self.opts.budget.max_hot_episodes {
                        if let Err(e) = self.consolidate_locked(g) {
                            g.warn(format!("consolidation after recording: {e}"));
                        }
                    }
                    return Ok(ids);
                }
                Err(e) if store::is_unavailable(&e) => {
                    g.last_try = Some(Instant::now());
                    self.go_in_process(g, store::reason(&e));
                }
                Err(e) => return Err(self.sqlite_err("recording episodes", e)),
            }
        }
        // In-process.
        let first = g.next_id;
        g.next_id += n;
        let ids: Vec<EpisodeId> = (first..first + n).collect();
        let held = g.held.len();
        if held + batch.len() > self.opts.max_pending {
            let reason = format!(
                "not writable ({}) and the in-process buffer is full ({held} of {} episodes held): refusing rather than losing records",
                g.unavailable.as_ref().map_or("unknown", |u| u.reason.as_str()),
                self.opts.max_pending
            );
            return Err(MemoryError::Unavailable { path: self.path.clone(), reason });
        }
        for (id, e) in ids.iter().zip(batch) {
            let s = StoredEpisode { id: *id, episode: e.clone(), place: Place::Pending };
            g.held.insert(*id, g.pending.len());
            g.pending.push(Pending::Episode(s.clone()));
            g.remember(s, self.opts.instant_capacity);
        }
        Ok(ids)
    }

    /// True only when the episode is known not to exist (a database that cannot be read
    /// proves nothing).
    fn known_absent(&self, g: &Inner, id: EpisodeId) -> bool {
        if g.held(id).is_some() || g.ring.iter().any(|e| e.id == id) {
            return false;
        }
        match &g.conn {
            Some(c) => matches!(store::exists(c, id), Ok(false)),
            None => false,
        }
    }

    fn maybe_retry(&self, g: &mut Inner) {
        if g.unavailable.is_none() {
            return;
        }
        if g.last_try.is_some_and(|t| t.elapsed() < self.opts.retry_every) {
            return;
        }
        let _ = self.write_back(g);
    }

    /// Writes back what was held in-process, when the database is writable again. Ok with
    /// what was written (nothing when memory is durable); an `Unavailable` error naming the
    /// reason when the database is still not writable.
    pub fn flush(&self) -> Result<FlushReport, MemoryError> {
        let mut g = self.lock();
        let r = self.write_back(&mut g);
        self.done(g, r)
    }

    fn write_back(&self, g: &mut Inner) -> Result<FlushReport, MemoryError> {
        g.last_try = Some(Instant::now());
        if g.unavailable.is_none() {
            return Ok(FlushReport::default());
        }
        if g.conn.is_none() {
            match self.connect(g) {
                Ok(()) => {}
                Err(ConnectError::Unavailable(reason)) => {
                    self.go_in_process(g, reason.clone());
                    return Err(MemoryError::Unavailable { path: self.path.clone(), reason: format!("still not writable: {reason}") });
                }
                Err(ConnectError::Refused(e)) => {
                    let reason = e.to_string();
                    self.go_in_process(g, reason.clone());
                    return Err(e);
                }
            }
        }
        let conn = g.conn.as_mut().expect("connected above");
        let pending = &g.pending;
        let mut next_id = g.next_id;
        let result = (|| -> rusqlite::Result<FlushReport> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut report = FlushReport::default();
            next_id = next_id.max(store::max_id(&tx)? + 1);
            let mut renumber: HashMap<EpisodeId, EpisodeId> = HashMap::new();
            for p in pending {
                match p {
                    Pending::Episode(s) => {
                        let mut e = s.episode.clone();
                        if let Some(c) = e.links.caused_by.and_then(|c| renumber.get(&c)) {
                            e.links.caused_by = Some(*c);
                        }
                        let mut id = s.id;
                        match store::episode(&tx, id)? {
                            // Written before the failure was reported (an fsync error after
                            // the commit frame): already there.
                            Some(old) if old.episode == e => continue,
                            Some(_) => {
                                id = next_id;
                                next_id += 1;
                                renumber.insert(s.id, id);
                                report.renumbered.push((s.id, id));
                            }
                            None => {}
                        }
                        store::insert_episode(&tx, &store::NewEpisode { id, episode: &e, vector: None })?;
                        report.episodes += 1;
                    }
                    Pending::Playbook { spec, at_ms } => {
                        store::upsert_playbook(&tx, spec, *at_ms, None)?;
                        report.playbook_updates += 1;
                    }
                    Pending::Outcome { name, success, at_ms } => {
                        // A playbook that is in neither place was checked when accepted;
                        // should it be gone, the outcome has nothing to count against.
                        store::playbook_outcome(&tx, name, *success, *at_ms)?;
                        report.playbook_updates += 1;
                    }
                }
            }
            tx.commit()?;
            Ok(report)
        })();
        g.next_id = g.next_id.max(next_id);
        match result {
            Ok(report) => {
                let since = g.unavailable.take().map_or(0, |u| u.since_ms);
                g.pending.clear();
                g.held.clear();
                let renumbered: HashMap<EpisodeId, EpisodeId> = report.renumbered.iter().copied().collect();
                for e in g.ring.iter_mut() {
                    if e.place == Place::Pending {
                        e.place = Place::Hot;
                        if let Some(n) = renumbered.get(&e.id) {
                            e.id = *n;
                        }
                    }
                }
                if let Ok(n) = store::hot_count(g.conn.as_ref().expect("connected")) {
                    g.hot = n;
                }
                let mut msg = format!(
                    "{}: writable again; wrote back {} episodes and {} playbook updates held in-process since {}",
                    self.path.display(),
                    report.episodes,
                    report.playbook_updates,
                    episode::format_utc(since)
                );
                if !report.renumbered.is_empty() {
                    msg += &format!(
                        "; {} episode ids had been taken by another writer and were renumbered: {:?}",
                        report.renumbered.len(),
                        report.renumbered
                    );
                }
                g.warn(msg);
                Ok(report)
            }
            Err(e) if store::is_unavailable(&e) => {
                let reason = store::reason(&e);
                self.go_in_process(g, reason.clone());
                Err(MemoryError::Unavailable { path: self.path.clone(), reason: format!("still not writable: {reason}") })
            }
            Err(e) => {
                let err = self.sqlite_err("writing back in-process records", e);
                g.warn(format!("{err}; the records stay in-process"));
                Err(err)
            }
        }
    }

    /// Changes the hard size cap of the file (see `Options::max_db_bytes`).
    pub fn set_max_db_bytes(&self, max: Option<u64>) -> Result<(), MemoryError> {
        let g = self.lock();
        let r = match &g.conn {
            Some(c) => store::set_max_bytes(c, max).map_err(|e| self.sqlite_err("setting max_page_count", e)),
            None => Ok(()),
        };
        self.done(g, r)
    }

    /// Embeds up to `max` hot episodes (and playbooks) that have no embedding yet, oldest
    /// first. Returns how many episodes and playbooks got one. Does nothing in-process.
    pub fn embed_pending(&self, max: usize) -> Result<usize, MemoryError> {
        let Some(embedder) = self.embedder() else {
            return Err(MemoryError::Embed("no embedder is set".into()));
        };
        let (episodes, playbooks) = {
            let g = self.lock();
            let Some(conn) = g.conn.as_ref().filter(|_| g.unavailable.is_none()) else {
                return Ok(0);
            };
            let e = store::unembedded(conn, max).map_err(|e| self.sqlite_err("finding episodes without embeddings", e))?;
            let p = store::unembedded_playbooks(conn, max.saturating_sub(e.len()))
                .map_err(|e| self.sqlite_err("finding playbooks without embeddings", e))?;
            (e, p)
        };
        if episodes.is_empty() && playbooks.is_empty() {
            return Ok(0);
        }
        let texts: Vec<&str> = episodes.iter().map(|(_, t)| t.as_str()).chain(playbooks.iter().map(|(_, t)| t.as_str())).collect();
        let vectors = embed_all(embedder.as_ref(), &texts).map_err(MemoryError::Embed)?;
        let mut g = self.lock();
        let dim = g.dim.unwrap_or(vectors[0].len());
        if let Some(v) = vectors.iter().find(|v| v.len() != dim) {
            let e = MemoryError::DimensionMismatch { path: self.path.clone(), what: "the embedder's vector".into(), expected: dim, got: v.len() };
            return self.done(g, Err(e));
        }
        let codes: Vec<Vec<u64>> = vectors.iter().map(|v| vector::code(v)).collect();
        let new_dim = g.dim.is_none();
        let Some(conn) = g.conn.as_mut() else {
            return self.done(g, Ok(0));
        };
        let r = (|| -> rusqlite::Result<Vec<EpisodeId>> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if new_dim {
                store::set_meta(&tx, "embedding_dim", &dim.to_string())?;
            }
            let mut done = Vec::new();
            for (k, (id, _)) in episodes.iter().enumerate() {
                if store::set_episode_vector(&tx, *id, &vectors[k], &codes[k])? {
                    done.push(*id);
                }
            }
            for (k, (id, _)) in playbooks.iter().enumerate() {
                store::set_playbook_vector(&tx, *id, &vectors[episodes.len() + k])?;
            }
            tx.commit()?;
            Ok(done)
        })();
        match r {
            Ok(done) => {
                if new_dim {
                    g.dim = Some(dim);
                    g.index = Some(VectorIndex::new(dim, self.opts.vector_index_max));
                }
                let pos: HashMap<EpisodeId, usize> = episodes.iter().enumerate().map(|(k, (id, _))| (*id, k)).collect();
                if let Some(idx) = &mut g.index {
                    for id in &done {
                        idx.push(*id, &codes[pos[id]]);
                    }
                }
                let n = done.len() + playbooks.len();
                self.done(g, Ok(n))
            }
            Err(e) => {
                let err = self.sqlite_err("storing embeddings", e);
                self.done(g, Err(err))
            }
        }
    }

    // ---------------------------------------------------------------- reading

    /// The latest episodes, newest last, from the in-process ring: available even when the
    /// database is not.
    pub fn instant(&self) -> Vec<StoredEpisode> {
        let g = self.lock();
        let r = g.ring.iter().cloned().collect();
        self.done(g, r)
    }

    /// One episode, wherever it is (hot, archived or held in-process).
    pub fn get(&self, id: EpisodeId) -> Result<Option<StoredEpisode>, MemoryError> {
        let g = self.lock();
        let r = self.lookup(&g, id);
        self.done(g, r)
    }

    fn lookup(&self, g: &Inner, id: EpisodeId) -> Result<Option<StoredEpisode>, MemoryError> {
        if let Some(e) = g.held(id) {
            return Ok(Some(e.clone()));
        }
        let from_ring = || g.ring.iter().find(|e| e.id == id).cloned();
        match &g.conn {
            Some(c) => match store::episode(c, id) {
                Ok(e) => Ok(e),
                Err(e) => from_ring().map(Some).ok_or_else(|| self.sqlite_err(format!("reading episode {id}"), e)),
            },
            None => Ok(from_ring()),
        }
    }

    /// The `n` most recent episodes (by time), newest first, including those held
    /// in-process. When the database cannot be read: those held and what the instant ring
    /// holds.
    pub fn recent(&self, n: usize) -> Result<Vec<StoredEpisode>, MemoryError> {
        self.query(&EpisodeFilter { limit: n, ..Default::default() }).or_else(|e| match e {
            MemoryError::Unavailable { .. } => {
                let g = self.lock();
                let mut out: Vec<StoredEpisode> = g.pending_episodes().cloned().collect();
                out.extend(g.ring.iter().filter(|e| e.place != Place::Pending).cloned());
                out.sort_by(|a, b| b.episode.time_ms.cmp(&a.episode.time_ms).then(b.id.cmp(&a.id)));
                out.truncate(n);
                Ok(self.done(g, out))
            }
            e => Err(e),
        })
    }

    /// Hot and in-process episodes matching the filter, newest first.
    pub fn query(&self, f: &EpisodeFilter) -> Result<Vec<StoredEpisode>, MemoryError> {
        let g = self.lock();
        let matches = |e: &StoredEpisode| {
            (f.kinds.is_empty() || f.kinds.contains(&e.episode.kind))
                && f.since_ms.into_iter().all(|t| e.episode.time_ms >= t)
                && f.until_ms.into_iter().all(|t| e.episode.time_ms < t)
                && f.source.as_deref().into_iter().all(|s| e.episode.source == s)
        };
        let mut out: Vec<StoredEpisode> = g.pending_episodes().filter(|e| matches(e)).cloned().collect();
        let r = match &g.conn {
            Some(c) => store::filtered(c, &f.kinds, f.since_ms, f.until_ms, f.source.as_deref(), f.limit)
                .map_err(|e| self.sqlite_err("querying episodes", e)),
            None => Err(MemoryError::Unavailable {
                path: self.path.clone(),
                reason: g.unavailable.as_ref().map_or_else(|| "not open".into(), |u| u.reason.clone()),
            }),
        };
        let r = r.map(|db| {
            out.extend(db);
            out.sort_by(|a, b| b.episode.time_ms.cmp(&a.episode.time_ms).then(b.id.cmp(&a.id)));
            out.truncate(f.limit);
            out
        });
        self.done(g, r)
    }

    /// The decision chain through an episode, in causal order: the episodes it was caused by
    /// (root first), the episode itself, then every episode it led to (by time). Follows
    /// links into the archive and into records held in-process. This is the agent's `why ID`.
    pub fn chain(&self, id: EpisodeId) -> Result<Vec<StoredEpisode>, MemoryError> {
        let g = self.lock();
        let r = self.chain_locked(&g, id);
        self.done(g, r)
    }

    fn chain_locked(&self, g: &Inner, id: EpisodeId) -> Result<Vec<StoredEpisode>, MemoryError> {
        let start = self.lookup(g, id)?.ok_or_else(|| MemoryError::NotFound { what: format!("episode {id}") })?;
        let mut seen: HashSet<EpisodeId> = HashSet::from([id]);
        let mut up = Vec::new();
        let mut cause = start.episode.links.caused_by;
        while let Some(c) = cause {
            if !seen.insert(c) || up.len() >= MAX_CHAIN {
                break;
            }
            match self.lookup(g, c)? {
                Some(e) => {
                    cause = e.episode.links.caused_by;
                    up.push(e);
                }
                None => break,
            }
        }
        up.reverse();
        let mut down = Vec::new();
        let mut queue = VecDeque::from([id]);
        while let Some(p) = queue.pop_front() {
            let mut kids: Vec<EpisodeId> = match &g.conn {
                Some(c) => store::children(c, p).map_err(|e| self.sqlite_err(format!("reading the episodes caused by {p}"), e))?,
                None => g.ring.iter().filter(|e| e.episode.links.caused_by == Some(p)).map(|e| e.id).collect(),
            };
            kids.extend(g.pending_episodes().filter(|e| e.episode.links.caused_by == Some(p)).map(|e| e.id));
            for k in kids {
                if down.len() >= MAX_CHAIN || !seen.insert(k) {
                    continue;
                }
                if let Some(e) = self.lookup(g, k)? {
                    down.push(e);
                    queue.push_back(k);
                }
            }
        }
        down.sort_by_key(|e| (e.episode.time_ms, e.id));
        up.push(start);
        up.extend(down);
        Ok(up)
    }

    // ---------------------------------------------------------------- search

    /// Hybrid search (words and meaning), best first. See `search_with`.
    pub fn search(&self, query: &str, limit: usize) -> Result<SearchResults, MemoryError> {
        self.search_with(query, &SearchOptions::new(limit, SearchMode::Hybrid))
    }

    /// Searches hot episodes (and records held in-process, by words).
    ///
    /// Words: FTS5 (porter stemmer, over text and source) finds the candidates: the newest
    /// episodes holding all of the query's words, then all but one, then each alone (see
    /// `word_candidates`); each is scored by the IDF-weighted share of the query's words it
    /// holds ("lexical": BM25 with k1 = 0, divided by the query's IDF mass; 0 to 1). Stopwords
    /// are dropped and every word is quoted, so no input is FTS5 syntax.
    ///
    /// Meaning: the query's embedding against the in-memory sign-bit index; the closest
    /// `rerank` are re-scored by exact cosine with their stored f32 vectors.
    ///
    /// Hybrid: a normalised weighted sum, 0.5 × max(cosine, 0) + 0.5 × lexical, over both
    /// candidate lists (every candidate gets its exact cosine). A document that shares only a
    /// common word with the query adds little; one that holds its rare identifier adds a lot.
    /// Reciprocal-rank fusion was measured against it on the labelled set of
    /// tests/semantic.rs and ranked worse (it rewards any word match as much as the best).
    pub fn search_with(&self, query: &str, o: &SearchOptions) -> Result<SearchResults, MemoryError> {
        let mut note = None;
        let mut qvec = None;
        if o.mode != SearchMode::Words {
            match self.embedder() {
                None => note = Some("words only: no embedder is available".to_owned()),
                Some(e) => match embed_all(e.as_ref(), &[query]) {
                    Ok(mut v) => qvec = v.pop(),
                    Err(err) => note = Some(format!("words only: the embedder failed: {err}")),
                },
            }
        }
        if o.mode == SearchMode::Meaning && qvec.is_none() {
            return Err(MemoryError::Embed(note.unwrap_or_default()));
        }
        let g = self.lock();
        let r = self.search_locked(&g, query, o, qvec, note);
        self.done(g, r)
    }

    fn search_locked(
        &self,
        g: &Inner,
        query: &str,
        o: &SearchOptions,
        qvec: Option<Vec<f32>>,
        mut note: Option<String>,
    ) -> Result<SearchResults, MemoryError> {
        let limit = o.limit.min(10_000);
        let in_process = g.unavailable.is_some();
        let depth = (limit * 5).max(50);
        let terms = text::query_terms(query);
        let use_words = o.mode != SearchMode::Meaning;

        // Words: candidates from FTS5, scored by the IDF-weighted share of the query they hold.
        let mut lexical: HashMap<EpisodeId, f64> = HashMap::new();
        let mut words: Vec<EpisodeId> = Vec::new();
        if let (true, Some(conn)) = (use_words, &g.conn) {
            match word_candidates(conn, &terms, depth, g.hot) {
                Ok(found) => {
                    for (id, l) in found {
                        words.push(id);
                        lexical.insert(id, l);
                    }
                }
                Err(e) => note = Some(format!("{}: the database could not be searched: {e}", self.path.display())),
            }
        }
        // Records held in-process, by the share of query words they contain (no index, no
        // embeddings: they have neither yet).
        if use_words {
            for e in g.pending_episodes() {
                let share = text::match_share(&terms, &format!("{} {}", e.episode.text, e.episode.source));
                if share > 0.0 {
                    lexical.insert(e.id, share);
                }
            }
        }

        // Meaning: the sign-bit index, then exact cosine of the candidates.
        let mut similarity: HashMap<EpisodeId, f32> = HashMap::new();
        let mut meaning: Vec<EpisodeId> = Vec::new();
        let mut use_meaning = false;
        if let Some(q) = &qvec {
            match (g.dim, &g.index, &g.conn) {
                (Some(d), _, _) if d != q.len() => {
                    let e = MemoryError::DimensionMismatch { path: self.path.clone(), what: "the query's embedding".into(), expected: d, got: q.len() };
                    if o.mode == SearchMode::Meaning {
                        return Err(e);
                    }
                    note = Some(format!("words only: {e}"));
                }
                (Some(d), Some(idx), Some(conn)) => {
                    use_meaning = true;
                    let candidates = idx.nearest(&vector::code(q), self.opts.rerank.max(depth));
                    // Word hits get an exact similarity too, so that both signals rank them.
                    let extra: Vec<EpisodeId> = words.iter().filter(|id| !candidates.contains(id)).copied().collect();
                    let mut scored: Vec<(EpisodeId, f32)> = Vec::new();
                    for ids in [&candidates, &extra] {
                        match store::vectors(conn, ids, d) {
                            Ok(vs) => scored.extend(vs.iter().map(|(id, v)| (*id, vector::dot(q, v)))),
                            Err(e) => note = Some(format!("{}: reading embeddings: {e}", self.path.display())),
                        }
                    }
                    similarity = scored.iter().copied().collect();
                    scored.retain(|(id, _)| !extra.contains(id));
                    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
                    scored.truncate(depth);
                    meaning = scored.iter().map(|(id, _)| *id).collect();
                }
                // Nothing embedded yet: meaning has nothing to rank.
                _ => use_meaning = true,
            }
        }
        let words_only = !use_meaning;

        let (wm, ww) = match (o.mode, use_meaning) {
            (SearchMode::Words, _) | (SearchMode::Hybrid, false) => (0.0, 1.0),
            (SearchMode::Meaning, _) => (1.0, 0.0),
            (SearchMode::Hybrid, true) => (HYBRID_MEANING_WEIGHT, 1.0 - HYBRID_MEANING_WEIGHT),
        };
        let mut candidates: Vec<EpisodeId> = Vec::new();
        let mut seen = HashSet::new();
        let lists: [&[EpisodeId]; 2] = [if ww > 0.0 { &words } else { &[] }, if wm > 0.0 { &meaning } else { &[] }];
        let mut held: Vec<EpisodeId> = if ww > 0.0 { g.pending_episodes().map(|e| e.id).filter(|id| lexical.contains_key(id)).collect() } else { Vec::new() };
        held.reverse();
        for id in lists.into_iter().flatten().chain(&held) {
            if seen.insert(*id) {
                candidates.push(*id);
            }
        }
        let mut fused: Vec<(EpisodeId, f64)> = candidates
            .into_iter()
            .map(|id| {
                let cos = f64::from(similarity.get(&id).copied().unwrap_or(0.0)).max(0.0);
                (id, wm * cos + ww * lexical.get(&id).copied().unwrap_or(0.0))
            })
            .collect();
        // Best first; among equals, the newest.
        fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));

        let rank_of = |list: &[EpisodeId], id: EpisodeId| list.iter().position(|x| *x == id).map(|p| p + 1);
        let mut hits = Vec::new();
        for (id, score) in fused.into_iter().take(limit) {
            let episode = match g.held(id) {
                Some(e) => e.clone(),
                None => match g.conn.as_ref().map(|c| store::hot_episode(c, id)) {
                    Some(Ok(Some(e))) => e,
                    Some(Ok(None)) | None => continue,
                    Some(Err(e)) => {
                        note = Some(format!("{}: reading episode {id}: {e}", self.path.display()));
                        continue;
                    }
                },
            };
            hits.push(Hit {
                episode,
                score,
                word_rank: rank_of(&words, id),
                meaning_rank: rank_of(&meaning, id),
                lexical: lexical.get(&id).copied(),
                similarity: similarity.get(&id).copied(),
            });
        }
        Ok(SearchResults { hits, words_only, note, in_process })
    }

    // ---------------------------------------------------------------- playbooks

    /// Creates or updates a playbook (by name). Changed steps reset its counts.
    pub fn upsert_playbook(&self, spec: &PlaybookSpec) -> Result<(), MemoryError> {
        spec.validate()?;
        let mut embedding = None;
        if let (true, Some(e)) = (self.opts.embed_on_record, self.embedder()) {
            let t = playbook::embedding_text(&spec.name, &spec.description, &spec.trigger);
            embedding = embed_all(e.as_ref(), &[t.as_str()]).ok().and_then(|mut v| v.pop());
        }
        let mut g = self.lock();
        self.maybe_retry(&mut g);
        let at = now_ms();
        if g.unavailable.is_none() {
            if let Some(conn) = &g.conn {
                let embedding = embedding.filter(|v| g.dim.into_iter().all(|d| d == v.len()));
                match store::upsert_playbook(conn, spec, at, embedding.as_deref()) {
                    Ok(()) => {
                        if let (None, Some(v)) = (g.dim, &embedding) {
                            // The first vector of the database fixes its dimension.
                            if store::set_meta(conn, "embedding_dim", &v.len().to_string()).is_ok() {
                                g.dim = Some(v.len());
                                g.index = Some(VectorIndex::new(v.len(), self.opts.vector_index_max));
                            }
                        }
                        return self.done(g, Ok(()));
                    }
                    Err(e) if store::is_unavailable(&e) => {
                        g.last_try = Some(Instant::now());
                        self.go_in_process(&mut g, store::reason(&e));
                    }
                    Err(e) => {
                        let err = self.sqlite_err(format!("saving playbook {:?}", spec.name), e);
                        return self.done(g, Err(err));
                    }
                }
            }
        }
        let r = self.hold(&mut g, Pending::Playbook { spec: spec.clone(), at_ms: at });
        self.done(g, r)
    }

    fn hold(&self, g: &mut Inner, p: Pending) -> Result<(), MemoryError> {
        if g.pending.len() >= self.opts.max_pending {
            return Err(MemoryError::Unavailable {
                path: self.path.clone(),
                reason: format!("not writable and the in-process buffer is full ({} records held)", g.pending.len()),
            });
        }
        g.pending.push(p);
        Ok(())
    }

    /// Counts one use of a playbook. An unknown playbook is an error.
    pub fn record_outcome(&self, name: &str, success: bool) -> Result<(), MemoryError> {
        let mut g = self.lock();
        self.maybe_retry(&mut g);
        let at = now_ms();
        if g.unavailable.is_none() {
            if let Some(conn) = &g.conn {
                match store::playbook_outcome(conn, name, success, at) {
                    Ok(true) => return self.done(g, Ok(())),
                    Ok(false) => return self.done(g, Err(MemoryError::NotFound { what: format!("playbook {name:?}") })),
                    Err(e) if store::is_unavailable(&e) => {
                        g.last_try = Some(Instant::now());
                        self.go_in_process(&mut g, store::reason(&e));
                    }
                    Err(e) => {
                        let err = self.sqlite_err(format!("counting an outcome of playbook {name:?}"), e);
                        return self.done(g, Err(err));
                    }
                }
            }
        }
        let held = g.pending.iter().any(|p| matches!(p, Pending::Playbook { spec, .. } if spec.name == name));
        let in_db = g.conn.as_ref().map(|c| store::playbook(c, name, &self.opts.verify));
        if !held && matches!(in_db, Some(Ok(None))) {
            return self.done(g, Err(MemoryError::NotFound { what: format!("playbook {name:?}") }));
        }
        let r = self.hold(&mut g, Pending::Outcome { name: name.to_owned(), success, at_ms: at });
        self.done(g, r)
    }

    /// One playbook by name, with updates held in-process applied.
    pub fn playbook(&self, name: &str) -> Result<Option<Playbook>, MemoryError> {
        let g = self.lock();
        let r = self.playbook_locked(&g, name);
        self.done(g, r)
    }

    fn playbook_locked(&self, g: &Inner, name: &str) -> Result<Option<Playbook>, MemoryError> {
        let mut p = match &g.conn {
            Some(c) => store::playbook(c, name, &self.opts.verify).map_err(|e| self.sqlite_err(format!("reading playbook {name:?}"), e))?,
            None => None,
        };
        for op in &g.pending {
            match op {
                Pending::Playbook { spec, at_ms } if spec.name == name => {
                    let (s, f, used, created) = match &p {
                        Some(old) if old.steps == spec.steps => (old.success_count, old.failure_count, old.last_used_ms, old.created_ms),
                        Some(old) => (0, 0, old.last_used_ms, old.created_ms),
                        None => (0, 0, None, *at_ms),
                    };
                    let id = p.as_ref().map_or(0, |o| o.id);
                    p = Some(Playbook::new(id, spec.name.clone(), spec.description.clone(), spec.trigger.clone(), spec.steps.clone(), s, f, used, created, *at_ms, &self.opts.verify));
                }
                Pending::Outcome { name: n, success, at_ms } if n == name => {
                    if let Some(pb) = &mut p {
                        if *success {
                            pb.success_count += 1;
                        } else {
                            pb.failure_count += 1;
                        }
                        pb.last_used_ms = Some(pb.last_used_ms.unwrap_or(0).max(*at_ms));
                        pb.verified = self.opts.verify.verified(pb.success_count, pb.failure_count);
                    }
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// Every playbook, by name.
    pub fn playbooks(&self) -> Result<Vec<Playbook>, MemoryError> {
        let g = self.lock();
        let mut names: Vec<String> = match &g.conn {
            Some(c) => store::playbooks(c, &self.opts.verify)
                .map_err(|e| self.sqlite_err("reading playbooks", e))
                .map(|v| v.into_iter().map(|p| p.name).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        for op in &g.pending {
            if let Pending::Playbook { spec, .. } = op {
                if !names.contains(&spec.name) {
                    names.push(spec.name.clone());
                }
            }
        }
        names.sort();
        let mut out = Vec::new();
        for n in names {
            match self.playbook_locked(&g, &n) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => {}
                Err(e) => return self.done(g, Err(e)),
            }
        }
        self.done(g, Ok(out))
    }

    /// Playbooks for a situation, by words (name, description, trigger) and meaning, combined
    /// as in `search_with`. Only playbooks in the database.
    pub fn search_playbooks(&self, query: &str, limit: usize) -> Result<Vec<PlaybookHit>, MemoryError> {
        let qvec = self.embedder().and_then(|e| embed_all(e.as_ref(), &[query]).ok()).and_then(|mut v| v.pop());
        let g = self.lock();
        let r = (|| {
            let Some(conn) = &g.conn else { return Ok(Vec::new()) };
            let terms = text::query_terms(query);
            let mut lexical: HashMap<i64, f64> = HashMap::new();
            let mut words: Vec<i64> = Vec::new();
            if let Some(fts) = text::fts_query(&terms) {
                let found = store::playbook_word_search(conn, &fts, 1000).and_then(|found| {
                    let n = store::playbook_count(conn)?;
                    Ok((found, idf_mass(&terms, n, |t| store::playbook_doc_count(conn, t))?))
                });
                let (found, mass) = found.map_err(|e| self.sqlite_err("searching playbooks", e))?;
                for (id, bm25) in found {
                    words.push(id);
                    lexical.insert(id, normalise_bm25(bm25, mass));
                }
            }
            // Playbooks are few: every embedded one is scored exactly.
            let mut similarity: HashMap<i64, f32> = HashMap::new();
            if let (Some(q), Some(d)) = (&qvec, g.dim) {
                if q.len() == d {
                    for (id, v) in store::playbook_vectors(conn, d).map_err(|e| self.sqlite_err("reading playbook embeddings", e))? {
                        similarity.insert(id, vector::dot(q, &v));
                    }
                }
            }
            let wm = if similarity.is_empty() { 0.0 } else { HYBRID_MEANING_WEIGHT };
            let mut meaning: Vec<(i64, f32)> = similarity.iter().map(|(k, v)| (*k, *v)).collect();
            meaning.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut ids: Vec<i64> = words.clone();
            ids.extend(meaning.iter().map(|(id, _)| *id).filter(|id| !lexical.contains_key(id)));
            let mut fused: Vec<(i64, f64)> = ids
                .into_iter()
                .map(|id| {
                    let cos = f64::from(similarity.get(&id).copied().unwrap_or(0.0)).max(0.0);
                    (id, wm * cos + (1.0 - wm) * lexical.get(&id).copied().unwrap_or(0.0))
                })
                .collect();
            fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            fused.truncate(limit);
            let ids: Vec<i64> = fused.iter().map(|(id, _)| *id).collect();
            let mut found = store::playbooks_by_id(conn, &ids, &self.opts.verify).map_err(|e| self.sqlite_err("reading playbooks", e))?;
            let mut out = Vec::new();
            for (id, score) in fused {
                if let Some(p) = found.remove(&id) {
                    out.push(PlaybookHit {
                        playbook: p,
                        score,
                        word_rank: words.iter().position(|x| *x == id).map(|p| p + 1),
                        meaning_rank: meaning.iter().position(|x| x.0 == id).map(|p| p + 1),
                        similarity: similarity.get(&id).copied(),
                    });
                }
            }
            Ok(out)
        })();
        self.done(g, r)
    }

    // ---------------------------------------------------------------- budget

    /// Brings the hot tables within the budget (see `Budget`). An `Unavailable` error while
    /// in-process.
    pub fn consolidate(&self) -> Result<ConsolidationReport, MemoryError> {
        let mut g = self.lock();
        let r = self.consolidate_locked(&mut g);
        self.done(g, r)
    }

    fn consolidate_locked(&self, g: &mut Inner) -> Result<ConsolidationReport, MemoryError> {
        if let Some(u) = &g.unavailable {
            return Err(MemoryError::Unavailable { path: self.path.clone(), reason: format!("cannot consolidate in-process: {}", u.reason) });
        }
        let Some(conn) = g.conn.as_mut() else {
            return Err(MemoryError::Unavailable { path: self.path.clone(), reason: "not open".into() });
        };
        let mut next_id = g.next_id;
        let r = consolidate::run(conn, &self.opts.budget, &mut next_id);
        g.next_id = g.next_id.max(next_id);
        match r {
            Ok(out) => {
                let gone: HashSet<EpisodeId> = out.archived_ids.iter().copied().collect();
                if let Some(idx) = &mut g.index {
                    idx.remove(&gone);
                }
                for e in g.ring.iter_mut() {
                    if gone.contains(&e.id) {
                        e.place = Place::Archived;
                    }
                }
                g.hot = out.report.hot_after;
                Ok(out.report)
            }
            Err(e) => {
                if let Ok(n) = store::hot_count(conn) {
                    g.hot = n;
                }
                Err(self.sqlite_err("consolidating", e))
            }
        }
    }

    /// Episodes in the archive.
    pub fn archived_count(&self) -> Result<u64, MemoryError> {
        let g = self.lock();
        let r = match &g.conn {
            Some(c) => store::archived_count(c).map_err(|e| self.sqlite_err("counting archived episodes", e)),
            None => Err(MemoryError::Unavailable { path: self.path.clone(), reason: "not open".into() }),
        };
        self.done(g, r)
    }

    // ---------------------------------------------------------------- health

    pub fn health(&self) -> Health {
        let embedder = self.embedder().is_some();
        let g = self.lock();
        let h = Health {
            path: self.path.clone(),
            mode: if g.unavailable.is_some() { Mode::InProcess } else { Mode::Durable },
            reason: g.unavailable.as_ref().map(|u| u.reason.clone()),
            in_process_since_ms: g.unavailable.as_ref().map(|u| u.since_ms),
            pending: g.pending.len(),
            hot_episodes: g.hot,
            max_hot_episodes: self.opts.budget.max_hot_episodes,
            embedding_dim: g.dim,
            vector_index: g.index.as_ref().map_or(0, VectorIndex::len),
            embedder,
            last_warning: g.last_warning.clone(),
        };
        self.done(g, h)
    }
}

/// The weight of meaning in hybrid search; words get the rest.
pub const HYBRID_MEANING_WEIGHT: f64 = 0.5;

/// FTS5's idf of a term found in `df` of `n` documents: ln((N − n + 0.5) / (n + 0.5)), at
/// least 1e-6.
fn idf(n: f64, df: f64) -> f64 {
    ((n - df + 0.5) / (df + 0.5)).ln().max(1e-6)
}

/// Above this many matches a term's document frequency is estimated, not counted.
const EXACT_DF_UP_TO: usize = 1_000;

/// The word hits of a query, best first, each with its lexical score: the IDF-weighted share
/// of the query's terms it contains (BM25 with k1 = 0 — term presence, which is what matters
/// in one-line episodes — divided by the query's IDF mass).
///
/// FTS5's bm25() scores every document that matches any term, which for a word that occurs
/// in a sixth of a million episodes ("exited", "pid") takes 100 ms and more. Instead the
/// candidates come from queries that read only the newest `depth` matches, most specific
/// first: all terms; all but one (dropping the commonest first); each term alone (rarest
/// first); stopping once `depth` episodes are found. Which terms each candidate holds is
/// known from the queries that found it; ties go to the newest.
fn word_candidates(conn: &rusqlite::Connection, terms: &[String], depth: usize, hot: u64) -> rusqlite::Result<Vec<(EpisodeId, f64)>> {
    if terms.is_empty() || hot == 0 {
        return Ok(Vec::new());
    }
    let max_id = store::max_hot_id(conn)?;
    let quoted: Vec<String> = terms.iter().map(|t| format!("\"{t}\"")).collect();
    let mut weight = Vec::with_capacity(terms.len());
    for q in &quoted {
        let df = store::estimate_matches(conn, q, EXACT_DF_UP_TO, max_id, hot)?;
        weight.push(if df == 0.0 { None } else { Some(idf(hot as f64, df)) });
    }
    let mass: f64 = weight.iter().map(|w| w.unwrap_or_else(|| idf(hot as f64, 0.0))).sum();
    // Terms that occur at all, rarest (highest idf) first; at most 16 of them.
    let mut present: Vec<usize> = (0..terms.len()).filter(|i| weight[*i].is_some()).collect();
    present.sort_by(|a, b| weight[*b].unwrap_or(0.0).total_cmp(&weight[*a].unwrap_or(0.0)));
    present.truncate(16);
    let mut held: HashMap<EpisodeId, u32> = HashMap::new();
    let run = |subset: &[usize], held: &mut HashMap<EpisodeId, u32>| -> rusqlite::Result<()> {
        let expr = subset.iter().map(|i| quoted[*i].as_str()).collect::<Vec<_>>().join(" AND ");
        let bits = subset.iter().fold(0u32, |b, i| b | (1 << present.iter().position(|p| p == i).unwrap_or(0)));
        for id in store::newest_matching(conn, &expr, depth)? {
            *held.entry(id).or_default() |= bits;
        }
        Ok(())
    };
    if !present.is_empty() {
        run(&present, &mut held)?;
    }
    if held.len() < depth && present.len() >= 3 {
        for drop in present.iter().rev() {
            let rest: Vec<usize> = present.iter().copied().filter(|i| i != drop).collect();
            run(&rest, &mut held)?;
            if held.len() >= depth {
                break;
            }
        }
    }
    if held.len() < depth && present.len() >= 2 {
        for t in &present {
            run(&[*t], &mut held)?;
            if held.len() >= depth {
                break;
            }
        }
    }
    let mut scored: Vec<(EpisodeId, f64)> = held
        .into_iter()
        .map(|(id, bits)| {
            let got: f64 = present.iter().enumerate().filter(|(k, _)| bits & (1 << k) != 0).map(|(_, i)| weight[*i].unwrap_or(0.0)).sum();
            (id, if mass > 0.0 { (got / mass).clamp(0.0, 1.0) } else { 0.0 })
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    scored.truncate(depth);
    Ok(scored)
}

/// What a document containing every query term once, at average length, scores in BM25:
/// Σ idf(term), n the documents containing the term. (Playbooks: few, so counted exactly.)
fn idf_mass(terms: &[String], docs: u64, mut count: impl FnMut(&str) -> rusqlite::Result<u64>) -> rusqlite::Result<f64> {
    let mut mass = 0.0;
    for t in terms {
        let df = count(&format!("\"{t}\""))? as f64;
        mass += idf(docs as f64, df);
    }
    Ok(mass)
}

/// BM25 as a share of the query's IDF mass, in [0, 1] (playbooks): roughly the IDF-weighted
/// share of the query a document covers. Unlike dividing by the best hit's score, a document
/// that matches only a common word of the query scores low even when it is the best match.
fn normalise_bm25(bm25: f64, mass: f64) -> f64 {
    if mass > 0.0 {
        (bm25 / mass).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

impl Drop for Memory {
    /// A last attempt to write back what is held in-process; what cannot be written is named.
    fn drop(&mut self) {
        let mut g = self.lock();
        if g.pending.is_empty() {
            return;
        }
        if let Err(e) = self.write_back(&mut g) {
            let held = g.pending.len();
            g.warn(format!("{e}; {held} records held in-process are LOST as memory closes"));
        }
        drop(g);
        self.flush_warnings();
    }
}

fn validate_batch(batch: &[Episode]) -> Result<(), MemoryError> {
    for (i, e) in batch.iter().enumerate() {
        e.validate(&if batch.len() == 1 { String::new() } else { format!("batch[{i}]") })?;
    }
    Ok(())
}

/// Embeds and normalises, checking the embedder kept its contract.
fn embed_all(e: &dyn Embed, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let vs = e.embed(texts)?;
    if vs.len() != texts.len() {
        return Err(format!("returned {} vectors for {} texts", vs.len(), texts.len()));
    }
    let dim = vs[0].len();
    let mut out = Vec::with_capacity(vs.len());
    for (i, v) in vs.iter().enumerate() {
        if v.len() != dim {
            return Err(format!("vector {i} has {} dimensions, vector 0 has {dim}", v.len()));
        }
        out.push(vector::normalized(v).map_err(|r| format!("vector {i} {r}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<super::Memory>();
    }
}

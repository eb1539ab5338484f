//! The audit trail: an append-only, hash-chained, signed log of every tool call and every
//! decision, under `/var/lib/ghost/audit/` on the state partition.
//!
//! ## Files
//!
//! - `audit-YYYY-MM-DD.jsonl` — one file per UTC day, one record per line. The chain runs
//!   across files: `seq` keeps counting and `prev_hash` links to the previous day's last record.
//! - `head.json` — `{"seq", "hash", "sig"}` of the newest record, replaced atomically after
//!   every append: it is how removing the newest records (which leaves no gap) is noticed.
//! - `torn/` — bytes of an interrupted last line, moved aside when the log is reopened.
//!
//! ## A record
//!
//! ```json
//! {"v":1,"seq":7,"ts":"2025-03-01T12:00:00.123Z","prev_hash":"<64 hex>",
//!  "who":{"agent":"<uuid v7>","actor":"agent"},
//!  "what":{"kind":"tool_call","call_id":"…","tool":"shell.exec","args":{…}},
//!  "why":{"rule":"disk-full","layer":null,"memory_ids":["42"],"text":"…"},
//!  "policy":{"verdict":"ask","reason":"…","rule":"mode.normal.risky","mode":"normal"},
//!  "outcome":{"status":"ok","detail":{…},"duration_ms":12},
//!  "hash":"<64 hex>","sig":"<128 hex>"}
//! ```
//!
//! `hash` is SHA-256 over the canonical JSON (keys sorted, no whitespace; see
//! [`crate::util::canonical_json`]) of the record without `hash` and `sig` — which includes
//! `prev_hash`; `sig` is the agent key's ed25519 signature of the 32 hash bytes. The first
//! record's `prev_hash` is 64 zeros. Lines are written canonically.
//!
//! ## Durability
//!
//! One writer (a mutex) appends a whole line with one `write`, then `fdatasync`s, then
//! replaces `head.json`. A failed write is cut back off the file. When the log is opened, a
//! last line without its newline (a crash in the middle of an append, so `head.json` still
//! names the record before it) is moved to `torn/`, the file is cut back to its last complete
//! line, and an `audit` record saying so is appended: the repair itself is on the chain. If
//! `head.json` names a record that is no longer there, or the last record does not verify,
//! [`AuditLog::open`] refuses with [`AuditError::Damaged`]: the trail was tampered with or
//! damaged, and an operator should look ([`verify`] says what) before anything is appended.
//!
//! ## What verification can and cannot see
//!
//! [`verify`] finds a changed record (hash mismatch, or a recomputed hash without a valid
//! signature), a removed record (a gap in `seq`, a missing first record, or newest records
//! gone according to `head.json`), reordered and duplicated records, malformed lines, and a
//! torn tail. Someone holding the agent key can rewrite history undetectably, and someone who
//! removes the newest records *and* restores an older `head.json` hides that removal; ship
//! records off the machine to defend against those.

use crate::identity::{Identity, PublicKey};
use crate::policy::{Decision, Mode, Verdict};
use crate::tools::{ToolCall, ToolResult};
use crate::util;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
pub const HEAD_FILE: &str = "head.json";
pub const TORN_DIR: &str = "torn";
/// Strings longer than this in arguments and outputs are recorded as a prefix, their length
/// and their SHA-256 (an fs.write of 1 MiB does not put 1 MiB into the trail).
pub const MAX_RECORDED_STRING: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Record contents

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Who {
    /// The agent's identity (UUID v7).
    pub agent: String,
    /// Who acted: `agent`, `operator (uid 0)`, `rule:disk-full`, …
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// A tool call (decided, waiting, run, or refused).
    ToolCall { call_id: String, tool: String, args: Value },
    /// A decision that is not a tool call (a plan, a goal, a rule firing, a self-change).
    Decision { text: String, data: Value },
    /// An operator's answer to an approval request.
    Approval { call_id: String, request_id: String, approved: bool },
    /// Something about the trail itself (opened, torn tail repaired).
    Audit { event: String, detail: Value },
}

/// Why it happened: the rule or model layer that decided, the memories it used, in words.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Why {
    pub rule: Option<String>,
    pub layer: Option<String>,
    #[serde(default)]
    pub memory_ids: Vec<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub verdict: Verdict,
    pub reason: String,
    pub rule: String,
    pub mode: Mode,
}

impl PolicyRecord {
    pub fn new(d: &Decision, mode: Mode) -> PolicyRecord {
        PolicyRecord { verdict: d.verdict, reason: d.reason.clone(), rule: d.rule.clone(), mode }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran and succeeded.
    Ok,
    /// Ran and failed (or timed out).
    Error,
    /// Refused by the policy, an operator, a bound, or validation.
    Denied,
    /// Waiting for an operator.
    Pending,
    /// Allowed and about to run (its result follows in another record).
    Started,
    Approved,
    /// No operator answered in time.
    Expired,
    /// `--dry-run`: decided, not run.
    DryRun,
    /// A record that is not about an action's result.
    Info,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    #[serde(default)]
    pub detail: Value,
    pub duration_ms: Option<u64>,
}

impl Outcome {
    pub fn new(status: Status, detail: Value) -> Outcome {
        Outcome { status, detail, duration_ms: None }
    }

    /// A tool result: `ok` with its (abridged) output, or `error` with the error.
    pub fn from_result(r: &ToolResult) -> Outcome {
        let (status, detail) = match &r.outcome {
            Ok(out) => (Status::Ok, abridge(out)),
            Err(e) => (
                Status::Error,
                json!({ "error": serde_json::to_value(e).unwrap_or(Value::Null), "message": e.to_string() }),
            ),
        };
        Outcome { status, detail, duration_ms: Some(r.duration.as_millis() as u64) }
    }
}

/// What the caller gives [`AuditLog::append`]; the log adds seq, ts, prev_hash, who.agent,
/// hash and sig.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub actor: String,
    pub what: What,
    pub why: Why,
    pub policy: Option<PolicyRecord>,
    pub outcome: Outcome,
}

impl Entry {
    /// A tool call with its decision and outcome; long strings in the arguments are abridged.
    pub fn tool_call(actor: &str, call: &ToolCall, why: Why, policy: Option<PolicyRecord>, outcome: Outcome) -> Entry {
        Entry {
            actor: actor.into(),
            what: What::ToolCall { call_id: call.id.clone(), tool: call.tool.clone(), args: abridge(&call.args) },
            why,
            policy,
            outcome,
        }
    }

    pub fn decision(actor: &str, text: &str, data: Value, why: Why) -> Entry {
        Entry {
            actor: actor.into(),
            what: What::Decision { text: text.into(), data: abridge(&data) },
            why,
            policy: None,
            outcome: Outcome::new(Status::Info, Value::Null),
        }
    }
}

/// Replaces strings longer than [`MAX_RECORDED_STRING`] by a prefix, their length and SHA-256.
pub fn abridge(v: &Value) -> Value {
    match v {
        Value::String(s) if s.len() > MAX_RECORDED_STRING => {
            let mut cut = 256;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            Value::String(format!(
                "{}… [{} bytes, sha256 {}]",
                &s[..cut],
                s.len(),
                util::hex(&Sha256::digest(s.as_bytes()))
            ))
        }
        Value::Array(a) => Value::Array(a.iter().map(abridge).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), abridge(v))).collect()),
        other => other.clone(),
    }
}

/// A record as written (and as read back by [`read_records`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    pub seq: u64,
    pub ts: String,
    pub prev_hash: String,
    pub who: Who,
    pub what: What,
    pub why: Why,
    pub policy: Option<PolicyRecord>,
    pub outcome: Outcome,
    pub hash: String,
    pub sig: String,
}

/// SHA-256 of the canonical record without `hash` and `sig`.
pub fn record_hash(record: &Value) -> [u8; 32] {
    let mut body = record.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("hash");
        m.remove("sig");
    }
    Sha256::digest(util::canonical_json(&body).as_bytes()).into()
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug)]
pub enum AuditError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The existing trail does not check out; nothing is appended until an operator looked.
    Damaged {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            AuditError::Damaged { path, line, reason } if *line > 0 => {
                write!(f, "{}:{line}: {reason}; run `ghostctl audit verify`", path.display())
            }
            AuditError::Damaged { path, reason, .. } => {
                write!(f, "{}: {reason}; run `ghostctl audit verify`", path.display())
            }
        }
    }
}

impl std::error::Error for AuditError {}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |error| AuditError::Io { path: path.to_path_buf(), error }
}

// ---------------------------------------------------------------------------------------------
// Files

fn day_file(day: &str) -> String {
    format!("audit-{day}.jsonl")
}

/// The log files in `dir`, oldest first.
pub fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    Ok(files)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: String,
    sig: String,
}

/// An advisory lock (flock) on the trail's directory. The writer holds it exclusively while it
/// appends a record and replaces `head.json`; [`verify`] shares it while it reads `head.json`
/// and notes how long each file is, then reads the files up to those lengths without it. So
/// a verification running beside the agent never sees a record without its head, nor a head
/// without its record, and never holds the writer up for longer than a few `stat`s.
struct DirLock(#[allow(dead_code)] File);

impl DirLock {
    fn take(dir: &Path, exclusive: bool) -> std::io::Result<DirLock> {
        let f = File::open(dir)?;
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        loop {
            if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), op) } == 0 {
                return Ok(DirLock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

fn read_head(dir: &Path) -> Result<Option<Head>, String> {
    match std::fs::read_to_string(dir.join(HEAD_FILE)) {
        Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| format!("not a head record: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A parsed line with what verification needs.
struct Line {
    seq: u64,
    prev_hash: String,
    hash: String,
    sig: String,
    value: Value,
}

fn parse_line(text: &str) -> Result<Line, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let s = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(|| format!("no `{k}`"));
    Ok(Line {
        seq: value.get("seq").and_then(Value::as_u64).ok_or("no `seq`")?,
        prev_hash: s("prev_hash")?,
        hash: s("hash")?,
        sig: s("sig")?,
        value,
    })
}

/// Whether a line's hash matches its content and its signature verifies.
fn check_line(l: &Line, key: &PublicKey) -> Result<(), String> {
    let computed = util::hex(&record_hash(&l.value));
    if computed != l.hash {
        return Err("content does not match its hash (the record was altered)".into());
    }
    let sig = util::unhex(&l.sig).unwrap_or_default();
    let hash = util::unhex(&l.hash).unwrap_or_default();
    if !key.verify(&hash, &sig) {
        return Err("signature does not verify (the record was altered and re-hashed, or signed by another key)".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Writing

struct Tail {
    next_seq: u64,
    last_hash: String,
    open: Option<(String, File)>,
}

pub type Now = Box<dyn Fn() -> SystemTime + Send + Sync>;

/// The append side of the trail (one per agent process; share it behind an `Arc`).
pub struct AuditLog {
    dir: PathBuf,
    identity: Arc<Identity>,
    tail: Mutex<Tail>,
    now: Now,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// [`AuditLog::open`]'s result: the log and what was noticed and repaired on the way.
#[derive(Debug)]
pub struct Opened {
    pub log: AuditLog,
    pub notes: Vec<String>,
}

impl AuditLog {
    /// Opens (creating) the trail in `dir`, checks its newest record against `head.json` and
    /// the identity's key, and repairs a torn last line (see the module documentation).
    pub fn open(dir: &Path, identity: Arc<Identity>) -> Result<Opened, AuditError> {
        Self::open_with_clock(dir, identity, Box::new(SystemTime::now))
    }

    /// [`AuditLog::open`] with an injected wall clock (tests of day rollover).
    pub fn open_with_clock(dir: &Path, identity: Arc<Identity>, now: Now) -> Result<Opened, AuditError> {
        util::ensure_dir(dir, 0o750).map_err(io(dir))?;
        let key = identity.public_key();
        let mut notes = Vec::new();
        let files = log_files(dir).map_err(io(dir))?;
        let head =
            read_head(dir).map_err(|reason| AuditError::Damaged { path: dir.join(HEAD_FILE), line: 0, reason })?;
        let mut torn: Option<(PathBuf, u64, Vec<u8>)> = None;
        let mut last: Option<(Line, PathBuf, usize)> = None;
        // The newest complete record: in the newest file that has one.
        for path in files.iter().rev() {
            let bytes = std::fs::read(path).map_err(io(path))?;
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            if complete < bytes.len() && torn.is_none() && last.is_none() {
                torn = Some((path.clone(), complete as u64, bytes[complete..].to_vec()));
            }
            let text = String::from_utf8_lossy(&bytes[..complete]);
            let lines: Vec<&str> = text.split_terminator('\n').collect();
            if let Some(l) = lines.last() {
                let n = lines.len();
                let line =
                    parse_line(l).map_err(|reason| AuditError::Damaged { path: path.clone(), line: n, reason })?;
                check_line(&line, &key).map_err(|reason| AuditError::Damaged {
                    path: path.clone(),
                    line: n,
                    reason,
                })?;
                last = Some((line, path.clone(), n));
                break;
            }
        }
        match (&head, &last) {
            (Some(h), None) => {
                return Err(AuditError::Damaged {
                    path: dir.join(HEAD_FILE),
                    line: 0,
                    reason: format!("names record {} but the trail has no complete record", h.seq),
                })
            }
            (Some(h), Some((l, path, n))) if h.seq > l.seq => {
                return Err(AuditError::Damaged {
                    path: path.clone(),
                    line: *n,
                    reason: format!(
                        "the newest record is {} but head.json names {}: records were removed or cut",
                        l.seq, h.seq
                    ),
                })
            }
            (Some(h), Some((l, path, n))) if h.seq == l.seq && h.hash != l.hash => {
                return Err(AuditError::Damaged {
                    path: path.clone(),
                    line: *n,
                    reason: format!("record {} differs from the one head.json names", l.seq),
                })
            }
            (Some(h), Some((l, _, _))) if h.seq < l.seq => {
                notes.push(format!(
                    "{}: named record {}, the trail ends at {}; updated",
                    dir.join(HEAD_FILE).display(),
                    h.seq,
                    l.seq
                ));
            }
            (None, Some((l, _, _))) => {
                notes.push(format!("{}: missing; rewritten for record {}", dir.join(HEAD_FILE).display(), l.seq));
            }
            _ => {}
        }
        let (next_seq, last_hash) = match &last {
            Some((l, _, _)) => (l.seq + 1, l.hash.clone()),
            None => (0, GENESIS.to_string()),
        };
        let log = AuditLog {
            dir: dir.to_path_buf(),
            identity,
            tail: Mutex::new(Tail { next_seq, last_hash, open: None }),
            now,
        };
        if let Some((l, _, _)) = &last {
            log.write_head(l.seq, &l.hash, &l.sig)?;
        }
        if let Some((path, offset, bytes)) = torn {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let torn_dir = dir.join(TORN_DIR);
            util::ensure_dir(&torn_dir, 0o750).map_err(io(&torn_dir))?;
            let aside = torn_dir.join(format!("{name}.{offset}.{}.bin", util::unix_ms(SystemTime::now())));
            util::write_atomic(&aside, &bytes, 0o640).map_err(io(&aside))?;
            let f = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
            f.set_len(offset).and_then(|_| f.sync_all()).map_err(io(&path))?;
            notes.push(format!(
                "{}: a torn last line ({} bytes, an interrupted append) was moved to {}",
                path.display(),
                bytes.len(),
                aside.display()
            ));
            log.append(Entry {
                actor: "audit".into(),
                what: What::Audit {
                    event: "torn_tail_repaired".into(),
                    detail: json!({
                        "file": name,
                        "offset": offset,
                        "bytes": bytes.len(),
                        "sha256": util::hex(&Sha256::digest(&bytes)),
                        "moved_to": aside.strip_prefix(dir).unwrap_or(&aside).to_string_lossy(),
                    }),
                },
                why: Why {
                    rule: Some("audit.open".into()),
                    text: "the previous process stopped in the middle of an append".into(),
                    ..Why::default()
                },
                policy: None,
                outcome: Outcome::new(Status::Info, Value::Null),
            })?;
        }
        Ok(Opened { log, notes })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// The seq the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_head(&self, seq: u64, hash: &str, sig: &str) -> Result<(), AuditError> {
        let path = self.dir.join(HEAD_FILE);
        let head = Head { seq, hash: hash.into(), sig: sig.into() };
        let text = serde_json::to_string(&head).expect("head serialises") + "\n";
        util::write_atomic(&path, text.as_bytes(), 0o640).map_err(io(&path))
    }

    /// Appends one record durably; returns it as written.
    pub fn append(&self, entry: Entry) -> Result<Record, AuditError> {
        let mut tail = self.lock();
        let now = (self.now)();
        let day = util::utc_day(now);
        let mut value = json!({
            "v": 1,
            "seq": tail.next_seq,
            "ts": util::rfc3339(now),
            "prev_hash": tail.last_hash,
            "who": Who { agent: self.identity.id.to_string(), actor: entry.actor },
            "what": entry.what,
            "why": entry.why,
            "policy": entry.policy,
            "outcome": entry.outcome,
        });
        let hash = record_hash(&value);
        let sig = self.identity.sign(&hash);
        value["hash"] = Value::String(util::hex(&hash));
        value["sig"] = Value::String(util::hex(&sig));
        let line = util::canonical_json(&value) + "\n";

        if tail.open.as_ref().is_none_or(|(d, _)| *d != day) {
            let path = self.dir.join(day_file(&day));
            let created = !path.exists();
            let f = OpenOptions::new().append(true).create(true).mode(0o640).open(&path).map_err(io(&path))?;
            if created {
                util::sync_dir(&self.dir).map_err(io(&self.dir))?;
            }
            tail.open = Some((day.clone(), f));
        }
        let path = self.dir.join(day_file(&day));
        // Held until the head is replaced too (see DirLock).
        let _lock = DirLock::take(&self.dir, true).map_err(io(&self.dir))?;
        let (_, f) = tail.open.as_mut().expect("opened above");
        let before = f.seek(SeekFrom::End(0)).map_err(io(&path))?;
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.sync_data()) {
            // Cut a partial line back off, so that the next append does not follow garbage.
            let _ = f.set_len(before);
            let _ = f.sync_data();
            tail.open = None;
            return Err(AuditError::Io { path, error: e });
        }
        let record: Record = serde_json::from_value(value).expect("a record reads back");
        tail.next_seq += 1;
        tail.last_hash = record.hash.clone();
        self.write_head(record.seq, &record.hash, &record.sig)?;
        Ok(record)
    }
}

/// Every record of the trail that parses, oldest first (for listings such as `ghostctl
/// decisions` or `why ID`; use [`verify`] to check them).
pub fn read_records(dir: &Path) -> Result<Vec<Record>, AuditError> {
    let mut out = Vec::new();
    for path in log_files(dir).map_err(io(dir))? {
        let mut text = String::new();
        File::open(&path).and_then(|mut f| f.read_to_string(&mut text)).map_err(io(&path))?;
        out.extend(text.lines().filter_map(|l| serde_json::from_str::<Record>(l).ok()));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Verification

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The content does not match the hash, or the signature does not verify, or it does
    /// not chain to the record before it.
    Changed,
    /// Records are missing (a gap in `seq`, a missing start, or the newest ones).
    Removed,
    /// A record comes after one with a higher `seq`.
    Reordered,
    /// The same `seq` twice.
    Duplicate,
    /// A line that is not a record.
    Malformed,
    /// The last line of a file has no newline: an interrupted append not yet repaired, or a cut.
    TornTail,
    /// `head.json` is unreadable or does not match the record it names.
    BadHead,
}

/// One problem, located by file and line (1-based; 0 when it is about the whole trail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub seq: Option<u64>,
    pub file: String,
    pub line: usize,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind =
            serde_json::to_value(self.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(s) = self.seq {
            write!(f, ": seq {s}")?;
        }
        write!(f, ": {kind}: {}", self.detail)
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Lines that parsed as records.
    pub records: u64,
    pub files: Vec<String>,
    /// The highest seq seen.
    pub last_seq: Option<u64>,
    pub problems: Vec<Problem>,
    /// Things worth knowing that are not tampering (a repaired torn tail, a lagging head).
    pub warnings: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Problems about `seq`.
    pub fn about(&self, seq: u64) -> Vec<&Problem> {
        self.problems.iter().filter(|p| p.seq == Some(seq)).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.ok() {
            write!(f, "audit trail ok: {} records in {} files", self.records, self.files.len())
        } else {
            write!(f, "audit trail damaged: {} problems in {} records", self.problems.len(), self.records)
        }
    }
}

struct Seen {
    seq: u64,
    prev_hash: String,
    hash: String,
    file: String,
    line: usize,
}

/// Checks the whole trail in `dir` against `key`; every problem names its file, line and seq.
/// Errors only when the directory or a file cannot be read.
pub fn verify(dir: &Path, key: &PublicKey) -> Result<Report, AuditError> {
    let mut report = Report::default();
    // One consistent moment of the trail: head.json and each file's length (see DirLock).
    let (head, files) = {
        let _lock = match DirLock::take(dir, false) {
            Ok(l) => Some(l),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(dir)(e)),
        };
        let head = read_head(dir);
        let mut files = Vec::new();
        for path in log_files(dir).map_err(io(dir))? {
            let len = std::fs::metadata(&path).map_err(io(&path))?.len();
            files.push((path, len));
        }
        (head, files)
    };
    let mut seen: Vec<Seen> = Vec::new();
    let problem = |kind, seq, file: &str, line, detail: String| Problem { kind, seq, file: file.into(), line, detail };
    for (path, len) in &files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        report.files.push(name.clone());
        let mut bytes = std::fs::read(path).map_err(io(path))?;
        // What was appended after that moment is for the next verification.
        bytes.truncate(*len as usize);
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: Vec<&str> = text.split('\n').collect();
        let torn = lines.pop().filter(|l| !l.is_empty());
        for (i, l) in lines.iter().enumerate() {
            let n = i + 1;
            let parsed = match parse_line(l) {
                Ok(p) => p,
                Err(e) => {
                    report.problems.push(problem(ProblemKind::Malformed, None, &name, n, e));
                    continue;
                }
            };
            report.records += 1;
            if let Err(e) = check_line(&parsed, key) {
                report.problems.push(problem(ProblemKind::Changed, Some(parsed.seq), &name, n, e));
            }
            seen.push(Seen {
                seq: parsed.seq,
                prev_hash: parsed.prev_hash,
                hash: parsed.hash,
                file: name.clone(),
                line: n,
            });
        }
        if let Some(t) = torn {
            let seq = serde_json::from_str::<Value>(t).ok().and_then(|v| v.get("seq").and_then(Value::as_u64));
            report.problems.push(problem(
                ProblemKind::TornTail,
                seq,
                &name,
                lines.len() + 1,
                format!(
                    "the last line is incomplete ({} bytes without a newline): an interrupted append or a cut",
                    t.len()
                ),
            ));
        }
    }

    // Order, duplicates, chain.
    let mut first_at: HashMap<u64, usize> = HashMap::new();
    let mut max_so_far: Option<usize> = None;
    for (i, s) in seen.iter().enumerate() {
        if let Some(&j) = first_at.get(&s.seq) {
            let o = &seen[j];
            report.problems.push(problem(
                ProblemKind::Duplicate,
                Some(s.seq),
                &s.file,
                s.line,
                format!("seq {} already at {}:{}", s.seq, o.file, o.line),
            ));
            continue;
        }
        first_at.insert(s.seq, i);
        match max_so_far {
            Some(m) if seen[m].seq > s.seq => {
                let o = &seen[m];
                report.problems.push(problem(
                    ProblemKind::Reordered,
                    Some(s.seq),
                    &s.file,
                    s.line,
                    format!("comes after seq {} ({}:{})", o.seq, o.file, o.line),
                ));
            }
            _ => max_so_far = Some(i),
        }
    }
    let by_seq: BTreeMap<u64, &Seen> = first_at.iter().map(|(&q, &i)| (q, &seen[i])).collect();
    let mut expected = 0u64;
    for (&q, s) in &by_seq {
        if q > expected {
            let what = if expected + 1 == q {
                format!("seq {expected} is missing")
            } else {
                format!("seqs {expected}..{} are missing", q - 1)
            };
            let before =
                if expected == 0 { "at the start of the trail".to_string() } else { format!("before seq {q}") };
            report.problems.push(problem(
                ProblemKind::Removed,
                Some(expected),
                &s.file,
                s.line,
                format!("{what} ({before})"),
            ));
        }
        expected = q + 1;
        let link_ok =
            if q == 0 { s.prev_hash == GENESIS } else { by_seq.get(&(q - 1)).is_none_or(|p| p.hash == s.prev_hash) };
        if !link_ok {
            report.problems.push(problem(
                ProblemKind::Changed,
                Some(q),
                &s.file,
                s.line,
                if q == 0 {
                    "the first record does not start the chain".to_string()
                } else {
                    format!("prev_hash does not match the hash of seq {}", q - 1)
                },
            ));
        }
    }
    report.last_seq = by_seq.keys().next_back().copied();

    // The newest records, against head.json.
    match head {
        Err(e) => report.problems.push(problem(ProblemKind::BadHead, None, HEAD_FILE, 0, e)),
        Ok(None) if report.last_seq.is_some() => {
            report.warnings.push(format!("{HEAD_FILE} is missing: removal of the newest records cannot be detected"))
        }
        Ok(None) => {}
        Ok(Some(h)) => {
            let sig_ok =
                util::unhex(&h.hash).zip(util::unhex(&h.sig)).is_some_and(|(hash, sig)| key.verify(&hash, &sig));
            let last = report.last_seq;
            if !sig_ok {
                report.problems.push(problem(
                    ProblemKind::BadHead,
                    Some(h.seq),
                    HEAD_FILE,
                    0,
                    "its signature does not verify".into(),
                ));
            } else if last.is_none_or(|l| l < h.seq) {
                let from = last.map_or(0, |l| l + 1);
                let what = if from == h.seq {
                    format!("seq {from} is missing")
                } else {
                    format!("seqs {from}..{} are missing", h.seq)
                };
                let (file, line) =
                    by_seq.values().next_back().map_or((HEAD_FILE.to_string(), 0), |s| (s.file.clone(), s.line));
                report.problems.push(problem(
                    ProblemKind::Removed,
                    Some(from),
                    &file,
                    line,
                    format!("{what} at the end of the trail ({HEAD_FILE} names seq {})", h.seq),
                ));
            } else if let Some(s) = by_seq.get(&h.seq) {
                if s.hash != h.hash {
                    report.problems.push(problem(
                        ProblemKind::BadHead,
                        Some(h.seq),
                        HEAD_FILE,
                        0,
                        format!("names a different record {} than {}:{}", h.seq, s.file, s.line),
                    ));
                }
                if Some(h.seq) != last {
                    report.warnings.push(format!(
                        "{HEAD_FILE} names seq {} but the trail ends at {}",
                        h.seq,
                        last.unwrap_or(0)
                    ));
                }
            }
        }
    }
    if let Ok(d) = std::fs::read_dir(dir.join(TORN_DIR)) {
        let mut names: Vec<String> =
            d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for n in names {
            report
                .warnings
                .push(format!("{TORN_DIR}/{n}: a torn last line that was moved aside when the trail was reopened"));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;

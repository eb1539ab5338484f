//! `calls.jsonl`: one JSON line per attempt the router made, answered or not.
//!
//! ```json
//! {"ts":"2025-03-01T10:00:00.123Z","id":"4242-7","need":"plan","layer":"tactical","model":"big",
//!  "ok":false,"latency_ms":1,"prompt_tokens":0,"completion_tokens":0,"cost_usd":0.0,
//!  "error":"down: connection refused to 127.0.0.1:8081","fallback_from":null}
//! ```
//!
//! `id` groups the attempts of one request; `fallback_from` is the layer the request was
//! first routed to, on every attempt at another layer. A call refused by the budget is a line
//! too (`ok: false`, the budget's reason). The file is bounded: when a line would take it past
//! [`CallLog::max_bytes`] it is renamed to `calls.jsonl.1` (replacing the previous one) first.
//! Appends and rotations of all processes are serialised by an `flock` on `calls.lock`.
//! Nothing secret is written: no prompt, no answer, no key.

use super::{Layer, Need};
use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DEFAULT_MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub ts: String,
    pub id: String,
    pub need: Need,
    pub layer: Layer,
    pub model: String,
    pub ok: bool,
    pub latency_ms: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub error: Option<String>,
    pub fallback_from: Option<Layer>,
}

pub struct CallLog {
    dir: PathBuf,
    pub max_bytes: u64,
}

impl CallLog {
    pub fn new(dir: &Path) -> CallLog {
        CallLog { dir: dir.to_path_buf(), max_bytes: DEFAULT_MAX_BYTES }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("calls.jsonl")
    }

    pub fn append(&self, r: &CallRecord) -> Result<(), String> {
        let mut line = serde_json::to_vec(r).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let path = self.path();
        let err = |p: &Path, e: std::io::Error| format!("cannot write {}: {e}", p.display());
        std::fs::create_dir_all(&self.dir).map_err(|e| err(&self.dir, e))?;
        let lock_path = self.dir.join("calls.lock");
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| err(&lock_path, e))?;
        flock(&lock, FlockOperation::LockExclusive).map_err(|e| err(&lock_path, e.into()))?;
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len > 0 && len + line.len() as u64 > self.max_bytes {
            let old = self.dir.join("calls.jsonl.1");
            std::fs::rename(&path, &old).map_err(|e| err(&old, e))?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| err(&path, e))?;
        f.write_all(&line).map_err(|e| err(&path, e))
    }

    /// The records of `calls.jsonl` (not of the rotated file), skipping lines that do not parse.
    pub fn read(&self) -> Vec<CallRecord> {
        std::fs::read_to_string(self.path()).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::tempfile_lite::Dir;
    use super::*;

    fn rec(i: u64) -> CallRecord {
        CallRecord {
            ts: "2025-03-01T10:00:00.000Z".into(),
            id: format!("1-{i}"),
            need: Need::Plan,
            layer: Layer::Tactical,
            model: "m".into(),
            ok: true,
            latency_ms: i,
            prompt_tokens: 1,
            completion_tokens: 2,
            cost_usd: 0.0,
            error: None,
            fallback_from: None,
        }
    }

    #[test]
    fn router_records_append_and_rotate() {
        let d = Dir::new("router-records");
        let mut log = CallLog::new(d.path());
        log.append(&rec(0)).unwrap();
        assert_eq!(log.read(), vec![rec(0)]);
        let one = std::fs::metadata(log.path()).unwrap().len();
        log.max_bytes = one * 3;
        for i in 1..=5 {
            log.append(&rec(i)).unwrap();
            assert!(std::fs::metadata(log.path()).unwrap().len() <= log.max_bytes);
        }
        // 0,1,2 filled the first file; 3,4,5 the second.
        assert_eq!(log.read().iter().map(|r| r.latency_ms).collect::<Vec<_>>(), vec![3, 4, 5]);
        let old = std::fs::read_to_string(d.path().join("calls.jsonl.1")).unwrap();
        assert_eq!(old.lines().count(), 3);
        let line = std::fs::read_to_string(log.path()).unwrap();
        assert!(line.lines().next().unwrap().contains(r#""error":null,"fallback_from":null"#), "{line}");
    }
}

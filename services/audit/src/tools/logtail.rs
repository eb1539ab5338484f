//! log.tail: the last lines of a file, reading at most `max_bytes` from its end.

use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

pub fn tail(args: &Value, log_dir: &Path) -> Result<Value, String> {
    let path = match (args.get("path").and_then(Value::as_str), args.get("service").and_then(Value::as_str)) {
        (Some(p), _) => p.to_string(),
        (None, Some(s)) => log_dir.join(format!("{s}.log")).to_string_lossy().into_owned(),
        (None, None) => return Err("give `path` or `service`".into()),
    };
    let want = args.get("lines").and_then(Value::as_u64).unwrap_or(50) as usize;
    let max = args.get("max_bytes").and_then(Value::as_u64).unwrap_or(256 << 10).min(super::builtin::MAX_READ);
    let mut f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let len = f.metadata().map_err(|e| format!("{path}: {e}"))?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start)).map_err(|e| format!("{path}: {e}"))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).map_err(|e| format!("{path}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    // The first line is partial when the read began inside the file.
    let mut cut = start > 0 && !lines.is_empty();
    if cut {
        lines.remove(0);
    }
    if lines.len() > want {
        lines.drain(..lines.len() - want);
        cut = true;
    }
    Ok(json!({ "path": path, "lines": lines, "truncated": cut }))
}

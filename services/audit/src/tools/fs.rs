//! fs.read, fs.write, fs.list: bounded, and fs.write refuses protected paths again after
//! resolving symbolic links (the policy judged the path as written).

use crate::policy::paths;
use crate::util;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn arg_str<'a>(args: &'a Value, key: &str) -> &'a str {
    args.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn arg_u64(args: &Value, key: &str, default: u64) -> u64 {
    args.get(key).and_then(Value::as_u64).unwrap_or(default)
}

pub fn read(args: &Value) -> Result<Value, String> {
    let path = arg_str(args, "path");
    let offset = arg_u64(args, "offset", 0);
    let max = arg_u64(args, "max_bytes", 65536).min(super::builtin::MAX_READ);
    let mut f = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("{path}: {e}"))?;
    if meta.is_dir() {
        return Err(format!("{path}: is a directory (use fs.list)"));
    }
    if offset > 0 {
        f.seek(SeekFrom::Start(offset)).map_err(|e| format!("{path}: {e}"))?;
    }
    // One byte more than allowed tells whether there is more (sizes of /proc files lie).
    let mut buf = Vec::with_capacity(max.min(meta.len().max(4096)) as usize + 1);
    Read::by_ref(&mut f).take(max + 1).read_to_end(&mut buf).map_err(|e| format!("{path}: {e}"))?;
    let truncated = buf.len() as u64 > max;
    buf.truncate(max as usize);
    let (encoding, content) = match std::str::from_utf8(&buf) {
        Ok(s) => ("utf8", s.to_string()),
        // A cut in the middle of a UTF-8 sequence at the end is still text.
        Err(e) if truncated && e.valid_up_to() + 4 > buf.len() && e.error_len().is_none() => {
            ("utf8", String::from_utf8_lossy(&buf[..e.valid_up_to()]).into_owned())
        }
        Err(_) => ("base64", util::base64(&buf)),
    };
    Ok(json!({
        "path": path,
        "size": meta.len(),
        "offset": offset,
        "bytes": buf.len(),
        "encoding": encoding,
        "content": content,
        "truncated": truncated,
    }))
}

/// Resolves symbolic links in the existing part of `path` (the file itself may not exist).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => resolved(parent).join(name),
        _ => path.to_path_buf(),
    }
}

pub fn write(args: &Value, extra_protected: &[String]) -> Result<Value, String> {
    let path_s = arg_str(args, "path");
    let content = arg_str(args, "content").as_bytes();
    let append = args.get("append").and_then(Value::as_bool).unwrap_or(false);
    let create_dirs = args.get("create_dirs").and_then(Value::as_bool).unwrap_or(false);
    let path = Path::new(path_s);
    for candidate in [PathBuf::from(paths::normalize(path_s)), resolved(path)] {
        if let Some(why) = paths::protected_write(&candidate.to_string_lossy(), extra_protected) {
            return Err(format!("{path_s}: refused: {why}"));
        }
    }
    let parent = path.parent().ok_or_else(|| format!("{path_s}: has no parent directory"))?;
    if create_dirs {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let previous = std::fs::symlink_metadata(path).ok();
    if previous.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(format!("{path_s}: is a directory"));
    }
    let previous_sha256 = match &previous {
        Some(m) if m.is_file() && m.len() <= 64 << 20 => {
            std::fs::read(path).ok().map(|old| util::hex(&Sha256::digest(&old)))
        }
        _ => None,
    };
    let mode = args
        .get("mode")
        .and_then(Value::as_u64)
        .map(|m| m as u32)
        .or(previous.as_ref().map(|m| m.mode() & 0o7777))
        .unwrap_or(0o644);
    if append {
        let mut f =
            OpenOptions::new().append(true).create(true).mode(mode).open(path).map_err(|e| format!("{path_s}: {e}"))?;
        f.write_all(content).and_then(|_| f.sync_data()).map_err(|e| format!("{path_s}: {e}"))?;
    } else {
        util::write_atomic(path, content, mode).map_err(|e| format!("{path_s}: {e}"))?;
        // write_atomic's mode is filtered by the umask; the caller asked for this one.
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    }
    Ok(json!({
        "path": path_s,
        "bytes_written": content.len(),
        "created": previous.is_none(),
        "previous_size": previous.as_ref().map(|m| m.len()),
        "previous_sha256": previous_sha256,
    }))
}

pub fn list(args: &Value) -> Result<Value, String> {
    let path = arg_str(args, "path");
    let max = arg_u64(args, "max_entries", 1000) as usize;
    let mut entries = Vec::new();
    let mut truncated = false;
    let dir = std::fs::read_dir(path).map_err(|e| format!("{path}: {e}"))?;
    let mut all: Vec<_> = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|e| format!("{path}: {e}"))?;
        if all.len() >= max {
            truncated = true;
            break;
        }
        all.push(entry);
    }
    all.sort_by_key(|e| e.file_name());
    for entry in all {
        let meta = entry.path().symlink_metadata().ok();
        let kind = match &meta {
            Some(m) if m.file_type().is_symlink() => "symlink",
            Some(m) if m.is_dir() => "dir",
            Some(m) if m.is_file() => "file",
            _ => "other",
        };
        entries.push(json!({
            "name": entry.file_name().to_string_lossy(),
            "kind": kind,
            "size": meta.as_ref().map_or(0, |m| m.len()),
            "mode": meta.as_ref().map_or(0, |m| m.mode() & 0o7777),
        }));
    }
    Ok(json!({ "path": path, "entries": entries, "truncated": truncated }))
}

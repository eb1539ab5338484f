//! SQL over one connection. Functions here return SQLite's errors as they are; `lib.rs` decides
//! which of them mean "the database is unavailable" (switch to in-process mode) and which are
//! errors to report.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};

use crate::episode::{Episode, EpisodeId, EpisodeKind, Links, Place, StoredEpisode};
use crate::playbook::{Playbook, PlaybookSpec, VerifyRule};
use crate::vector;

/// Errors that mean the file cannot be used right now (full, locked, read-only, I/O, damaged,
/// cannot be opened): memory carries on in-process and writes back later.
pub fn is_unavailable(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::PermissionDenied
                | ErrorCode::OutOfMemory
        ),
        _ => false,
    }
}

/// A one-line reason for an unavailability error ("disk full: database or disk is full").
pub fn reason(e: &rusqlite::Error) -> String {
    let what = match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => "locked by another connection beyond the busy timeout",
            ErrorCode::DiskFull => "disk full (or the database reached its size cap)",
            ErrorCode::ReadOnly => "read-only",
            ErrorCode::SystemIoFailure => "I/O error",
            ErrorCode::CannotOpen => "cannot be opened",
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => "damaged or not a database",
            ErrorCode::PermissionDenied => "permission denied",
            _ => "unavailable",
        },
        _ => "unavailable",
    };
    format!("{what}: {e}")
}

pub struct ConnOptions {
    pub busy_timeout: std::time::Duration,
    pub synchronous_full: bool,
    pub cache_kib: u32,
    pub max_db_bytes: Option<u64>,
}

/// Opens (creating) the file with the pragmas memory relies on.
pub fn connect(path: &Path, in_memory: bool, o: &ConnOptions) -> rusqlite::Result<Connection> {
    let conn = if in_memory { Connection::open_in_memory()? } else { Connection::open(path)? };
    conn.busy_timeout(o.busy_timeout)?;
    if !in_memory {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // The file system cannot hold the WAL index (or the file is read-only).
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("could not switch to WAL mode (journal_mode is {mode})")),
            ));
        }
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; PRAGMA cache_size = -{}; PRAGMA temp_store = MEMORY;",
        if o.synchronous_full { "FULL" } else { "NORMAL" },
        o.cache_kib
    ))?;
    set_max_bytes(&conn, o.max_db_bytes)?;
    Ok(conn)
}

/// The hard size cap (`PRAGMA max_page_count`); None lifts it.
pub fn set_max_bytes(conn: &Connection, max: Option<u64>) -> rusqlite::Result<()> {
    let pages: i64 = match max {
        Some(bytes) => {
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            (bytes as i64 / page.max(512)).max(1)
        }
        None => 4_294_967_294, // SQLite's largest
    };
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
}

pub fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

/// The largest episode id in use, hot or archived.
pub fn max_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT max(coalesce((SELECT max(id) FROM episodes), 0), coalesce((SELECT max(id) FROM archived_episodes), 0))",
        [],
        |r| r.get(0),
    )
}

pub fn hot_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM episodes", [], |r| r.get::<_, i64>(0).map(|n| n as u64))
}

pub fn archived_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM archived_episodes", [], |r| r.get::<_, i64>(0).map(|n| n as u64))
}

/// Whether an episode with this id exists, hot or archived.
pub fn exists(conn: &Connection, id: EpisodeId) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM episodes WHERE id = ?1) OR EXISTS (SELECT 1 FROM archived_episodes WHERE id = ?1)",
        [id],
        |r| r.get(0),
    )
}

/// One episode to insert, with its unit vector and code when it has them.
pub struct NewEpisode<'a> {
    pub id: EpisodeId,
    pub episode: &'a Episode,
    pub vector: Option<(&'a [f32], &'a [u64])>,
}

pub fn insert_episode(conn: &Connection, n: &NewEpisode) -> rusqlite::Result<()> {
    let e = n.episode;
    let details = serde_json::to_string(&e.details).unwrap_or_else(|_| "null".into());
    conn.prepare_cached(
        "INSERT INTO episodes (id, kind, source, time_ms, salience, text, details, caused_by, goal, playbook, tool_call, embedded)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        n.id,
        e.kind.as_str(),
        e.source,
        e.time_ms,
        f64::from(e.salience),
        e.text,
        details,
        e.links.caused_by,
        e.links.goal,
        e.links.playbook,
        e.links.tool_call,
        n.vector.is_some(),
    ])?;
    if let Some((v, c)) = n.vector {
        insert_vector(conn, n.id, v, c)?;
    }
    Ok(())
}

pub fn insert_vector(conn: &Connection, id: EpisodeId, v: &[f32], c: &[u64]) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO embeddings (episode_id, vector) VALUES (?1, ?2)")?
        .execute(params![id, vector::to_blob(v)])?;
    conn.prepare_cached("INSERT OR REPLACE INTO embedding_codes (episode_id, code) VALUES (?1, ?2)")?
        .execute(params![id, vector::code_to_blob(c)])?;
    Ok(())
}

pub const EPISODE_COLUMNS: &str = "id, kind, source, time_ms, salience, text, details, caused_by, goal, playbook, tool_call";

/// A row of EPISODE_COLUMNS.
pub fn episode_row(r: &Row, place: Place) -> rusqlite::Result<StoredEpisode> {
    let id: i64 = r.get(0)?;
    let kind: String = r.get(1)?;
    let kind = EpisodeKind::parse(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            format!("episode {id} has an unknown kind {kind:?}").into(),
        )
    })?;
    let details: String = r.get(6)?;
    Ok(StoredEpisode {
        id,
        episode: Episode {
            kind,
            source: r.get(2)?,
            time_ms: r.get(3)?,
            salience: r.get::<_, f64>(4)? as f32,
            text: r.get(5)?,
            // A hand-edited row with broken JSON is shown as the string it holds.
            details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
            links: Links { caused_by: r.get(7)?, goal: r.get(8)?, playbook: r.get(9)?, tool_call: r.get(10)? },
        },
        place,
    })
}

pub fn hot_episode(conn: &Connection, id: EpisodeId) -> rusqlite::Result<Option<StoredEpisode>> {
    conn.prepare_cached(&format!("SELECT {EPISODE_COLUMNS} FROM episodes WHERE id = ?1"))?
        .query_row([id], |r| episode_row(r, Place::Hot))
        .optional()
}

pub fn episode(conn: &Connection, id: EpisodeId) -> rusqlite::Result<Option<StoredEpisode>> {
    if let Some(e) = hot_episode(conn, id)? {
        return Ok(Some(e));
    }
    conn.prepare_cached(&format!("SELECT {EPISODE_COLUMNS} FROM archived_episodes WHERE id = ?1"))?
        .query_row([id], |r| episode_row(r, Place::Archived))
        .optional()
}

/// Ids of the episodes caused by `id`, hot or archived.
pub fn children(conn: &Connection, id: EpisodeId) -> rusqlite::Result<Vec<EpisodeId>> {
    let mut out = Vec::new();
    for table in ["episodes", "archived_episodes"] {
        let mut st = conn.prepare_cached(&format!("SELECT id FROM {table} WHERE caused_by = ?1 ORDER BY id"))?;
        let ids = st.query_map([id], |r| r.get(0))?;
        for i in ids {
            out.push(i?);
        }
    }
    Ok(out)
}

/// Hot episodes newest first (by time, then id), filtered.
pub fn filtered(
    conn: &Connection,
    kinds: &[EpisodeKind],
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    source: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<StoredEpisode>> {
    let mut sql = format!("SELECT {EPISODE_COLUMNS} FROM episodes WHERE 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if !kinds.is_empty() {
        let marks: Vec<String> = kinds
            .iter()
            .map(|k| {
                args.push(k.as_str().to_owned().into());
                format!("?{}", args.len())
            })
            .collect();
        sql += &format!(" AND kind IN ({})", marks.join(", "));
    }
    if let Some(t) = since_ms {
        args.push(t.into());
        sql += &format!(" AND time_ms >= ?{}", args.len());
    }
    if let Some(t) = until_ms {
        args.push(t.into());
        sql += &format!(" AND time_ms < ?{}", args.len());
    }
    if let Some(s) = source {
        args.push(s.to_owned().into());
        sql += &format!(" AND source = ?{}", args.len());
    }
    args.push((limit.min(i64::MAX as usize) as i64).into());
    sql += &format!(" ORDER BY time_ms DESC, id DESC LIMIT ?{}", args.len());
    let mut st = conn.prepare_cached(&sql)?;
    let rows = st.query_map(rusqlite::params_from_iter(args), |r| episode_row(r, Place::Hot))?;
    rows.collect()
}

/// The newest hot episodes matching an FTS5 expression (FTS5 walks its doclists backwards and
/// stops at the limit: the cost does not grow with the number of matches).
pub fn newest_matching(conn: &Connection, fts: &str, limit: usize) -> rusqlite::Result<Vec<EpisodeId>> {
    let mut st = conn.prepare_cached("SELECT rowid FROM episodes_fts WHERE episodes_fts MATCH ?1 ORDER BY rowid DESC LIMIT ?2")?;
    let rows = st.query_map(params![fts, limit as i64], |r| r.get(0))?;
    rows.collect()
}

/// How many of `hot` hot episodes match an FTS5 expression: exact up to `cap` matches, above
/// that estimated from how densely the newest `cap` matches are spread over the newest ids.
pub fn estimate_matches(conn: &Connection, fts: &str, cap: usize, max_id: EpisodeId, hot: u64) -> rusqlite::Result<f64> {
    let ids = newest_matching(conn, fts, cap)?;
    if ids.len() < cap {
        return Ok(ids.len() as f64);
    }
    let oldest = *ids.last().expect("cap > 0 matches");
    let span = ((max_id - oldest + 1) as f64).clamp(cap as f64, hot.max(1) as f64);
    Ok(cap as f64 * hot as f64 / span)
}

pub fn max_hot_id(conn: &Connection) -> rusqlite::Result<EpisodeId> {
    conn.query_row("SELECT coalesce(max(id), 0) FROM episodes", [], |r| r.get(0))
}

/// The stored unit vectors of these episodes (those that have one of `dim` dimensions), in
/// one statement.
pub fn vectors(conn: &Connection, ids: &[EpisodeId], dim: usize) -> rusqlite::Result<Vec<(EpisodeId, Vec<f32>)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
    let mut st = conn.prepare_cached(
        "SELECT e.episode_id, e.vector FROM json_each(?1) AS j JOIN embeddings AS e ON e.episode_id = j.value",
    )?;
    let mut rows = st.query([list])?;
    let mut out = Vec::with_capacity(ids.len());
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        if let Some(v) = r.get_ref(1)?.as_blob().ok().and_then(|b| vector::from_blob(b, dim)) {
            out.push((id, v));
        }
    }
    Ok(out)
}

/// Every stored code, in id order: (id, code). Codes of the wrong length are skipped.
pub fn codes(conn: &Connection, words: usize, mut each: impl FnMut(EpisodeId, Vec<u64>)) -> rusqlite::Result<()> {
    let mut st = conn.prepare("SELECT episode_id, code FROM embedding_codes ORDER BY episode_id")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let blob = r.get_ref(1)?.as_blob().unwrap_or(&[]);
        if let Some(c) = vector::code_from_blob(blob, words) {
            each(id, c);
        }
    }
    Ok(())
}

/// Hot episodes still waiting for an embedding: (id, text), oldest first.
pub fn unembedded(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<(EpisodeId, String)>> {
    let mut st = conn.prepare_cached("SELECT id, text FROM episodes WHERE embedded = 0 ORDER BY id LIMIT ?1")?;
    let rows = st.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Stores the embedding of an existing hot episode; false when it no longer exists.
pub fn set_episode_vector(conn: &Connection, id: EpisodeId, v: &[f32], c: &[u64]) -> rusqlite::Result<bool> {
    let n = conn.prepare_cached("UPDATE episodes SET embedded = 1 WHERE id = ?1")?.execute([id])?;
    if n == 1 {
        insert_vector(conn, id, v, c)?;
    }
    Ok(n == 1)
}

// ---- playbooks ----

const PLAYBOOK_COLUMNS: &str =
    "id, name, description, trigger, steps, success_count, failure_count, last_used_ms, created_ms, updated_ms";

fn playbook_row(r: &Row, rule: &VerifyRule) -> rusqlite::Result<Playbook> {
    let steps: String = r.get(4)?;
    let success_count: i64 = r.get(5)?;
    let failure_count: i64 = r.get(6)?;
    Ok(Playbook::new(
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        serde_json::from_str(&steps).unwrap_or(serde_json::Value::String(steps)),
        success_count.max(0) as u64,
        failure_count.max(0) as u64,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        rule,
    ))
}

/// Creates or updates a playbook by name. Changed steps reset its counts: the evidence was
/// about the old procedure. A changed text drops its embedding unless a new one is given.
pub fn upsert_playbook(conn: &Connection, p: &PlaybookSpec, at_ms: i64, embedding: Option<&[f32]>) -> rusqlite::Result<()> {
    let steps = serde_json::to_string(&p.steps).unwrap_or_else(|_| "null".into());
    conn.prepare_cached(
        "INSERT INTO playbooks (name, description, trigger, steps, created_ms, updated_ms, embedding)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
         ON CONFLICT (name) DO UPDATE SET
           success_count = CASE WHEN steps = excluded.steps THEN success_count ELSE 0 END,
           failure_count = CASE WHEN steps = excluded.steps THEN failure_count ELSE 0 END,
           embedding = CASE
             WHEN excluded.embedding IS NOT NULL THEN excluded.embedding
             WHEN description = excluded.description AND trigger = excluded.trigger THEN embedding
             ELSE NULL END,
           description = excluded.description,
           trigger = excluded.trigger,
           steps = excluded.steps,
           updated_ms = excluded.updated_ms",
    )?
    .execute(params![p.name, p.description, p.trigger, steps, at_ms, embedding.map(vector::to_blob)])?;
    Ok(())
}

/// Counts one use; false when no playbook has this name.
pub fn playbook_outcome(conn: &Connection, name: &str, success: bool, at_ms: i64) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE playbooks SET success_count = success_count + ?2, failure_count = failure_count + ?3,
             last_used_ms = max(coalesce(last_used_ms, 0), ?4) WHERE name = ?1",
        )?
        .execute(params![name, i64::from(success), i64::from(!success), at_ms])?;
    Ok(n == 1)
}

pub fn playbook(conn: &Connection, name: &str, rule: &VerifyRule) -> rusqlite::Result<Option<Playbook>> {
    conn.prepare_cached(&format!("SELECT {PLAYBOOK_COLUMNS} FROM playbooks WHERE name = ?1"))?
        .query_row([name], |r| playbook_row(r, rule))
        .optional()
}

pub fn playbooks(conn: &Connection, rule: &VerifyRule) -> rusqlite::Result<Vec<Playbook>> {
    let mut st = conn.prepare_cached(&format!("SELECT {PLAYBOOK_COLUMNS} FROM playbooks ORDER BY name"))?;
    let rows = st.query_map([], |r| playbook_row(r, rule))?;
    rows.collect()
}

pub fn playbook_word_search(conn: &Connection, fts: &str, limit: usize) -> rusqlite::Result<Vec<(i64, f64)>> {
    let mut st = conn.prepare_cached(
        "SELECT rowid, bm25(playbooks_fts, 2.0, 1.0, 1.0) AS s FROM playbooks_fts WHERE playbooks_fts MATCH ?1 ORDER BY s LIMIT ?2",
    )?;
    let rows = st.query_map(params![fts, limit as i64], |r| Ok((r.get(0)?, -r.get::<_, f64>(1)?)))?;
    rows.collect()
}

pub fn playbook_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count(*) FROM playbooks", [], |r| r.get::<_, i64>(0).map(|n| n as u64))
}

pub fn playbook_doc_count(conn: &Connection, fts: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT count(*) FROM playbooks_fts WHERE playbooks_fts MATCH ?1")?
        .query_row([fts], |r| r.get::<_, i64>(0).map(|n| n as u64))
}

/// (id, vector) of every playbook with an embedding of `dim` dimensions.
pub fn playbook_vectors(conn: &Connection, dim: usize) -> rusqlite::Result<Vec<(i64, Vec<f32>)>> {
    let mut st = conn.prepare_cached("SELECT id, embedding FROM playbooks WHERE embedding IS NOT NULL")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, b) = row?;
        if let Some(v) = vector::from_blob(&b, dim) {
            out.push((id, v));
        }
    }
    Ok(out)
}

pub fn playbooks_by_id(conn: &Connection, ids: &[i64], rule: &VerifyRule) -> rusqlite::Result<HashMap<i64, Playbook>> {
    let mut st = conn.prepare_cached(&format!("SELECT {PLAYBOOK_COLUMNS} FROM playbooks WHERE id = ?1"))?;
    let mut out = HashMap::new();
    for id in ids {
        if let Some(p) = st.query_row([id], |r| playbook_row(r, rule)).optional()? {
            out.insert(*id, p);
        }
    }
    Ok(out)
}

/// Playbooks without an embedding: (id, text to embed).
pub fn unembedded_playbooks(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut st = conn.prepare_cached(
        "SELECT id, name, description, trigger FROM playbooks WHERE embedding IS NULL ORDER BY id LIMIT ?1",
    )?;
    let rows = st.query_map([limit as i64], |r| {
        Ok((r.get(0)?, crate::playbook::embedding_text(&r.get::<_, String>(1)?, &r.get::<_, String>(2)?, &r.get::<_, String>(3)?)))
    })?;
    rows.collect()
}

pub fn set_playbook_vector(conn: &Connection, id: i64, v: &[f32]) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE playbooks SET embedding = ?2 WHERE id = ?1")?.execute(params![id, vector::to_blob(v)])?;
    Ok(())
}

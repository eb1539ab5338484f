//! The database schema, versioned with `PRAGMA user_version` and migrated forward in one
//! transaction. A database newer than this build is refused, never touched.

use std::path::Path;

use rusqlite::Connection;

use crate::MemoryError;

/// `PRAGMA application_id`: "GHME". Marks the file as ghostos memory.
pub const APPLICATION_ID: i64 = 0x4748_4d45;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Episodic memory: the hot tables, searched by words (episodes_fts) and meaning (embeddings).
-- Ids are assigned by ghost-memory, not by SQLite, so that ids handed out while the database
-- was unavailable stay valid when the episodes are written back.
-- caused_by is not a foreign key: the cause may have moved to archived_episodes.
CREATE TABLE episodes (
    id        INTEGER PRIMARY KEY,
    kind      TEXT NOT NULL CHECK (kind IN ('observation', 'decision', 'action', 'outcome', 'note')),
    source    TEXT NOT NULL,
    time_ms   INTEGER NOT NULL,
    salience  REAL NOT NULL CHECK (salience >= 0.0 AND salience <= 1.0),
    text      TEXT NOT NULL,
    details   TEXT NOT NULL DEFAULT 'null',
    caused_by INTEGER,
    goal      TEXT,
    playbook  TEXT,
    tool_call TEXT,
    -- 1 when its embedding is stored; 0 while it waits for an embedder (embed_pending).
    embedded  INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX episodes_time ON episodes (time_ms);
CREATE INDEX episodes_kind_time ON episodes (kind, time_ms);
CREATE INDEX episodes_caused_by ON episodes (caused_by) WHERE caused_by IS NOT NULL;
CREATE INDEX episodes_unembedded ON episodes (id) WHERE embedded = 0;

CREATE VIRTUAL TABLE episodes_fts USING fts5 (
    text, source,
    content = 'episodes', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER episodes_fts_insert AFTER INSERT ON episodes BEGIN
    INSERT INTO episodes_fts (rowid, text, source) VALUES (new.id, new.text, new.source);
END;
CREATE TRIGGER episodes_fts_delete AFTER DELETE ON episodes BEGIN
    INSERT INTO episodes_fts (episodes_fts, rowid, text, source) VALUES ('delete', old.id, old.text, old.source);
END;
CREATE TRIGGER episodes_fts_update AFTER UPDATE OF text, source ON episodes BEGIN
    INSERT INTO episodes_fts (episodes_fts, rowid, text, source) VALUES ('delete', old.id, old.text, old.source);
    INSERT INTO episodes_fts (rowid, text, source) VALUES (new.id, new.text, new.source);
END;

-- Unit-length f32 vectors, little-endian, meta.embedding_dim of them; and their sign bits
-- (one bit per dimension), which the in-memory index scans. The codes live in their own table
-- so that loading the index at open reads 48 bytes per episode, not 1.5 KiB.
CREATE TABLE embeddings (
    episode_id INTEGER PRIMARY KEY REFERENCES episodes (id) ON DELETE CASCADE,
    vector     BLOB NOT NULL
) STRICT;
CREATE TABLE embedding_codes (
    episode_id INTEGER PRIMARY KEY REFERENCES episodes (id) ON DELETE CASCADE,
    code       BLOB NOT NULL
) STRICT;

-- Consolidation moves old episodes here whole (without their embeddings, which can be
-- recomputed from the text); a summary episode in the hot table stands for each span.
CREATE TABLE archived_episodes (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    source      TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    salience    REAL NOT NULL,
    text        TEXT NOT NULL,
    details     TEXT NOT NULL,
    caused_by   INTEGER,
    goal        TEXT,
    playbook    TEXT,
    tool_call   TEXT,
    archived_ms INTEGER NOT NULL,
    summary_id  INTEGER NOT NULL
) STRICT;
CREATE INDEX archived_caused_by ON archived_episodes (caused_by) WHERE caused_by IS NOT NULL;
CREATE INDEX archived_summary ON archived_episodes (summary_id);

-- Procedural memory: playbooks and how often they worked.
CREATE TABLE playbooks (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    description   TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    steps         TEXT NOT NULL,
    success_count INTEGER NOT NULL DEFAULT 0,
    failure_count INTEGER NOT NULL DEFAULT 0,
    last_used_ms  INTEGER,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    embedding     BLOB
) STRICT;
CREATE VIRTUAL TABLE playbooks_fts USING fts5 (
    name, description, trigger,
    content = 'playbooks', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER playbooks_fts_insert AFTER INSERT ON playbooks BEGIN
    INSERT INTO playbooks_fts (rowid, name, description, trigger) VALUES (new.id, new.name, new.description, new.trigger);
END;
CREATE TRIGGER playbooks_fts_delete AFTER DELETE ON playbooks BEGIN
    INSERT INTO playbooks_fts (playbooks_fts, rowid, name, description, trigger) VALUES ('delete', old.id, old.name, old.description, old.trigger);
END;
CREATE TRIGGER playbooks_fts_update AFTER UPDATE OF name, description, trigger ON playbooks BEGIN
    INSERT INTO playbooks_fts (playbooks_fts, rowid, name, description, trigger) VALUES ('delete', old.id, old.name, old.description, old.trigger);
    INSERT INTO playbooks_fts (rowid, name, description, trigger) VALUES (new.id, new.name, new.description, new.trigger);
END;
"#;

/// Checks the file is ours and current, migrating it forward when it is older.
/// Errors from SQLite come back as they are (the caller decides whether they mean "unavailable").
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<Result<(), MemoryError>, rusqlite::Error> {
    let fts5: i64 = conn.query_row("SELECT sqlite_compileoption_used('ENABLE_FTS5')", [], |r| r.get(0))?;
    if fts5 != 1 {
        return Ok(Err(MemoryError::MissingFeature { path: path.to_owned(), feature: "FTS5 (SQLITE_ENABLE_FTS5)" }));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Ok(Err(MemoryError::SchemaTooNew { path: path.to_owned(), found: version, supported: VERSION }));
    }
    let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    if app != 0 && app != APPLICATION_ID {
        return Ok(Err(MemoryError::ForeignDatabase { path: path.to_owned(), found: app, expected: APPLICATION_ID }));
    }
    if version == VERSION {
        return Ok(Ok(()));
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Read again under the write lock: another process may have migrated meanwhile.
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Ok(Err(MemoryError::SchemaTooNew { path: path.to_owned(), found: version, supported: VERSION }));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        if let Err(e) = tx.execute_batch(sql) {
            if crate::store::is_unavailable(&e) {
                return Err(e);
            }
            return Ok(Err(MemoryError::Sqlite {
                path: path.to_owned(),
                op: format!("migrating the schema from version {i} to {}", i + 1),
                source: e,
            }));
        }
    }
    tx.execute_batch(&format!("PRAGMA user_version = {VERSION}; PRAGMA application_id = {APPLICATION_ID};"))?;
    tx.commit()?;
    Ok(Ok(()))
}

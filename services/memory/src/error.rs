//! Errors. Every one that concerns the database names its file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// SQLite refused something that is not a matter of the file being unavailable (those
    /// switch memory to in-process mode instead of failing).
    #[error("{}: {op}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        op: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer ghost-memory: opening it could corrupt it.
    #[error("{}: memory schema version {found} is newer than this build supports ({supported}); refusing to open it (upgrade ghostos, or move the file aside)", path.display())]
    SchemaTooNew { path: PathBuf, found: i64, supported: i64 },
    /// The file is an SQLite database of something else.
    #[error("{}: not a ghostos memory database (application_id {found:#x}, expected {expected:#x})", path.display())]
    ForeignDatabase { path: PathBuf, found: i64, expected: i64 },
    /// The linked SQLite lacks a feature memory needs (FTS5).
    #[error("{}: the SQLite linked into this build lacks {feature}", path.display())]
    MissingFeature { path: PathBuf, feature: &'static str },
    /// Bad input from the caller: names the field.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// An embedding whose length differs from the one fixed for this database.
    #[error("{}: {what} has {got} dimensions, but this memory database stores {expected}-dimensional embeddings (meta.embedding_dim); a different embedding model needs a new database", path.display())]
    DimensionMismatch { path: PathBuf, what: String, expected: usize, got: usize },
    /// The database is unavailable and the operation needs it (or the in-process buffer is full).
    #[error("{}: {reason}", path.display())]
    Unavailable { path: PathBuf, reason: String },
    /// A stored row that cannot be read back (hand-edited or damaged database).
    #[error("{}: {what}: {reason}", path.display())]
    BadRow { path: PathBuf, what: String, reason: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// The embedder failed, or there is none and the operation needs one.
    #[error("embedder: {0}")]
    Embed(String),
}

impl MemoryError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MemoryError::Invalid { field: field.into(), reason: reason.into() }
    }
}

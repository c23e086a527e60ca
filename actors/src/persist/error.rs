//! PersistError: why persistence did not do something, typed by where it failed — the SQLite
//! store, a record that does not decode, the file system, or the persister thread itself — so a
//! caller can tell a damaged database from a busy or stopped persister. Messages name the
//! operation and the cause.

/// A persistence failure.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A statement of the SQLite store failed.
    #[error("state.db: {what}: {source}")]
    Db {
        /// The operation.
        what: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A record that does not encode or decode, or a store the server refuses (schema too new,
    /// no WAL).
    #[error("{0}")]
    Data(String),
    /// The file system refused (data dir, scrollback log).
    #[error("{what}: {source}")]
    Io {
        /// The operation and path.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process persists into the same dir (it holds the dir's `persist.lock`): two
    /// would each take the other's live sessions for a crashed run's leftovers and kill them.
    #[error(
        "{} is in use by another process{}: one process persists into a dir at a time",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        /// The persist dir.
        dir: std::path::PathBuf,
        /// The process holding it, as it wrote in the lock file.
        pid: Option<u32>,
    },
    /// The persister thread did not take or answer the request (queue full, stopped, late).
    #[error("persister: {0}")]
    Unavailable(&'static str),
}

impl From<String> for PersistError {
    /// A message built where the failure was found (a record's field, a refused setting).
    fn from(message: String) -> Self {
        PersistError::Data(message)
    }
}

impl PersistError {
    /// Whether SQLite found `state.db` damaged (malformed, or not a database at all).
    pub fn is_damaged_db(&self) -> bool {
        matches!(self, PersistError::Db { source, .. } if matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        ))
    }

    /// A closure mapping SQLite's error to [`PersistError::Db`] for operation `what`.
    pub(crate) fn db(what: &str) -> impl FnOnce(rusqlite::Error) -> PersistError + '_ {
        move |source| PersistError::Db {
            what: what.to_string(),
            source,
        }
    }
}

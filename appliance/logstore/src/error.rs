//! What can go wrong, each with what the operator (or the caller) should do.

use std::path::PathBuf;

/// Errors of the log store. [`LogStoreError::BadQuery`] and [`LogStoreError::BadCursor`]
/// are the caller's fault (the API answers 422, see [`LogStoreError::is_bad_request`]);
/// the others are the hub's.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("log dir {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is accessible to group or others (mode {mode:o}); run `chmod go-rwx {path}`")]
    Permissions { path: String, mode: u32 },
    #[error("log dir {0} is in use by another watchgrid process; stop it first")]
    Locked(PathBuf),
    #[error(
        "the log index in {path} cannot be used by this watchgrid ({reason}); \
         move the directory aside and restart to start a new one"
    )]
    Incompatible { path: String, reason: String },
    #[error("log index: {0}; if it persists, check the disk (dmesg) and its free space")]
    Index(#[from] tantivy::TantivyError),
    #[error("a stored log line is unreadable ({0}); the index is damaged: move the log dir aside and restart")]
    Corrupt(String),
    /// A commit failed: nothing of the batches it carried is stored or acknowledged, so
    /// the agents send them again.
    #[error("log lines not stored ({0}); the agent will send them again")]
    NotStored(String),
    #[error("bad log query: {0}")]
    BadQuery(String),
    #[error("bad cursor {0:?}: pass the next_cursor of the previous page unchanged, or none to start over")]
    BadCursor(String),
    #[error("bad log lines: {0}")]
    BadInput(String),
    #[error("the log store stopped after an internal error; restart watchgrid")]
    Poisoned,
}

impl LogStoreError {
    /// The caller sent something to fix (a bad query, cursor or input), not a failure of
    /// the store.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            LogStoreError::BadQuery(_) | LogStoreError::BadCursor(_) | LogStoreError::BadInput(_)
        )
    }
}

/// Locks a mutex; a poisoned one (a panic while it was held) stops the store rather than
/// trusting state a panic may have left half-updated.
pub(crate) fn lock<T>(
    m: &std::sync::Mutex<T>,
) -> Result<std::sync::MutexGuard<'_, T>, LogStoreError> {
    m.lock().map_err(|_| LogStoreError::Poisoned)
}

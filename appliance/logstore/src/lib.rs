//! The hub's log store (SPEC §5, issue "Logs and login events"): log lines shipped by
//! agents, per device and time indexed, searchable, with retention by age and size.
//!
//! Contract the API relies on:
//! - [`LogStore::ingest`] stores the lines of one device whose `seq` is above the
//!   device's acknowledged sequence, skips the others (a batch sent again after a lost
//!   answer), and returns the new acknowledged sequence only once everything it covers is
//!   on stable storage (it survives a power cut);
//! - nothing acknowledged is lost and nothing is stored twice, across restarts;
//! - [`LogStore::search`] filters by device, time range, unit and text, newest first,
//!   paginated by an opaque cursor;
//! - [`LogStore::enforce_retention`] deletes the oldest lines beyond the age and size limits.
//!
//! Design. One tantivy index in `DATA_DIR/logs` holds everything: the lines (its
//! lz4-compressed document store), a word index with positions over the message (phrase
//! search), exact terms for device and unit, and columns of timestamps and line ids
//! (time ranges and newest-first order). The acknowledged sequence of every device is
//! the payload of the index's own commit, so lines and acknowledgements become durable
//! in one atomic step ([`commit`]): there is no second store to keep in step and nothing
//! to re-index at open. A commit is durable once tantivy's fdatasyncs and our fsync of
//! the directory have returned (see `LogStore::sync`), and concurrent ingest calls share
//! one commit (group commit). Measurements and the alternatives weighed (sled with a
//! full scan) are in `examples/bench.rs` and the crate's README.

mod commit;
mod error;
mod ingest;
mod retention;
mod schema;
mod search;
mod store;

pub use error::LogStoreError;
pub use ingest::{normalize_ts, MAX_CLOCK_AHEAD_US};
pub use retention::{Retention, RetentionReport};
pub use schema::MAX_WORD;
pub use search::{LogPage, LogQuery, MAX_LIMIT};
pub use store::LogStore;
/// The type [`LogStore::observe_syncs`] takes.
pub use watchgrid_store::durable::SyncObserver;

use serde::{Deserialize, Serialize};

/// One log line as an agent ships it (and as the store keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// Per-device sequence number, assigned by the agent, strictly increasing.
    pub seq: u64,
    /// When the line was logged: microseconds since the UNIX epoch, UTC.
    pub ts_us: u64,
    /// `journal`, or the path of the file it was read from.
    #[schema(max_length = 512)]
    pub source: String,
    /// The systemd unit or syslog identifier, when known.
    #[schema(max_length = 256)]
    pub unit: Option<String>,
    /// Syslog priority 0 (emerg) to 7 (debug), when known.
    #[schema(maximum = 7)]
    pub priority: Option<u8>,
    /// The message as text (invalid UTF-8 replaced); at most [`MAX_MESSAGE`] bytes.
    #[schema(max_length = 65536)]
    pub message: String,
    /// The agent cut a longer message to [`MAX_MESSAGE`] bytes.
    #[serde(default)]
    pub truncated: bool,
}

/// The longest message stored, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A line as stored and searched: the agent's line with the device it came from and when
/// the hub received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StoredLine {
    pub device_id: String,
    /// When the hub stored it: microseconds since the UNIX epoch.
    pub received_at_us: u64,
    #[serde(flatten)]
    pub line: LogLine,
}

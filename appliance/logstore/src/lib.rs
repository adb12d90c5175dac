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

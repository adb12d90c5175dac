//! Log shipping on the agent: the machine's log lines, and the sign-in events found in
//! them, reach the hub exactly once, through restarts and while the hub is away.
//!
//! The flow (the run loop wires it; nothing here speaks HTTP):
//!
//! 1. Sources yield `(Record, position)`: [`journal::JournalSource`] (journald via
//!    `journalctl`, position = cursor; starts from now on a first run) and one
//!    [`file::FileSource`] per `--log-file` (position = `INODE:OFFSET`; reads a file
//!    from its start on a first run). Positions are keyed by the record's `source`:
//!    [`JOURNAL`], or the file's absolute path ([`file::FileSource::name`]).
//! 2. [`journal::Filter`] decides which records are shipped (journal priority and
//!    units, see [`LogSources`]); it always keeps lines that are login events.
//! 3. The records are appended to the log [`spool::Spool`] in batches (every ~200 ms or
//!    1000 records) together with every source's latest position, in one durable write:
//!    on start each source resumes from [`spool::Spool::position`], so after a crash no
//!    line is spooled twice and none is skipped. (For journald, pass
//!    [`journal::JournalSource::cursor`], which also covers entries the filter dropped.)
//! 4. The shipper peeks the oldest batch, sends it (`POST /api/logs/` with each
//!    record as [`record::Record::into_line`] numbered by its spool seq) and acks the
//!    spool up to the hub's `Acked.acked_seq`.
//! 5. Login events: [`login::parse`] is deterministic, so they can be parsed from the
//!    spooled records at shipping time and sent (`POST /api/logs/login`) with their
//!    line's seq before the lines: one spool, one position per source, one ack. A
//!    separate `Spool<LoginEvent>` works too, but then the two spools' positions differ
//!    after a crash between their appends, and the source must resume from the log
//!    spool's and not spool the login events up to the login spool's again.
//!    [`login::Companions`] folds the two lines of one console or su root session.
//!
//! When the spool is full the oldest items go and [`spool::Spool::dropped`] counts them
//! (the heartbeat reports it).

pub mod collect;
pub mod file;
pub mod journal;
pub mod login;
pub mod record;
pub mod ship;
pub mod spool;

use std::path::PathBuf;

/// The `source` of journal records, and the key of the journal's position.
pub const JOURNAL: &str = "journal";
/// The spool's directory in the agent's state dir (0700, like the state dir).
pub const SPOOL_DIR: &str = "log-spool";

/// What the agent reads and how much of it is shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSources {
    /// Follow journald. Default: on.
    pub journal: bool,
    /// Read the journal files in this directory instead of the system journal.
    /// Default: none (the system journal).
    pub journal_directory: Option<PathBuf>,
    /// Text log files to follow (`--log-file`, repeatable). Default: none.
    pub files: Vec<PathBuf>,
    /// The highest journal priority shipped. Default: 6 (info), so debug is dropped.
    pub priority_max: u8,
    /// When not empty, only these journal units (or syslog identifiers; `name*`
    /// matches by prefix) are shipped. Default: empty, every unit.
    pub include_units: Vec<String>,
    /// Journal units not shipped. Default: none.
    pub exclude_units: Vec<String>,
    /// The spool's size cap. Default: [`spool::DEFAULT_MAX_BYTES`] (64 MiB).
    pub spool_max_bytes: u64,
}

impl Default for LogSources {
    fn default() -> LogSources {
        let filter = journal::Filter::default();
        LogSources {
            journal: true,
            journal_directory: None,
            files: Vec::new(),
            priority_max: filter.priority_max,
            include_units: filter.include_units,
            exclude_units: filter.exclude_units,
            spool_max_bytes: spool::DEFAULT_MAX_BYTES,
        }
    }
}

impl LogSources {
    /// The filter for journal records.
    pub fn filter(&self) -> journal::Filter {
        journal::Filter {
            priority_max: self.priority_max,
            include_units: self.include_units.clone(),
            exclude_units: self.exclude_units.clone(),
        }
    }

    /// Nothing to read: log shipping is off.
    pub fn is_empty(&self) -> bool {
        !self.journal && self.files.is_empty()
    }
}

/// Microseconds since the UNIX epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_ship_the_journal_without_debug() {
        let s = LogSources::default();
        assert!(s.journal && s.files.is_empty() && !s.is_empty());
        assert_eq!(s.spool_max_bytes, 64 << 20);
        assert_eq!(s.filter(), journal::Filter::default());
        assert_eq!(s.filter().priority_max, 6);
        let off = LogSources {
            journal: false,
            ..LogSources::default()
        };
        assert!(off.is_empty());
    }

    #[test]
    fn a_spooled_record_round_trips_and_numbers_into_a_wire_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool: spool::Spool<record::Record> =
            spool::Spool::open(dir.path().join(SPOOL_DIR), 1 << 20).expect("open");
        let r = record::Record::from_bytes(
            now_us(),
            JOURNAL.into(),
            Some("ssh.service".into()),
            Some(6),
            b"Invalid user a from 192.0.2.1 port 1",
            false,
        );
        let positions = [(JOURNAL.to_string(), "s=1;i=2".to_string())];
        spool.append(vec![r.clone()], &positions).expect("append");
        let got = spool.peek(10, 1 << 20).expect("peek");
        assert_eq!(got, vec![(1, r.clone())]);
        let line = got[0].1.clone().into_line(got[0].0);
        assert_eq!((line.seq, line.message.as_str()), (1, r.message.as_str()));
        let event = login::parse(&r).map(|e| watchgrid_api::dto::LoginEvent { seq: 1, ..e });
        assert_eq!(event.map(|e| e.seq), Some(1));
    }
}

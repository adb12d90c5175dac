//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use watchgrid_logstore::{LogLine, LogStore, LogStoreError, Retention};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// 2023-11-14T22:13:20Z, in microseconds: a "now" every test agrees on.
pub const NOW: u64 = 1_700_000_000_000_000;
pub const SEC: u64 = 1_000_000;

pub fn line(seq: u64, ts_us: u64, message: &str) -> LogLine {
    LogLine {
        seq,
        ts_us,
        source: "journal".into(),
        unit: None,
        priority: Some(6),
        message: message.into(),
        truncated: false,
    }
}

pub fn unit_line(seq: u64, ts_us: u64, unit: &str, message: &str) -> LogLine {
    LogLine {
        unit: Some(unit.into()),
        ..line(seq, ts_us, message)
    }
}

/// Lines `first..=last`, one second apart ending at `NOW`-ish, message "line N".
pub fn lines(first: u64, last: u64) -> Vec<LogLine> {
    (first..=last)
        .map(|s| line(s, NOW - 10_000 * SEC + s * SEC, &format!("line {s}")))
        .collect()
}

pub fn open(dir: &Path) -> Result<LogStore, LogStoreError> {
    LogStore::open(&dir.join("logs"), Retention::default())
}

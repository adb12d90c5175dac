//! Retention by age and by size (oldest first), and removing a device.

mod common;

use common::*;
use watchgrid_logstore::{LogLine, LogQuery, LogStore, Retention};

const DAY: u64 = 86_400 * SEC;

fn seqs(store: &LogStore) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    let page = store.search(&LogQuery {
        limit: 1000,
        ..LogQuery::default()
    })?;
    Ok(page.lines.iter().map(|l| l.line.seq).collect())
}

#[test]
fn lines_older_than_the_age_limit_go() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = LogStore::open(
        &dir.path().join("logs"),
        Retention {
            max_age_days: 7,
            max_bytes: u64::MAX,
        },
    )?;
    // One line a day for ten days, in two batches (two segments).
    let day = |s: u64| line(s, NOW - (10 - s) * DAY, "daily");
    store.ingest("a", &(1..=5).map(day).collect::<Vec<_>>(), NOW)?;
    store.ingest("a", &(6..=10).map(day).collect::<Vec<_>>(), NOW)?;
    let report = store.enforce_retention(NOW)?;
    // Days 1 and 2 are older than seven days; day 3 is exactly seven days old and stays.
    assert_eq!(report.expired_lines, 2);
    assert_eq!(report.evicted_lines, 0);
    assert_eq!(seqs(&store)?, (3..=10).rev().collect::<Vec<_>>());
    // Nothing more to do the second time; the acknowledgement is untouched.
    assert_eq!(store.enforce_retention(NOW)?.expired_lines, 0);
    assert_eq!(store.acked("a")?, 10);
    assert_eq!(
        store.ingest("a", &[day(3)], NOW)?,
        10,
        "a deleted line is not stored again"
    );
    Ok(())
}

#[test]
fn past_the_size_limit_the_oldest_lines_go_first() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = LogStore::open(&dir.path().join("logs"), Retention::default())?;
    let noise = |s: u64| -> LogLine {
        // Distinct words, so the lines do not compress to nothing.
        let words: String = (0..40).map(|w| format!("w{s}x{w} ")).collect();
        line(s, NOW - 10_000 * SEC + s * SEC, &words)
    };
    for b in 0..10 {
        let batch: Vec<LogLine> = (b * 100 + 1..=b * 100 + 100).map(noise).collect();
        store.ingest("a", &batch, NOW)?;
    }
    let full = store.size_bytes();
    let limit = full / 2;
    store.set_retention(Retention {
        max_age_days: 3650,
        max_bytes: limit,
    });
    let report = store.enforce_retention(NOW)?;
    assert_eq!(report.expired_lines, 0);
    assert!(report.evicted_lines > 0);
    assert!(
        report.bytes_after <= limit,
        "{} > {limit}",
        report.bytes_after
    );
    // A background merge of the ten segments may run between the two measurements,
    // so the size the report starts from is close to, not equal to, `full`.
    assert!(
        report.bytes_before > limit,
        "{} <= {limit}",
        report.bytes_before
    );
    // What is left is the newest lines, without a hole.
    let left = seqs(&store)?;
    assert_eq!(left.len() as u64, 1000 - report.evicted_lines);
    let oldest_left = 1000 - left.len() as u64 + 1;
    assert_eq!(left, (oldest_left..=1000).rev().collect::<Vec<_>>());
    assert_eq!(store.line_count(), left.len() as u64);
    Ok(())
}

#[test]
fn removing_a_device_deletes_its_lines_and_sequence() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    store.ingest("gone", &lines(1, 20), NOW)?;
    store.ingest("kept", &lines(1, 5), NOW)?;
    assert_eq!(store.remove_device("gone")?, 20);
    assert_eq!(store.acked("gone")?, 0);
    assert_eq!(store.line_count(), 5);
    assert_eq!(store.remove_device("never")?, 0);
    drop(store);
    // Forgotten durably, not only in memory.
    let store = open(dir.path())?;
    assert_eq!(store.acked("gone")?, 0);
    assert_eq!(store.acked("kept")?, 5);
    let q = LogQuery {
        device_id: Some("gone".into()),
        ..LogQuery::default()
    };
    assert!(store.search(&q)?.lines.is_empty());
    Ok(())
}

//! Ingest: exactly once by sequence, across reopen, durable before the answer.

mod common;

use common::*;
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use watchgrid_logstore::{LogQuery, LogStore, LogStoreError, MAX_CLOCK_AHEAD_US};

fn seqs(store: &LogStore, device: &str) -> Result<Vec<u64>, LogStoreError> {
    let page = store.search(&LogQuery {
        device_id: Some(device.into()),
        limit: 1000,
        ..LogQuery::default()
    })?;
    let mut s: Vec<u64> = page.lines.iter().map(|l| l.line.seq).collect();
    s.sort_unstable();
    Ok(s)
}

#[test]
fn duplicates_are_skipped_across_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let store = open(dir.path())?;
        assert_eq!(store.acked("a")?, 0);
        assert_eq!(store.ingest("a", &lines(1, 10), NOW)?, 10);
        // The same batch again (a lost answer): nothing new, the same acknowledgement.
        assert_eq!(store.ingest("a", &lines(1, 10), NOW)?, 10);
        assert_eq!(store.ingest("b", &lines(1, 3), NOW)?, 3);
    }
    let store = open(dir.path())?;
    assert_eq!(store.acked("a")?, 10);
    assert_eq!(store.acked("b")?, 3);
    // Overlapping resend after the restart: only 11..=15 are new.
    assert_eq!(store.ingest("a", &lines(5, 15), NOW)?, 15);
    assert_eq!(seqs(&store, "a")?, (1..=15).collect::<Vec<_>>());
    assert_eq!(store.line_count(), 18);
    Ok(())
}

#[test]
fn unsorted_and_repeated_lines_in_one_batch_are_stored_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let mut batch = lines(1, 6);
    batch.reverse();
    batch.extend(lines(2, 4));
    batch.swap(0, 4);
    assert_eq!(store.ingest("a", &batch, NOW)?, 6);
    assert_eq!(seqs(&store, "a")?, vec![1, 2, 3, 4, 5, 6]);
    // Lines at or below the acknowledgement mixed with new ones: only the new ones.
    let mixed = [lines(8, 8), lines(3, 3), lines(7, 7)].concat();
    assert_eq!(store.ingest("a", &mixed, NOW)?, 8);
    assert_eq!(seqs(&store, "a")?, (1..=8).collect::<Vec<_>>());
    // Sequence 0 is never above an acknowledgement.
    assert_eq!(store.ingest("c", &lines(0, 0), NOW)?, 0);
    assert_eq!(store.line_count(), 8);
    Ok(())
}

#[test]
fn every_stored_batch_is_synced_before_the_answer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let syncs = Arc::new(AtomicU32::new(0));
    let seen = syncs.clone();
    store.observe_syncs(Box::new(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    store.ingest("a", &lines(1, 5), NOW)?;
    assert_eq!(syncs.load(Ordering::SeqCst), 1);
    // A pure duplicate commits (and syncs) nothing.
    store.ingest("a", &lines(1, 5), NOW)?;
    assert_eq!(syncs.load(Ordering::SeqCst), 1);
    store.ingest("a", &lines(6, 6), NOW)?;
    assert_eq!(syncs.load(Ordering::SeqCst), 2);
    Ok(())
}

#[test]
fn concurrent_agents_share_commits_and_lose_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open(dir.path())?);
    let syncs = Arc::new(AtomicU32::new(0));
    let seen = syncs.clone();
    store.observe_syncs(Box::new(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || -> Result<(), LogStoreError> {
                let device = format!("dev-{t}");
                for b in 0..10 {
                    let batch = lines(b * 50 + 1, b * 50 + 50);
                    assert_eq!(store.ingest(&device, &batch, NOW)?, b * 50 + 50);
                    // And a resend of the same batch, as after a lost answer.
                    assert_eq!(store.ingest(&device, &batch, NOW)?, b * 50 + 50);
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "ingest thread panicked")??;
    }
    assert_eq!(store.line_count(), 8 * 500);
    for t in 0..8 {
        assert_eq!(store.acked(&format!("dev-{t}"))?, 500);
    }
    // 80 stored batches; group commit may have merged some, never added commits.
    assert!(syncs.load(Ordering::SeqCst) <= 80);
    Ok(())
}

#[test]
fn timestamps_unknown_or_far_ahead_are_the_receiving_time() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let batch = [
        line(1, 0, "no clock"),
        line(2, NOW + MAX_CLOCK_AHEAD_US + 1, "far ahead"),
        line(3, NOW + 3600 * SEC, "a little ahead"),
        line(4, NOW - 3600 * SEC, "in the past"),
    ];
    store.ingest("a", &batch, NOW)?;
    let page = store.search(&LogQuery::default())?;
    let ts: HashSet<(u64, u64)> = page
        .lines
        .iter()
        .map(|l| (l.line.seq, l.line.ts_us))
        .collect();
    let want = HashSet::from([
        (1, NOW),
        (2, NOW),
        (3, NOW + 3600 * SEC),
        (4, NOW - 3600 * SEC),
    ]);
    assert_eq!(ts, want);
    assert!(page
        .lines
        .iter()
        .all(|l| l.received_at_us == NOW && l.device_id == "a"));
    Ok(())
}

#[test]
fn a_bad_line_stores_nothing_of_its_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let mut bad = line(2, NOW, "");
    bad.priority = Some(9);
    let err = store.ingest("a", &[line(1, NOW, "fine"), bad], NOW);
    assert!(matches!(err, Err(ref e @ LogStoreError::BadInput(_)) if e.is_bad_request()));
    assert!(store.ingest("", &lines(1, 1), NOW).is_err());
    assert_eq!(store.line_count(), 0);
    assert_eq!(store.acked("a")?, 0);
    Ok(())
}

#[test]
fn the_dir_is_private_and_owned_by_one_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let mode = std::fs::metadata(dir.path().join("logs"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(matches!(open(dir.path()), Err(LogStoreError::Locked(_))));
    drop(store);
    std::fs::set_permissions(
        dir.path().join("logs"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    assert!(matches!(
        open(dir.path()),
        Err(LogStoreError::Permissions { .. })
    ));
    Ok(())
}

#[test]
fn the_store_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<LogStore>();
}

//! Search: filters, hostile text, newest-first pages joined by cursors.

mod common;

use common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use watchgrid_logstore::{LogLine, LogQuery, LogStore, LogStoreError, MAX_MESSAGE};

fn find(store: &LogStore, q: LogQuery) -> Result<Vec<(String, u64)>, LogStoreError> {
    let page = store.search(&LogQuery { limit: 1000, ..q })?;
    Ok(page
        .lines
        .into_iter()
        .map(|l| (l.device_id, l.line.seq))
        .collect())
}

fn text(t: &str) -> LogQuery {
    LogQuery {
        text: Some(t.into()),
        ..LogQuery::default()
    }
}

fn fleet(dir: &std::path::Path) -> Result<LogStore, LogStoreError> {
    let store = open(dir)?;
    store.ingest(
        "a",
        &[
            unit_line(
                1,
                NOW - 30 * SEC,
                "sshd.service",
                "Failed password for root from 10.0.0.1 port 22",
            ),
            unit_line(
                2,
                NOW - 20 * SEC,
                "sshd.service",
                "Accepted publickey for admin",
            ),
            unit_line(
                3,
                NOW - 10 * SEC,
                "cron.service",
                "CRON session opened for user root",
            ),
        ],
        NOW,
    )?;
    store.ingest(
        "b",
        &[
            unit_line(
                1,
                NOW - 25 * SEC,
                "sshd.service",
                "failed PASSWORD for alice",
            ),
            line(2, NOW - 15 * SEC, "kernel: eth0 link up"),
        ],
        NOW,
    )?;
    Ok(store)
}

fn ids(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(d, s)| (d.to_string(), *s)).collect()
}

#[test]
fn newest_first_with_device_unit_and_time_filters() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = fleet(dir.path())?;
    let all = find(&store, LogQuery::default())?;
    assert_eq!(
        all,
        ids(&[("a", 3), ("b", 2), ("a", 2), ("b", 1), ("a", 1)])
    );
    let a = find(
        &store,
        LogQuery {
            device_id: Some("a".into()),
            ..LogQuery::default()
        },
    )?;
    assert_eq!(a, ids(&[("a", 3), ("a", 2), ("a", 1)]));
    let sshd = LogQuery {
        unit: Some("sshd.service".into()),
        ..LogQuery::default()
    };
    assert_eq!(find(&store, sshd)?, ids(&[("a", 2), ("b", 1), ("a", 1)]));
    // since is inclusive, until exclusive.
    let window = LogQuery {
        since_us: Some(NOW - 25 * SEC),
        until_us: Some(NOW - 10 * SEC),
        ..LogQuery::default()
    };
    assert_eq!(find(&store, window)?, ids(&[("b", 2), ("a", 2), ("b", 1)]));
    let since = LogQuery {
        since_us: Some(NOW - 15 * SEC),
        ..LogQuery::default()
    };
    assert_eq!(find(&store, since)?, ids(&[("a", 3), ("b", 2)]));
    let until = LogQuery {
        until_us: Some(NOW - 25 * SEC),
        ..LogQuery::default()
    };
    assert_eq!(find(&store, until)?, ids(&[("a", 1)]));
    let none = LogQuery {
        device_id: Some("nobody".into()),
        ..LogQuery::default()
    };
    assert!(find(&store, none)?.is_empty());
    // Empty filters are no filters.
    let empty = LogQuery {
        device_id: Some(String::new()),
        unit: Some(String::new()),
        text: Some("  ".into()),
        ..LogQuery::default()
    };
    assert_eq!(find(&store, empty)?.len(), 5);
    Ok(())
}

#[test]
fn text_is_a_case_insensitive_phrase_of_whole_words() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = fleet(dir.path())?;
    assert_eq!(
        find(&store, text("failed password"))?,
        ids(&[("b", 1), ("a", 1)])
    );
    assert_eq!(find(&store, text("ROOT"))?, ids(&[("a", 3), ("a", 1)]));
    assert_eq!(find(&store, text("10.0.0.1"))?, ids(&[("a", 1)]));
    // Words in another order, or a part of a word, do not match.
    assert!(find(&store, text("password failed"))?.is_empty());
    assert!(find(&store, text("pass"))?.is_empty());
    // Combined with the other filters.
    let q = LogQuery {
        device_id: Some("b".into()),
        unit: Some("sshd.service".into()),
        since_us: Some(NOW - 26 * SEC),
        ..text("password")
    };
    assert_eq!(find(&store, q)?, ids(&[("b", 1)]));
    Ok(())
}

#[test]
fn hostile_text_is_stored_verbatim_and_searchable() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path())?;
    let script = "<script>alert('x')</script> & <b>bold</b>";
    let control = "bell\u{7}esc\u{1b}[31mred\u{0}nul\r\nnext";
    let replaced = String::from_utf8_lossy(b"bad \xff\xfe utf8 tail").into_owned();
    let mut huge = "word ".repeat(MAX_MESSAGE / 5 - 2);
    huge.push_str("needle");
    assert!(huge.len() <= MAX_MESSAGE);
    let blob = "z".repeat(MAX_MESSAGE);
    let mut long = line(6, NOW, &huge);
    long.truncated = true;
    let batch: Vec<LogLine> = vec![
        line(1, NOW, script),
        line(2, NOW, control),
        line(3, NOW, &replaced),
        line(4, NOW, "日本語のログ Ünïcödé"),
        line(5, NOW, &blob),
        long,
    ];
    store.ingest("h", &batch, NOW)?;
    let all = store.search(&LogQuery::default())?;
    let mut stored: Vec<LogLine> = all.lines.into_iter().map(|l| l.line).collect();
    stored.sort_by_key(|l| l.seq);
    assert_eq!(stored, batch, "every line comes back byte for byte");
    assert_eq!(find(&store, text("script alert"))?, ids(&[("h", 1)]));
    assert_eq!(find(&store, text("<script>"))?, ids(&[("h", 1)]));
    assert_eq!(find(&store, text("esc"))?, ids(&[("h", 2)]));
    assert_eq!(find(&store, text("nul next"))?, ids(&[("h", 2)]));
    assert_eq!(find(&store, text("utf8"))?, ids(&[("h", 3)]));
    assert_eq!(find(&store, text("ünïcödé"))?, ids(&[("h", 4)]));
    assert_eq!(find(&store, text("needle"))?, ids(&[("h", 6)]));
    // A word too long to index is not found, but its line is stored (above).
    assert!(matches!(
        store.search(&text(&blob)),
        Err(LogStoreError::BadQuery(_))
    ));
    // Query text made only of separators has nothing to look for.
    assert!(matches!(
        store.search(&text("<>&;\u{0}")),
        Err(ref e @ LogStoreError::BadQuery(_)) if e.is_bad_request()
    ));
    Ok(())
}

/// Every line stored before the first page, in order, each exactly once.
fn paginate(
    store: &LogStore,
    limit: usize,
    q: &LogQuery,
) -> Result<Vec<(String, u64, u64)>, LogStoreError> {
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.search(&LogQuery {
            limit,
            cursor: cursor.take(),
            ..q.clone()
        })?;
        assert!(page.lines.len() <= limit);
        seen.extend(
            page.lines
                .iter()
                .map(|l| (l.device_id.clone(), l.line.seq, l.line.ts_us)),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(seen),
        }
    }
}

#[test]
fn pages_have_no_gaps_or_repeats_under_concurrent_ingest() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open(dir.path())?);
    // Many lines share a microsecond, so the order's tie-break is exercised.
    for d in 0..4 {
        let batch: Vec<LogLine> = (1..=300)
            .map(|s| line(s, NOW - 1000 * SEC + (s / 7) * SEC, &format!("line {s}")))
            .collect();
        store.ingest(&format!("dev-{d}"), &batch, NOW)?;
    }
    let before: HashSet<(String, u64)> = (0..4)
        .flat_map(|d| (1..=300).map(move |s| (format!("dev-{d}"), s)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || -> Result<(), LogStoreError> {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                // New lines newer than everything, and older ones arriving late
                // (an agent's backlog), in the middle of the pages.
                let late = (seq % 600) * SEC;
                let batch = [
                    line(seq + 1, NOW - 10 * SEC, "newer"),
                    line(seq + 2, NOW - 1000 * SEC + late, "late"),
                ];
                store.ingest("writer", &batch, NOW)?;
                seq += 2;
            }
            Ok(())
        })
    };
    let pages = paginate(&store, 37, &LogQuery::default());
    stop.store(true, Ordering::Relaxed);
    writer.join().map_err(|_| "writer panicked")??;
    let seen = pages?;
    let order: Vec<u64> = seen.iter().map(|(_, _, ts)| *ts).collect();
    assert!(order.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let mut unique = HashSet::new();
    for (d, s, _) in &seen {
        assert!(unique.insert((d.clone(), *s)), "{d} {s} repeated");
    }
    assert!(
        before.is_subset(&unique),
        "a line stored before the first page is missing"
    );
    // A filtered walk, for the cursor combined with a time range.
    let q = LogQuery {
        device_id: Some("dev-2".into()),
        since_us: Some(NOW - 1000 * SEC + 10 * SEC),
        until_us: Some(NOW - 1000 * SEC + 30 * SEC),
        ..LogQuery::default()
    };
    let walk: Vec<u64> = paginate(&store, 5, &q)?
        .into_iter()
        .map(|(_, s, _)| s)
        .collect();
    let want: Vec<u64> = (70..=209).rev().collect();
    assert_eq!(walk, want);
    Ok(())
}

#[test]
fn bad_cursors_and_queries_are_typed_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = fleet(dir.path())?;
    for cursor in ["nope", "0123", &"g".repeat(32), "<script>"] {
        let q = LogQuery {
            cursor: Some(cursor.into()),
            ..LogQuery::default()
        };
        let err = store.search(&q);
        assert!(matches!(err, Err(ref e @ LogStoreError::BadCursor(_)) if e.is_bad_request()));
    }
    let zero = LogQuery {
        limit: 0,
        ..LogQuery::default()
    };
    assert!(matches!(
        store.search(&zero),
        Err(LogStoreError::BadQuery(_))
    ));
    let backwards = LogQuery {
        since_us: Some(NOW),
        until_us: Some(NOW - 1),
        ..LogQuery::default()
    };
    assert!(matches!(
        store.search(&backwards),
        Err(LogStoreError::BadQuery(_))
    ));
    // A limit above the cap is capped, not refused.
    let big = LogQuery {
        limit: 1_000_000,
        ..LogQuery::default()
    };
    assert_eq!(store.search(&big)?.lines.len(), 5);
    Ok(())
}

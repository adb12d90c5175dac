//! What an ingest call stores: its lines checked, in sequence order, each sequence once,
//! with timestamps normalized.

use crate::{LogLine, LogStoreError, MAX_MESSAGE};

/// A timestamp further ahead of the hub's clock than this is not believed.
pub const MAX_CLOCK_AHEAD_US: u64 = 24 * 3600 * 1_000_000;
/// Longest `source` and `unit` (as [`LogLine`]'s schema says).
pub const MAX_SOURCE: usize = 512;
pub const MAX_UNIT: usize = 256;
/// Longest device id accepted (ids are the hub's own; this only bounds the index term).
pub const MAX_DEVICE_ID: usize = 256;

/// The timestamp a line is stored with: its own, unless it is 0 (unknown) or more than
/// a day ahead of the hub's clock (an agent whose clock is wrong), in which case the
/// time it was received. Lines that old never get there: a line from the past keeps its
/// time (and retention by age may delete it at once).
pub fn normalize_ts(ts_us: u64, now_us: u64) -> u64 {
    if ts_us == 0 || ts_us > now_us.saturating_add(MAX_CLOCK_AHEAD_US) {
        now_us
    } else {
        ts_us
    }
}

/// The lines of one call sorted by sequence, a sequence sent twice kept once (its first
/// occurrence), after checking every line against the limits of [`LogLine`].
pub(crate) fn in_seq_order<'a>(
    device_id: &str,
    lines: &'a [LogLine],
) -> Result<Vec<&'a LogLine>, LogStoreError> {
    if device_id.is_empty() || device_id.len() > MAX_DEVICE_ID {
        return Err(LogStoreError::BadInput(format!(
            "device id: 1 to {MAX_DEVICE_ID} bytes"
        )));
    }
    lines.iter().try_for_each(check)?;
    let mut sorted: Vec<&LogLine> = lines.iter().collect();
    // Stable, so the first of equal sequences stays first and dedup keeps it.
    sorted.sort_by_key(|l| l.seq);
    sorted.dedup_by_key(|l| l.seq);
    Ok(sorted)
}

fn check(line: &LogLine) -> Result<(), LogStoreError> {
    let too_long = |what: &str, max: usize| {
        Err(LogStoreError::BadInput(format!(
            "line {}: {what} longer than {max} bytes",
            line.seq
        )))
    };
    if line.message.len() > MAX_MESSAGE {
        return too_long("message", MAX_MESSAGE);
    }
    if line.source.len() > MAX_SOURCE {
        return too_long("source", MAX_SOURCE);
    }
    if line.unit.as_ref().is_some_and(|u| u.len() > MAX_UNIT) {
        return too_long("unit", MAX_UNIT);
    }
    if line.priority.is_some_and(|p| p > 7) {
        return Err(LogStoreError::BadInput(format!(
            "line {}: priority is 0 to 7",
            line.seq
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, message: &str) -> LogLine {
        LogLine {
            seq,
            ts_us: 1,
            source: "journal".into(),
            unit: None,
            priority: None,
            message: message.into(),
            truncated: false,
        }
    }

    #[test]
    fn sorts_and_keeps_the_first_of_a_repeated_sequence() -> Result<(), LogStoreError> {
        let lines = [line(3, "c"), line(1, "a"), line(3, "c again"), line(2, "b")];
        let got = in_seq_order("d", &lines)?;
        let seqs: Vec<(u64, &str)> = got.iter().map(|l| (l.seq, l.message.as_str())).collect();
        assert_eq!(seqs, [(1, "a"), (2, "b"), (3, "c")]);
        Ok(())
    }

    #[test]
    fn refuses_what_the_schema_does_not_allow() {
        let mut long = line(1, "");
        long.message = "x".repeat(MAX_MESSAGE + 1);
        let mut prio = line(2, "");
        prio.priority = Some(8);
        for bad in [long, prio] {
            assert!(matches!(
                in_seq_order("d", &[bad]),
                Err(LogStoreError::BadInput(_))
            ));
        }
        assert!(in_seq_order("", &[]).is_err());
        let mut max = line(3, "");
        max.message = "x".repeat(MAX_MESSAGE);
        assert!(in_seq_order("d", &[max]).is_ok());
    }

    #[test]
    fn timestamps_unknown_or_far_ahead_become_the_receiving_time() {
        let now = 1_700_000_000_000_000;
        assert_eq!(normalize_ts(0, now), now);
        assert_eq!(normalize_ts(now + MAX_CLOCK_AHEAD_US + 1, now), now);
        assert_eq!(
            normalize_ts(now + MAX_CLOCK_AHEAD_US, now),
            now + MAX_CLOCK_AHEAD_US
        );
        assert_eq!(normalize_ts(5, now), 5);
        assert_eq!(normalize_ts(u64::MAX, u64::MAX), u64::MAX);
    }
}

//! Retention by age and size, and forgetting a device.

use crate::error::lock;
use crate::{LogStore, LogStoreError};
use serde::Serialize;
use std::ops::Bound;
use tantivy::collector::Count;
use tantivy::query::{Query, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{IndexWriter, Term};

const US_PER_DAY: u64 = 86_400 * 1_000_000;
/// Deleting by an estimate of bytes per line converges in one or two rounds; the bound
/// only stops a pathological index from looping.
const SIZE_ROUNDS: usize = 6;

/// How much the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Lines whose `ts_us` is older than this many days are deleted.
    pub max_age_days: u32,
    /// Past this many bytes on disk the oldest lines are deleted.
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            max_age_days: 30,
            max_bytes: 2 << 30,
        }
    }
}

/// What [`LogStore::enforce_retention`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Lines older than the age limit.
    pub expired_lines: u64,
    /// The oldest lines deleted to get under the size limit.
    pub evicted_lines: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl LogStore {
    /// Deletes the lines older than the age limit, then the oldest lines until the store
    /// is under the size limit, and rewrites the segments that held them so the space
    /// is given back. Takes seconds on a large store (a rewrite copies up to a few
    /// hundred thousand lines): call it off the async runtime. Ingest waits meanwhile.
    pub fn enforce_retention(&self, now_us: u64) -> Result<RetentionReport, LogStoreError> {
        let limits = *lock(&self.retention)?;
        let mut writer = lock(&self.writer)?;
        let mut report = RetentionReport {
            bytes_before: self.size_bytes(),
            ..RetentionReport::default()
        };
        let cutoff = now_us.saturating_sub(u64::from(limits.max_age_days) * US_PER_DAY);
        report.expired_lines = self.delete_before(&mut writer, cutoff)?;
        for _ in 0..SIZE_ROUNDS {
            self.compact(&mut writer)?;
            let size = self.size_bytes();
            let live = self.line_count();
            if size <= limits.max_bytes || live == 0 {
                break;
            }
            // Lines to drop at the store's current bytes per line, at least one.
            let excess = u128::from(size - limits.max_bytes) * u128::from(live) / u128::from(size);
            let n = u64::try_from(excess).unwrap_or(live).clamp(1, live);
            let cutoff = self.ts_after_oldest(n)?;
            report.evicted_lines += self.delete_before(&mut writer, cutoff)?;
        }
        report.bytes_after = self.size_bytes();
        Ok(report)
    }

    /// Deletes every line of a removed device and forgets its acknowledged sequence;
    /// returns how many lines it deleted. Call it once the device's agent can no longer
    /// send (its key revoked): lines it sends afterwards start a new sequence record.
    /// The space comes back as the segments holding them are merged or retention
    /// rewrites them.
    pub fn remove_device(&self, device_id: &str) -> Result<u64, LogStoreError> {
        let mut writer = lock(&self.writer)?;
        let term = Term::from_field_text(self.fields.device, device_id);
        let query = TermQuery::new(term.clone(), IndexRecordOption::Basic);
        let lines = self.count(&query)?;
        lock(&self.state)?.forget(device_id);
        self.commit(&mut writer, |w| {
            w.delete_term(term);
            Ok(())
        })?;
        Ok(lines)
    }

    fn before(&self, ts: u64) -> RangeQuery {
        RangeQuery::new(
            Bound::Unbounded,
            Bound::Excluded(Term::from_field_u64(self.fields.ts, ts)),
        )
    }

    fn count(&self, query: &dyn Query) -> Result<u64, LogStoreError> {
        let n = self.reader.searcher().search(query, &Count)?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    /// Deletes the lines with `ts_us < ts` (committing what is pending with it).
    fn delete_before(&self, writer: &mut IndexWriter, ts: u64) -> Result<u64, LogStoreError> {
        let doomed = self.count(&self.before(ts))?;
        if doomed == 0 {
            return Ok(0);
        }
        let query = Box::new(self.before(ts));
        self.commit(writer, |w| {
            w.delete_query(query)?;
            Ok(())
        })?;
        Ok(doomed)
    }

    /// The smallest `t` such that at least `n` lines have `ts_us < t`: a bisection
    /// over the time column, each step a count (milliseconds on millions of lines).
    fn ts_after_oldest(&self, n: u64) -> Result<u64, LogStoreError> {
        let (mut lo, mut hi) = self.ts_bounds()?;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.count(&self.before(mid))? >= n {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    /// `(oldest, newest + 1)` over the stored lines (deleted ones included: only bounds).
    fn ts_bounds(&self) -> Result<(u64, u64), LogStoreError> {
        let name = self
            .reader
            .searcher()
            .schema()
            .get_field_name(self.fields.ts)
            .to_owned();
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        for segment in self.reader.searcher().segment_readers() {
            let column = segment.fast_fields().u64(&name)?;
            lo = lo.min(column.min_value());
            hi = hi.max(column.max_value());
        }
        Ok((lo.min(hi), hi.saturating_add(1)))
    }

    /// Rewrites the segments that hold deleted lines, then removes the files no commit
    /// uses any more. The merges' new meta file is made durable before the old files go.
    fn compact(&self, writer: &mut IndexWriter) -> Result<(), LogStoreError> {
        let with_deletes: Vec<_> = writer
            .index()
            .searchable_segment_metas()?
            .into_iter()
            .filter(|m| m.has_deletes())
            .map(|m| m.id())
            .collect();
        for id in with_deletes {
            match writer.merge(&[id]).wait() {
                // A background merge took the segment first: it expunges the deletes.
                Ok(_) | Err(tantivy::TantivyError::InvalidArgument(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.sync()?;
        writer.garbage_collect_files().wait()?;
        // The reader would keep the old segments' files (and their blocks) open.
        self.reload();
        Ok(())
    }
}

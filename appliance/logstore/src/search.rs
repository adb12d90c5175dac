//! Searching: filters to a tantivy query, newest first by `(ts_us, line id)`, pages
//! joined by an opaque cursor.

use crate::schema::{self, Fields};
use crate::{LogStore, LogStoreError, StoredLine};
use std::ops::Bound;
use std::sync::atomic::Ordering;
use tantivy::collector::{CustomScorer, CustomSegmentScorer, TopDocs};
use tantivy::columnar::ColumnValues;
use tantivy::query::{AllQuery, BooleanQuery, Occur, PhraseQuery, Query, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocId, SegmentReader, TantivyDocument, Term};

/// The most lines one page holds.
pub const MAX_LIMIT: usize = 1000;

/// A search. Every filter given must match; `Some("")` is the same as `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Lines of this device only.
    pub device_id: Option<String>,
    /// Lines with `ts_us >= since_us`.
    pub since_us: Option<u64>,
    /// Lines with `ts_us < until_us`.
    pub until_us: Option<u64>,
    /// A phrase of whole words, case-insensitive: the message holds the query's words
    /// next to each other and in order. Words are runs of Unicode letters and digits, so
    /// anything else in the query only separates words: `Failed password` matches
    /// "failed  password for root", `10.0.0.1` matches "from 10.0.0.1 port 22" (and
    /// "10-0-0-1"), `pass` does not match "password" (no partial words). Words longer
    /// than [`crate::MAX_WORD`] bytes are not indexed.
    pub text: Option<String>,
    /// The systemd unit or syslog identifier, exactly.
    pub unit: Option<String>,
    /// Lines per page, 1 to [`MAX_LIMIT`] (more is capped to it).
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Default for LogQuery {
    fn default() -> LogQuery {
        LogQuery {
            device_id: None,
            since_us: None,
            until_us: None,
            text: None,
            unit: None,
            limit: 100,
            cursor: None,
        }
    }
}

/// One page of lines, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    pub lines: Vec<StoredLine>,
    /// Where the next page starts; `None` on the last page. Lines stored after the first
    /// page that are newer than this cursor are not in the following pages (search
    /// again from the start for them); none of the older ones is skipped or repeated.
    pub next_cursor: Option<String>,
}

/// A position in the order: the `(ts_us, line id)` of the last line returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cursor {
    pub ts: u64,
    pub line_id: u64,
}

impl Cursor {
    pub fn encode(self) -> String {
        format!("{:016x}{:016x}", self.ts, self.line_id)
    }

    pub fn parse(s: &str) -> Result<Cursor, LogStoreError> {
        let bad = || LogStoreError::BadCursor(s.chars().take(64).collect());
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let (ts, id) = s.split_at(16);
        Ok(Cursor {
            ts: u64::from_str_radix(ts, 16).map_err(|_| bad())?,
            line_id: u64::from_str_radix(id, 16).map_err(|_| bad())?,
        })
    }
}

impl LogStore {
    /// The lines matching `q`, newest first. Reads the index (milliseconds to tens of
    /// milliseconds over millions of lines): call it off the async runtime.
    pub fn search(&self, q: &LogQuery) -> Result<LogPage, LogStoreError> {
        let plan = Plan::new(q, &self.fields)?;
        if self.stale.load(Ordering::Acquire) {
            self.reload();
        }
        let searcher = self.reader.searcher();
        let order = Newest {
            fields: self.fields,
            before: plan.cursor,
        };
        let collector = TopDocs::with_limit(plan.limit + 1).custom_score(order);
        let top = searcher.search(&*plan.query, &collector)?;
        let mut hits: Vec<_> = top
            .into_iter()
            .filter_map(|(key, addr)| key.map(|k| (k, addr)))
            .collect();
        let more = hits.len() > plan.limit;
        hits.truncate(plan.limit);
        let mut lines = Vec::with_capacity(hits.len());
        for (_, addr) in &hits {
            let doc: TantivyDocument = searcher.doc(*addr)?;
            lines.push(schema::from_doc(&self.fields, &doc).map_err(LogStoreError::Corrupt)?);
        }
        let next_cursor = match hits.last() {
            Some((last, _)) if more => Some(last.encode()),
            _ => None,
        };
        Ok(LogPage { lines, next_cursor })
    }
}

/// A checked query.
struct Plan {
    query: Box<dyn Query>,
    limit: usize,
    cursor: Option<Cursor>,
}

fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

impl Plan {
    fn new(q: &LogQuery, f: &Fields) -> Result<Plan, LogStoreError> {
        if q.limit == 0 {
            return Err(LogStoreError::BadQuery(format!("limit: 1 to {MAX_LIMIT}")));
        }
        let cursor = q
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(Cursor::parse)
            .transpose()?;
        let mut must: Vec<Box<dyn Query>> = Vec::new();
        if let Some(device) = given(&q.device_id) {
            must.push(exact(Term::from_field_text(f.device, device)));
        }
        if let Some(unit) = given(&q.unit) {
            must.push(exact(Term::from_field_text(f.unit, unit)));
        }
        if let Some(range) = time_range(q, cursor, f)? {
            must.push(range);
        }
        if let Some(text) = given(&q.text) {
            must.push(phrase(text, f)?);
        }
        let query: Box<dyn Query> = match must.len() {
            0 => Box::new(AllQuery),
            1 => must.remove(0),
            _ => Box::new(BooleanQuery::new(
                must.into_iter().map(|m| (Occur::Must, m)).collect(),
            )),
        };
        Ok(Plan {
            query,
            limit: q.limit.min(MAX_LIMIT),
            cursor,
        })
    }
}

fn exact(term: Term) -> Box<dyn Query> {
    Box::new(TermQuery::new(term, IndexRecordOption::Basic))
}

/// `since_us <= ts < until_us`, and not after the cursor (its own microsecond is
/// included; [`Newest`] drops the lines of it already returned).
fn time_range(
    q: &LogQuery,
    cursor: Option<Cursor>,
    f: &Fields,
) -> Result<Option<Box<dyn Query>>, LogStoreError> {
    if let (Some(since), Some(until)) = (q.since_us, q.until_us) {
        if since >= until {
            return Err(LogStoreError::BadQuery("since must be before until".into()));
        }
    }
    let term = |v| Term::from_field_u64(f.ts, v);
    let lower = q
        .since_us
        .map_or(Bound::Unbounded, |s| Bound::Included(term(s)));
    let upper = match (q.until_us, cursor) {
        (Some(u), Some(c)) if c.ts < u => Bound::Included(term(c.ts)),
        (Some(u), _) => Bound::Excluded(term(u)),
        (None, Some(c)) => Bound::Included(term(c.ts)),
        (None, None) => Bound::Unbounded,
    };
    if matches!((&lower, &upper), (Bound::Unbounded, Bound::Unbounded)) {
        return Ok(None);
    }
    Ok(Some(Box::new(RangeQuery::new(lower, upper))))
}

/// The query's words as a phrase (one word: a term).
fn phrase(text: &str, f: &Fields) -> Result<Box<dyn Query>, LogStoreError> {
    let mut analyzer = schema::analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut words = Vec::new();
    while let Some(token) = stream.next() {
        words.push((
            token.position,
            Term::from_field_text(f.message, &token.text),
        ));
    }
    match words.len() {
        0 => Err(LogStoreError::BadQuery(format!(
            "text: no word to search for (words are letters and digits, at most {} bytes)",
            crate::MAX_WORD
        ))),
        1 => Ok(Box::new(TermQuery::new(
            words.remove(0).1,
            IndexRecordOption::Basic,
        ))),
        _ => {
            // Positions relative to the first word: a word too long to index leaves its
            // gap, so the phrase still lines up with how the message was indexed.
            let first = words[0].0;
            let words = words.into_iter().map(|(p, t)| (p - first, t)).collect();
            Ok(Box::new(PhraseQuery::new_with_offset(words)))
        }
    }
}

/// Orders matches newest first by `(ts, line id)`; a match at or after the cursor gets
/// `None`, below every real position, and is dropped from the page.
struct Newest {
    fields: Fields,
    before: Option<Cursor>,
}

struct SegmentNewest {
    ts: std::sync::Arc<dyn ColumnValues<u64>>,
    line_id: std::sync::Arc<dyn ColumnValues<u64>>,
    before: Option<Cursor>,
}

impl CustomScorer<Option<Cursor>> for Newest {
    type Child = SegmentNewest;

    fn segment_scorer(&self, segment: &SegmentReader) -> tantivy::Result<SegmentNewest> {
        let column = |field| {
            let name = segment.schema().get_field_name(field).to_owned();
            segment
                .fast_fields()
                .u64(&name)
                .map(|c| c.first_or_default_col(0))
        };
        Ok(SegmentNewest {
            ts: column(self.fields.ts)?,
            line_id: column(self.fields.line_id)?,
            before: self.before,
        })
    }
}

impl CustomSegmentScorer<Option<Cursor>> for SegmentNewest {
    fn score(&mut self, doc: DocId) -> Option<Cursor> {
        let at = Cursor {
            ts: self.ts.get_val(doc),
            line_id: self.line_id.get_val(doc),
        };
        match self.before {
            Some(c) if at >= c => None,
            _ => Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() -> Result<(), LogStoreError> {
        let c = Cursor {
            ts: 1_700_000_000_000_000,
            line_id: 42,
        };
        assert_eq!(Cursor::parse(&c.encode())?, c);
        for bad in [
            "",
            "xyz",
            &"f".repeat(31),
            &"g".repeat(32),
            &"0".repeat(33),
            "é",
        ] {
            assert!(
                matches!(Cursor::parse(bad), Err(LogStoreError::BadCursor(_))),
                "{bad:?}"
            );
        }
        Ok(())
    }
}

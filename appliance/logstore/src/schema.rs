//! The index's schema: which field is stored, indexed or a fast (columnar) field, and why;
//! the word analyzer shared by indexing and queries; documents to and from lines.

use crate::{LogLine, StoredLine};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, STORED, STRING,
};
use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{Index, TantivyDocument};

/// The analyzer's name in the index's tokenizer manager.
pub(crate) const WORDS: &str = "watchgrid_words";

/// Words longer than this many bytes are not indexed (long base64 or hex blobs would
/// bloat the term dictionary); the line is still stored and found by its other words.
pub const MAX_WORD: usize = 256;

/// The fields, resolved once.
#[derive(Clone, Copy)]
pub(crate) struct Fields {
    /// Exact term: device filter and `remove_device`.
    pub device: Field,
    pub seq: Field,
    /// Fast: time-range filters and newest-first order. Not indexed: ranges run on the
    /// fast column, smaller and faster than a range over millions of distinct terms.
    pub ts: Field,
    /// Fast: a unique, increasing number breaking ties between lines of one microsecond,
    /// so the order (and a cursor into it) is total.
    pub line_id: Field,
    pub received: Field,
    pub source: Field,
    /// Exact term: unit filter.
    pub unit: Field,
    pub priority: Field,
    /// Words with positions: phrase queries.
    pub message: Field,
    pub truncated: Field,
}

pub(crate) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let words = TextFieldIndexing::default()
        .set_tokenizer(WORDS)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let fields = Fields {
        device: b.add_text_field("device", STRING | STORED),
        seq: b.add_u64_field("seq", STORED),
        ts: b.add_u64_field("ts", FAST | STORED),
        line_id: b.add_u64_field("line_id", FAST),
        received: b.add_u64_field("received", STORED),
        source: b.add_text_field("source", STORED),
        unit: b.add_text_field("unit", STRING | STORED),
        priority: b.add_u64_field("priority", STORED),
        message: b.add_text_field(
            "message",
            TextOptions::default()
                .set_indexing_options(words)
                .set_stored(),
        ),
        truncated: b.add_bool_field("truncated", STORED),
    };
    (b.build(), fields)
}

/// Words are runs of Unicode letters and digits, lower-cased. Control characters, the
/// replacement character of invalid UTF-8, markup and punctuation all separate words.
pub(crate) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD + 1))
        .filter(LowerCaser)
        .build()
}

pub(crate) fn register_analyzer(index: &Index) {
    index.tokenizers().register(WORDS, analyzer());
}

/// A line as a document, without its `line_id` (assigned when the batch is accepted).
pub(crate) fn to_doc(
    f: &Fields,
    device_id: &str,
    line: &LogLine,
    received_at_us: u64,
) -> TantivyDocument {
    let mut d = TantivyDocument::new();
    d.add_text(f.device, device_id);
    d.add_u64(f.seq, line.seq);
    d.add_u64(f.ts, line.ts_us);
    d.add_u64(f.received, received_at_us);
    d.add_text(f.source, &line.source);
    if let Some(unit) = &line.unit {
        d.add_text(f.unit, unit);
    }
    if let Some(p) = line.priority {
        d.add_u64(f.priority, u64::from(p));
    }
    d.add_text(f.message, &line.message);
    if line.truncated {
        d.add_bool(f.truncated, true);
    }
    d
}

/// A stored document back as a line; a document missing a required field is corrupt.
pub(crate) fn from_doc(f: &Fields, d: &TantivyDocument) -> Result<StoredLine, String> {
    let text = |field: Field| {
        d.get_first(field)
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    let num = |field: Field| d.get_first(field).and_then(|v| v.as_u64());
    let need = |name: &str| format!("stored line without {name}");
    Ok(StoredLine {
        device_id: text(f.device).ok_or_else(|| need("device"))?,
        received_at_us: num(f.received).ok_or_else(|| need("received"))?,
        line: LogLine {
            seq: num(f.seq).ok_or_else(|| need("seq"))?,
            ts_us: num(f.ts).ok_or_else(|| need("ts"))?,
            source: text(f.source).ok_or_else(|| need("source"))?,
            unit: text(f.unit),
            priority: num(f.priority).and_then(|p| u8::try_from(p).ok()),
            message: text(f.message).ok_or_else(|| need("message"))?,
            truncated: d
                .get_first(f.truncated)
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        },
    })
}

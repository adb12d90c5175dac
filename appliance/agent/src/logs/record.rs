//! A line read from a source, before the spool gives it a sequence number, and the
//! conversion of raw bytes into the text the hub stores: invalid UTF-8 replaced by
//! U+FFFD, cut to [`MAX_MESSAGE`] bytes at a character boundary.
//!
//! Sources hand over at most [`INPUT_CAP`] bytes of a line: that is always enough to
//! fill [`MAX_MESSAGE`] bytes of text (every input byte gives at least one byte of
//! text), so a 1 MiB line never needs more than that in memory.

use serde::{Deserialize, Serialize};
use watchgrid_logstore::{LogLine, MAX_MESSAGE};

/// The most of one line a source needs to keep: a few bytes past [`MAX_MESSAGE`], so
/// that a character cut at the end of the kept part lies beyond the cut anyway.
pub const INPUT_CAP: usize = MAX_MESSAGE + 4;

/// One line from a source (journald or a file), not yet numbered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Microseconds since the UNIX epoch, UTC: journald's timestamp, or when a file
    /// line was read.
    pub ts_us: u64,
    /// `journal`, or the path of the file.
    pub source: String,
    /// The systemd unit or syslog identifier, when known.
    pub unit: Option<String>,
    /// Syslog priority 0 (emerg) to 7 (debug), when known.
    pub priority: Option<u8>,
    /// At most [`MAX_MESSAGE`] bytes.
    pub message: String,
    /// The source's message was longer than [`MAX_MESSAGE`] (or journald withheld it).
    pub truncated: bool,
}

impl Record {
    /// A record whose message is `bytes`, decoded and cut; `more` says the source held
    /// back bytes beyond `bytes` (the line was longer than it kept).
    pub fn from_bytes(
        ts_us: u64,
        source: String,
        unit: Option<String>,
        priority: Option<u8>,
        bytes: &[u8],
        more: bool,
    ) -> Record {
        let (message, cut) = message_from_bytes(bytes);
        Record {
            ts_us,
            source,
            unit,
            priority,
            message,
            truncated: cut || more,
        }
    }

    /// The wire form, numbered by the spool.
    pub fn into_line(self, seq: u64) -> LogLine {
        LogLine {
            seq,
            ts_us: self.ts_us,
            source: self.source,
            unit: self.unit,
            priority: self.priority,
            message: self.message,
            truncated: self.truncated,
        }
    }
}

/// `bytes` as text, invalid UTF-8 replaced by U+FFFD, at most [`MAX_MESSAGE`] bytes;
/// true when something was cut. Only as much input as the output needs is decoded.
pub fn message_from_bytes(bytes: &[u8]) -> (String, bool) {
    const REPLACEMENT: &str = "\u{FFFD}";
    let mut out = String::with_capacity(bytes.len().min(MAX_MESSAGE));
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        let room = MAX_MESSAGE - out.len();
        if valid.len() > room {
            out.push_str(cut_str(valid, room));
            return (out, true);
        }
        out.push_str(valid);
        if !chunk.invalid().is_empty() {
            if MAX_MESSAGE - out.len() < REPLACEMENT.len() {
                return (out, true);
            }
            out.push_str(REPLACEMENT);
        }
    }
    (out, false)
}

/// The longest prefix of `s` of at most `max` bytes that ends at a char boundary.
pub fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    // A UTF-8 character is at most 4 bytes, so this steps back at most 3 times.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` cut to at most `max` characters (user names, units: limits the hub counts in
/// characters).
pub fn cut_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_text_is_kept_whole() {
        assert_eq!(
            message_from_bytes("héllo wörld".as_bytes()),
            ("héllo wörld".into(), false)
        );
        assert_eq!(message_from_bytes(b""), (String::new(), false));
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let (text, cut) = message_from_bytes(b"ok \xff\xfe then \xe2\x82 end");
        assert!(!cut);
        assert_eq!(text, "ok \u{FFFD}\u{FFFD} then \u{FFFD} end");
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        // 'é' is two bytes: an odd cap falls inside one.
        let long = "é".repeat(MAX_MESSAGE);
        let (text, cut) = message_from_bytes(long.as_bytes());
        assert!(cut);
        assert_eq!(text.len(), MAX_MESSAGE);
        let long = format!("a{}", "é".repeat(MAX_MESSAGE));
        let (text, cut) = message_from_bytes(long.as_bytes());
        assert!(cut);
        assert_eq!(
            text.len(),
            MAX_MESSAGE - 1,
            "the split 'é' is dropped whole"
        );
        // Exactly the cap is not a cut.
        let exact = "x".repeat(MAX_MESSAGE);
        assert_eq!(message_from_bytes(exact.as_bytes()), (exact, false));
    }

    #[test]
    fn replacements_count_towards_the_cap() {
        // Each invalid byte becomes three bytes of text.
        let bad = vec![0xffu8; MAX_MESSAGE];
        let (text, cut) = message_from_bytes(&bad);
        assert!(cut);
        assert!(text.len() <= MAX_MESSAGE && text.len() > MAX_MESSAGE - 3);
        assert!(text.chars().all(|c| c == '\u{FFFD}'));
    }

    #[test]
    fn a_one_mib_line_kept_to_the_input_cap_is_marked_truncated() {
        let line = vec![b'z'; 1 << 20];
        let kept = &line[..INPUT_CAP];
        let r = Record::from_bytes(
            1,
            "/var/log/x".into(),
            None,
            None,
            kept,
            line.len() > kept.len(),
        );
        assert!(r.truncated);
        assert_eq!(r.message.len(), MAX_MESSAGE);
        let wire = r.into_line(7);
        assert_eq!((wire.seq, wire.truncated), (7, true));
    }

    #[test]
    fn a_char_split_by_the_input_cap_never_shows() {
        // The kept input ends inside a 3-byte character: its replacement lies beyond
        // MAX_MESSAGE and is cut away with the rest.
        let mut kept = vec![b'a'; INPUT_CAP - 2];
        kept.extend_from_slice(&"€".as_bytes()[..2]);
        let (text, cut) = message_from_bytes(&kept);
        assert!(cut);
        assert!(!text.contains('\u{FFFD}'));
    }

    #[test]
    fn cut_chars_counts_characters() {
        assert_eq!(cut_chars("äöü", 2), "äö");
        assert_eq!(cut_chars("ab", 5), "ab");
        assert_eq!(cut_str("äöü", 3), "ä");
    }
}

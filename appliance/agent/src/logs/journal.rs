//! The journald source: `journalctl --output=json --follow --no-pager --all`, one JSON
//! object a line, read as [`Record`]s with the entry's `__CURSOR` as their position.
//!
//! - Start: `--after-cursor=CURSOR` when a previous run's cursor is known; otherwise
//!   `--lines=0`, so a first run ships what is logged from now on, not the whole
//!   journal (which may hold years).
//! - journalctl exiting (journald restarted, a crash) is not an error: it is started
//!   again from the last cursor, after a backoff (1 s doubling to 60 s, reset by the
//!   next entry). If it keeps exiting without an entry while given a saved cursor,
//!   the cursor is given up (with a warning) and reading starts from now. A missing
//!   `journalctl` is an error ([`JournalError::Missing`]).
//! - Fields: `__REALTIME_TIMESTAMP` (µs, journald's own clock), `MESSAGE` (a string;
//!   an array of bytes when it is binary or not UTF-8; an array of values when the
//!   field repeats, the first counts; `null` when journalctl withheld it: empty and
//!   truncated), `PRIORITY`, `_SYSTEMD_UNIT`, `SYSLOG_IDENTIFIER`, `_UID`, `_EXE`.
//!   Entries without `MESSAGE` advance the cursor but are not records. `--all` makes
//!   journalctl print fields over 4096 bytes (instead of `null`); a JSON line over
//!   [`LINE_CAP`] is skipped with a warning, and of any field only [`INPUT_CAP`] bytes
//!   are kept while parsing, so a 1 MiB message costs its line buffer and no more.
//! - Unit: `_SYSTEMD_UNIT` for services; for scopes (user sessions, where su and sudo
//!   run) and entries without one, `SYSLOG_IDENTIFIER`, which a process chooses
//!   itself. Lines that claim a login program (sshd, login, su, sudo; see
//!   [`login::Service`]) keep that unit only when journald's own fields vouch for it:
//!   the writer ran as uid 0 (`_UID`, from the socket's credentials) or is that
//!   program in a system directory (`_EXE`, e.g. `/usr/bin/su`). Otherwise the unit reads `NAME (unverified)`, and the line is
//!   shipped but is no login event: `logger -t sshd 'Accepted password for root …'` by
//!   a user forges nothing.
//!
//! Filtering ([`Filter`], applied by the caller before spooling, so that a chatty
//! machine does not flood the hub). Defaults: priority 0–6 kept (debug dropped),
//! every unit. `include_units` (when not empty) keeps only those units, then
//! `exclude_units` drops units; a pattern ending in `*` matches by prefix. Records
//! that are login events (see [`login::parse`]) are always kept, whatever the filter:
//! the hub's login events must not depend on log volume settings. Records of other
//! sources (files) are always kept.

use super::login::{self, Service};
use super::record::{cut_chars, Record, INPUT_CAP};
use crate::backoff::Backoff;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// The longest JSON line read from journalctl; longer entries are skipped.
pub const LINE_CAP: usize = 8 << 20;
/// Units and identifiers are kept to this many characters.
const MAX_UNIT: usize = 200;
/// journalctl exits this many times in a row without an entry: the cursor goes.
const CURSOR_FAILURES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{program} not found: journald logs need systemd's journalctl (or turn the journal source off)")]
    Missing { program: String },
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// Which journal records are shipped as log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Highest syslog priority kept: 6 (info) by default, i.e. debug is dropped.
    pub priority_max: u8,
    /// When not empty, only these units (or syslog identifiers) are kept.
    pub include_units: Vec<String>,
    /// These units are dropped.
    pub exclude_units: Vec<String>,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            priority_max: 6,
            include_units: Vec::new(),
            exclude_units: Vec::new(),
        }
    }
}

impl Filter {
    /// Whether `r` is shipped.
    pub fn keep(&self, r: &Record) -> bool {
        if r.source != super::JOURNAL || login::parse(r).is_some() {
            return true;
        }
        if r.priority.is_some_and(|p| p > self.priority_max) {
            return false;
        }
        let unit = r.unit.as_deref().unwrap_or("");
        let matches = |patterns: &[String]| patterns.iter().any(|p| unit_matches(p, unit));
        (self.include_units.is_empty() || matches(&self.include_units))
            && !matches(&self.exclude_units)
    }
}

fn unit_matches(pattern: &str, unit: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => unit.starts_with(prefix),
        None => unit == pattern,
    }
}

/// One journal field as journalctl prints it, at most [`INPUT_CAP`] bytes of it.
#[derive(Debug, Default, PartialEq, Eq)]
enum Field {
    #[default]
    Missing,
    /// `null`: journalctl withheld the value.
    Null,
    Bytes {
        kept: Vec<u8>,
        /// The value had more bytes than were kept.
        more: bool,
    },
}

impl Field {
    fn text(&self) -> Option<String> {
        match self {
            Field::Bytes { kept, .. } => Some(String::from_utf8_lossy(kept).into_owned()),
            _ => None,
        }
    }
}

fn capped(bytes: &[u8]) -> Field {
    let take = bytes.len().min(INPUT_CAP);
    Field::Bytes {
        kept: bytes[..take].to_vec(),
        more: bytes.len() > take,
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a journal field: a string, an array of bytes or of values, or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Field, E> {
        Ok(Field::Null)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
        Ok(capped(v.as_bytes()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Field, E> {
        Ok(capped(v.to_string().as_bytes()))
    }

    /// Bytes (`[104,105]`) or repeated values (`["a","b"]`, `[[104],[105]]`): bytes are
    /// collected up to the cap and the rest only counted; of repeated values the first
    /// is kept.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        let mut kept = Vec::new();
        let mut more = false;
        let mut first: Option<Field> = None;
        while let Some(piece) = seq.next_element::<Piece>()? {
            match piece {
                Piece::Byte(b) if kept.len() < INPUT_CAP => kept.push(b),
                Piece::Byte(_) => more = true,
                Piece::Value(f) => {
                    first.get_or_insert(f);
                }
            }
        }
        Ok(first.unwrap_or(Field::Bytes { kept, more }))
    }
}

/// An element of a field's array.
enum Piece {
    Byte(u8),
    Value(Field),
}

impl<'de> Deserialize<'de> for Piece {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Piece, D::Error> {
        struct PieceVisitor;
        impl<'de> Visitor<'de> for PieceVisitor {
            type Value = Piece;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte or a field value")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Piece, E> {
                u8::try_from(v)
                    .map(Piece::Byte)
                    .map_err(|_| E::custom("byte over 255"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Piece, E> {
                Ok(Piece::Value(Field::Null))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Piece, E> {
                Ok(Piece::Value(capped(v.as_bytes())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Piece, A::Error> {
                FieldVisitor.visit_seq(seq).map(Piece::Value)
            }
        }
        d.deserialize_any(PieceVisitor)
    }
}

/// The fields of an entry that are read; the others are skipped unparsed.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Entry {
    #[serde(rename = "__CURSOR")]
    cursor: Field,
    #[serde(rename = "__REALTIME_TIMESTAMP")]
    realtime: Field,
    #[serde(rename = "MESSAGE")]
    message: Field,
    #[serde(rename = "PRIORITY")]
    priority: Field,
    #[serde(rename = "_SYSTEMD_UNIT")]
    systemd_unit: Field,
    #[serde(rename = "SYSLOG_IDENTIFIER")]
    identifier: Field,
    #[serde(rename = "_UID")]
    uid: Field,
    #[serde(rename = "_EXE")]
    exe: Field,
}

/// One line of journalctl's output.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub cursor: Option<String>,
    /// `None` for an entry without a message.
    pub record: Option<Record>,
}

/// Parses one JSON line of `journalctl --output=json`.
pub fn parse_line(line: &[u8]) -> Result<Parsed, serde_json::Error> {
    let e: Entry = serde_json::from_slice(line)?;
    let cursor = e.cursor.text();
    let (kept, more) = match &e.message {
        Field::Missing => {
            return Ok(Parsed {
                cursor,
                record: None,
            })
        }
        // Withheld by journalctl: shipped empty, marked cut.
        Field::Null => (&[][..], true),
        Field::Bytes { kept, more } => (kept.as_slice(), *more),
    };
    let ts_us = e
        .realtime
        .text()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(super::now_us);
    let priority = e
        .priority
        .text()
        .and_then(|p| p.parse::<u8>().ok())
        .filter(|p| *p <= 7);
    let record = Record::from_bytes(
        ts_us,
        super::JOURNAL.into(),
        unit_of(&e),
        priority,
        kept,
        more,
    );
    Ok(Parsed {
        cursor,
        record: Some(record),
    })
}

/// The record's unit: see the module docs.
fn unit_of(e: &Entry) -> Option<String> {
    let short = |f: &Field| f.text().map(|t| cut_chars(&t, MAX_UNIT).to_string());
    let systemd_unit = short(&e.systemd_unit);
    let unit = match systemd_unit {
        Some(u) if !u.ends_with(".scope") => u,
        _ => short(&e.identifier).or(systemd_unit)?,
    };
    match Service::of_unit(&unit) {
        Some(service) if !vouched(service, e) => Some(format!("{unit} (unverified)")),
        _ => Some(unit),
    }
}

/// journald's own fields say the writer may speak for `service`: it ran as root, or it
/// is that program, installed where only root can put it (a copy named `sudo` in a
/// home directory is not sudo).
fn vouched(service: Service, e: &Entry) -> bool {
    const SYSTEM_DIRS: [&str; 6] = [
        "/usr/bin",
        "/usr/sbin",
        "/bin",
        "/sbin",
        "/usr/lib/openssh",
        "/usr/libexec/openssh",
    ];
    if e.uid.text().as_deref() == Some("0") {
        return true;
    }
    let Some(exe) = e.exe.text() else {
        return false;
    };
    let exe = Path::new(&exe);
    let dir_ok = exe
        .parent()
        .and_then(|d| d.to_str())
        .is_some_and(|d| SYSTEM_DIRS.contains(&d));
    let name_ok = exe
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| service.executables().contains(&n));
    dir_ok && name_ok
}

/// How one read from journalctl ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A whole line is in the buffer (without its newline).
    Line,
    /// A line longer than the cap went by; the buffer is empty.
    Overlong,
    /// The output ended (an unfinished last line is dropped).
    Eof,
}

/// Reads one line into `buf`, holding at most `cap` bytes of it.
pub async fn read_capped_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut overlong = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            buf.clear();
            return Ok(LineRead::Eof);
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        if !overlong && buf.len() + chunk.len() > cap {
            overlong = true;
            buf.clear();
        }
        if !overlong {
            buf.extend_from_slice(chunk);
        }
        let used = newline.map_or(chunk.len(), |i| i + 1);
        r.consume(used);
        if newline.is_some() {
            return Ok(if overlong {
                LineRead::Overlong
            } else {
                LineRead::Line
            });
        }
    }
}

/// A cursor as journald writes them (`s=…;i=…;b=…;m=…;t=…;x=…`); anything else in a
/// spool's positions is not handed to journalctl.
pub fn plausible_cursor(c: &str) -> bool {
    (1..=512).contains(&c.len())
        && c.contains('=')
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b';')
}

struct Running {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// An entry was read since it started.
    productive: bool,
}

/// The journal, followed.
pub struct JournalSource {
    program: PathBuf,
    cursor: Option<String>,
    running: Option<Running>,
    backoff: Backoff,
    failures: u32,
    buf: Vec<u8>,
    skipped: u64,
    directory: Option<PathBuf>,
}

impl JournalSource {
    /// Follows the journal from `cursor` (a previous run's position), or from now.
    pub fn new(cursor: Option<String>) -> JournalSource {
        JournalSource::with_program("journalctl", cursor)
    }

    /// The same with another journalctl (tests).
    pub fn with_program(program: impl Into<PathBuf>, cursor: Option<String>) -> JournalSource {
        let cursor = cursor.filter(|c| {
            let ok = plausible_cursor(c);
            if !ok {
                tracing::warn!("the saved journal cursor is malformed; reading from now");
            }
            ok
        });
        JournalSource {
            program: program.into(),
            cursor,
            running: None,
            backoff: Backoff::new(),
            failures: 0,
            buf: Vec::new(),
            skipped: 0,
            directory: None,
        }
    }

    /// Reads the journal files in `dir` (`journalctl --directory`) instead of the
    /// system journal: a container's or another root's `/var/log/journal`.
    pub fn in_directory(mut self, dir: Option<PathBuf>) -> JournalSource {
        self.directory = dir;
        self
    }

    /// The cursor of the last entry read, records or not: the position to save.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Lines skipped (over [`LINE_CAP`], or not JSON), in total.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// journalctl's arguments for the current cursor.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["--output=json", "--follow", "--no-pager", "--all"]
            .map(String::from)
            .into();
        if let Some(dir) = &self.directory {
            args.push(format!("--directory={}", dir.display()));
        }
        match &self.cursor {
            // `--follow` alone shows only the last ten entries before following, also
            // after a cursor: `--no-tail` shows every entry since it.
            Some(c) => args.extend(["--no-tail".into(), format!("--after-cursor={c}")]),
            None => args.push("--lines=0".into()),
        }
        args
    }

    /// The next record and the cursor after it.
    pub async fn next(&mut self) -> Result<(Record, String), JournalError> {
        loop {
            if self.running.is_none() {
                self.running = Some(self.spawn()?);
            }
            let Some(running) = self.running.as_mut() else {
                continue;
            };
            let read = read_capped_line(&mut running.stdout, &mut self.buf, LINE_CAP).await;
            match read {
                Ok(LineRead::Line) => {
                    if let Some(found) = self.entry() {
                        return Ok(found);
                    }
                }
                Ok(LineRead::Overlong) => {
                    self.skipped += 1;
                    tracing::warn!(cap = LINE_CAP, "a journal entry over the cap skipped");
                }
                Ok(LineRead::Eof) => self.exited(None).await,
                Err(e) => self.exited(Some(e)).await,
            }
            // One huge entry does not keep its buffer for the rest of the run.
            if self.buf.capacity() > 1 << 20 {
                self.buf = Vec::new();
            }
        }
    }

    /// The line in the buffer: a record to hand out, if it is one.
    fn entry(&mut self) -> Option<(Record, String)> {
        match parse_line(&self.buf) {
            Ok(parsed) => {
                if let Some(running) = self.running.as_mut() {
                    running.productive = true;
                }
                self.backoff.reset();
                self.failures = 0;
                if parsed.cursor.is_some() {
                    self.cursor = parsed.cursor;
                }
                let position = self.cursor.clone().unwrap_or_default();
                parsed.record.map(|r| (r, position))
            }
            Err(e) => {
                self.skipped += 1;
                tracing::warn!(error = %e, "an unreadable journalctl line skipped");
                None
            }
        }
    }

    fn spawn(&self) -> Result<Running, JournalError> {
        let program = self.program.display().to_string();
        let mut child = Command::new(&self.program)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Read when it exits: journalctl writes a line or two there, far from
            // filling the pipe.
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => JournalError::Missing {
                    program: program.clone(),
                },
                _ => JournalError::Spawn {
                    program: program.clone(),
                    source,
                },
            })?;
        let Some(stdout) = child.stdout.take() else {
            return Err(JournalError::Spawn {
                program,
                source: std::io::Error::other("no stdout pipe"),
            });
        };
        Ok(Running {
            child,
            stdout: BufReader::with_capacity(64 << 10, stdout),
            productive: false,
        })
    }

    /// journalctl's output ended: says why, waits the backoff, and lets the next read
    /// start it again.
    async fn exited(&mut self, read_error: Option<std::io::Error>) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        let _ = running.child.start_kill();
        let status = running.child.wait().await;
        let mut stderr = String::new();
        if let Some(err) = running.child.stderr.take() {
            // Bounded: journalctl's complaint is a line or two.
            let _ = err.take(4096).read_to_string(&mut stderr).await;
        }
        tracing::warn!(
            status = ?status.ok(),
            read_error = ?read_error,
            stderr = stderr.trim(),
            "journalctl stopped; starting it again"
        );
        if !running.productive && self.cursor.is_some() {
            self.failures += 1;
            if self.failures >= CURSOR_FAILURES {
                tracing::warn!("journalctl keeps failing from the saved cursor; reading from now");
                self.cursor = None;
                self.failures = 0;
            }
        }
        tokio::time::sleep(self.backoff.wait()).await;
    }
}

#[cfg(test)]
mod tests;

//! A bounded, durable, on-disk queue of items waiting for the hub, with the positions
//! of the sources they were read from.
//!
//! Layout of the directory (0700; files 0600):
//! - `seg-NNNNNNNNNNNNNNNNNNNN.jsonl`, oldest first: JSON lines, one item each
//!   (`{"seq":N,"item":…}`), every append closed by a commit line
//!   (`{"commit":{"last_seq":…,"dropped":…,"positions":{…}}}`) written in the same
//!   `write` and fsynced before [`Spool::append`] returns. Items count only once their
//!   commit line is on disk, so the positions a source resumes from always match the
//!   items spooled: after a crash nothing is spooled twice or skipped. A torn tail (a
//!   crash during the write) is cut off on open.
//! - `state.json`: what outlives deleted segments: the acknowledged (or dropped) floor,
//!   the last sequence number assigned, the drop total and the positions. Written
//!   (durably) before segments are deleted, so a crash between the two only leaves
//!   files that open skips.
//!
//! Sequence numbers start at 1, are consecutive, and are never reused, across restarts
//! too. When an append would pass the size cap the oldest segments go, unshipped items
//! and all, and their count is added to [`Spool::dropped`]; new items are never the
//! ones dropped, unless a single append is larger than the whole cap.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use watchgrid_store::durable;

/// The default size cap, in bytes.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
const STATE: &str = "state.json";
/// How an item line starts; open and peek read the sequence number from it without
/// parsing the item.
const ITEM_START: &[u8] = b"{\"seq\":";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("log spool {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("log spool {path} is unreadable: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("log spool: an item does not encode: {0}")]
    Encode(serde_json::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    /// Every item up to this sequence number is gone: acknowledged or dropped.
    floor: u64,
    /// The last sequence number assigned.
    last_seq: u64,
    dropped: u64,
    positions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Commit {
    last_seq: u64,
    dropped: u64,
    positions: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitLine {
    commit: Commit,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemLine<T> {
    seq: u64,
    item: T,
}

/// One segment file; its items are `first..=last` (none when `items` is 0).
#[derive(Debug, Clone)]
struct Segment {
    id: u64,
    path: PathBuf,
    first: u64,
    last: u64,
    items: u64,
    bytes: u64,
}

impl Segment {
    /// Items above `floor`.
    fn unacked(&self, floor: u64) -> u64 {
        if self.items == 0 || self.last <= floor {
            return 0;
        }
        self.last - floor.max(self.first - 1)
    }
}

/// The spool. Not shared between processes: the agent holds it behind a mutex.
pub struct Spool<T> {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// The last segment, open for appends; `None` after open or once it is full.
    active: Option<File>,
    state: State,
    next_id: u64,
    /// Where the last peek stopped: (segment id, seq of the line there, byte offset), so
    /// the next peek need not read the acknowledged part of the segment again.
    hint: Cell<Option<(u64, u64, u64)>>,
    _items: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Spool<T> {
    /// Opens (or creates) the spool in `dir`, capped at `max_bytes` of segment files.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Spool<T>, SpoolError> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        let mut state = read_state(&dir)?;
        let mut segments = Vec::new();
        for (id, path) in list_segments(&dir)? {
            if let Some((segment, commit)) = scan_segment(id, path)? {
                if let Some(c) = commit {
                    state.last_seq = state.last_seq.max(c.last_seq);
                    state.dropped = state.dropped.max(c.dropped);
                    state.positions = c.positions;
                }
                segments.push(segment);
            }
        }
        let next_id = segments.last().map_or(1, |s| s.id + 1);
        let mut spool = Spool {
            dir,
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(64 << 10, 8 << 20),
            segments,
            active: None,
            state,
            next_id,
            hint: Cell::new(None),
            _items: PhantomData,
        };
        // Segments a crash left behind after the state that acknowledged them.
        spool.delete_gone()?;
        Ok(spool)
    }

    /// The position recorded for `source` with the last append.
    pub fn position(&self, source: &str) -> Option<String> {
        self.state.positions.get(source).cloned()
    }

    /// Every source's position.
    pub fn positions(&self) -> &BTreeMap<String, String> {
        &self.state.positions
    }

    /// Items stored and not yet acknowledged.
    pub fn pending(&self) -> u64 {
        let floor = self.state.floor;
        self.segments.iter().map(|s| s.unacked(floor)).sum()
    }

    /// Items dropped to stay within the cap, in total, ever.
    pub fn dropped(&self) -> u64 {
        self.state.dropped
    }

    /// The size of the segment files.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// The last sequence number assigned (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.state.last_seq
    }
}

impl<T: Serialize + DeserializeOwned> Spool<T> {
    /// Stores `items` with consecutive sequence numbers after the last assigned, and
    /// the sources' positions after them, in one write that is on stable storage when
    /// this returns. Returns the first and last sequence numbers given (`None` when
    /// nothing was stored: no items, or positions only).
    pub fn append(
        &mut self,
        items: Vec<T>,
        positions: &[(String, String)],
    ) -> Result<Option<(u64, u64)>, SpoolError> {
        let moved = positions
            .iter()
            .any(|(k, v)| self.state.positions.get(k) != Some(v));
        if items.is_empty() && !moved {
            return Ok(None);
        }
        let mut encoded = Vec::with_capacity(items.len());
        for item in &items {
            encoded.push(serde_json::to_vec(item).map_err(SpoolError::Encode)?);
        }
        let mut merged = self.state.positions.clone();
        for (k, v) in positions {
            merged.insert(k.clone(), v.clone());
        }
        let keep = self.make_room(&encoded, &merged)?;
        // After make_room: dropping segments moves the floor and the drop total.
        let mut next = self.state.clone();
        next.positions = merged;
        next.dropped += (encoded.len() - keep) as u64;
        let (buf, range) = encode_batch(&encoded[encoded.len() - keep..], &mut next)?;
        self.write_batch(&buf, range)?;
        self.state = next;
        Ok(range)
    }

    /// Drops the oldest segments until the batch fits under the cap; returns how many
    /// of the batch's newest items fit (all of them, unless the batch alone is larger
    /// than the cap).
    fn make_room(
        &mut self,
        encoded: &[Vec<u8>],
        positions: &BTreeMap<String, String>,
    ) -> Result<usize, SpoolError> {
        // `{"seq":N,"item":…}\n` around each item, and the commit line.
        let sizes: Vec<u64> = encoded.iter().map(|e| e.len() as u64 + 32).collect();
        let commit: usize = 96
            + positions
                .iter()
                .map(|(k, v)| k.len() + v.len() + 6)
                .sum::<usize>();
        let mut need = sizes.iter().sum::<u64>() + commit as u64;
        let (mut n, mut total) = (0, self.bytes());
        while total + need > self.max_bytes && n < self.segments.len() {
            total -= self.segments[n].bytes;
            n += 1;
        }
        if n > 0 {
            self.drop_oldest(n)?;
        }
        // Whatever still does not fit is the batch's own oldest items.
        let mut keep = encoded.len();
        while keep > 0 && self.bytes() + need > self.max_bytes {
            need -= sizes[encoded.len() - keep];
            keep -= 1;
        }
        Ok(keep)
    }

    /// Drops the `n` oldest segments, counting their unshipped items.
    fn drop_oldest(&mut self, n: usize) -> Result<(), SpoolError> {
        let floor = self.state.floor;
        let lost: u64 = self.segments[..n].iter().map(|s| s.unacked(floor)).sum();
        let top = self.segments[..n].iter().map(|s| s.last).max().unwrap_or(0);
        tracing::warn!(
            items = lost,
            "log spool full: the oldest unshipped items dropped"
        );
        self.state.dropped += lost;
        self.state.floor = floor.max(top);
        if n == self.segments.len() {
            self.active = None;
        }
        self.delete_gone()
    }

    /// Appends the encoded batch to the active segment (a new one if there is none or
    /// it is full) and syncs it; on failure the segment is cut back.
    fn write_batch(&mut self, buf: &[u8], range: Option<(u64, u64)>) -> Result<(), SpoolError> {
        let full = self
            .segments
            .last()
            .is_none_or(|s| s.bytes >= self.segment_bytes);
        if self.active.is_none() || full {
            self.start_segment()?;
        }
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.last_mut()) else {
            return Err(io_err(&self.dir)(io::Error::other("no active segment")));
        };
        let written = file.write_all(buf).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // The next open would ignore the uncommitted tail; cut it now so later
            // appends do not follow it.
            let _ = file.set_len(seg.bytes);
            return Err(io_err(&seg.path)(e));
        }
        seg.bytes += buf.len() as u64;
        if let Some((first, last)) = range {
            if seg.items == 0 {
                seg.first = first;
            }
            seg.last = last;
            seg.items += last - first + 1;
        }
        Ok(())
    }

    fn start_segment(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join(segment_name(self.next_id));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err(&path))?;
        // The new name must be durable before anything in the file counts.
        durable::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        self.segments.push(Segment {
            id: self.next_id,
            path,
            first: 0,
            last: 0,
            items: 0,
            bytes: 0,
        });
        self.next_id += 1;
        self.active = Some(file);
        Ok(())
    }

    /// Everything up to `seq` has reached the hub: it may go. Persists the new floor
    /// and deletes the segments left with nothing to ship. A `seq` above the last
    /// assigned (a confused hub) counts as the last assigned.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        let seq = seq.min(self.state.last_seq);
        if seq <= self.state.floor {
            return Ok(());
        }
        self.state.floor = seq;
        self.delete_gone()
    }

    /// Writes the state, then deletes the oldest segments that hold nothing above the
    /// floor (the active one only once it is full): in that order, so a crash between
    /// leaves files that open deletes again.
    fn delete_gone(&mut self) -> Result<(), SpoolError> {
        self.write_state()?;
        let floor = self.state.floor;
        let active = self.active.is_some();
        let count = self.segments.len();
        let mut gone = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            let filling = active && i + 1 == count && seg.bytes < self.segment_bytes;
            if seg.unacked(floor) > 0 || filling {
                break;
            }
            durable::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            gone += 1;
        }
        if gone == count {
            self.active = None;
        }
        self.segments.drain(..gone);
        Ok(())
    }

    fn write_state(&self) -> Result<(), SpoolError> {
        let path = self.dir.join(STATE);
        let json = serde_json::to_vec(&self.state).map_err(SpoolError::Encode)?;
        durable::write_file(&path, &json, 0o600).map_err(io_err(&path))
    }

    /// The oldest unacknowledged items, at most `max_items` and about `max_bytes` of
    /// encoded items (always at least one when any is pending).
    pub fn peek(&self, max_items: usize, max_bytes: usize) -> Result<Vec<(u64, T)>, SpoolError> {
        let floor = self.state.floor;
        let mut out = Vec::new();
        let mut bytes = 0;
        for seg in self.segments.iter().filter(|s| s.unacked(floor) > 0) {
            let (mut offset, mut next) = match self.hint.get() {
                Some((id, seq, offset)) if id == seg.id && seq <= floor + 1 => (offset, seq),
                _ => (0, seg.first),
            };
            let mut file = File::open(&seg.path).map_err(io_err(&seg.path))?;
            file.seek(SeekFrom::Start(offset))
                .map_err(io_err(&seg.path))?;
            let mut reader = BufReader::new(file.take(seg.bytes - offset));
            let mut line = Vec::new();
            loop {
                if out.len() >= max_items {
                    self.hint.set(Some((seg.id, next, offset)));
                    return Ok(out);
                }
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(io_err(&seg.path))?;
                if n == 0 {
                    break;
                }
                let Some(seq) = item_seq(&line) else {
                    offset += n as u64;
                    continue;
                };
                if seq > floor && !out.is_empty() && bytes + n > max_bytes {
                    self.hint.set(Some((seg.id, seq, offset)));
                    return Ok(out);
                }
                offset += n as u64;
                next = seq + 1;
                if seq <= floor {
                    continue;
                }
                match serde_json::from_slice::<ItemLine<T>>(&line) {
                    Ok(l) => {
                        bytes += n;
                        out.push((l.seq, l.item));
                    }
                    Err(e) => {
                        tracing::warn!(segment = %seg.path.display(), seq, error = %e, "unreadable spool item skipped")
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The bytes of one append and the seqs it gives.
type Encoded = (Vec<u8>, Option<(u64, u64)>);

/// The lines of one append: the items, numbered after `next.last_seq`, and the commit
/// line; `next` is updated to what the commit says.
fn encode_batch(encoded: &[Vec<u8>], next: &mut State) -> Result<Encoded, SpoolError> {
    let mut buf = Vec::with_capacity(encoded.iter().map(|e| e.len() + 32).sum::<usize>() + 256);
    let first = next.last_seq + 1;
    for (i, item) in encoded.iter().enumerate() {
        // Written by hand around the encoded item so the seq is easy to find.
        let _ = write!(buf, "{{\"seq\":{},\"item\":", first + i as u64);
        buf.extend_from_slice(item);
        buf.extend_from_slice(b"}\n");
    }
    next.last_seq += encoded.len() as u64;
    let commit = CommitLine {
        commit: Commit {
            last_seq: next.last_seq,
            dropped: next.dropped,
            positions: next.positions.clone(),
        },
    };
    serde_json::to_writer(&mut buf, &commit).map_err(SpoolError::Encode)?;
    buf.push(b'\n');
    let range = (!encoded.is_empty()).then_some((first, next.last_seq));
    Ok((buf, range))
}

fn create_private_dir(dir: &Path) -> Result<(), SpoolError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        durable::sync_dir(dir.parent().unwrap_or(Path::new("/"))).map_err(io_err(dir))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

fn read_state(dir: &Path) -> Result<State, SpoolError> {
    let path = dir.join(STATE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SpoolError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn segment_name(id: u64) -> String {
    format!("seg-{id:020}.jsonl")
}

/// The segment files, oldest first.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_prefix("seg-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            out.push((id, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(id, _)| *id);
    Ok(out)
}

/// The seq of an item line, read from its fixed start.
fn item_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(ITEM_START)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Reads a segment: its committed items and its last commit. The part after the last
/// commit line (a torn append) is cut off; a segment with nothing committed is removed.
fn scan_segment(id: u64, path: PathBuf) -> Result<Option<(Segment, Option<Commit>)>, SpoolError> {
    let file = File::open(&path).map_err(io_err(&path))?;
    let mut reader = BufReader::new(file);
    let mut seg = Segment {
        id,
        path,
        first: 0,
        last: 0,
        items: 0,
        bytes: 0,
    };
    let (mut batch, mut commit, mut offset) = (Vec::new(), None, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(io_err(&seg.path))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        offset += n as u64;
        if let Some(seq) = item_seq(&line) {
            batch.push(seq);
        } else if let Ok(c) = serde_json::from_slice::<CommitLine>(&line) {
            commit_batch(&mut seg, &mut batch, &c.commit);
            seg.bytes = offset;
            commit = Some(c.commit);
        } else {
            tracing::warn!(segment = %seg.path.display(), offset, "unreadable spool line skipped");
        }
    }
    let len = reader
        .get_ref()
        .metadata()
        .map_err(io_err(&seg.path))?
        .len();
    if seg.bytes == 0 {
        durable::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        return Ok(None);
    }
    if len > seg.bytes {
        tracing::warn!(segment = %seg.path.display(), "torn tail of the log spool cut off");
        let f = OpenOptions::new()
            .write(true)
            .open(&seg.path)
            .map_err(io_err(&seg.path))?;
        f.set_len(seg.bytes).map_err(io_err(&seg.path))?;
        f.sync_all().map_err(io_err(&seg.path))?;
    }
    Ok(Some((seg, commit)))
}

/// Adds the items of one committed append to the segment's range.
fn commit_batch(seg: &mut Segment, batch: &mut Vec<u64>, commit: &Commit) {
    for seq in batch.drain(..) {
        if seg.items == 0 {
            seg.first = seq;
        }
        seg.last = seq;
        seg.items += 1;
    }
    if seg.items > 0 && seg.last != commit.last_seq {
        tracing::warn!(segment = %seg.path.display(), "log spool commit does not match its items");
    }
}

#[cfg(test)]
mod tests;

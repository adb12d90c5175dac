//! A `--log-file PATH` source: follows a plain text log file as it grows, across
//! rotation, and resumes exactly where a previous run stopped.
//!
//! - Lines end at `\n` (a trailing `\r` is dropped); a last line without its newline
//!   waits for it. Of a longer line only the first [`INPUT_CAP`] bytes are kept in
//!   memory and it ships truncated.
//! - The position is `INODE:OFFSET`, the byte just after the last line handed out. A
//!   restart with it reads the next line, whatever happened since: the file grew (read
//!   on), it was truncated (read from 0), or it was renamed away and replaced (the old
//!   inode is looked for beside it, e.g. `auth.log.1`, and finished first; the new file
//!   is then read from 0).
//! - Without a position (the first run) the file is read from its start: it was named
//!   explicitly, so what it holds is wanted. (journald, in contrast, starts from now.)
//! - Rotation by rename: once the path names another file, the old one is read to its
//!   end one poll later (a writer may still be finishing its last line), its unfinished
//!   last line if any is handed out, then the new file is read from 0.
//! - copytruncate: the file became shorter than what was read, so it starts over at 0.
//!   (Lines written between logrotate's copy and its truncation are lost; that is
//!   copytruncate's own race.)
//!
//! Appends are found by polling every [`POLL`]. Reads are plain blocking reads of at
//! most [`CHUNK`] bytes from a local file, short enough for the async runtime.
//!
//! Records: `ts_us` = when the line was read, `source` = the absolute path, no unit or
//! priority.

use super::record::{Record, INPUT_CAP};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a file at its end is looked at again.
pub const POLL: Duration = Duration::from_millis(250);
/// The most read from the file at once.
pub const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("log file {path}: {source}")]
    Io { path: String, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `INODE:OFFSET`.
pub fn format_position(inode: u64, offset: u64) -> String {
    format!("{inode}:{offset}")
}

pub fn parse_position(s: &str) -> Option<(u64, u64)> {
    let (inode, offset) = s.split_once(':')?;
    Some((inode.parse().ok()?, offset.parse().ok()?))
}

/// Where to start when the file is (re)opened.
#[derive(Debug, Clone, Copy)]
enum Start {
    Beginning,
    Resume { inode: u64, offset: u64 },
}

/// The file being read.
struct Reading {
    file: File,
    inode: u64,
    /// Just after the last line handed out.
    committed: u64,
    /// How far the file has been read.
    read_to: u64,
    chunk: Vec<u8>,
    at: usize,
    /// The current unfinished line: its first bytes (up to INPUT_CAP) and full length.
    line: Vec<u8>,
    line_len: u64,
    /// The path named another file at the last look.
    rotated: bool,
}

pub struct FileSource {
    path: PathBuf,
    name: String,
    start: Start,
    reading: Option<Reading>,
}

impl FileSource {
    /// Follows `path`, from `position` (a previous run's) or from the start.
    pub fn new(path: impl Into<PathBuf>, position: Option<&str>) -> FileSource {
        let path = path.into();
        let name = std::path::absolute(&path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string();
        let start = match position.and_then(parse_position) {
            Some((inode, offset)) => Start::Resume { inode, offset },
            None => Start::Beginning,
        };
        FileSource {
            path,
            name,
            start,
            reading: None,
        }
    }

    /// What records name as their source: the absolute path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position after the last line handed out (`None` before the file was opened).
    pub fn position(&self) -> Option<String> {
        match (&self.reading, self.start) {
            (Some(r), _) => Some(format_position(r.inode, r.committed)),
            (None, Start::Resume { inode, offset }) => Some(format_position(inode, offset)),
            (None, Start::Beginning) => None,
        }
    }

    /// The next line and the position after it; waits (polling) for one.
    pub async fn next(&mut self) -> Result<(Record, String), FileError> {
        loop {
            if let Some(found) = self.poll_line()? {
                return Ok(found);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The next complete line, if there is one now.
    pub fn poll_line(&mut self) -> Result<Option<(Record, String)>, FileError> {
        if self.reading.is_none() && !self.open()? {
            return Ok(None);
        }
        let Some(r) = self.reading.as_mut() else {
            return Ok(None);
        };
        if let Some(bytes) = r.next_line(&self.path)? {
            return Ok(Some(self.record(bytes)));
        }
        self.at_end()
    }

    fn record(&self, (kept, more): (Vec<u8>, bool)) -> (Record, String) {
        let record = Record::from_bytes(
            crate::logs::now_us(),
            self.name.clone(),
            None,
            None,
            &kept,
            more,
        );
        let position = self.position().unwrap_or_default();
        (record, position)
    }
}

impl FileSource {
    /// Opens the file where the start says; false when it does not exist (yet).
    fn open(&mut self) -> Result<bool, FileError> {
        let (file, meta) = match open_with_meta(&self.path) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        let at = |len: u64, offset: u64| if len >= offset { offset } else { 0 };
        let (file, inode, offset) = match self.start {
            Start::Beginning => (file, meta.ino(), 0),
            Start::Resume { inode, offset } if inode == meta.ino() => {
                (file, inode, at(meta.len(), offset))
            }
            // Rotated while the agent was stopped: finish the old file first.
            Start::Resume { inode, offset } => match find_inode(&self.path, inode)? {
                Some((old, len)) => (old, inode, at(len, offset)),
                None => (file, meta.ino(), 0),
            },
        };
        self.reading = Some(Reading::at(file, inode, offset, &self.path)?);
        // Files that replace this one are new: read from their start.
        self.start = Start::Beginning;
        Ok(true)
    }

    /// At the end of the file being read: has it been truncated or replaced?
    fn at_end(&mut self) -> Result<Option<(Record, String)>, FileError> {
        let Some(r) = self.reading.as_mut() else {
            return Ok(None);
        };
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            // Renamed away; the new file is not there yet.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        if meta.ino() == r.inode {
            if meta.len() < r.read_to {
                tracing::info!(path = %self.name, "log file truncated; reading it from the start");
                r.restart(&self.path)?;
            }
            return Ok(None);
        }
        if !r.rotated {
            // Give the writer one poll to finish with the old file.
            r.rotated = true;
            return Ok(None);
        }
        let last = r.take_unfinished();
        self.reading = None;
        self.open()?;
        Ok(last.map(|bytes| self.record(bytes)))
    }
}

fn open_with_meta(path: &Path) -> io::Result<(File, fs::Metadata)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta))
}

/// The file beside `path` whose name starts with `path`'s (`auth.log.1`,
/// `auth.log-20240301`) and whose inode is `inode`: where a rotated file went.
fn find_inode(path: &Path, inode: u64) -> Result<Option<(File, u64)>, FileError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = name.as_encoded_bytes();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let Ok(entry) = entry else { continue };
        let other = entry.file_name();
        let other = other.as_encoded_bytes();
        if other.len() <= name.len() || !other.starts_with(name) {
            continue;
        }
        let found = entry.path();
        match open_with_meta(&found) {
            Ok((file, meta)) if meta.ino() == inode && meta.is_file() => {
                return Ok(Some((file, meta.len())));
            }
            _ => {}
        }
    }
    Ok(None)
}

impl Reading {
    fn at(mut file: File, inode: u64, offset: u64, path: &Path) -> Result<Reading, FileError> {
        file.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
        Ok(Reading {
            file,
            inode,
            committed: offset,
            read_to: offset,
            chunk: Vec::new(),
            at: 0,
            line: Vec::new(),
            line_len: 0,
            rotated: false,
        })
    }

    /// The next complete line: its first bytes, and whether there were more.
    fn next_line(&mut self, path: &Path) -> Result<Option<(Vec<u8>, bool)>, FileError> {
        loop {
            if self.at < self.chunk.len() {
                let avail = self.chunk.len() - self.at;
                match self.chunk[self.at..].iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.keep(i);
                        self.at += i + 1;
                        return Ok(Some(self.finish_line(1)));
                    }
                    None => {
                        self.keep(avail);
                        self.at += avail;
                    }
                }
            }
            self.chunk.resize(CHUNK, 0);
            let n = loop {
                match self.file.read(&mut self.chunk) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other.map_err(io_err(path))?,
                }
            };
            self.chunk.truncate(n);
            self.at = 0;
            self.read_to += n as u64;
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// Adds the next `n` bytes of the chunk to the current line, keeping at most
    /// INPUT_CAP of it.
    fn keep(&mut self, n: usize) {
        let take = n.min(INPUT_CAP.saturating_sub(self.line.len()));
        self.line
            .extend_from_slice(&self.chunk[self.at..self.at + take]);
        self.line_len += n as u64;
    }

    /// Ends the current line (`newline`: the bytes of its terminator).
    fn finish_line(&mut self, newline: u64) -> (Vec<u8>, bool) {
        let more = self.line_len > self.line.len() as u64;
        let mut kept = std::mem::take(&mut self.line);
        if !more && kept.last() == Some(&b'\r') {
            kept.pop();
        }
        self.committed += self.line_len + newline;
        self.line_len = 0;
        (kept, more)
    }

    /// The last line of a file that will not grow any more, newline or not.
    fn take_unfinished(&mut self) -> Option<(Vec<u8>, bool)> {
        (self.line_len > 0).then(|| self.finish_line(0))
    }

    fn restart(&mut self, path: &Path) -> Result<(), FileError> {
        self.file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
        self.chunk.clear();
        self.at = 0;
        self.line.clear();
        self.line_len = 0;
        self.committed = 0;
        self.read_to = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

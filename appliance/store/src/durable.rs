//! Durability on power loss, not only on process death.
//!
//! sled's `flush` writes its log with `sync_file_range`, which neither commits the file
//! system's metadata (the new size of an appended file, its new blocks) nor flushes the
//! disk's write cache; an append acknowledged after it can vanish when power goes before
//! ext4's next journal commit. [`DiskSync`] finishes the job with `syncfs(2)` on the data
//! directory's file system: data, metadata and the journal of every sled file (the log,
//! blobs, snapshots, and their directory entries), then a cache flush.
//!
//! Files outside the store go through [`write_file`] (temporary file, fsync, rename,
//! fsync of the directory) and [`remove_file`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Called with the duration of every sync (the cost of durability, for metrics).
pub type SyncObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// Makes everything written to one file system so far durable.
pub struct DiskSync {
    dir: File,
    observer: OnceLock<SyncObserver>,
}

impl DiskSync {
    /// A handle on the file system that holds `dir`.
    pub fn open(dir: &Path) -> io::Result<DiskSync> {
        Ok(DiskSync {
            dir: File::open(dir)?,
            observer: OnceLock::new(),
        })
    }

    /// Returns once every write to the file system before the call is on stable storage.
    pub fn sync(&self) -> io::Result<()> {
        let started = Instant::now();
        // SAFETY: syncfs only reads the descriptor, which `self.dir` keeps open.
        let rc = unsafe { libc::syncfs(self.dir.as_raw_fd()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(observe) = self.observer.get() {
            observe(started.elapsed());
        }
        Ok(())
    }

    /// Sets the function told how long each sync took; only the first call counts.
    pub fn observe(&self, observer: SyncObserver) {
        let _ = self.observer.set(observer);
    }
}

/// Replaces `path` with `contents` (file mode `mode`) so that after a power cut the file
/// holds either the old or the new contents, never a torn or empty one: written to a
/// temporary file beside it, fsynced, renamed over it, and the directory fsynced.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent(path);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    // A temporary file left by a crash is ours to replace.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Removes `path` and makes the removal durable; a missing file is not an error.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Fsyncs a directory, so the names created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_file_replaces_whole_and_keeps_the_mode() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("key");
        write_file(&path, b"old", 0o600)?;
        // A temporary file a crash left behind does not block the next write.
        fs::write(dir.path().join("key.tmp"), b"torn")?;
        write_file(&path, b"new", 0o600)?;
        assert_eq!(fs::read(&path)?, b"new");
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        assert!(!dir.path().join("key.tmp").exists());
        Ok(())
    }

    #[test]
    fn write_file_does_not_follow_a_planted_symlink() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let victim = dir.path().join("victim");
        fs::write(&victim, b"untouched")?;
        std::os::unix::fs::symlink(&victim, dir.path().join("key.tmp"))?;
        write_file(&dir.path().join("key"), b"secret", 0o600)?;
        assert_eq!(fs::read(&victim)?, b"untouched");
        Ok(())
    }

    #[test]
    fn sync_reports_its_cost_and_remove_file_tolerates_absence() -> io::Result<()> {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir()?;
        let sync = DiskSync::open(dir.path())?;
        let seen = Arc::new(AtomicU32::new(0));
        let counter = seen.clone();
        sync.observe(Box::new(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        }));
        sync.sync()?;
        sync.sync()?;
        assert_eq!(seen.load(Ordering::Relaxed), 2);
        remove_file(&dir.path().join("absent"))?;
        Ok(())
    }
}

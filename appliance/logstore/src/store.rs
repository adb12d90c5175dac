//! The open store: the index, its one writer, and ingest with group commit.

use crate::commit::{Accepted, Batch, Outcome, Payload, State};
use crate::error::lock;
use crate::schema::{self, Fields};
use crate::{ingest, LogLine, LogStoreError, Retention};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use tantivy::directory::MmapDirectory;
use tantivy::indexer::{IndexWriterOptions, LogMergePolicy};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument};
use watchgrid_store::durable::{self, SyncObserver};

/// Memory the indexing thread fills before it writes a segment on its own.
const WRITER_MEMORY: usize = 64 << 20;
/// Segments above this many lines are no longer merged with others, so a merge (and the
/// rewrite a retention delete forces) never copies more than a few of these.
pub(crate) const MAX_MERGE_DOCS: usize = 250_000;

/// The hub's log store; see the crate docs for its contract. `Send + Sync`: share it in
/// an `Arc`. Calls block on disk (ingest waits for an fsync, search reads the index):
/// call them from `tokio::task::spawn_blocking`.
pub struct LogStore {
    pub(crate) fields: Fields,
    pub(crate) reader: IndexReader,
    /// Held by whoever commits: a group committer, retention, or a device removal.
    pub(crate) writer: Mutex<IndexWriter>,
    pub(crate) state: Mutex<State>,
    /// The last reload after a commit failed; the next search retries it.
    pub(crate) stale: AtomicBool,
    /// The last commit is in the index but its sync failed (see `ensure_synced`).
    unsynced: AtomicBool,
    pub(crate) dir: PathBuf,
    pub(crate) retention: Mutex<Retention>,
    syncs: OnceLock<SyncObserver>,
}

impl LogStore {
    /// Opens (creating, mode 0700) the store in `dir`, normally `DATA_DIR/logs`.
    pub fn open(dir: &Path, retention: Retention) -> Result<LogStore, LogStoreError> {
        prepare_dir(dir)?;
        let (schema, fields) = schema::schema();
        let mmap = MmapDirectory::open(dir).map_err(|e| LogStoreError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let index = Index::open_or_create(mmap, schema).map_err(|e| incompatible(dir, e))?;
        schema::register_analyzer(&index);
        let payload = Payload::parse(index.load_metas()?.payload.as_deref()).map_err(|reason| {
            LogStoreError::Incompatible {
                path: dir.display().to_string(),
                reason,
            }
        })?;
        let writer = open_writer(&index, dir)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(LogStore {
            fields,
            reader,
            writer: Mutex::new(writer),
            state: Mutex::new(State::new(&payload)),
            stale: AtomicBool::new(false),
            unsynced: AtomicBool::new(false),
            dir: dir.to_path_buf(),
            retention: Mutex::new(retention),
            syncs: OnceLock::new(),
        })
    }

    /// Stores the lines of `device_id` whose `seq` is above the device's acknowledged
    /// sequence and returns the new acknowledged sequence (the highest stored, or the
    /// old one when every line was a duplicate), once they are on stable storage.
    ///
    /// Lines may come in any order and repeat a sequence (the first occurrence is kept).
    /// Sequence 0 is never above an acknowledgement, so it is never stored: agents
    /// number from 1. A line whose `ts_us` is 0 or more than a day ahead of `now_us` is
    /// stored with `ts_us = now_us` ([`ingest::normalize_ts`]); `received_at_us` is
    /// `now_us`. A line beyond [`LogLine`]'s limits fails the whole call with
    /// [`LogStoreError::BadInput`] before anything is stored.
    pub fn ingest(
        &self,
        device_id: &str,
        lines: &[LogLine],
        now_us: u64,
    ) -> Result<u64, LogStoreError> {
        let sorted = ingest::in_seq_order(device_id, lines)?;
        let floor = lock(&self.state)?.durable(device_id);
        // Documents are built outside the lock; only lines above the durable sequence
        // can still be new, so resends cost little.
        let docs: Vec<(u64, TantivyDocument)> = sorted
            .into_iter()
            .filter(|l| l.seq > floor)
            .map(|l| {
                let mut line = l.clone();
                line.ts_us = ingest::normalize_ts(l.ts_us, now_us);
                (
                    l.seq,
                    schema::to_doc(&self.fields, device_id, &line, now_us),
                )
            })
            .collect();
        let Accepted { acked, wait } =
            lock(&self.state)?.accept(device_id, docs, self.fields.line_id);
        match wait {
            Some(outcome) => self.wait_durable(&outcome)?,
            None => self.ensure_synced()?,
        }
        Ok(acked)
    }

    /// The durable acknowledged sequence of a device (0 for one never seen).
    pub fn acked(&self, device_id: &str) -> Result<u64, LogStoreError> {
        Ok(lock(&self.state)?.durable(device_id))
    }

    /// Lines stored (and not deleted): a count the index keeps, cheap.
    pub fn line_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Bytes the store takes on disk (its files; deleted lines count until a merge
    /// rewrites their segment).
    pub fn size_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }

    /// The limits the next [`LogStore::enforce_retention`] applies.
    pub fn set_retention(&self, retention: Retention) {
        if let Ok(mut r) = lock(&self.retention) {
            *r = retention;
        }
    }

    /// Reports the duration of every sync that makes a commit durable; only the first
    /// call counts.
    pub fn observe_syncs(&self, observer: SyncObserver) {
        let _ = self.syncs.set(observer);
    }

    /// Returns once the commit carrying `outcome`'s batch has ended, committing every
    /// pending batch itself when no one else is.
    fn wait_durable(&self, outcome: &Outcome) -> Result<(), LogStoreError> {
        if outcome.get().is_none() {
            let mut writer = lock(&self.writer)?;
            // The previous holder may have committed our batch while we waited.
            if outcome.get().is_none() {
                self.commit(&mut writer, |_| Ok(()))?;
            }
        }
        match outcome.get() {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(LogStoreError::NotStored(why.clone())),
            // Every pending batch is drained under the writer lock, so ours was.
            None => Err(LogStoreError::NotStored(
                "the commit skipped the batch".into(),
            )),
        }
    }

    /// An acknowledgement that waits for no commit is still only given once the last
    /// commit is durable: after a failed sync the lines are in the index (and skipped as
    /// duplicates when resent) but not known to be on disk until a sync succeeds.
    fn ensure_synced(&self) -> Result<(), LogStoreError> {
        if self.unsynced.load(Ordering::Acquire) {
            let _writer = lock(&self.writer)?;
            if self.unsynced.load(Ordering::Acquire) {
                self.sync()?;
                self.unsynced.store(false, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Commits every pending batch plus whatever `also` does with the writer (deletes),
    /// with the acknowledged sequences as the commit's payload, then makes it durable.
    pub(crate) fn commit(
        &self,
        writer: &mut IndexWriter,
        also: impl FnOnce(&IndexWriter) -> Result<(), LogStoreError>,
    ) -> Result<(), LogStoreError> {
        let (mut batches, payload) = lock(&self.state)?.drain();
        if let Err(e) = write_commit(writer, &mut batches, &payload, also) {
            // Nothing of a failed commit may stay in the writer for the next one.
            let rolled = writer.rollback();
            let why = e.to_string();
            let mut st = lock(&self.state)?;
            settle(batches, &Err(why.clone()));
            st.failed(&why);
            rolled?;
            return Err(e);
        }
        self.reload();
        let synced = self.sync();
        let mut st = lock(&self.state)?;
        // Committed in the index whether or not the sync worked: resends are duplicates.
        st.committed(&payload);
        self.unsynced.store(synced.is_err(), Ordering::Release);
        match synced {
            Ok(()) => {
                settle(batches, &Ok(()));
                Ok(())
            }
            Err(e) => {
                settle(batches, &Err(e.to_string()));
                Err(e)
            }
        }
    }

    /// tantivy fdatasyncs each new file and the directory before it writes its meta
    /// file, but renames the new meta file into place without syncing the directory
    /// again: until this fsync a power cut could bring back the previous commit.
    pub(crate) fn sync(&self) -> Result<(), LogStoreError> {
        let started = Instant::now();
        durable::sync_dir(&self.dir).map_err(|source| LogStoreError::Io {
            path: self.dir.display().to_string(),
            source,
        })?;
        if let Some(observe) = self.syncs.get() {
            observe(started.elapsed());
        }
        Ok(())
    }

    /// Makes the last commit visible to searches.
    pub(crate) fn reload(&self) {
        let failed = self.reader.reload().is_err();
        self.stale.store(failed, Ordering::Release);
    }
}

fn write_commit(
    writer: &mut IndexWriter,
    batches: &mut [Batch],
    payload: &Payload,
    also: impl FnOnce(&IndexWriter) -> Result<(), LogStoreError>,
) -> Result<(), LogStoreError> {
    for b in batches {
        for d in std::mem::take(&mut b.docs) {
            writer.add_document(d)?;
        }
    }
    also(writer)?;
    let text = serde_json::to_string(payload)
        .map_err(|e| LogStoreError::NotStored(format!("payload: {e}")))?;
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&text);
    prepared.commit()?;
    Ok(())
}

fn settle(batches: Vec<Batch>, outcome: &Result<(), String>) {
    for b in batches {
        let _ = b.done.set(outcome.clone());
    }
}

fn open_writer(index: &Index, dir: &Path) -> Result<IndexWriter, LogStoreError> {
    // One indexing thread: each commit then writes one segment, and the other core is
    // left to callers and searches. One merge thread, for the same reason.
    let options = IndexWriterOptions::builder()
        .memory_budget_per_thread(WRITER_MEMORY)
        .num_worker_threads(1)
        .num_merge_threads(1)
        .build();
    let writer = index.writer_with_options(options).map_err(|e| match e {
        tantivy::TantivyError::LockFailure(..) => LogStoreError::Locked(dir.to_path_buf()),
        other => LogStoreError::Index(other),
    })?;
    let mut policy = LogMergePolicy::default();
    policy.set_max_docs_before_merge(MAX_MERGE_DOCS);
    writer.set_merge_policy(Box::new(policy));
    Ok(writer)
}

fn incompatible(dir: &Path, e: tantivy::TantivyError) -> LogStoreError {
    match e {
        tantivy::TantivyError::SchemaError(reason) => LogStoreError::Incompatible {
            path: dir.display().to_string(),
            reason,
        },
        other => LogStoreError::Index(other),
    }
}

/// Creates `dir` mode 0700, or checks that an existing one is private (SPEC §2).
fn prepare_dir(dir: &Path) -> Result<(), LogStoreError> {
    let io = |source| LogStoreError::Io {
        path: dir.display().to_string(),
        source,
    };
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        // The new directory's own entry must survive a power cut with what goes in it.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            durable::sync_dir(parent).map_err(io)?;
        }
    }
    let mode = fs::metadata(dir).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(LogStoreError::Permissions {
            path: dir.display().to_string(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

/// Bytes of the files in `dir` (the index is flat); unreadable entries count 0.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

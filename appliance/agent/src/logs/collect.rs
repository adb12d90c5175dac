//! Reading the sources into the spool: one task per source hands `(record, position)`
//! to one collector, which keeps what the filter ships and appends it to the spool in
//! batches with every source's position after them (one durable write per batch).
//! Sources resume from the spool's positions, so a crash spools nothing twice.

use super::file::FileSource;
use super::journal::{Filter, JournalSource};
use super::record::Record;
use super::spool::{Spool, SpoolError};
use super::{LogSources, JOURNAL};
use crate::backoff::Backoff;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The spool, shared by the collector, the shipper and the heartbeat.
pub type SharedSpool = Arc<Mutex<Spool<Record>>>;

/// A batch goes to the spool after this long…
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// …or once it holds this many records.
const FLUSH_RECORDS: usize = 1000;
/// Records in flight between the sources and the collector; a full channel makes the
/// sources wait (they are followed, not buffered without bound).
const CHANNEL: usize = 4096;

/// One record read, with the position of its source after it.
type Read = (Record, String, String);

pub fn lock(spool: &SharedSpool) -> std::sync::MutexGuard<'_, Spool<Record>> {
    // Every spool method leaves it consistent on disk before it returns.
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

/// Follows every configured source until the process stops.
pub async fn run(sources: LogSources, spool: SharedSpool) {
    let (tx, rx) = mpsc::channel(CHANNEL);
    if sources.journal {
        let cursor = lock(&spool).position(JOURNAL);
        let source = JournalSource::new(cursor).in_directory(sources.journal_directory.clone());
        tokio::spawn(follow_journal(source, tx.clone()));
    }
    for path in &sources.files {
        let name = FileSource::new(path, None).name().to_string();
        let position = lock(&spool).position(&name);
        tokio::spawn(follow_file(
            FileSource::new(path, position.as_deref()),
            tx.clone(),
        ));
    }
    drop(tx);
    collect(rx, sources.filter(), spool).await;
}

async fn follow_journal(mut source: JournalSource, tx: mpsc::Sender<Read>) {
    loop {
        match source.next().await {
            Ok((record, cursor)) => {
                if tx
                    .send((record, JOURNAL.to_string(), cursor))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                // journalctl missing or not startable: say so, and look again later
                // (a package install fixes it without restarting the agent).
                tracing::error!(error = %e, "the journal source is not running");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

async fn follow_file(mut source: FileSource, tx: mpsc::Sender<Read>) {
    let name = source.name().to_string();
    let mut backoff = Backoff::new();
    loop {
        match source.next().await {
            Ok((record, position)) => {
                backoff.reset();
                if tx.send((record, name.clone(), position)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading a log file; trying again");
                tokio::time::sleep(backoff.wait()).await;
            }
        }
    }
}

/// Batches what the sources read into the spool.
async fn collect(mut rx: mpsc::Receiver<Read>, filter: Filter, spool: SharedSpool) {
    let mut batch = Batch::default();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            read = rx.recv() => match read {
                Some((record, source, position)) => {
                    batch.add(&filter, record, source, position);
                    if batch.records.len() >= FLUSH_RECORDS {
                        batch = flush(batch, &spool).await;
                    }
                }
                None => {
                    flush(batch, &spool).await;
                    return;
                }
            },
            _ = tick.tick() => batch = flush(batch, &spool).await,
        }
    }
}

#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    positions: BTreeMap<String, String>,
}

impl Batch {
    /// Keeps `record` if the filter ships it; the position moves either way, so a
    /// dropped record is not read again after a restart.
    fn add(&mut self, filter: &Filter, record: Record, source: String, position: String) {
        if filter.keep(&record) {
            self.records.push(record);
        }
        if !position.is_empty() {
            self.positions.insert(source, position);
        }
    }
}

/// Appends `batch` (off the async threads: the append waits for the disk). On an
/// error the batch is kept and tried again at the next flush: the sources' positions
/// have not moved on disk, so nothing is lost and nothing is read twice.
async fn flush(batch: Batch, spool: &SharedSpool) -> Batch {
    if batch.records.is_empty() && batch.positions.is_empty() {
        return batch;
    }
    let spool = spool.clone();
    let appended = tokio::task::spawn_blocking(move || {
        let positions: Vec<(String, String)> = batch.positions.clone().into_iter().collect();
        let result = lock(&spool).append(batch.records.clone(), &positions);
        (batch, result)
    })
    .await;
    match appended {
        Ok((_, Ok(_))) => Batch::default(),
        Ok((batch, Err(e))) => {
            report(&e);
            batch
        }
        Err(e) => {
            tracing::error!(error = %e, "the spool append task failed");
            Batch::default()
        }
    }
}

fn report(e: &SpoolError) {
    tracing::error!(error = %e, "spooling log lines; keeping them in memory and trying again");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn shared(dir: &std::path::Path, max: u64) -> SharedSpool {
        Arc::new(Mutex::new(
            Spool::open(dir.join("spool"), max).expect("spool"),
        ))
    }

    async fn wait_for(spool: &SharedSpool, n: u64) {
        for _ in 0..200 {
            if lock(spool).last_seq() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the spool holds {} of {n} lines", lock(spool).last_seq());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_followed_file_reaches_the_spool_once_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("app.log");
        let mut f = std::fs::File::create(&log).expect("create");
        writeln!(f, "one\ntwo").expect("write");
        let sources = LogSources {
            journal: false,
            files: vec![log.clone()],
            ..LogSources::default()
        };
        let spool = shared(dir.path(), 1 << 20);
        let task = tokio::spawn(run(sources.clone(), spool.clone()));
        wait_for(&spool, 2).await;
        task.abort();
        let _ = task.await;
        drop(spool);

        writeln!(f, "three").expect("write");
        let spool = shared(dir.path(), 1 << 20);
        let task = tokio::spawn(run(sources, spool.clone()));
        wait_for(&spool, 3).await;
        // One more line would show that the restart read a line again.
        tokio::time::sleep(FLUSH_EVERY * 3).await;
        task.abort();
        let got: Vec<String> = lock(&spool)
            .peek(10, 1 << 20)
            .expect("peek")
            .into_iter()
            .map(|(_, r)| r.message)
            .collect();
        assert_eq!(got, ["one", "two", "three"]);
    }

    #[test]
    fn a_filtered_record_moves_the_position_but_is_not_kept() {
        let filter = Filter::default();
        let mut batch = Batch::default();
        let debug = Record::from_bytes(
            1,
            JOURNAL.into(),
            Some("x.service".into()),
            Some(7),
            b"d",
            false,
        );
        let info = Record::from_bytes(
            2,
            JOURNAL.into(),
            Some("x.service".into()),
            Some(6),
            b"i",
            false,
        );
        batch.add(&filter, debug, JOURNAL.into(), "c1".into());
        assert!(batch.records.is_empty());
        assert_eq!(batch.positions.get(JOURNAL).map(String::as_str), Some("c1"));
        batch.add(&filter, info, JOURNAL.into(), "c2".into());
        assert_eq!(batch.records.len(), 1);
        assert_eq!(batch.positions.get(JOURNAL).map(String::as_str), Some("c2"));
    }
}

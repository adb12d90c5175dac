//! A point-in-time copy of every tree, for backups, and the restore that writes one
//! into a fresh data dir.
//!
//! The copy is taken with every writer paused ([`crate::WriteGate`]), so it holds each
//! change whole or not at all, and every write acknowledged before it began. Its
//! encoding is length-prefixed bytes; the backup format around it adds the encryption
//! and checksums.

use crate::{migrate, Result, Store, StoreError};
use std::path::Path;

const MAGIC: &[u8; 8] = b"WGSTORE1";

/// Tree name -> its records, raw as sled holds them.
pub type TreeCopy = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// Every tree of a store, as it was at one instant.
#[derive(Debug, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// The schema version the trees are at.
    pub schema: u32,
    /// Above every id the store has handed out, so a restored store never reuses one.
    pub next_id: u64,
    pub trees: Vec<TreeCopy>,
}

/// Why a snapshot cannot be read or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the store part is damaged: {0}")]
    Malformed(&'static str),
    #[error("the store part is at schema {found}; this build reads up to {supported}: restore it with a newer watchgrid")]
    NewerSchema { found: u32, supported: u32 },
    #[error("{0} already holds a store; restore into an empty or new directory")]
    NotEmpty(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key (in the meta tree) of the floor added to sled's id generator.
pub(crate) const ID_FLOOR_KEY: &str = "id_floor";

impl Store {
    /// Copies every tree while writers are paused (milliseconds for a fleet's store).
    pub fn snapshot(&self) -> Result<StoreSnapshot> {
        let _quiet = self.durability.gate.quiet();
        let mut trees = Vec::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name)?;
            let records = tree
                .iter()
                .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            trees.push((name.to_vec(), records));
        }
        Ok(StoreSnapshot {
            schema: migrate::version(&self.db)?,
            next_id: self.next_id()?,
            trees,
        })
    }

    /// Writes `snapshot` as the store of `dir` (absent or empty), then opens it once,
    /// which brings an older schema up to date the way a start would. The caller
    /// checks the snapshot's schema first ([`StoreSnapshot::check_schema`]).
    pub fn restore(dir: &Path, snapshot: &StoreSnapshot) -> std::result::Result<(), SnapshotError> {
        snapshot.check_schema()?;
        if dir.join("db").exists() {
            return Err(SnapshotError::NotEmpty(dir.display().to_string()));
        }
        let store = Store::open_with(dir, &[])?;
        store.write_trees(snapshot).map_err(SnapshotError::Store)?;
        drop(store);
        Store::open(dir)?;
        Ok(())
    }

    /// Writes the snapshot's records and its id floor, committed.
    fn write_trees(&self, snapshot: &StoreSnapshot) -> Result<()> {
        for (name, records) in &snapshot.trees {
            let mut batch = sled::Batch::default();
            for (k, v) in records {
                batch.insert(k.as_slice(), v.as_slice());
            }
            self.db.open_tree(name)?.apply_batch(batch)?;
        }
        self.db
            .open_tree(migrate::META)?
            .insert(ID_FLOOR_KEY, &snapshot.next_id.to_be_bytes())?;
        self.commit()
    }
}

impl StoreSnapshot {
    /// Refuses a snapshot from a newer schema than this build knows.
    pub fn check_schema(&self) -> std::result::Result<(), SnapshotError> {
        let supported = migrate::supported();
        if self.schema > supported {
            return Err(SnapshotError::NewerSchema {
                found: self.schema,
                supported,
            });
        }
        Ok(())
    }

    /// Records in all trees.
    pub fn records(&self) -> usize {
        self.trees.iter().map(|(_, r)| r.len()).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(self.schema.to_be_bytes());
        out.extend(self.next_id.to_be_bytes());
        out.extend((self.trees.len() as u64).to_be_bytes());
        for (name, records) in &self.trees {
            put_bytes(&mut out, name);
            out.extend((records.len() as u64).to_be_bytes());
            for (k, v) in records {
                put_bytes(&mut out, k);
                put_bytes(&mut out, v);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<StoreSnapshot, SnapshotError> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(SnapshotError::Malformed("not a watchgrid store copy"));
        }
        let schema = u32::from_be_bytes(r.array()?);
        let next_id = r.u64()?;
        let mut trees = Vec::new();
        for _ in 0..r.u64()? {
            let name = r.bytes()?.to_vec();
            let mut records = Vec::new();
            for _ in 0..r.u64()? {
                records.push((r.bytes()?.to_vec(), r.bytes()?.to_vec()));
            }
            trees.push((name, records));
        }
        if !r.0.is_empty() {
            return Err(SnapshotError::Malformed("bytes after the last tree"));
        }
        Ok(StoreSnapshot {
            schema,
            next_id,
            trees,
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend((b.len() as u64).to_be_bytes());
    out.extend(b);
}

/// Reads the encoding front to back; every length is checked against what is left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], SnapshotError> {
        if n > self.0.len() {
            return Err(SnapshotError::Malformed("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], SnapshotError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u64(&mut self) -> std::result::Result<u64, SnapshotError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self) -> std::result::Result<&'a [u8], SnapshotError> {
        let n = usize::try_from(self.u64()?).map_err(|_| SnapshotError::Malformed("length"))?;
        self.take(n)
    }
}

/// The stored id floor; zero for a store that was never restored.
pub(crate) fn id_floor(db: &sled::Db) -> Result<u64> {
    match db.open_tree(migrate::META)?.get(ID_FLOOR_KEY)? {
        None => Ok(0),
        Some(b) => Ok(u64::from_be_bytes(b.as_ref().try_into().map_err(|_| {
            StoreError::Corrupt {
                tree: migrate::META.into(),
                key: ID_FLOOR_KEY.into(),
                reason: format!("{} bytes, expected 8", b.len()),
            }
        })?)),
    }
}

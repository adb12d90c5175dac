//! A sled tree holding one entity type as JSON, keyed by a string id.

use crate::{Durability, Result, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;

pub struct Table<T> {
    tree: sled::Tree,
    name: &'static str,
    durability: Durability,
    _entity: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Table<T> {
    pub(crate) fn open(
        db: &sled::Db,
        durability: &Durability,
        name: &'static str,
    ) -> Result<Table<T>> {
        Ok(Table {
            tree: db.open_tree(name)?,
            name,
            durability: durability.clone(),
            _entity: PhantomData,
        })
    }

    /// Makes this tree's writes (and every earlier write to the store) durable.
    fn commit(&self) -> Result<()> {
        self.durability.commit(&self.tree)
    }

    fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            tree: self.name.to_string(),
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })
    }

    fn encode(value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| StoreError::Conflict(format!("cannot encode: {e}")))
    }

    pub fn get(&self, key: &str) -> Result<Option<T>> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(self.decode(key.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Writes and commits: when this returns, the record survives a crash or power cut.
    pub fn put(&self, key: &str, value: &T) -> Result<()> {
        let _change = self.durability.gate.change();
        self.tree.insert(key, Self::encode(value)?)?;
        self.commit()?;
        Ok(())
    }

    /// Writes only if `key` is absent; false if it was taken. Committed on success.
    pub fn put_new(&self, key: &str, value: &T) -> Result<bool> {
        let _change = self.durability.gate.change();
        let swapped = self
            .tree
            .compare_and_swap(key, None::<&[u8]>, Some(Self::encode(value)?))?;
        if swapped.is_ok() {
            self.commit()?;
        }
        Ok(swapped.is_ok())
    }

    /// Removes and commits; returns the removed record.
    pub fn remove(&self, key: &str) -> Result<Option<T>> {
        let _change = self.durability.gate.change();
        let old = self.tree.remove(key)?;
        self.commit()?;
        match old {
            Some(bytes) => Ok(Some(self.decode(key.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every record, in key order.
    pub fn list(&self) -> Result<Vec<T>> {
        self.tree
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                self.decode(&k, &v)
            })
            .collect()
    }

    /// Up to `limit` records whose keys sort before `before` (from the end when `None`),
    /// last key first, each with its key: one page of a log read newest first.
    pub fn page_before(&self, before: Option<&str>, limit: usize) -> Result<Vec<(String, T)>> {
        let range = match before {
            Some(key) => self.tree.range(..key.as_bytes()),
            None => self.tree.range::<&[u8], _>(..),
        };
        range
            .rev()
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    self.decode(&k, &v)?,
                ))
            })
            .collect()
    }

    /// Removes, in one batch and one commit, every record `stale` picks; returns how
    /// many. A record changed meanwhile is judged again at the next sweep.
    pub fn remove_where(&self, mut stale: impl FnMut(&T) -> bool) -> Result<usize> {
        let _change = self.durability.gate.change();
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            if stale(&self.decode(&k, &v)?) {
                batch.remove(k);
                n += 1;
            }
        }
        if n > 0 {
            self.tree.apply_batch(batch)?;
            self.commit()?;
        }
        Ok(n)
    }

    /// The records whose keys start with `prefix`, in key order.
    pub fn list_prefix(&self, prefix: &str) -> Result<Vec<T>> {
        self.tree
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                self.decode(&k, &v)
            })
            .collect()
    }

    /// Atomically replaces the record at `key` with `f(current)`: `f` may run more than
    /// once under contention and must be pure. `Ok(None)` from `f` deletes the record;
    /// an `Err` from `f` leaves it unchanged and is returned. Committed before returning.
    pub fn update<E>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<T>) -> std::result::Result<Option<T>, E>,
    ) -> Result<std::result::Result<Option<T>, E>> {
        let _change = self.durability.gate.change();
        loop {
            let current = self.tree.get(key)?;
            let decoded = match &current {
                Some(bytes) => Some(self.decode(key.as_bytes(), bytes)?),
                None => None,
            };
            let next = match f(decoded) {
                Ok(next) => next,
                Err(e) => return Ok(Err(e)),
            };
            let encoded = match &next {
                Some(v) => Some(Self::encode(v)?),
                None => None,
            };
            if self.tree.compare_and_swap(key, current, encoded)?.is_ok() {
                self.commit()?;
                return Ok(Ok(next));
            }
        }
    }
}

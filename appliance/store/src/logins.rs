//! Login events from agents: stored once per (device, seq), kept in time order across
//! the fleet, with the sources each user has signed in from (for "new source" alerts).
//! Keys: `login_events` is `TS_US(20) / DEVICE / SEQ(20)`, so a reverse scan is newest
//! first; `login_acks` is `DEVICE -> highest seq stored`; `login_sources` is
//! `USER \0 IP -> first seen`.

use crate::{Result, Store, StoreError};
use serde::{Deserialize, Serialize};

const EVENTS: &str = "login_events";
const ACKS: &str = "login_acks";
const SOURCES: &str = "login_sources";

/// A stored login event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRecord {
    pub device_id: String,
    pub seq: u64,
    pub ts_us: u64,
    pub received_at_us: u64,
    /// accepted, failed, invalid_user, root_session or sudo_root.
    pub outcome: String,
    pub user: String,
    pub source_ip: Option<String>,
    pub source_port: Option<u16>,
    pub method: Option<String>,
    pub service: String,
    /// Only when the admin keeps raw lines.
    pub raw: Option<String>,
}

/// Filters for [`Store::login_events`]; all optional.
#[derive(Debug, Clone, Default)]
pub struct LoginQuery {
    pub device_id: Option<String>,
    pub outcome: Option<String>,
    pub user: Option<String>,
    pub since_us: Option<u64>,
    pub until_us: Option<u64>,
    pub limit: usize,
}

/// What an ingest stored: the new acknowledged seq and the records that were new.
pub struct LoginIngest {
    pub acked_seq: u64,
    pub stored: Vec<LoginRecord>,
}

fn event_key(r: &LoginRecord) -> String {
    format!("{:020}/{}/{:020}", r.ts_us, r.device_id, r.seq)
}

fn decode<T: serde::de::DeserializeOwned>(tree: &str, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree: tree.to_string(),
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Conflict(format!("cannot encode: {e}")))
}

impl Store {
    /// The highest login-event seq stored for the device (0 if none).
    pub fn login_acked(&self, device_id: &str) -> Result<u64> {
        let acks = self.db.open_tree(ACKS)?;
        Ok(acks
            .get(device_id)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Stores the events of one device whose seq is above its acknowledged one, and the
    /// new acknowledged seq, in one durable commit. Events sent again are skipped.
    pub fn ingest_login_events(
        &self,
        device_id: &str,
        mut records: Vec<LoginRecord>,
    ) -> Result<LoginIngest> {
        let _change = self.durability.gate.change();
        let acked = self.login_acked(device_id)?;
        records.sort_by_key(|r| r.seq);
        records.dedup_by_key(|r| r.seq);
        records.retain(|r| r.seq > acked && r.device_id == device_id);
        let Some(last) = records.last().map(|r| r.seq) else {
            return Ok(LoginIngest {
                acked_seq: acked,
                stored: Vec::new(),
            });
        };
        let mut batch = sled::Batch::default();
        for r in &records {
            batch.insert(event_key(r).as_bytes(), encode(r)?);
        }
        self.db.open_tree(EVENTS)?.apply_batch(batch)?;
        self.db
            .open_tree(ACKS)?
            .insert(device_id, &last.to_be_bytes())?;
        self.commit()?;
        Ok(LoginIngest {
            acked_seq: last,
            stored: records,
        })
    }

    /// Matching events, newest first.
    pub fn login_events(&self, q: &LoginQuery) -> Result<Vec<LoginRecord>> {
        let tree = self.db.open_tree(EVENTS)?;
        let start = format!("{:020}", q.since_us.unwrap_or(0));
        let end = format!("{:020}", q.until_us.unwrap_or(u64::MAX / 2));
        let mut out = Vec::new();
        for kv in tree.range(start.as_bytes()..end.as_bytes()).rev() {
            let (k, v) = kv?;
            let r: LoginRecord = decode(EVENTS, &k, &v)?;
            let keep = q.device_id.as_ref().is_none_or(|d| *d == r.device_id)
                && q.outcome.as_ref().is_none_or(|o| *o == r.outcome)
                && q.user.as_ref().is_none_or(|u| *u == r.user);
            if keep {
                out.push(r);
                if out.len() >= q.limit.max(1) {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Records that `user` signed in from `ip`; true if that pair is new (committed).
    pub fn note_login_source(&self, user: &str, ip: &str, at_us: u64) -> Result<bool> {
        let _change = self.durability.gate.change();
        let tree = self.db.open_tree(SOURCES)?;
        let key = format!("{user}\0{ip}");
        let new = tree
            .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(&at_us.to_be_bytes()))?
            .is_ok();
        if new {
            self.commit()?;
        }
        Ok(new)
    }

    /// Deletes events older than `before_us`; returns how many.
    pub fn prune_login_events(&self, before_us: u64) -> Result<usize> {
        let _change = self.durability.gate.change();
        let tree = self.db.open_tree(EVENTS)?;
        let end = format!("{before_us:020}");
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in tree.range(..end.as_bytes()) {
            let (k, _) = kv?;
            batch.remove(k);
            n += 1;
        }
        if n > 0 {
            tree.apply_batch(batch)?;
            self.commit()?;
        }
        Ok(n)
    }
}

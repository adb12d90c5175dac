//! Per-device traffic history: bytes received from and sent to each device, summed into
//! buckets at three resolutions, each kept for a bounded time (SPEC's traffic accounting):
//! one minute for 48 hours, one hour for 90 days, one day for two years. A device at full
//! load holds at most 5,770 buckets; minutes without traffic are not written at all.
//!
//! Keys in the `traffic` tree are `DEVICE_ID \0 RESOLUTION(1) START(8, big endian)`, so one
//! device's buckets at one resolution are a contiguous range in time order, and pruning
//! touches only what has expired. Values are `RX(8) TX(8)`, big endian.
//!
//! Buckets only grow by what the caller adds: the sampler turns the dataplane's counters
//! into deltas (and handles their resets), so a restart never counts anything twice.

use crate::{Result, Store, StoreError};

const TREE: &str = "traffic";

/// The resolution of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    Minute,
    Hour,
    Day,
}

impl Resolution {
    pub const ALL: [Resolution; 3] = [Resolution::Minute, Resolution::Hour, Resolution::Day];

    /// Seconds one bucket covers.
    pub fn secs(self) -> u64 {
        match self {
            Resolution::Minute => 60,
            Resolution::Hour => 3600,
            Resolution::Day => 86_400,
        }
    }

    /// How long buckets are kept.
    pub fn retention_secs(self) -> u64 {
        match self {
            Resolution::Minute => 48 * 3600,
            Resolution::Hour => 90 * 86_400,
            Resolution::Day => 730 * 86_400,
        }
    }

    /// The start of the bucket holding the unix second `at`.
    pub fn bucket(self, at: u64) -> u64 {
        at - at % self.secs()
    }

    fn tag(self) -> u8 {
        match self {
            Resolution::Minute => b'm',
            Resolution::Hour => b'h',
            Resolution::Day => b'd',
        }
    }
}

/// One bucket: bytes received from the device (`rx`) and sent to it (`tx`), in the
/// hub's view, from `start` for one resolution step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct TrafficPoint {
    pub start: u64,
    pub rx: u64,
    pub tx: u64,
}

/// Bytes a device moved since the last sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficDelta {
    pub device_id: String,
    pub rx: u64,
    pub tx: u64,
}

/// What crossing a monthly quota does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaAction {
    /// The device leaves the hub until the month turns (or an admin enables it).
    Disable,
    /// An alert goes out; the device stays connected.
    Alert,
}

/// A device's monthly traffic quota (bytes received plus sent, calendar month UTC), in
/// the `quotas` table keyed by device id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuota {
    pub device_id: String,
    pub monthly_bytes: u64,
    pub action: QuotaAction,
    /// The month (`YYYYMM`) in which the quota was last crossed: it acts once a month.
    #[serde(default)]
    pub crossed_month: Option<u32>,
    /// The quota disabled the device; it is enabled again when the month turns.
    #[serde(default)]
    pub disabled_by_quota: bool,
}

fn prefix(device_id: &str, res: Resolution) -> Vec<u8> {
    let mut k = Vec::with_capacity(device_id.len() + 10);
    k.extend_from_slice(device_id.as_bytes());
    k.push(0);
    k.push(res.tag());
    k
}

fn key(device_id: &str, res: Resolution, start: u64) -> Vec<u8> {
    let mut k = prefix(device_id, res);
    k.extend_from_slice(&start.to_be_bytes());
    k
}

fn decode(key: &[u8], value: &[u8]) -> Result<(u64, u64)> {
    let corrupt = || StoreError::Corrupt {
        tree: TREE.to_string(),
        key: String::from_utf8_lossy(key).into_owned(),
        reason: format!("a bucket is 16 bytes, this one {}", value.len()),
    };
    let rx = value.get(..8).ok_or_else(corrupt)?;
    let tx = value.get(8..16).ok_or_else(corrupt)?;
    let be = |b: &[u8]| b.try_into().map(u64::from_be_bytes).map_err(|_| corrupt());
    Ok((be(rx)?, be(tx)?))
}

fn encode(rx: u64, tx: u64) -> [u8; 16] {
    let mut v = [0; 16];
    v[..8].copy_from_slice(&rx.to_be_bytes());
    v[8..].copy_from_slice(&tx.to_be_bytes());
    v
}

fn start_of(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    tail.try_into().ok().map(u64::from_be_bytes)
}

impl Store {
    /// Adds each delta to its device's buckets at every resolution for the second `at`,
    /// in one durable commit. Only one task may record (the sampler): the buckets are
    /// read, summed and written back.
    pub fn record_traffic(&self, at: u64, deltas: &[TrafficDelta]) -> Result<()> {
        let _change = self.durability.gate.change();
        let tree = self.db.open_tree(TREE)?;
        let mut batch = sled::Batch::default();
        let mut any = false;
        for d in deltas.iter().filter(|d| d.rx > 0 || d.tx > 0) {
            for res in Resolution::ALL {
                let k = key(&d.device_id, res, res.bucket(at));
                let (rx, tx) = match tree.get(&k)? {
                    Some(v) => decode(&k, &v)?,
                    None => (0, 0),
                };
                batch.insert(
                    k,
                    &encode(rx.saturating_add(d.rx), tx.saturating_add(d.tx))[..],
                );
                any = true;
            }
        }
        if any {
            tree.apply_batch(batch)?;
            self.commit()?;
        }
        Ok(())
    }

    /// The device's buckets at `res` whose start is in `since..until`, oldest first;
    /// buckets without traffic are absent.
    pub fn traffic(
        &self,
        device_id: &str,
        res: Resolution,
        since: u64,
        until: u64,
    ) -> Result<Vec<TrafficPoint>> {
        let tree = self.db.open_tree(TREE)?;
        let mut out = Vec::new();
        let range = key(device_id, res, since)..key(device_id, res, until);
        for kv in tree.range(range) {
            let (k, v) = kv?;
            let (rx, tx) = decode(&k, &v)?;
            if let Some(start) = start_of(&k) {
                out.push(TrafficPoint { start, rx, tx });
            }
        }
        Ok(out)
    }

    /// Bytes of the whole days (UTC) that begin in `since..until`, `since` rounded down
    /// to its midnight: a calendar month is `traffic_total(id, first_day, now + 1)`.
    pub fn traffic_total(&self, device_id: &str, since: u64, until: u64) -> Result<(u64, u64)> {
        let res = Resolution::Day;
        let points = self.traffic(device_id, res, res.bucket(since), until)?;
        Ok(points.iter().fold((0, 0), |(rx, tx), p| {
            (rx.saturating_add(p.rx), tx.saturating_add(p.tx))
        }))
    }

    /// Deletes every bucket past its resolution's retention at `now`, and the history of
    /// devices that no longer exist (a sample that raced a delete); returns how many.
    pub fn prune_traffic(&self, now: u64) -> Result<usize> {
        let _change = self.durability.gate.change();
        let tree = self.db.open_tree(TREE)?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for id in self.devices_with_traffic()? {
            let gone = self.devices.get(&id)?.is_none();
            for res in Resolution::ALL {
                let cutoff = if gone {
                    u64::MAX
                } else {
                    now.saturating_sub(res.retention_secs())
                };
                for kv in tree.range(key(&id, res, 0)..key(&id, res, cutoff)) {
                    batch.remove(kv?.0);
                    n += 1;
                }
            }
        }
        if n > 0 {
            tree.apply_batch(batch)?;
            self.commit()?;
        }
        Ok(n)
    }

    /// Deletes a device's whole history (the device was deleted).
    pub fn delete_traffic(&self, device_id: &str) -> Result<()> {
        let _change = self.durability.gate.change();
        let tree = self.db.open_tree(TREE)?;
        let mut start = device_id.as_bytes().to_vec();
        start.push(0);
        let mut end = device_id.as_bytes().to_vec();
        end.push(1);
        let mut batch = sled::Batch::default();
        for kv in tree.range(start..end) {
            batch.remove(kv?.0);
        }
        tree.apply_batch(batch)?;
        self.commit()
    }

    /// The ids of devices that have any history (the first key of each, skipping on).
    fn devices_with_traffic(&self) -> Result<Vec<String>> {
        let tree = self.db.open_tree(TREE)?;
        let mut ids = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        while let Some(kv) = tree.range(from.clone()..).next() {
            let (k, _) = kv?;
            let Some(nul) = k.iter().position(|&b| b == 0) else {
                break;
            };
            ids.push(String::from_utf8_lossy(&k[..nul]).into_owned());
            // The next device's keys begin after every `ID \0 …` key.
            from = k[..nul].to_vec();
            from.push(1);
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let store = Store::open(&dir.path().join("s")).expect("open");
        (dir, store)
    }

    fn delta(id: &str, rx: u64, tx: u64) -> TrafficDelta {
        TrafficDelta {
            device_id: id.into(),
            rx,
            tx,
        }
    }

    // 2026-12-07T10:00:00Z
    const T0: u64 = 1_796_637_600;

    #[test]
    fn samples_add_up_in_every_resolution() {
        let (_d, s) = store();
        s.record_traffic(T0 + 5, &[delta("dev-1", 100, 10), delta("dev-2", 7, 7)])
            .expect("record");
        s.record_traffic(T0 + 50, &[delta("dev-1", 1, 2)])
            .expect("record");
        s.record_traffic(T0 + 65, &[delta("dev-1", 1000, 2000)])
            .expect("record");
        let minutes = s
            .traffic("dev-1", Resolution::Minute, 0, u64::MAX)
            .expect("minutes");
        assert_eq!(
            minutes,
            vec![
                TrafficPoint {
                    start: T0,
                    rx: 101,
                    tx: 12
                },
                TrafficPoint {
                    start: T0 + 60,
                    rx: 1000,
                    tx: 2000
                }
            ]
        );
        let hours = s
            .traffic("dev-1", Resolution::Hour, 0, u64::MAX)
            .expect("hours");
        assert_eq!(
            hours,
            vec![TrafficPoint {
                start: T0,
                rx: 1101,
                tx: 2012
            }]
        );
        assert_eq!(
            s.traffic_total("dev-1", T0, T0 + 86_400).expect("total"),
            (1101, 2012)
        );
        assert_eq!(
            s.traffic_total("dev-2", T0, T0 + 86_400).expect("total"),
            (7, 7)
        );
        assert_eq!(
            s.traffic_total("dev-3", T0, T0 + 86_400).expect("total"),
            (0, 0)
        );
    }

    #[test]
    fn a_device_id_that_prefixes_another_keeps_its_own_series() {
        let (_d, s) = store();
        s.record_traffic(T0, &[delta("dev-1", 1, 1), delta("dev-10", 5, 5)])
            .expect("record");
        let one = s
            .traffic("dev-1", Resolution::Day, 0, u64::MAX)
            .expect("read");
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].rx, one[0].tx), (1, 1));
        s.delete_traffic("dev-1").expect("delete");
        assert!(s
            .traffic("dev-1", Resolution::Day, 0, u64::MAX)
            .expect("read")
            .is_empty());
        assert_eq!(
            s.traffic("dev-10", Resolution::Day, 0, u64::MAX)
                .expect("read")
                .len(),
            1
        );
    }

    #[test]
    fn history_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let path = dir.path().join("s");
        {
            let s = Store::open(&path).expect("open");
            s.record_traffic(T0, &[delta("dev-1", 3, 4)])
                .expect("record");
        }
        let s = Store::open(&path).expect("reopen");
        s.record_traffic(T0 + 1, &[delta("dev-1", 3, 4)])
            .expect("record");
        assert_eq!(s.traffic_total("dev-1", T0, T0 + 1).expect("total"), (6, 8));
    }

    fn add_device(s: &Store, id: &str) {
        let d = crate::Device {
            id: id.to_string(),
            name: id.to_string(),
            public_key: watchgrid_core::PublicKey([7; 32]),
            address_v4: std::net::Ipv4Addr::UNSPECIFIED,
            address_v6: None,
            enabled: true,
            created_at: 1,
            expires_at: None,
            agent_key_hash: String::new(),
            last_endpoint: None,
            groups: Vec::new(),
            allow_commands: false,
        };
        s.devices.put(id, &d).expect("device");
    }

    #[test]
    fn pruning_keeps_each_resolution_for_its_retention_only() {
        let (_d, s) = store();
        add_device(&s, "dev-1");
        let old = T0 - 3 * 86_400;
        s.record_traffic(old, &[delta("dev-1", 1, 1)])
            .expect("record");
        s.record_traffic(T0, &[delta("dev-1", 2, 2)])
            .expect("record");
        // Three days on, the old minute bucket is past 48 h; its hour and day are kept.
        assert_eq!(s.prune_traffic(T0).expect("prune"), 1);
        let minutes = s
            .traffic("dev-1", Resolution::Minute, 0, u64::MAX)
            .expect("read");
        assert_eq!(
            minutes.iter().map(|p| p.start).collect::<Vec<_>>(),
            vec![T0]
        );
        assert_eq!(
            s.traffic("dev-1", Resolution::Hour, 0, u64::MAX)
                .expect("read")
                .len(),
            2
        );
        // Past two years everything goes.
        let later = T0 + 731 * 86_400;
        assert_eq!(s.prune_traffic(later).expect("prune"), 5);
        assert!(s
            .traffic("dev-1", Resolution::Day, 0, u64::MAX)
            .expect("read")
            .is_empty());
        assert_eq!(s.prune_traffic(later).expect("prune"), 0);
    }

    #[test]
    fn the_history_of_a_deleted_device_goes_with_it() {
        let (_d, s) = store();
        add_device(&s, "dev-1");
        s.record_traffic(T0, &[delta("dev-1", 1, 1), delta("dev-2", 1, 1)])
            .expect("record");
        // dev-2 was deleted while its sample was taken: the next prune removes it.
        assert_eq!(s.prune_traffic(T0).expect("prune"), 3);
        assert_eq!(
            s.devices_with_traffic().expect("ids"),
            vec!["dev-1".to_string()]
        );
        s.delete_device("dev-1").expect("delete");
        assert!(s.devices_with_traffic().expect("ids").is_empty());
    }

    #[test]
    fn deltas_without_bytes_write_nothing() {
        let (_d, s) = store();
        s.record_traffic(T0, &[delta("dev-1", 0, 0)])
            .expect("record");
        assert!(s.devices_with_traffic().expect("ids").is_empty());
    }
}

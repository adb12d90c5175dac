//! Traffic accounting: every sample interval the hub's per-peer byte counters become
//! per-device deltas in the store's history (`watchgrid_store::traffic`), the live view
//! the pages show, the opt-in per-device metrics, and monthly quota checks.
//!
//! Counters live in the dataplane and start again from zero when a peer is re-added or
//! the daemon restarts. The sampler keeps the previous reading of each peer; a reading
//! below it means the counter started over, so all of it is new. After a restart there
//! is no previous reading and the dataplane's counters are new too, so nothing is
//! counted twice and nothing stored is lost.

use crate::error::ApiError;
use crate::state::{unix_now, AppState};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::Duration;
use watchgrid_core::PublicKey;
use watchgrid_store::{Device, DeviceQuota, QuotaAction, TrafficDelta};

/// One hub peer as of the latest sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNow {
    pub endpoint: Option<SocketAddr>,
    /// Unix second of its latest completed handshake.
    pub last_handshake_at: Option<u64>,
    /// The dataplane's counters (since the peer was put on the hub).
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The latest sample of every hub peer, by public key.
#[derive(Default)]
pub struct PeersNow(RwLock<HashMap<PublicKey, PeerNow>>);

impl PeersNow {
    pub fn get(&self, key: &PublicKey) -> Option<PeerNow> {
        self.0.read().ok()?.get(key).cloned()
    }

    fn replace(&self, peers: HashMap<PublicKey, PeerNow>) {
        if let Ok(mut now) = self.0.write() {
            *now = peers;
        }
    }
}

/// Turns successive counter readings into deltas.
#[derive(Default)]
pub struct Sampler {
    previous: HashMap<PublicKey, (u64, u64)>,
}

impl Sampler {
    /// Bytes since the previous reading of this peer.
    fn delta(&mut self, key: PublicKey, rx: u64, tx: u64) -> (u64, u64) {
        let (prx, ptx) = self.previous.insert(key, (rx, tx)).unwrap_or((0, 0));
        // A counter below its last reading started again from zero.
        let since = |now: u64, before: u64| if now >= before { now - before } else { now };
        (since(rx, prx), since(tx, ptx))
    }

    /// Reads the hub, records the deltas of known devices at `now`, refreshes the live
    /// view and the metrics, then applies monthly quotas.
    pub async fn sample(&mut self, state: &AppState, now: u64) -> Result<(), ApiError> {
        let stats = state
            .hub
            .peer_stats()
            .await
            .map_err(|e| ApiError::Unavailable(format!("reading the hub's counters: {e}")))?;
        let devices: HashMap<PublicKey, Device> = state
            .store
            .devices
            .list()?
            .into_iter()
            .map(|d| (d.public_key, d))
            .collect();
        let mut deltas = Vec::new();
        let mut live = HashMap::new();
        for s in &stats {
            let (rx, tx) = self.delta(s.public_key, s.rx_bytes, s.tx_bytes);
            live.insert(
                s.public_key,
                PeerNow {
                    endpoint: s.endpoint,
                    last_handshake_at: s.last_handshake_age.map(|a| now - a.as_secs().min(now)),
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                },
            );
            let Some(d) = devices.get(&s.public_key) else {
                continue;
            };
            if state.config.peer_metrics {
                state.metrics.peer_traffic(&d.id, rx, tx);
            }
            deltas.push(TrafficDelta {
                device_id: d.id.clone(),
                rx,
                tx,
            });
        }
        remember_endpoints(state, &devices, &live);
        // A peer that left the hub starts from zero if it comes back.
        self.previous.retain(|k, _| live.contains_key(k));
        state.peers_now.replace(live);
        state.store.record_traffic(now, &deltas)?;
        enforce_quotas(state, now).await
    }
}

/// Stores each device's endpoint when it moved, so that a start after a power cut or a
/// restore from a backup reaches every device at once instead of waiting for it to
/// call (a clean shutdown saves them too).
fn remember_endpoints(
    state: &AppState,
    devices: &HashMap<PublicKey, Device>,
    live: &HashMap<PublicKey, PeerNow>,
) {
    for (key, peer) in live {
        if let (Some(d), Some(ep)) = (devices.get(key), peer.endpoint) {
            save_endpoint(&state.store, d, ep);
        }
    }
}

/// Records where `device` was last seen; writes only a change (roaming), so sampling
/// a settled fleet writes nothing.
pub fn save_endpoint(store: &watchgrid_store::Store, device: &Device, ep: SocketAddr) {
    let ep = ep.to_string();
    if device.last_endpoint.as_deref() == Some(ep.as_str()) {
        return;
    }
    let saved = store.devices.update(&device.id, |cur| {
        Ok::<_, ()>(cur.map(|d| Device {
            last_endpoint: Some(ep.clone()),
            ..d
        }))
    });
    if let Err(e) = saved {
        tracing::warn!(device = %device.id, error = %e, "saving the last endpoint");
    }
}

/// Samples every `traffic_sample_s` for the life of the runtime.
pub async fn run(state: AppState) {
    let mut sampler = Sampler::default();
    let every = Duration::from_secs(state.config.traffic_sample_s.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sampler.sample(&state, unix_now()).await {
            tracing::error!(error = %e, "sampling traffic");
        }
    }
}

/// The calendar month (UTC) holding the unix second `at`: `(YYYYMM, its first second)`.
pub fn month_of(at: u64) -> (u32, u64) {
    let t = time::OffsetDateTime::from_unix_timestamp(at.min(i64::MAX as u64) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let first = t
        .replace_day(1)
        .map(|d| d.replace_time(time::Time::MIDNIGHT))
        .unwrap_or(t);
    let month = t.year().max(0) as u32 * 100 + u32::from(u8::from(t.month()));
    (month, first.unix_timestamp().max(0) as u64)
}

/// Bytes (received plus sent) the device moved in the month holding `now`.
pub fn month_used(state: &AppState, device_id: &str, now: u64) -> Result<u64, ApiError> {
    let (_, first) = month_of(now);
    let (rx, tx) = state.store.traffic_total(device_id, first, now + 1)?;
    Ok(rx.saturating_add(tx))
}

/// Acts on every quota: once a month when it is crossed, and when the month turns for a
/// device the quota disabled.
pub async fn enforce_quotas(state: &AppState, now: u64) -> Result<(), ApiError> {
    let (month, _) = month_of(now);
    for q in state.store.quotas.list()? {
        if q.disabled_by_quota && q.crossed_month != Some(month) {
            reset_quota(state, &q).await?;
            continue;
        }
        if q.crossed_month == Some(month) {
            continue;
        }
        let used = month_used(state, &q.device_id, now)?;
        if used >= q.monthly_bytes {
            cross_quota(state, q, month, used).await?;
        }
    }
    Ok(())
}

/// The quota is crossed this month: alert, and disable when that is its action.
async fn cross_quota(
    state: &AppState,
    q: DeviceQuota,
    month: u32,
    used: u64,
) -> Result<(), ApiError> {
    let disable = q.action == QuotaAction::Disable;
    if disable {
        crate::routes::devices::set_enabled(state, &q.device_id, false).await?;
    }
    crate::routes::audit(state, "system", "device.quota_exceeded", &q.device_id)?;
    let summary = format!(
        "{} used {used} bytes this month, over its quota of {} bytes{}",
        q.device_id,
        q.monthly_bytes,
        if disable {
            "; disabled until the month turns"
        } else {
            ""
        }
    );
    crate::alerts::raise(
        state,
        vec![crate::alerts::NewAlert {
            kind: "quota_exceeded",
            device_id: q.device_id.clone(),
            summary,
            details: serde_json::json!({
                "used_bytes": used, "monthly_bytes": q.monthly_bytes,
                "action": q.action, "month": month,
            }),
        }],
    )?;
    let id = q.device_id.clone();
    state.store.quotas.put(
        &id,
        &DeviceQuota {
            crossed_month: Some(month),
            disabled_by_quota: disable,
            ..q
        },
    )?;
    Ok(())
}

/// An admin enabled or disabled the device: the quota no longer decides whether it is
/// on (it does not enable it at the month's turn).
pub fn release_quota_hold(state: &AppState, device_id: &str) -> Result<(), ApiError> {
    state.store.quotas.update(device_id, |cur| match cur {
        Some(q) if q.disabled_by_quota => Ok::<_, ApiError>(Some(DeviceQuota {
            disabled_by_quota: false,
            ..q
        })),
        other => Ok(other),
    })??;
    Ok(())
}

/// A new month: the device the quota disabled comes back.
async fn reset_quota(state: &AppState, q: &DeviceQuota) -> Result<(), ApiError> {
    match crate::routes::devices::set_enabled(state, &q.device_id, true).await {
        Ok(_) | Err(ApiError::NotFound) => {}
        Err(e) => return Err(e),
    }
    crate::routes::audit(state, "system", "device.quota_reset", &q.device_id)?;
    state.store.quotas.put(
        &q.device_id,
        &DeviceQuota {
            disabled_by_quota: false,
            ..q.clone()
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_that_starts_over_counts_from_zero() {
        let mut s = Sampler::default();
        let k = PublicKey([1; 32]);
        assert_eq!(s.delta(k, 100, 50), (100, 50));
        assert_eq!(s.delta(k, 150, 50), (50, 0));
        // Removed and added back: the counters are lower than before.
        assert_eq!(s.delta(k, 30, 70), (30, 20));
    }

    #[test]
    fn months_begin_at_midnight_utc_on_the_first() {
        // 2026-12-07T10:00:00Z
        assert_eq!(month_of(1_796_637_600), (202612, 1_796_083_200));
        // 2027-01-01T00:00:00Z begins January.
        assert_eq!(month_of(1_798_761_600), (202701, 1_798_761_600));
        assert_eq!(month_of(1_798_761_599).0, 202612);
    }
}

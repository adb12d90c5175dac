//! Every periodic job of the daemon, in one place:
//! - at each device's expiry, to the second, it leaves the hub (`watchgrid_api::expiry`);
//! - every `--traffic-sample` seconds, each peer's traffic is recorded and quotas are
//!   checked (`watchgrid_api::accounting`);
//! - every 5 minutes, idle rate-limit buckets are swept (SPEC §6);
//! - every heartbeat interval, agents that missed three heartbeats are logged offline;
//! - every 10 minutes, log lines and login events past their retention are deleted,
//!   and so are revoked sessions and enrollment tokens past their expiry, and traffic
//!   history past its resolution's retention;
//! - twice a day, the internal CA's leaf is checked and renewed before it expires;
//! - every 15 s while no firewall ruleset is in force (it failed at start), the
//!   firewall is applied again, so the appliance opens once `nft` works.

use crate::control::tls;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use watchgrid_api::AppState;

const RATE_LIMIT_SWEEP: Duration = Duration::from_secs(300);
const CERT_RENEWAL: Duration = Duration::from_secs(12 * 3600);
const LOG_RETENTION: Duration = Duration::from_secs(600);
const FIREWALL_RETRY: Duration = Duration::from_secs(15);

/// What renewing the internal CA's leaf certificate needs.
pub struct Renewal {
    pub data_dir: PathBuf,
    pub names: Vec<String>,
    pub certs: Arc<tls::CertSwap>,
    /// The leaf being served now.
    pub fingerprint: String,
}

/// Starts every periodic job; they run as long as the runtime does.
pub fn spawn(state: &AppState, renewal: Option<Renewal>) {
    tokio::spawn(watchgrid_api::expiry::run(state.clone()));
    tokio::spawn(watchgrid_api::accounting::run(state.clone()));
    let sweeper = state.clone();
    every(RATE_LIMIT_SWEEP, move || {
        sweeper.limits.evict_idle();
        std::future::ready(())
    });
    let presence = state.clone();
    let interval = Duration::from_secs(state.config.heartbeat_interval_s.max(1));
    every(interval, move || {
        let now = watchgrid_api::state::unix_now();
        if let Err(e) = watchgrid_api::routes::agents::sweep_offline(&presence, now) {
            tracing::error!(error = %e, "recording agents offline");
        }
        std::future::ready(())
    });
    let retention = state.clone();
    every(LOG_RETENTION, move || {
        let state = retention.clone();
        async move {
            let pruned = tokio::task::spawn_blocking(move || {
                prune_records(&state);
                prune_logs(&state)
            })
            .await;
            if let Ok(Err(e)) = pruned {
                tracing::error!(error = %e, "log retention");
            }
        }
    });
    let firewall = state.clone();
    every(FIREWALL_RETRY, move || {
        let state = firewall.clone();
        async move {
            if !state.firewall_status().protects() {
                state.firewall_changed().await;
            }
        }
    });
    if let Some(renewal) = renewal {
        tokio::spawn(renew_certificate(renewal));
    }
}

/// Revoked sessions and enrollment tokens that have expired.
fn prune_records(state: &AppState) {
    match state.store.prune_expired(watchgrid_api::state::unix_now()) {
        Ok(p) if p != watchgrid_store::Pruned::default() => tracing::info!(
            revoked_sessions = p.revoked_sessions,
            enrollment_tokens = p.enrollment_tokens,
            "pruned expired records"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "pruning expired records"),
    }
    match state.store.prune_traffic(watchgrid_api::state::unix_now()) {
        Ok(0) => {}
        Ok(n) => tracing::info!(buckets = n, "pruned traffic history"),
        Err(e) => tracing::error!(error = %e, "pruning traffic history"),
    }
}

/// The retention the operator set (the defaults until then).
pub fn retention(state: &AppState) -> watchgrid_logstore::Retention {
    let s = watchgrid_api::alerts::settings(state).unwrap_or_default();
    watchgrid_logstore::Retention {
        max_age_days: s.retention_days,
        max_bytes: s.retention_max_bytes,
    }
}

fn prune_logs(state: &AppState) -> anyhow::Result<()> {
    let now_us = watchgrid_api::state::unix_now_us();
    let days = watchgrid_api::alerts::settings(state)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .retention_days;
    let cutoff = now_us.saturating_sub(u64::from(days) * 86_400 * 1_000_000);
    let logins = state.store.prune_login_events(cutoff)?;
    if let Some(logs) = state.logs.get() {
        logs.set_retention(retention(state));
        let report = logs.enforce_retention(now_us)?;
        tracing::info!(?report, login_events = logins, "log retention");
    }
    Ok(())
}

/// Runs `job` now and then at each period.
fn every<F, Fut>(period: Duration, mut job: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            job().await;
        }
    });
}

/// Checks the leaf at each period (not at start: it was just loaded or made).
async fn renew_certificate(r: Renewal) {
    let mut current = r.fingerprint;
    let mut ticks = tokio::time::interval(CERT_RENEWAL);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match tls::renew_internal(&r.data_dir, &r.names, &r.certs, &current) {
            Ok(Some(new_fp)) => {
                tracing::info!(fingerprint = %new_fp, "renewed the TLS certificate");
                current = new_fp;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %format!("{e:#}"), "renewing the TLS certificate"),
        }
    }
}

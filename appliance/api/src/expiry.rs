//! Devices are disabled at their expiry, to the second: one timer sleeps until the
//! earliest expiry of an enabled device, and the API rings [`Inner::expiry_bell`] when a
//! device with an expiry is added or enabled, so the timer looks again.
//!
//! [`Inner::expiry_bell`]: crate::state::Inner::expiry_bell

use crate::routes::devices::expire_devices;
use crate::state::{unix_now, AppState};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// With no expiry ahead, the timer still looks once an hour (a clock step, a device
/// written by `watchgrid admin`).
const IDLE_RECHECK: Duration = Duration::from_secs(3600);

/// After a failed expiry (the hub refused), the next try.
const RETRY: Duration = Duration::from_secs(5);

/// Runs for the life of the runtime.
pub async fn run(state: AppState) {
    loop {
        let wait = match expire_devices(&state)
            .await
            .and_then(|_| next_expiry(&state))
        {
            Ok(Some(at)) => until(at),
            Ok(None) => IDLE_RECHECK,
            Err(e) => {
                tracing::error!(error = %e, "expiring devices; retrying in 5 s");
                RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.expiry_bell.notified() => {}
        }
    }
}

/// The earliest expiry still ahead among enabled devices.
fn next_expiry(state: &AppState) -> Result<Option<u64>, crate::error::ApiError> {
    let now = unix_now();
    Ok(state
        .store
        .devices
        .list()?
        .iter()
        .filter(|d| d.enabled)
        .filter_map(|d| d.expires_at)
        .filter(|&at| at > now)
        .min())
}

/// From now until the unix second `at` begins.
fn until(at: u64) -> Duration {
    (UNIX_EPOCH + Duration::from_secs(at))
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

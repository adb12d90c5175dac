//! The HTTP surface, one module per area; each exposes `router()`.

pub mod devices;
pub mod enrollment;
pub mod pages;
pub mod public;
pub mod session;
pub mod setup;

use crate::error::ApiError;
use crate::state::{unix_now, AppState};
use std::net::IpAddr;

/// Takes a token from a rate limiter, counting rejections in the metrics.
pub(crate) fn limit(state: &AppState, limiter: &'static str, ip: IpAddr) -> Result<(), ApiError> {
    state
        .limits
        .check(limiter, ip)
        .inspect_err(|_| state.metrics.rate_limited(limiter))
}

/// Appends an audit entry for an admin action.
pub(crate) fn audit(
    state: &AppState,
    actor: &str,
    action: &str,
    target: &str,
) -> Result<(), ApiError> {
    tracing::info!(actor, action, target, "audit");
    state.store.audit(&watchgrid_store::AuditEntry {
        at: unix_now(),
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
    })?;
    Ok(())
}

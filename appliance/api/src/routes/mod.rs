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

/// The hub-side allowed IPs of a device: its IPv4 and IPv6 host addresses.
pub(crate) fn device_prefixes(d: &watchgrid_store::Device) -> Vec<watchgrid_core::IpPrefix> {
    let mut v = vec![watchgrid_core::IpPrefix::host(d.address_v4.into())];
    v.extend(
        d.address_v6
            .map(|a| watchgrid_core::IpPrefix::host(a.into())),
    );
    v
}

/// What a device routes into the tunnel, and its interface addresses, for its config.
pub(crate) struct ClientNetwork {
    pub address_v4: String,
    pub address_v6: Option<String>,
    pub allowed_ips: String,
}

pub(crate) fn client_network(
    state: &AppState,
    settings: &watchgrid_store::Settings,
    d: &watchgrid_store::Device,
) -> Result<ClientNetwork, ApiError> {
    let v6 = state.store.network()?.map(|n| n.ula_prefix);
    let mut allowed = format!("{}/{}", settings.vpn_subnet_v4, settings.vpn_prefix_v4);
    if let Some(p) = v6 {
        allowed.push_str(&format!(", {p}/64"));
    }
    Ok(ClientNetwork {
        address_v4: format!("{}/{}", d.address_v4, settings.vpn_prefix_v4),
        address_v6: d.address_v6.map(|a| format!("{a}/64")),
        allowed_ips: allowed,
    })
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

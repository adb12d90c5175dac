//! The HTTP surface, one module per area; each exposes `router()`.

pub mod agents;
pub mod alerts;
pub mod backup;
pub mod backup_offsite;
pub mod backup_offsite_page;
pub mod backup_page;
pub mod commands;
pub mod device_pages;
pub mod device_settings;
pub mod devices;
pub mod enrollment;
pub mod firewall;
pub mod firewall_page;
pub mod fleet_pages;
pub mod live;
pub mod logs;
pub mod pages;
pub mod password;
pub mod public;
pub mod restore;
pub mod session;
pub mod settings;
pub mod settings_pages;
pub mod setup;
pub mod ssh;
pub mod ssh_agent;
pub mod ssh_page;
pub mod tls;
pub mod tokens;
pub mod traffic;
pub mod ui;
pub mod update;
pub mod update_page;

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

/// A new device to store and put on the hub.
pub(crate) struct NewDevice {
    pub name: String,
    pub public_key: watchgrid_core::PublicKey,
    pub expires_at: Option<u64>,
    /// Hex SHA-256 of the agent credential; empty for plain WireGuard devices.
    pub agent_key_hash: String,
    /// Validated group names.
    pub groups: Vec<String>,
    /// An agent that runs remote commands.
    pub allow_commands: bool,
}

/// Stores a device on free addresses and puts its peer on the hub before returning
/// (SPEC §5); if the hub refuses, the device and its addresses are released again.
/// The key check and the insert are one step: a second device with the key is a 409.
pub(crate) async fn add_device(
    state: &AppState,
    settings: &watchgrid_store::Settings,
    new: NewDevice,
) -> Result<watchgrid_store::Device, ApiError> {
    let _one_at_a_time = state.device_changes.lock().await;
    let device = state.store.create_device(
        watchgrid_store::Device {
            id: format!("dev-{}", state.store.next_id()?),
            name: new.name,
            public_key: new.public_key,
            address_v4: std::net::Ipv4Addr::UNSPECIFIED,
            address_v6: None,
            enabled: true,
            created_at: unix_now(),
            expires_at: new.expires_at,
            agent_key_hash: new.agent_key_hash,
            last_endpoint: None,
            groups: new.groups,
            allow_commands: new.allow_commands,
        },
        settings.vpn_subnet_v4,
        settings.vpn_prefix_v4,
    )?;
    if let Err(e) = state
        .hub
        .set_peer(new.public_key, device_prefixes(&device))
        .await
    {
        state.store.delete_device(&device.id)?;
        return Err(ApiError::internal(format!("adding peer to the hub: {e}")));
    }
    if device.expires_at.is_some() {
        state.expiry_bell.notify_one();
    }
    Ok(device)
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
    /// One CIDR per item: the VPN's IPv4 subnet and, when there is one, its IPv6 /64.
    pub allowed_ips: Vec<String>,
}

pub(crate) fn client_network(
    state: &AppState,
    settings: &watchgrid_store::Settings,
    d: &watchgrid_store::Device,
) -> Result<ClientNetwork, ApiError> {
    let v6 = state.store.network()?.map(|n| n.ula_prefix);
    let mut allowed = vec![format!(
        "{}/{}",
        settings.vpn_subnet_v4, settings.vpn_prefix_v4
    )];
    allowed.extend(v6.map(|p| format!("{p}/64")));
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

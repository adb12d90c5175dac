//! How the control plane reaches the WireGuard hub: through the dataplane's command
//! channel (implemented by the binary), never by sharing engine state.

use std::future::Future;
use std::pin::Pin;
use watchgrid_core::{IpPrefix, PublicKey};

pub type HubFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// How the control plane changes the HTTPS certificate at setup (implemented by the
/// binary, which owns the listener). Errors are messages for the operator.
pub trait TlsSwitch: Send + Sync + 'static {
    /// Checks and installs an uploaded chain and key (PEM) and serves them at once.
    fn use_uploaded(&self, cert_pem: &str, key_pem: &str) -> Result<(), String>;
    /// Starts ACME for `domain` and serves its certificate once issued.
    fn use_acme(&self, domain: &str, email: Option<&str>) -> Result<(), String>;
}

pub trait Hub: Send + Sync + 'static {
    /// The hub's WireGuard public key.
    fn public_key(&self) -> PublicKey;
    /// Adds or replaces a peer; resolves once the dataplane has applied it.
    fn set_peer(&self, key: PublicKey, allowed_ips: Vec<IpPrefix>) -> HubFuture;
    /// Removes a peer (no error if it is absent).
    fn remove_peer(&self, key: PublicKey) -> HubFuture;
    /// Number of peers the hub has now, for the metrics.
    fn peer_count(&self) -> usize;
    /// Moves the hub's IPv4 address (the VPN subnet chosen at setup).
    fn set_hub_address(&self, address: std::net::Ipv4Addr, prefix: u8) -> HubFuture;
}

/// The appliance's nftables rules (implemented by the binary). The API stores the
/// policy and device groups; `reconcile` renders them from the store and applies them.
pub trait Firewall: Send + Sync + 'static {
    /// Applies the ruleset for what the store holds now; resolves once `nft` is done.
    fn reconcile(&self) -> HubFuture;
    /// The outcome of the last apply, for `/healthz` and the firewall page.
    fn status(&self) -> FirewallStatus;
}

/// How the last apply went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallStatus {
    /// `--firewall off`: the daemon manages no rules.
    Off,
    /// Not applied yet (start-up).
    Pending,
    Applied {
        at: u64,
    },
    Failed {
        at: u64,
        error: String,
    },
}

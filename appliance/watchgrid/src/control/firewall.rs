//! The firewall as the control plane sees it: renders `table inet watchgrid` from the
//! store (policy, device groups, the VPN subnets) and applies it with `nft`.
//! Applies are serialized, and each one renders the store as it is at that moment, so
//! the last apply always reflects the last change.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use watchgrid_api::hub::{Firewall, FirewallError, FirewallFuture, FirewallStatus};
use watchgrid_core::IpPrefix;
use watchgrid_firewall::{Member, Node, Policy};
use watchgrid_store::{Store, SETTINGS_KEY};

pub struct NftFirewall {
    pub store: Arc<Store>,
    /// The node's facts; the VPN subnets are refreshed from the store at each apply.
    pub node: Node,
    /// The `nft` program (a path, or a name looked up in PATH).
    pub nft: String,
    pub status: Mutex<FirewallStatus>,
    pub serial: tokio::sync::Mutex<()>,
}

impl NftFirewall {
    pub fn new(store: Arc<Store>, node: Node, nft: String) -> Arc<NftFirewall> {
        Arc::new(NftFirewall {
            store,
            node,
            nft,
            status: Mutex::new(FirewallStatus::Pending),
            serial: tokio::sync::Mutex::new(()),
        })
    }

    /// Applies the ruleset for the store's current state.
    pub async fn apply_now(self: Arc<Self>) -> Result<(), FirewallError> {
        let _one_at_a_time = self.serial.lock().await;
        let me = self.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<usize, FirewallError> {
            let (node, policy, members) = me.inputs()?;
            let ruleset = watchgrid_firewall::render(&node, &policy, &members);
            watchgrid_firewall::apply(&me.nft, &ruleset).map_err(nft_refused)?;
            Ok(policy.rules.len())
        })
        .await
        .map_err(|e| FirewallError::Task(e.to_string()))
        .and_then(|r| r);
        let at = watchgrid_api::state::unix_now();
        let mut current = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let in_force = matches!(
            *current,
            FirewallStatus::Applied { .. } | FirewallStatus::Failed { in_force: true, .. }
        );
        *current = match &result {
            Ok(rules) => {
                tracing::info!(table = watchgrid_firewall::TABLE, rules, "firewall applied");
                FirewallStatus::Applied { at }
            }
            Err(e) if in_force => {
                tracing::error!(error = %e, "firewall change NOT applied; the previous ruleset stays in force");
                FirewallStatus::Failed {
                    at,
                    error: e.to_string(),
                    in_force,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "firewall NOT applied; only /healthz answers (degraded) until it is");
                FirewallStatus::Failed {
                    at,
                    error: e.to_string(),
                    in_force,
                }
            }
        };
        drop(current);
        result.map(|_| ())
    }

    /// Removes our table (clean shutdown with --firewall-cleanup).
    pub fn remove(&self) {
        match watchgrid_firewall::remove(&self.nft) {
            Ok(()) => tracing::info!(table = watchgrid_firewall::TABLE, "firewall removed"),
            Err(e) => tracing::error!(error = %e, "removing the firewall table"),
        }
    }

    fn inputs(&self) -> Result<(Node, Policy, Vec<Member>), FirewallError> {
        let mut node = self.node.clone();
        if let Some(s) = self.store.settings.get(SETTINGS_KEY)? {
            node.vpn_v4 = IpPrefix::new(IpAddr::V4(s.vpn_subnet_v4), s.vpn_prefix_v4)?;
        }
        if let Some(n) = self.store.network()? {
            node.vpn_v6 = IpPrefix::new(IpAddr::V6(n.ula_prefix), 64).ok();
        }
        // Rules are parsed when read: one that does not parse fails the apply, naming it.
        let stored = self.store.firewall_policy()?;
        let now = watchgrid_api::state::unix_now();
        let members = self
            .store
            .devices
            .list()?
            .into_iter()
            .filter(|d| d.is_active(now))
            .filter(|d| !d.groups.is_empty())
            .map(|d| Member {
                addresses: std::iter::once(IpAddr::V4(d.address_v4))
                    .chain(d.address_v6.map(IpAddr::V6))
                    .collect(),
                groups: d.groups,
            })
            .collect();
        Ok((
            node,
            Policy {
                egress: stored.egress,
                rules: stored.rules,
            },
            members,
        ))
    }
}

/// `nft` could not be run or refused the ruleset.
fn nft_refused(e: watchgrid_firewall::ApplyError) -> FirewallError {
    match e {
        watchgrid_firewall::ApplyError::Nft { program, reason } => {
            FirewallError::Nft { program, reason }
        }
    }
}

/// The handle the API holds.
pub struct FirewallHandle(pub Arc<NftFirewall>);

impl Firewall for FirewallHandle {
    fn reconcile(&self) -> FirewallFuture {
        Box::pin(self.0.clone().apply_now())
    }
    fn status(&self) -> FirewallStatus {
        self.0
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

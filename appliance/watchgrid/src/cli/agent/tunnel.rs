//! The agent's tunnel: the same dataplane as the hub, on its own TUN device, with one
//! peer (the hub). The agent logic reaches it only through its command channel.

use crate::dataplane::{ask, Command};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use tokio::sync::mpsc;
use watchgrid_agent::agent::Tunnel;
use watchgrid_agent::facts::TunnelCounters;
use watchgrid_api::dto::AgentConfig;
use watchgrid_core::{IpPrefix, PeerUpdate, PublicKey};

pub struct DataplaneTunnel {
    pub commands: mpsc::Sender<Command>,
    pub interface: String,
    /// The interface's addresses, with their prefixes (routes to them are implied).
    pub addresses: Vec<IpPrefix>,
    /// The hub's key as last applied.
    pub hub: Mutex<Option<PublicKey>>,
}

/// `10.100.0.2/16` (and the IPv6 one) as the interface address and its subnet.
pub fn interface_addresses(config: &AgentConfig) -> anyhow::Result<Vec<(IpAddr, u8)>> {
    let mut out = Vec::new();
    for text in std::iter::once(&config.address).chain(config.address_v6.as_ref()) {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("address {text:?} from the hub has no prefix"))?;
        let addr: IpAddr = addr.parse()?;
        out.push((addr, len.parse()?));
    }
    Ok(out)
}

impl DataplaneTunnel {
    fn hub_key(&self) -> Option<PublicKey> {
        *self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes for allowed IPs the interface's own subnets do not already cover.
    fn add_routes(&self, allowed: &[IpPrefix]) {
        for prefix in allowed {
            let covered = self
                .addresses
                .iter()
                .any(|own| own.prefix_len() <= prefix.prefix_len() && own.contains(prefix.addr()));
            if covered {
                continue;
            }
            let status = std::process::Command::new("ip")
                .args([
                    "route",
                    "replace",
                    &prefix.to_string(),
                    "dev",
                    &self.interface,
                ])
                .status();
            if !status.is_ok_and(|s| s.success()) {
                tracing::warn!(route = %prefix, "could not add the route (is iproute2 installed?)");
            }
        }
    }
}

async fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    let mut addrs = tokio::net::lookup_host(endpoint)
        .await
        .map_err(|e| format!("resolving the hub's endpoint {endpoint}: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("the hub's endpoint {endpoint} has no address"))
}

impl Tunnel for DataplaneTunnel {
    async fn apply(&self, config: &AgentConfig) -> Result<(), String> {
        let endpoint = resolve(&config.endpoint).await?;
        let allowed = config
            .allowed_ips
            .iter()
            .map(|a| a.parse::<IpPrefix>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(old) = self.hub_key().filter(|k| *k != config.hub_public_key) {
            let _ = ask(&self.commands, |reply| Command::RemovePeer {
                key: old,
                reply,
            })
            .await;
        }
        let update = PeerUpdate {
            preshared_key: None,
            endpoint: Some(endpoint),
            persistent_keepalive: Some(config.persistent_keepalive),
            replace_allowed_ips: true,
            allowed_ips: allowed.clone(),
        };
        let key = config.hub_public_key;
        ask(&self.commands, |reply| Command::UpsertPeer {
            key,
            update,
            reply,
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        *self.hub.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
        self.add_routes(&allowed);
        Ok(())
    }

    async fn stop(&self) {
        if let Some(key) = self.hub_key() {
            let _ = ask(&self.commands, |reply| Command::RemovePeer { key, reply }).await;
        }
    }

    async fn counters(&self) -> TunnelCounters {
        let Ok(status) = ask(&self.commands, Command::Status).await else {
            return TunnelCounters::default();
        };
        let hub = self.hub_key();
        status
            .peers
            .iter()
            .find(|p| Some(p.public_key) == hub)
            .map(|p| TunnelCounters {
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                last_handshake_s: p.last_handshake_age.map(|a| a.as_secs()),
            })
            .unwrap_or_default()
    }
}

//! The control plane's handle on the dataplane: the API's peer and address changes
//! become dataplane [`Command`]s, answered once applied.

use crate::dataplane::{ask, Command, Stopped};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use watchgrid_api::hub::{Hub, HubError, HubFuture, PeerStats, PeerStatsFuture};
use watchgrid_core::{IpPrefix, PeerUpdate, PublicKey};

pub struct DataplaneHub {
    pub commands: mpsc::Sender<Command>,
    pub public_key: PublicKey,
    /// Kept current by the dataplane after every change.
    pub peers: Arc<AtomicUsize>,
}

impl From<Stopped> for HubError {
    fn from(_: Stopped) -> HubError {
        HubError::Stopped
    }
}

impl Hub for DataplaneHub {
    fn public_key(&self) -> PublicKey {
        self.public_key
    }

    fn set_peer(&self, key: PublicKey, allowed_ips: Vec<IpPrefix>) -> HubFuture {
        let commands = self.commands.clone();
        let update = PeerUpdate {
            replace_allowed_ips: true,
            allowed_ips,
            ..PeerUpdate::default()
        };
        Box::pin(async move {
            let reply = |reply| Command::UpsertPeer { key, update, reply };
            Ok(ask(&commands, reply).await??)
        })
    }

    fn remove_peer(&self, key: PublicKey) -> HubFuture {
        let commands = self.commands.clone();
        Box::pin(async move {
            ask(&commands, |reply| Command::RemovePeer { key, reply }).await?;
            Ok(())
        })
    }

    fn peer_count(&self) -> usize {
        self.peers.load(Ordering::Relaxed)
    }

    fn peer_stats(&self) -> PeerStatsFuture {
        let commands = self.commands.clone();
        Box::pin(async move {
            let status = ask(&commands, Command::Status).await?;
            Ok(status
                .peers
                .into_iter()
                .map(|p| PeerStats {
                    public_key: p.public_key,
                    endpoint: p.endpoint,
                    last_handshake_age: p.last_handshake_age,
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                })
                .collect())
        })
    }

    fn set_hub_address(&self, address: Ipv4Addr, prefix: u8) -> HubFuture {
        let commands = self.commands.clone();
        Box::pin(async move {
            let reply = |reply| Command::SetAddress {
                address,
                prefix,
                reply,
            };
            ask(&commands, reply)
                .await?
                .map_err(|source| HubError::Address {
                    address,
                    prefix,
                    source,
                })
        })
    }
}

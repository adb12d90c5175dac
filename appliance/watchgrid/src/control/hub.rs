//! The control plane's handle on the dataplane: API changes become UAPI-style set
//! requests on the dataplane's command channel, answered once applied.

use crate::dataplane::uapi::protocol::{PeerChange, SetRequest};
use crate::dataplane::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use watchgrid_api::hub::{Hub, HubFuture};
use watchgrid_core::{IpPrefix, PeerUpdate, PublicKey};

pub struct DataplaneHub {
    pub commands: mpsc::Sender<Command>,
    pub public_key: String,
    /// Kept current by the dataplane after every change.
    pub peers: Arc<AtomicUsize>,
}

impl DataplaneHub {
    fn send(&self, change: PeerChange) -> HubFuture {
        let commands = self.commands.clone();
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            let req = SetRequest {
                peers: vec![change],
                ..SetRequest::default()
            };
            commands
                .send(Command::Set(Box::new(req), tx))
                .await
                .map_err(|_| "the dataplane has stopped".to_string())?;
            rx.await
                .map_err(|_| "the dataplane has stopped".to_string())?
                .map_err(|e| e.message)
        })
    }
}

impl Hub for DataplaneHub {
    fn public_key(&self) -> String {
        self.public_key.clone()
    }

    fn set_peer(&self, key: PublicKey, allowed_ips: Vec<IpPrefix>) -> HubFuture {
        self.send(PeerChange {
            public_key: key,
            remove: false,
            update_only: false,
            update: PeerUpdate {
                replace_allowed_ips: true,
                allowed_ips,
                ..PeerUpdate::default()
            },
        })
    }

    fn remove_peer(&self, key: PublicKey) -> HubFuture {
        self.send(PeerChange {
            public_key: key,
            remove: true,
            update_only: false,
            update: PeerUpdate::default(),
        })
    }

    fn peer_count(&self) -> usize {
        self.peers.load(Ordering::Relaxed)
    }

    fn set_hub_address(&self, address: std::net::Ipv4Addr, prefix: u8) -> HubFuture {
        let commands = self.commands.clone();
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            commands
                .send(Command::SetAddressV4(address, prefix, tx))
                .await
                .map_err(|_| "the dataplane has stopped".to_string())?;
            rx.await
                .map_err(|_| "the dataplane has stopped".to_string())?
        })
    }
}

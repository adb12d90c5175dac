//! What the rest of the binary may ask of the dataplane, in the dataplane's own terms:
//! peers, addresses, the device's key and port, and its status. The UAPI socket and
//! the control plane both translate their requests into these [`Command`]s.

use super::udp::BindError;
use std::io;
use std::net::Ipv4Addr;
use tokio::sync::{mpsc, oneshot};
use watchgrid_core::{EngineError, PeerUpdate, PublicKey};

/// The device-level request and status types are the UAPI protocol's (pure, in the core).
pub use watchgrid_core::uapi::{DeviceConfig, DeviceStatus, PeerChange};

/// A request to the dataplane task, with the channel its answer goes back on.
pub enum Command {
    /// Adds a peer, or updates the one with this key.
    UpsertPeer {
        key: PublicKey,
        update: PeerUpdate,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// Removes a peer; an absent peer is not an error.
    RemovePeer {
        key: PublicKey,
        reply: oneshot::Sender<()>,
    },
    /// Replaces the interface's IPv4 address (the VPN subnet chosen at setup).
    SetAddress {
        address: Ipv4Addr,
        prefix: u8,
        reply: oneshot::Sender<io::Result<()>>,
    },
    /// Reports the device's configuration and its peers' state.
    Status(oneshot::Sender<DeviceStatus>),
    /// Applies several changes together, or none of them (a `wg set`, a config file).
    Configure(Box<DeviceConfig>, oneshot::Sender<Result<(), ConfigError>>),
}

/// Why a [`DeviceConfig`] was not applied (nothing of it was).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The new listening port could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The kernel refused the firewall mark.
    #[error("setting fwmark: {0}")]
    Fwmark(io::Error),
    /// The engine refused a key or a peer.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The dataplane task has ended; no command reaches it any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the dataplane has stopped")]
pub struct Stopped;

/// Sends the command `make` builds around a reply channel and waits for the answer.
pub async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Stopped> {
    let (tx, rx) = oneshot::channel();
    commands.send(make(tx)).await.map_err(|_| Stopped)?;
    rx.await.map_err(|_| Stopped)
}

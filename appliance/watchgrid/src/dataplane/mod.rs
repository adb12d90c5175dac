//! The IO shell around the engine: one task owns the engine, the TUN device and the UDP
//! sockets, and moves packets between them in batches. Configuration arrives as
//! [`Command`]s on a channel, so nothing else ever locks engine state.

mod batch;
pub mod command;
mod configure;
mod io;
mod timer;
pub mod tun;
pub mod uapi;
pub mod udp;
pub mod wgconf;
mod writer;

pub use command::{ask, Command, ConfigError, DeviceConfig, DeviceStatus, PeerChange, Stopped};

use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tun_rs::AsyncDevice;
use udp::Sockets;
use watchgrid_core::{Engine, PublicKey};

enum Event {
    Shutdown,
    Command(Option<Command>),
    Timer,
    TunReadable(std::io::Result<()>),
    UdpReadable(bool, std::io::Result<()>),
}

/// One WireGuard interface at run time.
pub struct Dataplane {
    /// Inert until a private key is configured, as wireguard-go is.
    engine: Engine,
    /// Shared with the writer thread, which writes to it.
    tun: Arc<AsyncDevice>,
    /// Replaced on a rebind; batches already made go out on the sockets they were made for.
    sockets: Arc<Sockets>,
    batch: batch::Batch,
    writer: writer::Writer,
    /// Peer count for readers outside this task (metrics, health).
    peer_gauge: Arc<AtomicUsize>,
}

impl Dataplane {
    pub fn new(tun: AsyncDevice, listen_port: u16) -> anyhow::Result<Dataplane> {
        let tun = Arc::new(tun);
        Ok(Dataplane {
            engine: Engine::without_key(),
            writer: writer::Writer::start(tun.clone()).context("starting the writer thread")?,
            tun,
            sockets: Arc::new(Sockets::bind(listen_port, 0)?),
            batch: batch::Batch::default(),
            peer_gauge: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Starts handshakes with every peer whose endpoint is known (after a restart).
    pub fn initiate_handshakes(&mut self) {
        self.engine
            .initiate_handshakes(Instant::now(), &mut self.batch);
    }

    /// Where each peer was last seen.
    pub fn endpoints(&mut self) -> Vec<(PublicKey, SocketAddr)> {
        self.engine
            .peer_status(Instant::now())
            .into_iter()
            .filter_map(|p| p.endpoint.map(|e| (p.public_key, e)))
            .collect()
    }

    pub fn peer_gauge(&self) -> Arc<AtomicUsize> {
        self.peer_gauge.clone()
    }

    pub fn listen_port(&self) -> u16 {
        self.sockets.port
    }

    fn note_peer_count(&self) {
        self.peer_gauge
            .store(self.engine.peer_count(), Ordering::Relaxed);
    }

    /// Runs until `shutdown` resolves or the command channel closes; returns where
    /// each peer was last seen.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<Vec<(PublicKey, SocketAddr)>> {
        tokio::pin!(shutdown);
        // Whatever was produced before the loop (start-up handshakes) goes out first.
        let mut bufs = io::Buffers::new();
        self.flush().await;
        let mut deadline = timer::Deadline::new();
        loop {
            deadline.set(self.engine.poll_timeout());
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                cmd = commands.recv() => Event::Command(cmd),
                _ = deadline.expired() => Event::Timer,
                r = self.sockets.v4.socket.readable() => Event::UdpReadable(false, r),
                r = async { match &self.sockets.v6 {
                        Some(s) => s.socket.readable().await,
                        None => std::future::pending().await,
                    } } => Event::UdpReadable(true, r),
                r = self.tun.readable() => Event::TunReadable(r),
            };
            match event {
                Event::Shutdown | Event::Command(None) => return Ok(self.endpoints()),
                Event::Command(Some(command)) => self.handle(command),
                Event::Timer => self.engine.handle_timeout(Instant::now(), &mut self.batch),
                Event::TunReadable(r) => {
                    r.context("waiting for the TUN device")?;
                    self.drain_tun(&mut bufs)?;
                }
                Event::UdpReadable(v6, r) => {
                    r.context("waiting for the UDP socket")?;
                    self.drain_udp(v6, &mut bufs);
                }
            }
            self.flush().await;
        }
    }

    /// Hands what the engine produced in this round to the writer thread.
    async fn flush(&mut self) {
        self.writer.hand_over(&mut self.batch, &self.sockets).await;
    }

    /// Carries out one command; a requester that has gone away misses its answer.
    fn handle(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::UpsertPeer { key, update, reply } => {
                let result = self.engine.upsert_peer(now, key, update, &mut self.batch);
                self.note_peer_count();
                let _ = reply.send(result);
            }
            Command::RemovePeer { key, reply } => {
                // Absent is fine: the peer is gone either way.
                let _ = self.engine.remove_peer(&key);
                self.note_peer_count();
                let _ = reply.send(());
            }
            Command::SetAddress {
                address,
                prefix,
                reply,
            } => {
                // Replaces every IPv4 address of the interface; IPv6 addresses stay.
                let _ = reply.send(self.tun.set_network_address(address, prefix, None));
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Configure(config, reply) => {
                let _ = reply.send(self.configure(*config));
            }
        }
    }

    fn status(&mut self) -> DeviceStatus {
        DeviceStatus {
            private_key: self.engine.private_key().cloned(),
            listen_port: self.sockets.port,
            fwmark: self.sockets.fwmark(),
            peers: self.engine.peer_status(Instant::now()),
            unix_now: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }
}

//! The IO shell around the engine: one task owns the engine, the TUN device and the UDP
//! sockets, and moves packets between them in batches. Configuration arrives as
//! [`Command`]s on a channel, so nothing else ever locks engine state.
//!
//! Batching: each wake-up drains up to `BATCH` packets from the ready source into the
//! engine, collecting its output in one buffer, then writes the whole batch out. This
//! is the shape TUN offload (GSO/GRO) and UDP `sendmmsg`/GSO slot into later.

pub mod uapi;
pub mod udp;
pub mod wgconf;

use anyhow::Context;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tun_rs::AsyncDevice;
use uapi::protocol::{render_get, DeviceStatus, SetRequest, UapiError, EADDRINUSE, EINVAL, EIO};
use udp::Sockets;
use watchgrid_core::{Engine, Output, PublicKey, Secret};

/// Packets taken from one source before the batch is written out.
const BATCH: usize = 64;
/// Receive buffer: the largest IP packet or UDP datagram.
const BUF: usize = 65536;

/// Requests from the UAPI socket or the control plane.
pub enum Command {
    /// Reply with the `get=1` body.
    Get(oneshot::Sender<String>),
    /// Apply a validated set request atomically.
    Set(Box<SetRequest>, oneshot::Sender<Result<(), UapiError>>),
    /// Replace the interface's IPv4 address (the VPN subnet chosen at setup).
    SetAddressV4(Ipv4Addr, u8, oneshot::Sender<Result<(), String>>),
}

/// The engine's output for one batch, in one contiguous buffer.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    datagrams: Vec<(SocketAddr, usize, usize)>,
    packets: Vec<(usize, usize)>,
}

impl Output for Batch {
    fn send_datagram(&mut self, to: SocketAddr, datagram: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(datagram);
        self.datagrams.push((to, start, self.bytes.len()));
    }

    fn write_packet(&mut self, packet: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(packet);
        self.packets.push((start, self.bytes.len()));
    }
}

impl Batch {
    fn clear(&mut self) {
        self.bytes.clear();
        self.datagrams.clear();
        self.packets.clear();
    }
}

enum Event {
    Shutdown,
    Command(Option<Command>),
    Timer,
    TunReadable(io::Result<()>),
    UdpReadable(bool, io::Result<()>),
}

/// One WireGuard interface at run time.
pub struct Dataplane {
    engine: Engine,
    /// False until a private key is configured; the device is inert until then, as
    /// wireguard-go is (the engine holds a throwaway key meanwhile).
    has_key: bool,
    tun: AsyncDevice,
    sockets: Sockets,
    batch: Batch,
    /// Peer count for readers outside this task (metrics, health).
    peer_gauge: Arc<AtomicUsize>,
}

impl Dataplane {
    pub fn new(tun: AsyncDevice, listen_port: u16) -> anyhow::Result<Dataplane> {
        let engine = Engine::new(Secret::generate_private()).context("creating engine")?;
        let sockets = Sockets::bind(listen_port, 0)?;
        Ok(Dataplane {
            engine,
            has_key: false,
            tun,
            sockets,
            batch: Batch::default(),
            peer_gauge: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Starts handshakes with every peer whose endpoint is known (after a restart).
    pub fn initiate_handshakes(&mut self) {
        if self.has_key {
            self.engine
                .initiate_handshakes(Instant::now(), &mut self.batch);
        }
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

    fn set_address_v4(&mut self, address: Ipv4Addr, prefix: u8) -> Result<(), String> {
        // Replaces every IPv4 address of the interface; IPv6 addresses stay.
        self.tun
            .set_network_address(address, prefix, None)
            .map_err(|e| format!("setting {address}/{prefix}: {e}"))?;
        Ok(())
    }

    /// Applies a set request atomically: everything that can fail (binding a new port,
    /// checking peer keys) happens before the first change.
    pub fn apply(&mut self, req: SetRequest) -> Result<(), UapiError> {
        let now = Instant::now();
        let new_sockets = match req.listen_port {
            Some(port) if port != self.sockets.port || port == 0 => {
                let mark = req.fwmark.unwrap_or(self.sockets.fwmark);
                Some(Sockets::bind(port, mark).map_err(|e| UapiError {
                    errno: if format!("{e:#}").contains("in use") {
                        EADDRINUSE
                    } else {
                        EIO
                    },
                    message: format!("{e:#}"),
                })?)
            }
            _ => None,
        };
        let own_key = match &req.private_key {
            Some(Some(k)) => Some(k.public_key()),
            Some(None) => None,
            None => self.has_key.then(|| self.engine.public_key()),
        };
        if let Some(own) = own_key {
            if req.peers.iter().any(|p| !p.remove && p.public_key == own) {
                return Err(UapiError::invalid(
                    "a peer cannot have the interface's own public key",
                ));
            }
        }
        if new_sockets.is_none() {
            if let Some(mark) = req.fwmark.filter(|m| *m != self.sockets.fwmark) {
                self.sockets.set_fwmark(mark).map_err(|e| UapiError {
                    errno: EIO,
                    message: format!("setting fwmark: {e}"),
                })?;
            }
        }
        // From here on nothing fails.
        if let Some(s) = new_sockets {
            self.sockets = s;
        }
        let out = &mut self.batch;
        match req.private_key {
            Some(Some(k)) => {
                set_key(&mut self.engine, now, k)?;
                self.has_key = true;
            }
            Some(None) => {
                set_key(&mut self.engine, now, Secret::generate_private())?;
                self.has_key = false;
            }
            None => {}
        }
        if req.replace_peers {
            self.engine.clear_peers();
        }
        for p in req.peers {
            if p.remove {
                let _ = self.engine.remove_peer(&p.public_key);
                continue;
            }
            if p.update_only && !self.engine.has_peer(&p.public_key) {
                continue;
            }
            self.engine
                .upsert_peer(now, p.public_key, p.update, out)
                .map_err(|e| UapiError::invalid(e.to_string()))?;
        }
        if !self.has_key {
            self.batch.clear();
        }
        self.peer_gauge
            .store(self.engine.peer_count(), Ordering::Relaxed);
        Ok(())
    }

    fn status(&mut self) -> String {
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        render_get(&DeviceStatus {
            private_key: self.has_key.then(|| self.engine.private_key().clone()),
            listen_port: self.sockets.port,
            fwmark: self.sockets.fwmark,
            peers: self.engine.peer_status(Instant::now()),
            unix_now,
        })
    }

    /// Runs until `shutdown` resolves or the command channel closes.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<Vec<(PublicKey, SocketAddr)>> {
        tokio::pin!(shutdown);
        // Whatever was produced before the loop (start-up handshakes) goes out first.
        self.flush().await;
        let mut buf = vec![0u8; BUF];
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86400 * 365);
        let sleep = tokio::time::sleep_until(far);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            let deadline = self.engine.poll_timeout().filter(|_| self.has_key);
            if deadline != armed {
                sleep
                    .as_mut()
                    .reset(deadline.map(tokio::time::Instant::from_std).unwrap_or(far));
                armed = deadline;
            }
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                cmd = commands.recv() => Event::Command(cmd),
                _ = &mut sleep, if armed.is_some() => Event::Timer,
                r = self.sockets.v4.readable() => Event::UdpReadable(false, r),
                r = async { match &self.sockets.v6 {
                        Some(s) => s.readable().await,
                        None => std::future::pending().await,
                    } } => Event::UdpReadable(true, r),
                r = self.tun.readable() => Event::TunReadable(r),
            };
            match event {
                Event::Shutdown | Event::Command(None) => return Ok(self.endpoints()),
                Event::Command(Some(Command::Get(reply))) => {
                    let _ = reply.send(self.status());
                }
                Event::Command(Some(Command::Set(req, reply))) => {
                    let _ = reply.send(self.apply(*req));
                }
                Event::Command(Some(Command::SetAddressV4(addr, prefix, reply))) => {
                    let _ = reply.send(self.set_address_v4(addr, prefix));
                }
                Event::Timer => {
                    armed = None;
                    self.engine.handle_timeout(Instant::now(), &mut self.batch);
                }
                Event::TunReadable(r) => {
                    r.context("waiting for the TUN device")?;
                    self.drain_tun(&mut buf)?;
                }
                Event::UdpReadable(v6, r) => {
                    r.context("waiting for the UDP socket")?;
                    self.drain_udp(v6, &mut buf);
                }
            }
            self.flush().await;
        }
    }

    fn drain_tun(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        let now = Instant::now();
        for _ in 0..BATCH {
            match self.tun.try_recv(buf) {
                Ok(n) => {
                    if self.has_key {
                        let packet = buf.get(..n).unwrap_or_default();
                        self.engine
                            .handle_tunnel_packet(now, packet, &mut self.batch);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("reading from the TUN device"),
            }
        }
        Ok(())
    }

    fn drain_udp(&mut self, v6: bool, buf: &mut [u8]) {
        let now = Instant::now();
        let socket = if v6 {
            self.sockets.v6.as_ref()
        } else {
            Some(&self.sockets.v4)
        };
        let Some(socket) = socket else { return };
        for _ in 0..BATCH {
            match socket.try_recv_from(buf) {
                Ok((n, from)) => {
                    if self.has_key {
                        let datagram = buf.get(..n).unwrap_or_default();
                        self.engine
                            .handle_datagram(now, from, datagram, &mut self.batch);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors for earlier sends surface here; they are not fatal.
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive error");
                    break;
                }
            }
        }
    }

    /// Writes out everything the engine produced in this round.
    async fn flush(&mut self) {
        let Batch {
            bytes,
            datagrams,
            packets,
        } = &self.batch;
        for (to, start, end) in datagrams {
            let Some(socket) = self.sockets.for_dest(to) else {
                continue;
            };
            let data = bytes.get(*start..*end).unwrap_or_default();
            loop {
                match socket.try_send_to(data, *to) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if socket.writable().await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, to = %to, "UDP send failed");
                        break;
                    }
                }
            }
        }
        for (start, end) in packets {
            let data = bytes.get(*start..*end).unwrap_or_default();
            loop {
                match self.tun.try_send(data) {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if self.tun.writable().await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "TUN write failed");
                        break;
                    }
                }
            }
        }
        self.batch.clear();
    }
}

fn set_key(engine: &mut Engine, now: Instant, key: Secret) -> Result<(), UapiError> {
    engine.set_private_key(now, key).map_err(|e| UapiError {
        errno: EINVAL,
        message: e.to_string(),
    })
}

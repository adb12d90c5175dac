//! Moving packets: draining the TUN device and the UDP sockets into the engine, and
//! writing out what the engine produced, one batch per wake-up.
//!
//! Batching: each wake-up drains up to `BATCH` packets from the ready source into the
//! engine, collecting its output in one buffer, then writes the whole batch out. This
//! is the shape TUN offload (GSO/GRO) and UDP `sendmmsg`/GSO slot into later.

use super::Dataplane;
use anyhow::Context;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;
use watchgrid_core::Output;

/// Packets taken from one source before the batch is written out.
const BATCH: usize = 64;

/// The engine's output for one batch, in one contiguous buffer.
#[derive(Default)]
pub struct Batch {
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

impl Dataplane {
    pub(super) fn drain_tun(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        let now = Instant::now();
        for _ in 0..BATCH {
            match self.tun.try_recv(buf) {
                Ok(n) => {
                    let packet = buf.get(..n).unwrap_or_default();
                    self.engine
                        .handle_tunnel_packet(now, packet, &mut self.batch);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("reading from the TUN device"),
            }
        }
        Ok(())
    }

    pub(super) fn drain_udp(&mut self, v6: bool, buf: &mut [u8]) {
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
                    let datagram = buf.get(..n).unwrap_or_default();
                    self.engine
                        .handle_datagram(now, from, datagram, &mut self.batch);
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
    pub(super) async fn flush(&mut self) {
        self.send_datagrams().await;
        self.write_packets().await;
        self.batch.clear();
    }

    async fn send_datagrams(&self) {
        let Batch {
            bytes, datagrams, ..
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
    }

    async fn write_packets(&self) {
        let Batch { bytes, packets, .. } = &self.batch;
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
    }
}

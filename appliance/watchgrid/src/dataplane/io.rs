//! Moving packets in: draining the TUN device and the UDP sockets into the engine, one
//! batch per wake-up (the writer thread sends the batch out).
//!
//! With TUN offload the kernel hands over TCP super-packets of up to 64 KiB, which
//! tun-rs splits (GSO) into MTU-sized packets before they are encrypted; decrypted
//! packets of one flow are coalesced again (GRO) into few TUN writes. On the UDP side
//! quinn-udp receives many datagrams per call (`recvmmsg` and UDP GRO).

use super::Dataplane;
use anyhow::Context;
use quinn_udp::RecvMeta;
use std::io::{self, IoSliceMut};
use std::time::Instant;
use tun_rs::{IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// The largest IP packet or UDP datagram (with GRO, the largest coalesced datagram).
const BUF: usize = 65536;

/// Packets or datagrams taken from one source before the batch is written out: enough
/// to amortise the system calls, few enough that the other direction is not starved.
const ROUND: usize = 256;

/// Messages one UDP receive call asks for; with GRO each carries up to 64 datagrams.
const UDP_MESSAGES: usize = 8;

/// Receive buffers, allocated once per dataplane run and reused for every round.
pub struct Buffers {
    /// One raw TUN read: the virtio header and a packet of up to 64 KiB.
    tun_raw: Vec<u8>,
    /// The packets one TUN read splits into.
    tun_packets: Vec<Vec<u8>>,
    tun_sizes: Vec<usize>,
    udp: Vec<Vec<u8>>,
    udp_meta: Vec<RecvMeta>,
}

impl Buffers {
    pub fn new() -> Buffers {
        // Zeroed allocations come from fresh pages: memory is touched only as packets
        // of that size arrive.
        let bufs = |n: usize| (0..n).map(|_| vec![0u8; BUF]).collect::<Vec<_>>();
        Buffers {
            tun_raw: vec![0u8; VIRTIO_NET_HDR_LEN + BUF],
            tun_packets: bufs(IDEAL_BATCH_SIZE),
            tun_sizes: vec![0; IDEAL_BATCH_SIZE],
            udp: bufs(UDP_MESSAGES),
            udp_meta: vec![RecvMeta::default(); UDP_MESSAGES],
        }
    }
}

impl Dataplane {
    pub(super) fn drain_tun(&mut self, bufs: &mut Buffers) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut taken = 0;
        while taken < ROUND {
            let result = self.tun.try_recv_multiple(
                &mut bufs.tun_raw,
                &mut bufs.tun_packets,
                &mut bufs.tun_sizes,
                0,
            );
            let n = match result {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error().is_some() => {
                    return Err(e).context("reading from the TUN device")
                }
                // A super-packet tun-rs cannot split (malformed offload metadata): it
                // has been read, so dropping it loses only that packet.
                Err(e) => {
                    tracing::debug!(error = %e, "dropping a packet from TUN");
                    continue;
                }
            };
            let packets = bufs.tun_packets.iter().zip(&bufs.tun_sizes).take(n);
            for (buf, &size) in packets {
                let packet = buf.get(..size).unwrap_or_default();
                self.engine
                    .handle_tunnel_packet(now, packet, &mut self.batch);
            }
            taken += n.max(1);
        }
        Ok(())
    }

    pub(super) fn drain_udp(&mut self, v6: bool, bufs: &mut Buffers) {
        let now = Instant::now();
        let socket = if v6 {
            self.sockets.v6.as_ref()
        } else {
            Some(&self.sockets.v4)
        };
        let Some(socket) = socket else { return };
        let mut taken = 0;
        while taken < ROUND {
            let result = {
                let mut slices: Vec<IoSliceMut<'_>> =
                    bufs.udp.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                socket.try_recv(&mut slices, &mut bufs.udp_meta)
            };
            let n = match result {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors for earlier sends surface here; they are not fatal.
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive error");
                    break;
                }
            };
            for (meta, buf) in bufs.udp_meta.iter().zip(&bufs.udp).take(n) {
                let coalesced = buf.get(..meta.len).unwrap_or_default();
                // GRO joins datagrams of one sender, `stride` bytes apart.
                for datagram in coalesced.chunks(meta.stride.max(1)) {
                    self.engine
                        .handle_datagram(now, meta.addr, datagram, &mut self.batch);
                    taken += 1;
                }
            }
            taken += usize::from(n == 0);
        }
    }
}

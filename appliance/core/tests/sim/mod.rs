//! In-memory network of engines with a fake clock (boringtun built with `mock-instant`).
//! Datagrams travel through a queue; time moves only when a test advances it.

#![allow(dead_code)]

use mock_instant::MockClock;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use watchgrid_core::{Engine, IpPrefix, Output, PeerUpdate, PublicKey, Secret, TICK};

pub const INIT: u8 = 1;
pub const RESPONSE: u8 = 2;
pub const COOKIE: u8 = 3;
pub const DATA: u8 = 4;

#[derive(Default)]
pub struct Capture {
    pub sent: Vec<(SocketAddr, Vec<u8>)>,
    pub written: Vec<Vec<u8>>,
}

impl Output for Capture {
    fn send_datagram(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.sent.push((to, datagram.to_vec()));
    }
    fn write_packet(&mut self, packet: &[u8]) {
        self.written.push(packet.to_vec());
    }
}

pub struct Node {
    pub engine: Engine,
    pub key: Secret,
    /// Addresses this node receives on; the first one is also where it sends from.
    pub addrs: Vec<SocketAddr>,
    /// Packets the engine wrote to its tunnel.
    pub tunnel: Vec<Vec<u8>>,
}

impl Node {
    pub fn public_key(&self) -> PublicKey {
        self.engine.public_key().expect("every node has a key")
    }
}

/// One datagram seen on the wire.
#[derive(Clone, Debug)]
pub struct Seen {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub kind: u8,
    pub len: usize,
    pub bytes: Vec<u8>,
}

pub struct Net {
    pub nodes: Vec<Node>,
    base: Instant,
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub seen: Vec<Seen>,
    /// When false, datagrams are dropped instead of delivered (a cut link).
    pub link_up: bool,
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

pub fn prefix(s: &str) -> IpPrefix {
    s.parse().expect("test prefix")
}

/// A minimal IPv4 packet: a 20-byte header and `payload`. boringtun checks the
/// version and total length of what it decrypts, not checksums.
pub fn ipv4_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..].copy_from_slice(payload);
    p
}

/// A minimal IPv6 packet: a 40-byte header and `payload`.
pub fn ipv6_packet(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let src: std::net::Ipv6Addr = src.parse().expect("test v6 address");
    let dst: std::net::Ipv6Addr = dst.parse().expect("test v6 address");
    let mut p = vec![0u8; 40 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..].copy_from_slice(payload);
    p
}

impl Net {
    pub fn new() -> Net {
        MockClock::set_time(Duration::from_secs(1));
        Net {
            nodes: Vec::new(),
            base: Instant::now(),
            wire: VecDeque::new(),
            seen: Vec::new(),
            link_up: true,
        }
    }

    pub fn now(&self) -> Instant {
        self.base + MockClock::time()
    }

    pub fn add_node(&mut self, addr: &str) -> usize {
        let key = Secret::generate_private();
        let engine = Engine::new(key.clone()).expect("engine");
        self.nodes.push(Node {
            engine,
            key,
            addrs: vec![sa(addr)],
            tunnel: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Configures `a` to know `b` with the given allowed IPs, and `b`'s endpoint if `with_endpoint`.
    pub fn peer(&mut self, a: usize, b: usize, allowed: &[&str], with_endpoint: bool) {
        let update = PeerUpdate {
            endpoint: with_endpoint.then(|| self.nodes[b].addrs[0]),
            allowed_ips: allowed.iter().map(|s| prefix(s)).collect(),
            ..PeerUpdate::default()
        };
        self.upsert(a, self.nodes[b].public_key(), update);
    }

    pub fn upsert(&mut self, a: usize, key: PublicKey, update: PeerUpdate) {
        let now = self.now();
        let mut out = Capture::default();
        self.nodes[a]
            .engine
            .upsert_peer(now, key, update, &mut out)
            .expect("upsert peer");
        self.absorb(a, out);
    }

    pub fn set_private_key(&mut self, a: usize, key: Secret) {
        let now = self.now();
        self.nodes[a]
            .engine
            .set_private_key(now, key.clone())
            .expect("set private key");
        self.nodes[a].key = key;
    }

    fn absorb(&mut self, a: usize, out: Capture) {
        let from = self.nodes[a].addrs[0];
        for (to, d) in out.sent {
            self.inject(from, to, d);
        }
        self.nodes[a].tunnel.extend(out.written);
    }

    /// Puts a datagram on the wire as if `from` had sent it.
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, d: Vec<u8>) {
        self.seen.push(Seen {
            from,
            to,
            kind: d.first().copied().unwrap_or(0),
            len: d.len(),
            bytes: d.clone(),
        });
        self.wire.push_back((from, to, d));
    }

    /// Node `a` reads `packet` from its tunnel.
    pub fn send(&mut self, a: usize, packet: &[u8]) {
        let now = self.now();
        let mut out = Capture::default();
        self.nodes[a]
            .engine
            .handle_tunnel_packet(now, packet, &mut out);
        self.absorb(a, out);
    }

    /// Delivers queued datagrams until the wire is empty.
    pub fn pump(&mut self) {
        let mut budget = 10_000;
        while let Some((from, to, d)) = self.wire.pop_front() {
            budget -= 1;
            assert!(budget > 0, "datagram storm between engines");
            if !self.link_up {
                continue;
            }
            let Some(i) = self.nodes.iter().position(|n| n.addrs.contains(&to)) else {
                continue;
            };
            let now = self.now();
            let mut out = Capture::default();
            self.nodes[i]
                .engine
                .handle_datagram(now, from, &d, &mut out);
            // Replies leave from the address the request arrived on.
            for (dst, reply) in out.sent {
                self.inject(to, dst, reply);
            }
            self.nodes[i].tunnel.extend(out.written);
        }
    }

    /// Moves time forward in timer ticks, running every engine's timers and the wire.
    pub fn advance(&mut self, by: Duration) {
        let mut left = by;
        while !left.is_zero() {
            let step = left.min(TICK);
            MockClock::advance(step);
            left -= step;
            let now = self.now();
            for i in 0..self.nodes.len() {
                let due = self.nodes[i]
                    .engine
                    .poll_timeout()
                    .is_some_and(|t| t <= now);
                if due {
                    let mut out = Capture::default();
                    self.nodes[i].engine.handle_timeout(now, &mut out);
                    self.absorb(i, out);
                }
            }
            self.pump();
        }
    }

    pub fn count(&self, kind: u8) -> usize {
        self.seen.iter().filter(|s| s.kind == kind).count()
    }

    pub fn took_tunnel(&mut self, a: usize) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.nodes[a].tunnel)
    }
}

pub fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 4] {
    [a, b, c, d]
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test ip")
}

pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

//! The WireGuard device state machine: a peer table around boringtun's `Tunn`s.
//!
//! Inputs are datagrams from the network, packets from the tunnel and timer ticks, each
//! with the current `Instant`; outputs go to an [`Output`] the caller provides. Nothing
//! here touches a socket. boringtun reads its own monotonic clock inside `Tunn`; this
//! type hides that behind `handle_timeout(now)` / `poll_timeout()` so callers drive
//! every timer from one place.

use crate::allowed_ips::{AllowedIps, IpPrefix};
use crate::keys::{PublicKey, Secret};
use crate::source_limit::SourceLimiter;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use rand_core::{OsRng, RngCore};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often boringtun's timers are polled. Its timers have one-second resolution;
/// wireguard-go and boringtun's own device poll at this rate too.
pub const TICK: Duration = Duration::from_millis(250);

/// Valid handshake messages per second, device-wide, before cookies are demanded
/// (boringtun's device uses the same figure).
pub const HANDSHAKE_LOAD_LIMIT: u64 = 100;

/// Largest inner packet accepted from the tunnel (the TUN maximum).
pub const MAX_PACKET: usize = 65535;
/// Scratch space: an inner packet plus WireGuard's 32 bytes of overhead, and never
/// less than a handshake initiation (148 bytes).
const SCRATCH: usize = MAX_PACKET + 32;

/// Peer index: the high 24 bits of every session index boringtun hands out for a peer,
/// so an incoming message's receiver index names its peer without a search.
pub type PeerIndex = u32;
const INDEX_BITS: u32 = 24;

/// Where the engine's results go. The IO shell batches them.
pub trait Output {
    /// Send `datagram` to `to` over UDP.
    fn send_datagram(&mut self, to: SocketAddr, datagram: &[u8]);
    /// Write a decrypted, source-checked IP packet to the TUN device.
    fn write_packet(&mut self, packet: &[u8]);
}

/// Errors from configuration calls. Packet handling never errors: bad packets are
/// dropped and counted in [`DropCounters`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("no peer with that public key")]
    UnknownPeer,
    #[error("a peer cannot have the interface's own public key")]
    OwnPublicKey,
    #[error("the private key is all zeroes")]
    ZeroPrivateKey,
    #[error("peer table full")]
    TooManyPeers,
}

/// Why packets were dropped; exported as dataplane counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DropCounters {
    /// Tunnel packet whose destination no peer's allowed-IPs cover.
    pub no_route: u64,
    /// Tunnel packet for a peer without a known endpoint.
    pub no_endpoint: u64,
    /// Datagram that failed to parse, authenticate or decrypt.
    pub invalid: u64,
    /// Datagram for a session index or public key we do not know.
    pub unknown_peer: u64,
    /// Decrypted packet whose inner source is not in the sender's allowed-IPs.
    pub source_not_allowed: u64,
    /// Handshake message dropped by the per-source limit.
    pub rate_limited: u64,
    /// Cookie replies sent because the device was under load.
    pub cookie_replies: u64,
}

/// A peer's configuration as set through UAPI or the control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerUpdate {
    /// `Some(None)` removes the preshared key.
    pub preshared_key: Option<Option<Secret>>,
    pub endpoint: Option<SocketAddr>,
    /// Seconds; `Some(0)` turns persistent keepalive off.
    pub persistent_keepalive: Option<u16>,
    /// Remove all allowed IPs before adding `allowed_ips`.
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<IpPrefix>,
}

/// What `wg show` reports about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: PublicKey,
    pub preshared_key: Option<Secret>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: u16,
    pub allowed_ips: Vec<IpPrefix>,
    /// Time since the latest completed handshake, if there ever was one.
    pub last_handshake_age: Option<Duration>,
    /// Wire bytes received from / sent to this peer (authenticated datagrams only).
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

struct Peer {
    public_key: PublicKey,
    preshared_key: Option<Secret>,
    persistent_keepalive: u16,
    /// The noise session state; `None` while the device has no private key.
    tunn: Option<Tunn>,
    link: Link,
    last_handshake_at: Option<Instant>,
}

/// Where a peer is and what crossed the wire with it; apart from [`Peer::tunn`] so
/// both can be borrowed at once.
#[derive(Default)]
struct Link {
    endpoint: Option<SocketAddr>,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// The device's own key pair, and the handshake limiter keyed to it.
struct Identity {
    private_key: Secret,
    public_key: PublicKey,
    load_limiter: Arc<RateLimiter>,
}

impl Identity {
    fn new(private_key: Secret) -> Identity {
        let public_key = private_key.public_key();
        Identity {
            load_limiter: new_load_limiter(&public_key),
            private_key,
            public_key,
        }
    }

    fn tunn(&self, peer: &Peer, id: PeerIndex) -> Tunn {
        new_tunn(
            &self.private_key,
            peer.public_key,
            peer.preshared_key.as_ref(),
            peer.persistent_keepalive,
            id,
            &self.load_limiter,
        )
    }
}

/// One WireGuard interface: its key, its peers and their sessions.
///
/// Without a private key the device is inert, as wireguard-go is: peers can be
/// configured, but no packet is read, sent or answered and no timer runs.
pub struct Engine {
    identity: Option<Identity>,
    source_limiter: SourceLimiter,
    peers: HashMap<PeerIndex, Peer>,
    by_key: HashMap<PublicKey, PeerIndex>,
    routes: AllowedIps<PeerIndex>,
    next_index: PeerIndex,
    next_tick: Option<Instant>,
    drops: DropCounters,
    scratch: Box<[u8]>,
    /// Endpoints of recently removed peers. A peer removed and added back (a device
    /// disabled, then enabled) still holds a session to us and would only notice ours
    /// is gone after KEEPALIVE + REKEY_TIMEOUT (15 s); knowing where it is, we
    /// handshake at once instead.
    removed_endpoints: HashMap<PublicKey, SocketAddr>,
}

/// Bound on remembered endpoints of removed peers.
const REMEMBERED_ENDPOINTS: usize = 4096;

impl Engine {
    /// A device with this private key and no peers.
    pub fn new(private_key: Secret) -> Result<Engine, EngineError> {
        if private_key.is_zero() {
            return Err(EngineError::ZeroPrivateKey);
        }
        let mut engine = Engine::without_key();
        engine.identity = Some(Identity::new(private_key));
        Ok(engine)
    }

    /// A device with neither a key nor peers: inert until [`Engine::set_private_key`].
    pub fn without_key() -> Engine {
        Engine {
            identity: None,
            source_limiter: SourceLimiter::default(),
            peers: HashMap::new(),
            by_key: HashMap::new(),
            routes: AllowedIps::default(),
            // A random start keeps session indices unpredictable across restarts.
            next_index: OsRng.next_u32() >> (32 - INDEX_BITS),
            next_tick: None,
            drops: DropCounters::default(),
            scratch: vec![0u8; SCRATCH].into_boxed_slice(),
            removed_endpoints: HashMap::new(),
        }
    }

    /// The device's public key; `None` until it has a private key.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.identity.as_ref().map(|i| i.public_key)
    }

    pub fn private_key(&self) -> Option<&Secret> {
        self.identity.as_ref().map(|i| &i.private_key)
    }

    pub fn drops(&self) -> DropCounters {
        self.drops
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn has_peer(&self, key: &PublicKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// Replaces the private key. Sessions of every peer die (they were keyed to the old
    /// identity). No handshake is started here: the peers do not know the new key yet,
    /// and an initiation they drop would hold back the next one for REKEY_TIMEOUT (5 s);
    /// the next packet in either direction handshakes at once instead, as in
    /// wireguard-go. A peer whose key equals the new public key is removed: a device
    /// cannot be its own peer.
    pub fn set_private_key(&mut self, now: Instant, key: Secret) -> Result<(), EngineError> {
        if key.is_zero() {
            return Err(EngineError::ZeroPrivateKey);
        }
        if self.private_key() == Some(&key) {
            return Ok(());
        }
        let identity = Identity::new(key);
        let own = identity.public_key;
        self.remove_peer(&own).ok();
        let public = x25519::PublicKey::from(identity.public_key.0);
        for (id, peer) in self.peers.iter_mut() {
            match peer.tunn.as_mut() {
                Some(tunn) => tunn.set_static_private(
                    identity.private_key.static_secret(),
                    public,
                    Some(identity.load_limiter.clone()),
                ),
                None => peer.tunn = Some(identity.tunn(peer, *id)),
            }
        }
        self.identity = Some(identity);
        self.schedule(now);
        Ok(())
    }

    /// Drops the private key: every session dies and the device turns inert. Peers and
    /// their configuration stay, ready for the next key.
    pub fn clear_private_key(&mut self) {
        self.identity = None;
        self.next_tick = None;
        for peer in self.peers.values_mut() {
            peer.tunn = None;
        }
    }

    /// Adds the peer if it is new, then applies `update`. Changing the preshared key or
    /// the keepalive interval of an existing peer restarts its session (boringtun fixes
    /// both at construction); other peers are untouched. After a keepalive-only change
    /// the peer re-handshakes at once, since it still knows us; after a preshared-key
    /// change it waits for traffic, as the other side may not have the new key yet.
    pub fn upsert_peer(
        &mut self,
        now: Instant,
        key: PublicKey,
        update: PeerUpdate,
        out: &mut impl Output,
    ) -> Result<(), EngineError> {
        if self.public_key() == Some(key) {
            return Err(EngineError::OwnPublicKey);
        }
        let (id, returning) = match self.by_key.get(&key) {
            Some(id) => (*id, None),
            None => (self.add_peer(key)?, self.removed_endpoints.remove(&key)),
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return Err(EngineError::UnknownPeer);
        };
        let mut rebuild = false;
        let mut psk_changed = false;
        if let Some(psk) = update.preshared_key {
            let psk = psk.filter(|k| !k.is_zero());
            psk_changed = psk != peer.preshared_key;
            rebuild |= psk_changed;
            peer.preshared_key = psk;
        }
        if let Some(ka) = update.persistent_keepalive {
            rebuild |= ka != peer.persistent_keepalive;
            peer.persistent_keepalive = ka;
        }
        if let Some(ep) = update.endpoint {
            peer.link.endpoint = Some(ep);
        }
        if let (true, Some(identity)) = (rebuild, &self.identity) {
            peer.tunn = Some(identity.tunn(peer, id));
            if !psk_changed {
                self.initiate_handshake(now, id, out);
            }
        }
        if update.replace_allowed_ips {
            self.routes.remove_value(id);
        }
        for prefix in update.allowed_ips {
            self.routes.insert(prefix, id);
        }
        if let (Some(ep), Some(peer)) = (returning, self.peers.get_mut(&id)) {
            if peer.link.endpoint.is_none() {
                peer.link.endpoint = Some(ep);
                self.initiate_handshake(now, id, out);
            }
        }
        self.schedule(now);
        Ok(())
    }

    fn add_peer(&mut self, key: PublicKey) -> Result<PeerIndex, EngineError> {
        let limit = 1u32 << INDEX_BITS;
        if self.peers.len() >= limit as usize {
            return Err(EngineError::TooManyPeers);
        }
        let mut id = self.next_index % limit;
        while self.peers.contains_key(&id) {
            id = (id + 1) % limit;
        }
        self.next_index = (id + 1) % limit;
        let mut peer = Peer {
            public_key: key,
            preshared_key: None,
            persistent_keepalive: 0,
            tunn: None,
            link: Link::default(),
            last_handshake_at: None,
        };
        peer.tunn = self.identity.as_ref().map(|i| i.tunn(&peer, id));
        self.peers.insert(id, peer);
        self.by_key.insert(key, id);
        Ok(id)
    }

    /// Removes a peer, its allowed IPs and its sessions.
    pub fn remove_peer(&mut self, key: &PublicKey) -> Result<(), EngineError> {
        let id = self.by_key.remove(key).ok_or(EngineError::UnknownPeer)?;
        if let Some(ep) = self.peers.remove(&id).and_then(|p| p.link.endpoint) {
            if self.removed_endpoints.len() >= REMEMBERED_ENDPOINTS {
                self.removed_endpoints.clear();
            }
            self.removed_endpoints.insert(*key, ep);
        }
        self.routes.remove_value(id);
        Ok(())
    }

    /// Removes every peer (UAPI `replace_peers=true`).
    pub fn clear_peers(&mut self) {
        self.peers.clear();
        self.by_key.clear();
        self.routes = AllowedIps::default();
    }

    /// Status of every peer, ordered by public key so listings are stable.
    pub fn peer_status(&mut self, now: Instant) -> Vec<PeerStatus> {
        let mut ids: Vec<(PublicKey, PeerIndex)> =
            self.by_key.iter().map(|(k, id)| (*k, *id)).collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|(_, id)| {
                let allowed_ips = self.routes.prefixes_of(id);
                let peer = self.peers.get_mut(&id)?;
                peer.note_handshake(now);
                Some(PeerStatus {
                    public_key: peer.public_key,
                    preshared_key: peer.preshared_key.clone(),
                    endpoint: peer.link.endpoint,
                    persistent_keepalive: peer.persistent_keepalive,
                    allowed_ips,
                    last_handshake_age: peer
                        .last_handshake_at
                        .map(|t| now.saturating_duration_since(t)),
                    rx_bytes: peer.link.rx_bytes,
                    tx_bytes: peer.link.tx_bytes,
                })
            })
            .collect()
    }

    /// When `handle_timeout` should next run; `None` while there are no peers or no key.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.peers.is_empty() || self.identity.is_none() {
            None
        } else {
            self.next_tick
        }
    }

    fn schedule(&mut self, now: Instant) {
        if self.next_tick.is_none() && self.identity.is_some() {
            self.next_tick = Some(now + TICK);
        }
    }

    /// Runs every peer's timers: handshake retries, rekey, keepalives, session expiry.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl Output) {
        let Some(identity) = &self.identity else {
            return;
        };
        // boringtun zeroes its load counter only when asked; it checks the 1 s period itself.
        identity.load_limiter.reset_count();
        self.next_tick = Some(now + TICK);
        self.source_limiter.evict_idle(now);
        let Engine {
            peers,
            scratch,
            drops,
            ..
        } = self;
        for peer in peers.values_mut() {
            let Some((link, tunn)) = peer.with_session() else {
                continue;
            };
            match tunn.update_timers(scratch) {
                TunnResult::WriteToNetwork(datagram) => link.send(datagram, drops, out),
                TunnResult::Done | TunnResult::Err(_) => {}
                TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
            }
            peer.note_handshake(now);
        }
    }

    /// A packet read from the TUN device: route it by destination and encrypt it.
    pub fn handle_tunnel_packet(&mut self, now: Instant, packet: &[u8], out: &mut impl Output) {
        if self.identity.is_none() {
            return;
        }
        self.schedule(now);
        if packet.len() > MAX_PACKET {
            self.drops.invalid += 1;
            return;
        }
        let Some(dst) = Tunn::dst_address(packet) else {
            self.drops.invalid += 1;
            return;
        };
        let Some(id) = self.routes.lookup(dst) else {
            self.drops.no_route += 1;
            return;
        };
        let Engine {
            peers,
            scratch,
            drops,
            ..
        } = self;
        let Some((link, tunn)) = peers.get_mut(&id).and_then(Peer::with_session) else {
            drops.no_route += 1;
            return;
        };
        match tunn.encapsulate(packet, scratch) {
            TunnResult::WriteToNetwork(datagram) => link.send(datagram, drops, out),
            TunnResult::Err(_) => drops.invalid += 1,
            _ => {}
        }
    }

    /// A datagram received on the WireGuard UDP port from `from`: admitted past the load
    /// limits, matched to its peer, then decrypted by that peer's session.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut impl Output,
    ) {
        if self.identity.is_none() {
            return;
        }
        self.next_tick.get_or_insert(now + TICK);
        let Some(packet) = self.admit(now, from, datagram, out) else {
            return;
        };
        let Some((id, authenticates_endpoint)) = self.identify(&packet) else {
            return;
        };
        self.decapsulate(now, id, from, datagram, authenticates_endpoint, out);
    }

    /// Load protection: handshake messages are capped per source before any
    /// cryptography, then boringtun's device-wide limiter checks mac1 and answers with a
    /// cookie under load. `None` when the datagram goes no further.
    fn admit<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
        out: &mut impl Output,
    ) -> Option<Packet<'a>> {
        let identity = self.identity.as_ref()?;
        // Message types 1 and 2 cost a Diffie-Hellman each (the type is a little-endian u32).
        if matches!(datagram.first(), Some(1 | 2)) && !self.source_limiter.allow(now, from.ip()) {
            self.drops.rate_limited += 1;
            return None;
        }
        let mut cookie = [0u8; 64];
        match identity
            .load_limiter
            .verify_packet(Some(from.ip()), datagram, &mut cookie)
        {
            Ok(packet) => Some(packet),
            Err(TunnResult::WriteToNetwork(reply)) => {
                self.drops.cookie_replies += 1;
                out.send_datagram(from, reply);
                None
            }
            Err(_) => {
                self.drops.invalid += 1;
                None
            }
        }
    }

    /// The peer a message is for, and whether it proves where that peer is now.
    /// Initiations name their sender by its static key (which costs the responder's
    /// half of the handshake to read); every other message by our session index.
    fn identify(&mut self, packet: &Packet) -> Option<(PeerIndex, bool)> {
        let identity = self.identity.as_ref()?;
        match packet {
            Packet::HandshakeInit(init) => {
                let public = x25519::PublicKey::from(identity.public_key.0);
                let Ok(half) =
                    parse_handshake_anon(&identity.private_key.static_secret(), &public, init)
                else {
                    self.drops.invalid += 1;
                    return None;
                };
                match self.by_key.get(&PublicKey(half.peer_static_public)) {
                    Some(id) => Some((*id, true)),
                    None => {
                        self.drops.unknown_peer += 1;
                        None
                    }
                }
            }
            Packet::HandshakeResponse(p) => Some((p.receiver_idx >> 8, true)),
            Packet::PacketData(p) => Some((p.receiver_idx >> 8, true)),
            // A cookie reply proves nothing about where the peer is now.
            Packet::PacketCookieReply(p) => Some((p.receiver_idx >> 8, false)),
        }
    }

    /// Runs the datagram through peer `id`'s session: handshake replies go back out,
    /// decrypted packets go to the tunnel if their inner source is the peer's.
    fn decapsulate(
        &mut self,
        now: Instant,
        id: PeerIndex,
        from: SocketAddr,
        datagram: &[u8],
        authenticates_endpoint: bool,
        out: &mut impl Output,
    ) {
        let Engine {
            peers,
            scratch,
            drops,
            routes,
            ..
        } = self;
        let Some(peer) = peers.get_mut(&id) else {
            drops.unknown_peer += 1;
            return;
        };
        let Some((link, tunn)) = peer.with_session() else {
            drops.unknown_peer += 1;
            return;
        };
        let mut flush_queue = false;
        let inner_source = match tunn.decapsulate(Some(from.ip()), datagram, scratch) {
            TunnResult::Done => None,
            TunnResult::Err(_) => {
                drops.invalid += 1;
                return;
            }
            TunnResult::WriteToNetwork(reply) => {
                // Roaming (whitepaper §2.1): the endpoint follows the latest authenticated packet.
                link.endpoint = Some(from);
                link.send(reply, drops, out);
                flush_queue = true;
                None
            }
            TunnResult::WriteToTunnelV4(inner, src) => Some((inner, IpAddr::V4(src))),
            TunnResult::WriteToTunnelV6(inner, src) => Some((inner, IpAddr::V6(src))),
        };
        if let Some((inner, src)) = inner_source {
            // Cryptokey routing (whitepaper §2): the inner source must be one of the peer's.
            if routes.lookup(src) != Some(id) {
                drops.source_not_allowed += 1;
                return;
            }
            out.write_packet(inner);
        }
        if authenticates_endpoint {
            link.endpoint = Some(from);
            link.rx_bytes += datagram.len() as u64;
        }
        if flush_queue {
            // Packets queued while the handshake was pending go out now; boringtun hands
            // them back one per call with an empty datagram until it says Done.
            while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], scratch) {
                link.send(queued, drops, out);
            }
        }
        peer.note_handshake(now);
    }

    /// Starts a handshake with every peer whose endpoint is known. After a restart the
    /// peers still hold sessions we forgot; without this they would notice only after
    /// KEEPALIVE + REKEY_TIMEOUT (15 s) of unanswered traffic.
    pub fn initiate_handshakes(&mut self, now: Instant, out: &mut impl Output) {
        let ids: Vec<PeerIndex> = self
            .peers
            .iter()
            .filter(|(_, p)| p.link.endpoint.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.initiate_handshake(now, id, out);
        }
    }

    /// Sends a handshake initiation to a peer now, if it has an endpoint.
    fn initiate_handshake(&mut self, now: Instant, id: PeerIndex, out: &mut impl Output) {
        self.schedule(now);
        let Engine {
            peers,
            scratch,
            drops,
            ..
        } = self;
        let Some((link, tunn)) = peers.get_mut(&id).and_then(Peer::with_session) else {
            return;
        };
        if link.endpoint.is_none() {
            return;
        }
        if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(scratch, false) {
            link.send(init, drops, out);
        }
    }
}

impl Peer {
    /// The peer with its session, split so both can be used at once; `None` while the
    /// device has no key.
    fn with_session(&mut self) -> Option<(&mut Link, &mut Tunn)> {
        let tunn = self.tunn.as_mut()?;
        Some((&mut self.link, tunn))
    }

    /// Records when the current session was established, so the latest handshake is
    /// still known after the session expires (as `wg show` expects).
    fn note_handshake(&mut self, now: Instant) {
        if let Some(age) = self.tunn.as_ref().and_then(Tunn::time_since_last_handshake) {
            self.last_handshake_at = now.checked_sub(age).or(Some(now));
        }
    }
}

impl Link {
    fn send(&mut self, datagram: &[u8], drops: &mut DropCounters, out: &mut impl Output) {
        match self.endpoint {
            Some(ep) => {
                self.tx_bytes += datagram.len() as u64;
                out.send_datagram(ep, datagram);
            }
            None => drops.no_endpoint += 1,
        }
    }
}

fn new_load_limiter(public_key: &PublicKey) -> Arc<RateLimiter> {
    Arc::new(RateLimiter::new(
        &x25519::PublicKey::from(public_key.0),
        HANDSHAKE_LOAD_LIMIT,
    ))
}

fn new_tunn(
    private_key: &Secret,
    peer: PublicKey,
    psk: Option<&Secret>,
    keepalive: u16,
    id: PeerIndex,
    limiter: &Arc<RateLimiter>,
) -> Tunn {
    Tunn::new(
        private_key.static_secret(),
        x25519::PublicKey::from(peer.0),
        psk.map(|k| k.0),
        (keepalive > 0).then_some(keepalive),
        id,
        Some(limiter.clone()),
    )
}

//! Engine costs without IO, on one core: memory and routing lookups with 10,000 peers,
//! handshakes answered per second, and flood initiations answered per second once the
//! device is in cookie mode (boringtun's load limiter: cookie replies, no Diffie-Hellman).
//!
//!     cargo run --release -p watchgrid-core --example bench_engine

use mock_instant::MockClock;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use watchgrid_core::{AllowedIps, Engine, IpPrefix, Output, PeerUpdate, PublicKey, Secret};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const PEERS: u32 = 10_000;
const LOOKUPS: u32 = 10_000_000;
/// Handshake initiators; each sends one initiation.
const INITIATORS: u32 = 2_000;
/// WireGuard message types (little-endian u32 in the first byte).
const RESPONSE: u8 = 2;
const COOKIE_REPLY: u8 = 3;

/// A datagram and where it came from or goes.
type Datagram = (SocketAddr, Vec<u8>);

/// Datagrams the engine sent; packets for the TUN device are not needed here.
#[derive(Default)]
struct Sent(Vec<Datagram>);

impl Output for Sent {
    fn send_datagram(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.0.push((to, datagram.to_vec()));
    }
    fn write_packet(&mut self, _packet: &[u8]) {}
}

fn rss_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).ok_or("statm")?.parse()?;
    Ok(pages * 4096)
}

/// The i-th peer's addresses: 10.0.0.0/8 and fd00::/64 hosts.
fn inner_v4(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i)
}

fn peer_update(i: u32, endpoint: SocketAddr) -> PeerUpdate {
    PeerUpdate {
        endpoint: Some(endpoint),
        allowed_ips: vec![
            IpPrefix::host(IpAddr::V4(inner_v4(i))),
            IpPrefix::host(IpAddr::V6(Ipv6Addr::new(
                0xfd00, 0, 0, 0, 0, 0, 0, i as u16,
            ))),
        ],
        ..PeerUpdate::default()
    }
}

fn source(i: u32) -> SocketAddr {
    // 172.16.0.0/12: one source per initiator, so the per-source cap never applies.
    SocketAddr::from((Ipv4Addr::from(0xac10_0000 + i), 51820))
}

fn ten_thousand_peers() -> Result<()> {
    let keys: Vec<PublicKey> = (0..PEERS)
        .map(|_| Secret::generate_private().public_key())
        .collect();
    let rss_before = rss_bytes()?;
    let mut engine = Engine::new(Secret::generate_private())?;
    let started = Instant::now();
    for (i, key) in (0..PEERS).zip(&keys) {
        engine.upsert_peer(
            started,
            *key,
            peer_update(i, source(i)),
            &mut Sent::default(),
        )?;
    }
    let added = started.elapsed();
    let grown = rss_bytes()?.saturating_sub(rss_before);
    println!(
        "{PEERS} peers: added in {:.1} ms, engine memory {:.1} MiB ({} bytes per peer)",
        added.as_secs_f64() * 1e3,
        grown as f64 / (1 << 20) as f64,
        grown / u64::from(PEERS)
    );
    // The engine's routing table, alone, with the same prefixes: the per-packet lookup.
    let mut table = AllowedIps::default();
    for i in 0..PEERS {
        table.insert(IpPrefix::host(IpAddr::V4(inner_v4(i))), i);
    }
    let started = Instant::now();
    let mut found = 0u64;
    let mut x = 12345u32;
    for _ in 0..LOOKUPS {
        // xorshift: addresses spread over the table, not one cache line.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        found += u64::from(table.lookup(IpAddr::V4(inner_v4(x % PEERS))).is_some());
    }
    let per = started.elapsed().as_secs_f64() / f64::from(LOOKUPS);
    if found != u64::from(LOOKUPS) {
        return Err(format!("{found} of {LOOKUPS} lookups found their peer").into());
    }
    println!(
        "allowed-IPs lookup among {PEERS} peers: {:.0} ns",
        per * 1e9
    );
    Ok(())
}

/// A responder that knows `INITIATORS` peers, and one initiation from each.
fn responder_and_initiations() -> Result<(Engine, Vec<Datagram>)> {
    let responder_key = Secret::generate_private();
    let responder_public = responder_key.public_key();
    let mut responder = Engine::new(responder_key)?;
    let endpoint = SocketAddr::from(([192, 0, 2, 1], 51820));
    let now = Instant::now();
    let mut initiations = Vec::new();
    for i in 0..INITIATORS {
        let key = Secret::generate_private();
        responder.upsert_peer(
            now,
            key.public_key(),
            peer_update(i, source(i)),
            &mut Sent::default(),
        )?;
        let mut initiator = Engine::new(key)?;
        initiator.upsert_peer(
            now,
            responder_public,
            peer_update(0, endpoint),
            &mut Sent::default(),
        )?;
        let mut sent = Sent::default();
        initiator.initiate_handshakes(now, &mut sent);
        let (_, init) = sent.0.pop().ok_or("the initiator sent no initiation")?;
        initiations.push((source(i), init));
    }
    Ok((responder, initiations))
}

/// Feeds every initiation to the responder and times only that. With `steady`, a
/// second passes (boringtun's clock is the fake one this example is built with) after
/// every `STEADY_BURST` initiations, below the limit (boringtun answers with cookies from half of it on), so the device never enters cookie
/// mode; without, it is in cookie mode after the first `HANDSHAKE_LOAD_LIMIT`.
fn answer(steady: bool) -> Result<()> {
    const STEADY_BURST: usize = 40;
    let (mut responder, initiations) = responder_and_initiations()?;
    let mut now = Instant::now();
    let mut sent = Sent::default();
    let mut took = 0.0;
    for (n, (from, init)) in initiations.iter().enumerate() {
        if steady && n % STEADY_BURST == 0 {
            MockClock::advance(Duration::from_secs(1));
            now += Duration::from_secs(1);
            responder.handle_timeout(now, &mut Sent::default());
        }
        let started = Instant::now();
        responder.handle_datagram(now, *from, init, &mut sent);
        took += started.elapsed().as_secs_f64();
    }
    let count = |kind| {
        sent.0
            .iter()
            .filter(|(_, d)| d.first() == Some(&kind))
            .count()
    };
    let (responses, cookies) = (count(RESPONSE), count(COOKIE_REPLY));
    let rate = f64::from(INITIATORS) / took;
    if steady {
        println!("handshakes answered (no load): {rate:.0}/s ({responses} responses, {cookies} cookie replies)");
    } else {
        println!(
            "flood initiations answered in cookie mode: {rate:.0}/s ({responses} responses before the \
             limit, {cookies} cookie replies)"
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    ten_thousand_peers()?;
    answer(true)?;
    answer(false)?;
    Ok(())
}

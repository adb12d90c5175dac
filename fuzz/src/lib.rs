//! The fuzz targets' bodies, shared by the AFL binaries (src/bin), the seed generator and
//! the replay tests. Each target feeds its input to a parser and then checks properties
//! that must hold for any input; a violated property panics, which AFL records as a crash.
//!
//! - [`uapi_set`]: a UAPI request as the socket reads it, through the `set=1` parser; what
//!   parses must render back (as wg(8) writes a request) and parse to the same.
//! - [`datagram`]: UDP datagrams from arbitrary sources into a keyed engine with one peer;
//!   nothing unauthenticated reaches the tunnel, answers go only to a datagram's source,
//!   and the peer's endpoint only ever becomes such a source.
//! - [`json_bodies`]: JSON bodies of the API, deserialised into its DTOs, checked by the
//!   validators the API exposes, and round-tripped.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use watchgrid_core::uapi::{self, DeviceConfig, EINVAL};
use watchgrid_core::{Engine, Output, PeerUpdate, Secret};

// ---------------------------------------------------------------- UAPI

/// A request as the UAPI socket reads it: the operation line, then the body up to a blank
/// line (or the end). Only `set=1` bodies reach the parser, as on the socket.
pub fn uapi_set(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        // The socket refuses lines that are not UTF-8 before parsing.
        return;
    };
    let mut lines = text.split('\n');
    if lines.next() != Some("set=1") {
        return;
    }
    let body: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
    match uapi::parse_set(body.iter().copied()) {
        Ok(config) => {
            let again = set_lines(&config);
            let reparsed = uapi::parse_set(again.iter().map(String::as_str));
            assert_eq!(
                reparsed.as_ref(),
                Ok(&config),
                "a parsed request renders as {again:?}, which parses differently"
            );
        }
        Err(e) => assert_eq!(e.errno(), EINVAL, "{e}"),
    }
}

/// The set request for `config`, as wg(8)'s ipc code writes one.
pub fn set_lines(config: &DeviceConfig) -> Vec<String> {
    let key = |k: &Option<Secret>| hex::encode(k.as_ref().map_or([0; 32], |k| k.0));
    let mut lines = Vec::new();
    if let Some(k) = &config.private_key {
        lines.push(format!("private_key={}", key(k)));
    }
    if let Some(p) = config.listen_port {
        lines.push(format!("listen_port={p}"));
    }
    if let Some(m) = config.fwmark {
        lines.push(format!("fwmark={m}"));
    }
    if config.replace_peers {
        lines.push("replace_peers=true".into());
    }
    for p in &config.peers {
        lines.push(format!("public_key={}", hex::encode(p.public_key.0)));
        if p.remove {
            lines.push("remove=true".into());
        }
        if p.update_only {
            lines.push("update_only=true".into());
        }
        if let Some(k) = &p.update.preshared_key {
            lines.push(format!("preshared_key={}", key(k)));
        }
        if let Some(e) = p.update.endpoint {
            lines.push(format!("endpoint={e}"));
        }
        if let Some(k) = p.update.persistent_keepalive {
            lines.push(format!("persistent_keepalive_interval={k}"));
        }
        if p.update.replace_allowed_ips {
            lines.push("replace_allowed_ips=true".into());
        }
        for a in &p.update.allowed_ips {
            lines.push(format!("allowed_ip={a}"));
        }
    }
    lines
}

// ---------------------------------------------------------------- engine datagrams

/// The engine under test's private key, and its one peer's.
pub const RESPONDER_KEY: [u8; 32] = [0x42; 32];
pub const INITIATOR_KEY: [u8; 32] = [0x24; 32];

#[derive(Default)]
pub struct Collect {
    pub sent: Vec<(SocketAddr, Vec<u8>)>,
    pub written: Vec<Vec<u8>>,
}

impl Output for Collect {
    fn send_datagram(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.sent.push((to, datagram.to_vec()));
    }
    fn write_packet(&mut self, packet: &[u8]) {
        self.written.push(packet.to_vec());
    }
}

/// A keyed engine whose one peer (the initiator) may send from anywhere, any address.
pub fn responder(now: Instant) -> Engine {
    let mut engine = match Engine::new(Secret(RESPONDER_KEY)) {
        Ok(e) => e,
        Err(e) => panic!("a fixed non-zero key: {e}"),
    };
    let update = PeerUpdate {
        allowed_ips: ["0.0.0.0/0", "::/0"]
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect(),
        ..PeerUpdate::default()
    };
    let peer = Secret(INITIATOR_KEY).public_key();
    if let Err(e) = engine.upsert_peer(now, peer, update, &mut Collect::default()) {
        panic!("adding the one peer: {e}");
    }
    engine
}

/// Where a datagram comes from: one of two fixed sources, or an address taken from the
/// input. Returns the source and the rest of the input.
fn source(data: &[u8]) -> (SocketAddr, &[u8]) {
    let fixed_v4 = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 51820));
    let fixed_v6 = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 51820));
    let Some((&selector, rest)) = data.split_first() else {
        return (fixed_v4, data);
    };
    let port = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    match selector % 4 {
        0 => (fixed_v4, rest),
        1 => (fixed_v6, rest),
        2 if rest.len() >= 6 => {
            let ip = Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
            (SocketAddr::from((ip, port(&rest[4..6]))), &rest[6..])
        }
        3 if rest.len() >= 18 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&rest[..16]);
            let ip = Ipv6Addr::from(octets);
            (SocketAddr::from((ip, port(&rest[16..18]))), &rest[18..])
        }
        _ => (fixed_v4, rest),
    }
}

/// Splits the input into up to 16 datagrams: each is a source (see [`source`]), a
/// little-endian u16 length and that many bytes (or what is left).
pub fn datagrams(mut data: &[u8]) -> Vec<(SocketAddr, &[u8])> {
    let mut out = Vec::new();
    while !data.is_empty() && out.len() < 16 {
        let (from, rest) = source(data);
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
            _ => (rest.len(), rest),
        };
        let (datagram, rest) = rest.split_at(len.min(rest.len()));
        out.push((from, datagram));
        data = rest;
    }
    out
}

/// One datagram record as [`datagrams`] reads it.
pub fn record(from: SocketAddr, datagram: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match from {
        SocketAddr::V4(a) => {
            out.push(2);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
        SocketAddr::V6(a) => {
            out.push(3);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_le_bytes());
        }
    }
    let len = u16::try_from(datagram.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&datagram[..usize::from(len)]);
    out
}

pub fn datagram(data: &[u8]) {
    let start = Instant::now();
    let mut engine = responder(start);
    let mut out = Collect::default();
    let inputs = datagrams(data);
    for (i, (from, d)) in inputs.iter().enumerate() {
        let now = start + Duration::from_millis(i as u64);
        engine.handle_datagram(now, *from, d, &mut out);
    }
    // Timers after the input: retransmissions, keepalives, expiry of whatever it began.
    engine.handle_timeout(start + Duration::from_secs(11), &mut out);
    let sources: Vec<SocketAddr> = inputs.iter().map(|(from, _)| *from).collect();
    // Only the peer could make a packet that decrypts, and it never sent one here.
    assert!(
        out.written.is_empty(),
        "an unauthenticated packet reached the tunnel"
    );
    for (to, _) in &out.sent {
        assert!(sources.contains(to), "sent to {to}, which sent nothing");
    }
    let status = engine.peer_status(start + Duration::from_secs(11));
    assert_eq!(status.len(), 1);
    if let Some(ep) = status[0].endpoint {
        assert!(sources.contains(&ep), "the endpoint became {ep}");
    }
}

/// A real handshake initiation from the responder's peer (for seeds and tests).
pub fn initiation() -> Vec<u8> {
    let now = Instant::now();
    let mut initiator = match Engine::new(Secret(INITIATOR_KEY)) {
        Ok(e) => e,
        Err(e) => panic!("a fixed non-zero key: {e}"),
    };
    let update = PeerUpdate {
        endpoint: Some(SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 51820))),
        ..PeerUpdate::default()
    };
    let mut out = Collect::default();
    let responder = Secret(RESPONDER_KEY).public_key();
    if let Err(e) = initiator.upsert_peer(now, responder, update, &mut out) {
        panic!("adding the responder: {e}");
    }
    initiator.initiate_handshakes(now, &mut out);
    match out.sent.pop() {
        Some((_, init)) => init,
        None => panic!("the initiator sent no initiation"),
    }
}

// ---------------------------------------------------------------- JSON bodies

/// The same JSON, but for floats, which serde_json reads back to within an ulp or so.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    match serde_json::to_value(v) {
        Ok(v) => v,
        Err(e) => panic!("a value that was read cannot be written: {e}"),
    }
}

/// Reads `bytes` as a `T`; what reads must write, and read back as the same JSON.
fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(bytes).ok()?;
    let first = to_json(&v);
    let text = first.to_string();
    let back: T = match serde_json::from_str(&text) {
        Ok(b) => b,
        Err(e) => panic!("{text} was written but does not read back: {e}"),
    };
    let second = to_json(&back);
    assert!(same_json(&first, &second), "{first} became {second}");
    Some(v)
}

/// Every string anywhere in `v`.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => {
            for (k, x) in o {
                out.push(k);
                strings(x, out);
            }
        }
        _ => {}
    }
}

/// The first byte picks the body type, the rest is the body.
pub fn json_bodies(data: &[u8]) {
    use watchgrid_api::dto::*;
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 11 {
        0 => drop(round_trip::<Heartbeat>(body)),
        1 => drop(round_trip::<LoginBatch>(body)),
        2 => drop(round_trip::<LogBatch>(body)),
        3 => drop(round_trip::<CommandReport>(body)),
        4 => drop(round_trip::<CommandOrders>(body)),
        5 => drop(round_trip::<AgentConfig>(body)),
        6 => drop(round_trip::<Registration>(body)),
        7 => drop(round_trip::<HeartbeatAnswer>(body)),
        8 => drop(round_trip::<Acked>(body)),
        9 => firewall_rules(body),
        _ => setup_fields(body),
    }
}

/// A firewall policy's rules as the API and the store write them: what parses writes
/// back as the same rule, and what does not parse says why.
fn firewall_rules(body: &[u8]) {
    use watchgrid_firewall::{Rule, RuleSpec};
    let Some(specs) = round_trip::<Vec<RuleSpec>>(body) else {
        return;
    };
    for spec in specs {
        match Rule::try_from(spec.clone()) {
            Ok(rule) => {
                let written = RuleSpec::from(&rule);
                assert_eq!(
                    Rule::try_from(written.clone()).as_ref(),
                    Ok(&rule),
                    "{written:?}"
                );
                let json = to_json(&rule);
                match serde_json::from_value::<Rule>(json.clone()) {
                    Ok(back) => assert_eq!(back, rule, "{json}"),
                    Err(e) => panic!("{json} was written but does not read back: {e}"),
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// Any JSON: every string in it through the setup validators, which must never panic
/// and must accept only what they document.
fn setup_fields(body: &[u8]) {
    use watchgrid_api::routes::setup::{
        parse_vpn_subnet, validate_endpoint, validate_password, validate_username,
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let mut all = Vec::new();
    strings(&value, &mut all);
    for s in all {
        if validate_username(s).is_ok() {
            assert!((1..=64).contains(&s.len()), "{s:?}");
        }
        if validate_password(s).is_ok() {
            assert!(s.chars().count() >= 12 && s.len() <= 1024, "{s:?}");
        }
        if validate_endpoint(s).is_ok() {
            assert!(s.contains(':'), "{s:?}");
        }
        if let Ok((addr, len)) = parse_vpn_subnet(s) {
            assert!(addr.is_private() && (8..=29).contains(&len), "{s:?}");
            let host = u32::from(addr) & !(u32::MAX << (32 - u32::from(len)));
            assert_eq!(host, 0, "{s:?} has host bits");
        }
    }
}

// ---------------------------------------------------------------- replay

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every seed, and every crash ever found (kept under regressions/), replays cleanly.
    #[test]
    fn seeds_and_regressions_replay_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 3] = [
            ("uapi_set", uapi_set),
            ("datagram", datagram),
            ("json_bodies", json_bodies),
        ];
        let mut replayed = 0;
        for (name, target) in targets {
            for dir in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let bytes = std::fs::read(entry.path()).expect("read");
                    target(&bytes);
                    replayed += 1;
                }
            }
        }
        assert!(replayed >= 9, "only {replayed} inputs found");
    }

    /// The initiation seed is real: the responder answers it and learns the endpoint.
    #[test]
    fn a_real_initiation_is_answered() {
        let now = Instant::now();
        let mut engine = responder(now);
        let mut out = Collect::default();
        let from = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 7), 40000));
        engine.handle_datagram(now, from, &initiation(), &mut out);
        assert_eq!(out.sent.len(), 1);
        assert_eq!(out.sent[0].0, from);
        assert_eq!(engine.peer_status(now)[0].endpoint, Some(from));
        assert_eq!(datagrams(&record(from, &initiation())).len(), 1);
    }
}

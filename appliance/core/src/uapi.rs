//! The cross-platform WireGuard configuration protocol (https://www.wireguard.com/xplatform/),
//! without IO: parsing `set=1` bodies into a validated [`DeviceConfig`], and rendering a
//! [`DeviceStatus`] as a `get=1` reply.
//!
//! A set request is parsed and checked completely before anything is applied, so a
//! malformed request answers `errno=` and changes nothing. The socket server (and
//! everything that can refuse a well-formed request: binding a port, setting a mark)
//! belongs to the binary; this module is pure so that it can be tested and fuzzed alone.

use crate::allowed_ips::IpPrefix;
use crate::engine::{PeerStatus, PeerUpdate};
use crate::keys::{PublicKey, Secret};
use std::fmt::Write as _;
use std::net::SocketAddr;

/// errno values sent back to the `wg` tool (negative, as wireguard-go sends them).
pub const EINVAL: i32 = -22;
pub const EIO: i32 = -5;
pub const EADDRINUSE: i32 = -98;
pub const EPROTO: i32 = -71;

/// A set of device changes that apply all at once or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    /// `Some(None)` removes the private key, which makes the device inert.
    pub private_key: Option<Option<Secret>>,
    /// `Some(0)` binds a new, free port.
    pub listen_port: Option<u16>,
    /// `Some(0)` clears the mark.
    pub fwmark: Option<u32>,
    /// Remove every peer before applying `peers`.
    pub replace_peers: bool,
    pub peers: Vec<PeerChange>,
}

/// A change to one peer within a [`DeviceConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChange {
    pub public_key: PublicKey,
    /// Remove the peer; `update` is ignored.
    pub remove: bool,
    /// Apply `update` only if the peer exists already; never add it.
    pub update_only: bool,
    pub update: PeerUpdate,
}

/// The device's state as `wg show` presents it.
#[derive(Debug, Clone)]
pub struct DeviceStatus {
    pub private_key: Option<Secret>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub peers: Vec<PeerStatus>,
    /// Wall-clock time now, to turn handshake ages into UNIX timestamps.
    pub unix_now: std::time::Duration,
}

/// A request whose text is malformed; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line of a `set=1` body is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Neither `get=1` nor `set=1`; holds only the line's length (it may be anything).
    #[error("unknown operation (a {0}-byte line)")]
    UnknownOperation(usize),
}

impl ParseError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ParseError::Invalid(message.into())
    }

    /// The errno `wg` shows for this error, as wireguard-go chooses it.
    pub fn errno(&self) -> i32 {
        match self {
            ParseError::Invalid(_) => EINVAL,
            ParseError::UnknownOperation(_) => EPROTO,
        }
    }
}

/// Parses the lines of a `set=1` request (without the `set=1` line and the blank line).
pub fn parse_set<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<DeviceConfig, ParseError> {
    let mut req = DeviceConfig::default();
    let mut peer: Option<PeerChange> = None;
    // Error messages name keys and line numbers, never values or whole lines: they reach
    // the journal, and a value may be a private key.
    for (n, line) in lines.into_iter().enumerate() {
        let (key, value) = line.split_once('=').ok_or_else(|| {
            ParseError::invalid(format!("line {} has no '=' ({} bytes)", n + 1, line.len()))
        })?;
        if key == "public_key" {
            if let Some(p) = peer.take() {
                req.peers.push(p);
            }
            peer = Some(PeerChange {
                public_key: PublicKey(parse_key(value)?),
                remove: false,
                update_only: false,
                update: PeerUpdate::default(),
            });
            continue;
        }
        match peer.as_mut() {
            None => parse_device_key(&mut req, key, value)?,
            Some(p) => parse_peer_key(p, key, value)?,
        }
    }
    if let Some(p) = peer.take() {
        req.peers.push(p);
    }
    // The same peer twice would make the result depend on order; reject it.
    let mut keys: Vec<_> = req.peers.iter().map(|p| p.public_key).collect();
    keys.sort();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(ParseError::invalid("the same public_key appears twice"));
    }
    Ok(req)
}

fn parse_device_key(req: &mut DeviceConfig, key: &str, value: &str) -> Result<(), ParseError> {
    match key {
        "private_key" => {
            let k = Secret(parse_key(value)?);
            req.private_key = Some((!k.is_zero()).then_some(k));
        }
        "listen_port" => req.listen_port = Some(parse_num(key, value)?),
        "fwmark" => req.fwmark = Some(parse_num(key, value)?),
        "replace_peers" => req.replace_peers = parse_true(key, value)?,
        _ => return Err(unknown_key("device", key)),
    }
    Ok(())
}

fn parse_peer_key(p: &mut PeerChange, key: &str, value: &str) -> Result<(), ParseError> {
    match key {
        "remove" => p.remove = parse_true(key, value)?,
        "update_only" => p.update_only = parse_true(key, value)?,
        "preshared_key" => {
            let k = Secret(parse_key(value)?);
            p.update.preshared_key = Some((!k.is_zero()).then_some(k));
        }
        "endpoint" => {
            let ep: SocketAddr = value
                .parse()
                .map_err(|_| ParseError::invalid("endpoint is not an address:port"))?;
            p.update.endpoint = Some(ep);
        }
        "persistent_keepalive_interval" => {
            p.update.persistent_keepalive = Some(parse_num(key, value)?)
        }
        "replace_allowed_ips" => p.update.replace_allowed_ips = parse_true(key, value)?,
        "allowed_ip" => {
            let prefix: IpPrefix = value
                .parse()
                .map_err(|_| ParseError::invalid("allowed_ip is not a prefix"))?;
            p.update.allowed_ips.push(prefix);
        }
        "protocol_version" => {
            if value != "1" {
                return Err(ParseError::invalid("unsupported protocol_version"));
            }
        }
        _ => return Err(unknown_key("peer", key)),
    }
    Ok(())
}

/// A key the protocol does not have, named only when it looks like a key name (a
/// garbled line could put secret material before its '=').
fn unknown_key(kind: &str, key: &str) -> ParseError {
    let plausible = key.len() <= 32 && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if plausible {
        ParseError::invalid(format!("unknown {kind} key {key:?}"))
    } else {
        ParseError::invalid(format!("unknown {kind} key ({} bytes)", key.len()))
    }
}

/// A 32-byte key as 64 hex digits.
pub fn parse_key(value: &str) -> Result<[u8; 32], ParseError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out)
        .map_err(|_| ParseError::invalid("a key must be 64 hex digits"))?;
    Ok(out)
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ParseError> {
    value
        .parse()
        .map_err(|_| ParseError::invalid(format!("{key} is not a valid number")))
}

fn parse_true(key: &str, value: &str) -> Result<bool, ParseError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ParseError::invalid(format!("{key} must be true or false"))),
    }
}

/// Renders the body of a `get=1` reply, ending with `errno=0` and the blank line.
pub fn render_get(dev: &DeviceStatus) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    if let Some(k) = &dev.private_key {
        let _ = writeln!(s, "private_key={}", hex::encode(k.0));
    }
    let _ = writeln!(s, "listen_port={}", dev.listen_port);
    if dev.fwmark != 0 {
        let _ = writeln!(s, "fwmark={}", dev.fwmark);
    }
    for p in &dev.peers {
        let _ = writeln!(s, "public_key={}", hex::encode(p.public_key.0));
        if let Some(psk) = &p.preshared_key {
            let _ = writeln!(s, "preshared_key={}", hex::encode(psk.0));
        }
        let _ = writeln!(s, "protocol_version=1");
        if let Some(ep) = p.endpoint {
            let _ = writeln!(s, "endpoint={ep}");
        }
        let (sec, nsec) = match p.last_handshake_age {
            Some(age) => {
                let at = dev.unix_now.saturating_sub(age);
                (at.as_secs(), at.subsec_nanos())
            }
            None => (0, 0),
        };
        let _ = writeln!(s, "last_handshake_time_sec={sec}");
        let _ = writeln!(s, "last_handshake_time_nsec={nsec}");
        let _ = writeln!(s, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(s, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(
            s,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive
        );
        for a in &p.allowed_ips {
            let _ = writeln!(s, "allowed_ip={a}");
        }
    }
    s.push_str("errno=0\n\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
    const K2: &str = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";

    /// Finding 14: a malformed request's error (which is logged) never carries a value or
    /// the line itself, whatever the line holds.
    #[test]
    fn uapi_errors_never_echo_a_value_or_line() {
        let secret = K1;
        let bodies = [
            format!("private_key {secret}"),
            format!("{secret}=1"),
            format!("{secret}{secret}=1"),
            format!("listen_port={secret}"),
            format!("fwmark={secret}"),
            format!("replace_peers={secret}"),
            format!("private_key={secret}x"),
            format!("public_key={K2}\nendpoint={secret}"),
            format!("public_key={K2}\nallowed_ip={secret}"),
            format!("public_key={K2}\nprotocol_version={secret}"),
            format!("public_key={K2}\npersistent_keepalive_interval={secret}"),
            format!("public_key={K2}\n{secret}"),
        ];
        for body in &bodies {
            let Err(e) = parse_set(body.lines()) else {
                panic!("{body:?} was accepted");
            };
            let message = e.to_string();
            assert!(
                !message.contains(&secret[..16]),
                "{body:?} logs {message:?}"
            );
        }
        let op = format!("private_key={secret}");
        let message = ParseError::UnknownOperation(op.len()).to_string();
        assert!(!message.contains(&secret[..16]), "{message:?}");
    }

    #[test]
    fn parses_the_example_from_the_protocol_page() {
        let body = format!(
            "private_key={K1}\nlisten_port=12912\nfwmark=0\nreplace_peers=true\n\
             public_key={K2}\npreshared_key={K1}\nreplace_allowed_ips=true\n\
             allowed_ip=192.168.4.4/32\npersistent_keepalive_interval=111\n\
             endpoint=[abcd:23::33%2]:51820\n\
             public_key={K1}\nendpoint=182.122.22.19:3233\nallowed_ip=192.168.4.6/32\n\
             public_key=58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376\n\
             update_only=true\nremove=true"
        );
        let req = parse_set(body.lines()).expect("valid request");
        assert_eq!(req.listen_port, Some(12912));
        assert_eq!(req.fwmark, Some(0));
        assert!(req.replace_peers);
        assert_eq!(req.peers.len(), 3);
        let p0 = &req.peers[0];
        assert!(p0.update.replace_allowed_ips);
        assert_eq!(p0.update.persistent_keepalive, Some(111));
        assert_eq!(
            p0.update.allowed_ips,
            vec!["192.168.4.4/32".parse().expect("p")]
        );
        assert!(p0
            .update
            .preshared_key
            .as_ref()
            .is_some_and(|k| k.is_some()));
        assert_eq!(
            req.peers[1].update.endpoint,
            Some("182.122.22.19:3233".parse().expect("ep"))
        );
        assert!(req.peers[2].remove && req.peers[2].update_only);
    }

    #[test]
    fn zero_keys_clear() {
        let zero = "0".repeat(64);
        let req = parse_set(
            [
                format!("private_key={zero}"),
                format!("public_key={K2}"),
                format!("preshared_key={zero}"),
            ]
            .iter()
            .map(|s| s.as_str()),
        )
        .expect("valid");
        assert_eq!(req.private_key, Some(None));
        assert_eq!(req.peers[0].update.preshared_key, Some(None));
    }

    #[test]
    fn malformed_input_is_rejected_with_einval() {
        let bad: &[&str] = &[
            "listen_port=70000",
            "listen_port=abc",
            "private_key=1234",
            "nonsense=1",
            "no equals sign",
            "replace_peers=yes",
        ];
        for line in bad {
            let err = parse_set([*line]).expect_err(line);
            assert_eq!(err.errno(), EINVAL, "{line}");
        }
        let peer_bad: &[&str] = &[
            "allowed_ip=10.0.0.0/33",
            "allowed_ip=hello",
            "endpoint=example.com:51820",
            "endpoint=1.2.3.4",
            "persistent_keepalive_interval=-1",
            "protocol_version=2",
            "listen_port=1",
        ];
        for line in peer_bad {
            let pk = format!("public_key={K2}");
            let err = parse_set([pk.as_str(), *line]).expect_err(line);
            assert_eq!(err.errno(), EINVAL, "{line}");
        }
        let twice = format!("public_key={K2}");
        assert!(parse_set([twice.as_str(), twice.as_str()]).is_err());
    }

    #[test]
    fn renders_get_like_wireguard_go() {
        let status = DeviceStatus {
            private_key: Some(Secret([1; 32])),
            listen_port: 51820,
            fwmark: 0,
            peers: vec![PeerStatus {
                public_key: PublicKey([2; 32]),
                preshared_key: None,
                endpoint: Some("[fd00::2]:51820".parse().expect("ep")),
                persistent_keepalive: 25,
                allowed_ips: vec!["10.0.0.2/32".parse().expect("p")],
                last_handshake_age: Some(std::time::Duration::from_millis(1500)),
                rx_bytes: 10,
                tx_bytes: 20,
            }],
            unix_now: std::time::Duration::from_secs(1_000_000),
        };
        let out = render_get(&status);
        let expected = format!(
            "private_key={}\nlisten_port=51820\npublic_key={}\nprotocol_version=1\n\
             endpoint=[fd00::2]:51820\nlast_handshake_time_sec=999998\n\
             last_handshake_time_nsec=500000000\ntx_bytes=20\nrx_bytes=10\n\
             persistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\nerrno=0\n\n",
            "01".repeat(32),
            "02".repeat(32)
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn unknown_operations_are_eproto() {
        assert_eq!(ParseError::UnknownOperation(3).errno(), EPROTO);
        assert_eq!(ParseError::invalid("x").errno(), EINVAL);
    }
}

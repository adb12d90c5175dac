//! wg(8) configuration files (`wg setconf` format) turned into a [`DeviceConfig`] for the dataplane.
//!
//! The hub reads its peers from such a file until the control plane owns them. Keys are
//! base64 as in `wg genkey`; endpoints must be IP literals (the daemon does no DNS).

use crate::dataplane::{DeviceConfig, PeerChange};
use anyhow::{anyhow, bail, Context};
use watchgrid_core::{IpPrefix, PeerUpdate, PublicKey, Secret};

/// Parses a whole configuration; the request replaces all peers.
pub fn parse(text: &str) -> anyhow::Result<DeviceConfig> {
    let mut req = DeviceConfig {
        replace_peers: true,
        ..DeviceConfig::default()
    };
    let mut section = "";
    for (n, raw) in text.lines().enumerate() {
        let lineno = n + 1;
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            // Section names, like keys, ignore case (wg(8) compares both with strcasecmp).
            section = match line.to_ascii_lowercase().as_str() {
                "[interface]" => "interface",
                "[peer]" => {
                    req.peers.push(PeerChange {
                        public_key: PublicKey([0; 32]),
                        remove: false,
                        update_only: false,
                        update: PeerUpdate::default(),
                    });
                    "peer"
                }
                _ => bail!("line {lineno}: unknown section {line}"),
            };
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| anyhow!("line {lineno}: expected Key = Value"))?;
        let at = || format!("line {lineno}: {key}");
        match (section, key.to_ascii_lowercase().as_str()) {
            ("interface", "privatekey") => {
                req.private_key = Some(Some(Secret::from_base64(value).with_context(at)?))
            }
            ("interface", "listenport") => {
                req.listen_port = Some(value.parse().map_err(|_| anyhow!("{}: not a port", at()))?)
            }
            ("interface", "fwmark") => {
                req.fwmark = Some(if value == "off" {
                    0
                } else {
                    value
                        .parse()
                        .map_err(|_| anyhow!("{}: not a number", at()))?
                })
            }
            ("peer", k) => {
                let peer = req
                    .peers
                    .last_mut()
                    .ok_or_else(|| anyhow!("line {lineno}: key outside a section"))?;
                parse_peer_key(peer, k, value).with_context(at)?;
            }
            _ => bail!("line {lineno}: unexpected key {key} here"),
        }
    }
    for (i, p) in req.peers.iter().enumerate() {
        if p.public_key.0 == [0; 32] {
            bail!("peer #{} has no PublicKey", i + 1);
        }
    }
    Ok(req)
}

fn parse_peer_key(peer: &mut PeerChange, key: &str, value: &str) -> anyhow::Result<()> {
    match key {
        "publickey" => peer.public_key = value.parse()?,
        "presharedkey" => peer.update.preshared_key = Some(Some(Secret::from_base64(value)?)),
        "allowedips" => {
            for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let prefix: IpPrefix = item.parse()?;
                peer.update.allowed_ips.push(prefix);
            }
        }
        "endpoint" => {
            peer.update.endpoint =
                Some(value.parse().map_err(|_| {
                    anyhow!("{value:?} is not IP:PORT (host names are not resolved)")
                })?)
        }
        "persistentkeepalive" => {
            peer.update.persistent_keepalive = Some(if value == "off" {
                0
            } else {
                value
                    .parse()
                    .map_err(|_| anyhow!("not a number of seconds"))?
            })
        }
        other => bail!("unknown peer key {other}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PEER: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn parses_interface_and_peers() {
        let text = format!(
            "[Interface]\nPrivateKey = {KEY}\nListenPort = 51820\n\n# a laptop\n[Peer]\n\
             PublicKey = {PEER}\nAllowedIPs = 10.100.0.2/32, fd00::2/128\nEndpoint = 192.0.2.1:51820\n\
             PersistentKeepalive = 25\n"
        );
        let req = parse(&text).expect("valid config");
        assert!(req.replace_peers);
        assert_eq!(req.listen_port, Some(51820));
        assert_eq!(req.peers.len(), 1);
        let p = &req.peers[0];
        assert_eq!(p.public_key.to_string(), PEER);
        assert_eq!(p.update.allowed_ips.len(), 2);
        assert_eq!(p.update.persistent_keepalive, Some(25));
    }

    #[test]
    fn section_names_ignore_case_as_in_wg() {
        let text = format!("[INTERFACE]\nListenPort = 1\n[peer]\nPublicKey = {PEER}\n");
        let req = parse(&text).expect("valid config");
        assert_eq!(req.listen_port, Some(1));
        assert_eq!(req.peers.len(), 1);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("[Peer]\nPublicKey = nope\n").expect_err("bad key");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let err = parse(&format!("[Peer]\nPublicKey = {PEER}\nEndpoint = host:1\n"))
            .expect_err("hostname");
        assert!(format!("{err:#}").contains("line 3"), "{err:#}");
        assert!(parse("[Peer]\nAllowedIPs = 10.0.0.0/8\n").is_err());
        assert!(parse("[Bogus]\n").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    /// A peer of a configuration file; keys are made distinct by the caller.
    fn peer() -> impl Strategy<Value = PeerChange> {
        let prefix = prop_oneof![
            (any::<u32>(), 0u8..=32)
                .prop_map(|(a, l)| IpPrefix::new(IpAddr::V4(Ipv4Addr::from(a)), l)),
            (any::<u128>(), 0u8..=128)
                .prop_map(|(a, l)| IpPrefix::new(IpAddr::V6(Ipv6Addr::from(a)), l)),
        ]
        .prop_map(|p| p.expect("length in range"));
        let endpoint = prop_oneof![
            (any::<u32>(), any::<u16>())
                .prop_map(|(a, p)| SocketAddr::from((Ipv4Addr::from(a), p))),
            (any::<u128>(), any::<u16>())
                .prop_map(|(a, p)| SocketAddr::from((Ipv6Addr::from(a), p))),
        ];
        (
            any::<[u8; 32]>().prop_filter("a peer needs a key", |k| k != &[0; 32]),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of(endpoint),
            proptest::option::of(any::<u16>()),
            vec(prefix, 0..5),
        )
            .prop_map(|(pk, psk, endpoint, keepalive, ips)| PeerChange {
                public_key: PublicKey(pk),
                remove: false,
                update_only: false,
                update: PeerUpdate {
                    preshared_key: psk.map(|k| Some(Secret(k))),
                    endpoint,
                    persistent_keepalive: keepalive,
                    replace_allowed_ips: false,
                    allowed_ips: ips,
                },
            })
    }

    fn config() -> impl Strategy<Value = DeviceConfig> {
        (
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of(any::<u16>()),
            proptest::option::of(prop_oneof![Just(0u32), any::<u32>()]),
            vec(peer(), 0..4),
        )
            .prop_map(|(sk, port, fwmark, mut peers)| {
                let mut seen = std::collections::HashSet::new();
                peers.retain(|p| seen.insert(p.public_key));
                DeviceConfig {
                    private_key: sk.map(|k| Some(Secret(k))),
                    listen_port: port,
                    fwmark,
                    replace_peers: true,
                    peers,
                }
            })
    }

    /// How each line is written: key case, spacing, a trailing comment; and whether the
    /// allowed IPs go on one line or one line each.
    #[derive(Debug, Clone)]
    struct Style {
        upper: bool,
        spaces: String,
        comment: bool,
        split_ips: bool,
        off_words: bool,
    }

    fn style() -> impl Strategy<Value = Style> {
        (
            any::<bool>(),
            "[ \t]{0,2}",
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(upper, spaces, comment, split_ips, off_words)| Style {
                upper,
                spaces,
                comment,
                split_ips,
                off_words,
            })
    }

    /// The file for `config`, as `wg showconf` (or a person) writes one.
    fn render(config: &DeviceConfig, st: &Style) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            let key = if st.upper {
                key.to_ascii_uppercase()
            } else {
                key.to_string()
            };
            let sp = &st.spaces;
            let comment = if st.comment { " # note" } else { "" };
            out.push_str(&format!("{sp}{key}{sp}={sp}{value}{sp}{comment}\n"));
        };
        let off = |n: u64| {
            if n == 0 && st.off_words {
                "off".to_string()
            } else {
                n.to_string()
            }
        };
        line("[Interface]", String::new());
        if let Some(Some(k)) = &config.private_key {
            line("PrivateKey", k.to_base64());
        }
        if let Some(p) = config.listen_port {
            line("ListenPort", p.to_string());
        }
        if let Some(m) = config.fwmark {
            line("FwMark", off(u64::from(m)));
        }
        for p in &config.peers {
            line("[Peer]", String::new());
            line("PublicKey", p.public_key.to_string());
            if let Some(Some(k)) = &p.update.preshared_key {
                line("PresharedKey", k.to_base64());
            }
            if let Some(e) = p.update.endpoint {
                line("Endpoint", e.to_string());
            }
            if let Some(k) = p.update.persistent_keepalive {
                line("PersistentKeepalive", off(u64::from(k)));
            }
            let ips: Vec<String> = p.update.allowed_ips.iter().map(|a| a.to_string()).collect();
            if st.split_ips {
                for ip in ips {
                    line("AllowedIPs", ip);
                }
            } else if !ips.is_empty() {
                line("AllowedIPs", ips.join(", "));
            }
        }
        // Section headers were written as `[Interface] = `; put them back as bare lines.
        out.lines()
            .map(|l| match l.trim().split('=').next().map(str::trim) {
                Some(h) if h.starts_with('[') => format!("{h}\n"),
                _ => format!("{l}\n"),
            })
            .collect()
    }

    proptest! {
        /// A configuration written out in any of wg(8)'s accepted styles parses back as
        /// itself (replacing all peers, as `wg setconf` does).
        #[test]
        fn config_files_render_and_parse_back(config in config(), st in style()) {
            let text = render(&config, &st);
            let parsed = parse(&text).map_err(|e| format!("{e:#}\n{text}"));
            prop_assert_eq!(parsed, Ok(config));
        }

        /// Any text: an error or a configuration, never a panic; a configuration always
        /// replaces peers and every peer in it has a key.
        #[test]
        fn arbitrary_files_parse_or_are_refused(
            lines in vec(
                prop_oneof![
                    any::<String>(),
                    Just("[Peer]".to_string()),
                    Just("[Interface]".to_string()),
                    "(PublicKey|AllowedIPs|Endpoint|ListenPort|FwMark|PersistentKeepalive) = [ -~]{0,50}",
                ],
                0..10,
            )
        ) {
            if let Ok(config) = parse(&lines.join("\n")) {
                prop_assert!(config.replace_peers);
                prop_assert!(config.peers.iter().all(|p| p.public_key.0 != [0; 32]));
            }
        }
    }
}

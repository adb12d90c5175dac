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
            section = match line {
                "[Interface]" => "interface",
                "[Peer]" => {
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

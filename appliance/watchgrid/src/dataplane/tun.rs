//! The TUN device the dataplane reads and writes inner packets on.

use anyhow::{bail, Context};

pub fn validate_ifname(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 15 {
        bail!("interface name {name:?} must be 1 to 15 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name == "."
        || name == ".."
    {
        bail!("interface name {name:?} may contain only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// Creates the TUN device. With `addresses`, assigns them and brings the link up;
/// without, leaves it down for the operator (wireguard-go does the same).
///
/// The device is opened with offloads (virtio header, TSO, checksum offload, USO where
/// the kernel has it) so TCP crosses it in 64 KiB super-packets. A kernel or sandbox
/// that refuses them gets a plain device: slower, otherwise the same.
pub fn open_tun(
    ifname: &str,
    mtu: u16,
    addresses: Option<&[(std::net::IpAddr, u8)]>,
) -> anyhow::Result<tun_rs::AsyncDevice> {
    match builder(ifname, mtu, addresses).offload(true).build_async() {
        Ok(device) => return Ok(device),
        Err(e) => tracing::warn!(
            interface = ifname,
            error = %e,
            "TUN offload unavailable; using a plain TUN device (lower throughput)"
        ),
    }
    builder(ifname, mtu, addresses)
        .build_async()
        .with_context(|| {
            format!("creating TUN interface {ifname} (needs CAP_NET_ADMIN and /dev/net/tun)")
        })
}

fn builder(
    ifname: &str,
    mtu: u16,
    addresses: Option<&[(std::net::IpAddr, u8)]>,
) -> tun_rs::DeviceBuilder {
    let mut builder = tun_rs::DeviceBuilder::new().name(ifname).mtu(mtu);
    match addresses {
        Some(addrs) => {
            for (addr, len) in addrs {
                builder = match addr {
                    std::net::IpAddr::V4(v4) => builder.ipv4(*v4, *len, None),
                    std::net::IpAddr::V6(v6) => builder.ipv6(*v6, *len),
                };
            }
            builder.enable(true)
        }
        None => builder.enable(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        assert!(validate_ifname("wg0").is_ok());
        assert!(validate_ifname("a-b_c.d").is_ok());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("sixteen-chars-xx").is_err());
        assert!(validate_ifname("../etc").is_err());
        assert!(validate_ifname("..").is_err());
        assert!(validate_ifname("wg 0").is_err());
    }
}

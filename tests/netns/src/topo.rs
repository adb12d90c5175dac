//! Ready-made topologies.

use crate::{veth, Impl, Netns, PeerConfig, WgDevice};
use anyhow::Result;
use std::time::Duration;

/// Which address family carries the encrypted UDP between the two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outer {
    V4,
    V6,
}

/// Two namespaces joined by a veth (`eth0` on both ends), each running a WireGuard device
/// peered with the other, tunnel addresses assigned and links up.
///
/// | | underlay | tunnel | listen port |
/// |---|---|---|---|
/// | A | 10.0.0.1/24, fd00::1/64 | 10.100.0.1/24, fd10::1/64 | 51820 |
/// | B | 10.0.0.2/24, fd00::2/64 | 10.100.0.2/24, fd10::2/64 | 51821 |
///
/// Each side's allowed-ips for the other are its /32 and /128 tunnel addresses, and each has
/// the other's underlay address (of the `Outer` family) as endpoint.
pub struct Pair {
    // Field order is drop order: devices stop before their namespaces go.
    pub a: WgDevice,
    pub b: WgDevice,
    pub ns_a: Netns,
    pub ns_b: Netns,
}

impl Pair {
    pub const A_UNDER4: &'static str = "10.0.0.1";
    pub const B_UNDER4: &'static str = "10.0.0.2";
    pub const A_UNDER6: &'static str = "fd00::1";
    pub const B_UNDER6: &'static str = "fd00::2";
    pub const A_TUN4: &'static str = "10.100.0.1";
    pub const B_TUN4: &'static str = "10.100.0.2";
    pub const A_TUN6: &'static str = "fd10::1";
    pub const B_TUN6: &'static str = "fd10::2";
    pub const A_PORT: u16 = 51820;
    pub const B_PORT: u16 = 51821;

    pub fn new(a: Impl, b: Impl, outer: Outer) -> Result<Pair> {
        let ns_a = Netns::new("a")?;
        let ns_b = Netns::new("b")?;
        veth(&ns_a, "eth0", &ns_b, "eth0")?;
        ns_a.add_addr("eth0", &format!("{}/24", Self::A_UNDER4))?;
        ns_a.add_addr("eth0", &format!("{}/64", Self::A_UNDER6))?;
        ns_b.add_addr("eth0", &format!("{}/24", Self::B_UNDER4))?;
        ns_b.add_addr("eth0", &format!("{}/64", Self::B_UNDER6))?;

        let dev_a = WgDevice::start(&ns_a, a, Self::A_PORT)?;
        let dev_b = WgDevice::start(&ns_b, b, Self::B_PORT)?;
        let (ep_a, ep_b) = match outer {
            Outer::V4 => (
                format!("{}:{}", Self::A_UNDER4, Self::A_PORT),
                format!("{}:{}", Self::B_UNDER4, Self::B_PORT),
            ),
            Outer::V6 => (
                format!("[{}]:{}", Self::A_UNDER6, Self::A_PORT),
                format!("[{}]:{}", Self::B_UNDER6, Self::B_PORT),
            ),
        };
        dev_a.add_peer(
            &PeerConfig::new(dev_b.public_key())
                .allowed(&[
                    &format!("{}/32", Self::B_TUN4),
                    &format!("{}/128", Self::B_TUN6),
                ])
                .endpoint(&ep_b),
        )?;
        dev_b.add_peer(
            &PeerConfig::new(dev_a.public_key())
                .allowed(&[
                    &format!("{}/32", Self::A_TUN4),
                    &format!("{}/128", Self::A_TUN6),
                ])
                .endpoint(&ep_a),
        )?;
        dev_a.add_addr(&format!("{}/24", Self::A_TUN4))?;
        dev_a.add_addr(&format!("{}/64", Self::A_TUN6))?;
        dev_b.add_addr(&format!("{}/24", Self::B_TUN4))?;
        dev_b.add_addr(&format!("{}/64", Self::B_TUN6))?;
        dev_a.up()?;
        dev_b.up()?;
        Ok(Pair {
            a: dev_a,
            b: dev_b,
            ns_a,
            ns_b,
        })
    }

    /// Pings B's tunnel v4 address from A until it answers (first handshake included).
    pub fn establish(&self) -> Result<Duration> {
        self.ns_a.ping_within(Self::B_TUN4, Duration::from_secs(10))
    }

    /// Fails with the log of whichever implementation has died.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.a.ensure_running()?;
        self.b.ensure_running()
    }
}

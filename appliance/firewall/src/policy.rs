//! What the ruleset is made from: the node's own interfaces and ports, the operator's
//! policy, and the devices with their VPN addresses and groups.

use std::net::IpAddr;
use watchgrid_core::IpPrefix;

/// The appliance's own network facts (from flags and settings, not from users).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The WireGuard TUN interface (validated as an interface name by the daemon).
    pub wg_interface: String,
    pub wg_port: u16,
    /// Public TCP services: HTTPS and the HTTP redirect.
    pub public_tcp_ports: Vec<u16>,
    /// Metrics port, reachable from loopback and the VPN only.
    pub metrics_port: Option<u16>,
    pub vpn_v4: IpPrefix,
    pub vpn_v6: Option<IpPrefix>,
}

/// Layer-4 protocol a forward rule allows; written `tcp`, `udp`, `icmp` or `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// An inclusive port range; a single port has `first == last`. Written `22` or
/// `9000-9100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// Where a forward rule lets traffic go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Devices carrying this group.
    Group(String),
    /// A network, e.g. a LAN behind the hub.
    Cidr(IpPrefix),
}

/// Devices in `from_group` may open connections to `to` (with `protocol` and `ports`).
///
/// Serde uses the written form ([`crate::RuleSpec`]: `from_group`, `to_group` or
/// `to_cidr`, `protocol`, `ports` as strings), and reading checks it: a rule that does
/// not parse is an error that names the rule, never a rule silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "crate::RuleSpec", into = "crate::RuleSpec")]
pub struct Rule {
    pub from_group: String,
    pub to: Target,
    pub protocol: Protocol,
    /// Empty means every port; only meaningful for TCP and UDP.
    pub ports: Vec<PortRange>,
}

/// The operator's forwarding policy. By default peers reach the hub only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Let peers reach networks behind the hub, masqueraded as the hub.
    pub egress: bool,
    pub rules: Vec<Rule>,
}

/// An enabled device: its VPN addresses and the groups it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub addresses: Vec<IpAddr>,
    pub groups: Vec<String>,
}

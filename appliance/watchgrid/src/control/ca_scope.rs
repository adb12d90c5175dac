//! What the internal CA may vouch for: X.509 name constraints on the CA itself, so
//! that trusting it (installing `ca.crt`) cannot let a stolen CA key impersonate other
//! sites. The scope is fixed when the CA is made, from the names the appliance has
//! then: its DNS names (and their subdomains), its public addresses exactly, and the
//! private, loopback and link-local ranges (so a LAN or DHCP address that changes later
//! stays covered). It is kept in `tls/ca-scope.json`; a name outside it is left out of
//! the leaf with a warning that says how to rotate the CA (`watchgrid admin rotate-ca`).

use rcgen::{CidrSubnet, GeneralSubtree, NameConstraints};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Ranges every scope covers: RFC 1918, CGNAT, loopback, link-local, IPv6 ULA,
/// link-local and the deprecated site-local range (which QEMU's user network hands out).
const PRIVATE: &[(&str, u8)] = &[
    ("10.0.0.0", 8),
    ("172.16.0.0", 12),
    ("192.168.0.0", 16),
    ("100.64.0.0", 10),
    ("127.0.0.0", 8),
    ("169.254.0.0", 16),
    ("::1", 128),
    ("fc00::", 7),
    ("fe80::", 10),
    ("fec0::", 10),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaScope {
    /// DNS names; each also covers its subdomains (RFC 5280 §4.2.1.10).
    pub dns: Vec<String>,
    /// Address ranges, as (network address, prefix length).
    pub ip: Vec<(IpAddr, u8)>,
}

impl CaScope {
    /// The scope for a CA made now, for the appliance's current `names`.
    pub fn for_names(names: &[String]) -> CaScope {
        let mut ip: Vec<(IpAddr, u8)> = PRIVATE
            .iter()
            .filter_map(|(a, p)| a.parse().ok().map(|a| (a, *p)))
            .collect();
        // Always one DNS subtree: with none, X.509 would leave DNS names unconstrained.
        let mut dns = vec!["localhost".to_string()];
        for name in names {
            match name.parse::<IpAddr>() {
                Ok(addr) if !covered_ip(&ip, addr) => {
                    ip.push((addr, if addr.is_ipv4() { 32 } else { 128 }))
                }
                Ok(_) => {}
                Err(_) => {
                    let name = name.trim_end_matches('.').to_ascii_lowercase();
                    if !dns.iter().any(|d| dns_within(&name, d)) {
                        dns.push(name);
                    }
                }
            }
        }
        CaScope { dns, ip }
    }

    /// Whether a leaf name is inside the scope.
    pub fn covers(&self, name: &str) -> bool {
        match name.parse::<IpAddr>() {
            Ok(addr) => covered_ip(&self.ip, addr),
            Err(_) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                self.dns.iter().any(|d| dns_within(&name, d))
            }
        }
    }

    /// The CA certificate's name constraints extension.
    pub fn name_constraints(&self) -> NameConstraints {
        let dns = self.dns.iter().cloned().map(GeneralSubtree::DnsName);
        let ip = self
            .ip
            .iter()
            .map(|(a, p)| GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(*a, *p)));
        NameConstraints {
            permitted_subtrees: dns.chain(ip).collect(),
            excluded_subtrees: Vec::new(),
        }
    }
}

fn dns_within(name: &str, subtree: &str) -> bool {
    name == subtree
        || name
            .strip_suffix(subtree)
            .is_some_and(|head| head.ends_with('.'))
}

fn covered_ip(ranges: &[(IpAddr, u8)], addr: IpAddr) -> bool {
    ranges.iter().any(|(net, prefix)| match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
            u32::from(*n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
            u128::from(*n) & mask == u128::from(a) & mask
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_scope_covers_the_names_private_ranges_and_subdomains_only() {
        let scope = CaScope::for_names(&names(&[
            "vpn.example.com",
            "203.0.113.7",
            "192.168.1.50",
            "2001:db8::5",
            "localhost",
        ]));
        for inside in [
            "vpn.example.com",
            "VPN.example.com.",
            "a.vpn.example.com",
            "localhost",
            "203.0.113.7",
            "192.168.7.7",
            "10.100.0.1",
            "fd12::1",
            "2001:db8::5",
            "fec0::5054:ff:fe12:3456",
        ] {
            assert!(scope.covers(inside), "{inside}");
        }
        for outside in [
            "example.com",
            "evilvpn.example.com",
            "bank.example",
            "203.0.113.8",
            "8.8.8.8",
            "2001:db8::6",
        ] {
            assert!(!scope.covers(outside), "{outside}");
        }
    }
}

//! Longest-prefix-match table from IP prefixes to a value (the peer that owns the prefix).
//!
//! WireGuard's cryptokey routing (whitepaper §2) uses one table in both directions:
//! outgoing packets pick the peer owning the longest prefix containing the destination,
//! and incoming packets are accepted only if the longest prefix containing the inner
//! source belongs to the peer that sent them.
//!
//! Layout: one hash map per prefix length and a bitmap of the lengths in use, so a
//! lookup costs one hash probe per distinct prefix length present (usually two or
//! three), longest first.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix such as `10.0.0.0/24` or `fd00::/64`, stored with host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix length {len} is longer than {max} for this address family")]
    TooLong { len: u8, max: u8 },
    #[error("invalid prefix {0:?}: expected ADDRESS/LENGTH")]
    Syntax(String),
}

impl IpPrefix {
    /// Builds a prefix, clearing host bits (wg(8) accepts `10.0.0.1/24` as `10.0.0.0/24`).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = max_len(&addr);
        if len > max {
            return Err(PrefixError::TooLong { len, max });
        }
        Ok(IpPrefix {
            addr: mask(addr, len),
            len,
        })
    }

    /// A prefix covering exactly one address.
    pub fn host(addr: IpAddr) -> Self {
        IpPrefix {
            addr,
            len: max_len(&addr),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for the zero-length prefix (`0.0.0.0/0`, `::/0`).
    pub fn is_default_route(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4() && mask(addr, self.len) == self.addr
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    /// Parses `ADDR/LEN`, or a bare address as a host prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PrefixError::Syntax(s.to_string());
        match s.split_once('/') {
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
                let len: u8 = len.parse().map_err(|_| syntax())?;
                IpPrefix::new(addr, len)
            }
            None => Ok(IpPrefix::host(s.parse().map_err(|_| syntax())?)),
        }
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Per-family half of the table.
#[derive(Debug)]
struct Family<T> {
    /// `by_len[l]` holds the prefixes of length `l`, keyed by masked address.
    by_len: Vec<HashMap<IpAddr, T>>,
    /// Bit `l - 1` set when `by_len[l]` is non-empty (l = 1..=128); scanned from the top.
    in_use: u128,
    /// The zero-length prefix lives outside the bitmap (a u128 has bits 0..=127 only).
    default_route: Option<T>,
    /// `0.0.0.0` or `::`, to name the zero-length prefix of this family.
    unspecified: IpAddr,
}

impl<T: Copy + PartialEq> Family<T> {
    fn new(unspecified: IpAddr) -> Self {
        Family {
            by_len: (0..=max_len(&unspecified))
                .map(|_| HashMap::new())
                .collect(),
            in_use: 0,
            default_route: None,
            unspecified,
        }
    }

    fn zero_prefix(&self) -> IpPrefix {
        IpPrefix {
            addr: self.unspecified,
            len: 0,
        }
    }

    fn insert(&mut self, p: IpPrefix, value: T) -> Option<T> {
        if p.len == 0 {
            return self.default_route.replace(value);
        }
        let l = usize::from(p.len);
        self.in_use |= bit(p.len);
        self.by_len[l].insert(p.addr, value)
    }

    fn remove(&mut self, p: &IpPrefix) -> Option<T> {
        if p.len == 0 {
            return self.default_route.take();
        }
        let l = usize::from(p.len);
        let old = self.by_len[l].remove(&p.addr);
        if self.by_len[l].is_empty() {
            self.in_use &= !bit(p.len);
        }
        old
    }

    fn lookup(&self, addr: IpAddr) -> Option<T> {
        let mut lens = self.in_use;
        while lens != 0 {
            let l = 128 - lens.leading_zeros() as u8;
            lens &= !bit(l);
            if let Some(v) = self.by_len[usize::from(l)].get(&mask(addr, l)) {
                return Some(*v);
            }
        }
        self.default_route
    }

    fn retain(&mut self, mut keep: impl FnMut(&IpPrefix, &T) -> bool) {
        if let Some(v) = self.default_route {
            if !keep(&self.zero_prefix(), &v) {
                self.default_route = None;
            }
        }
        for (l, map) in self.by_len.iter_mut().enumerate().skip(1) {
            map.retain(|addr, v| {
                keep(
                    &IpPrefix {
                        addr: *addr,
                        len: l as u8,
                    },
                    v,
                )
            });
            if map.is_empty() {
                self.in_use &= !bit(l as u8);
            }
        }
    }
}

/// The bitmap bit for a non-zero prefix length.
fn bit(len: u8) -> u128 {
    1u128 << (len.saturating_sub(1) & 127)
}

/// The allowed-IPs table of one WireGuard device.
#[derive(Debug)]
pub struct AllowedIps<T> {
    v4: Family<T>,
    v6: Family<T>,
}

impl<T: Copy + PartialEq> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            v4: Family::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            v6: Family::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        }
    }
}

impl<T: Copy + PartialEq> AllowedIps<T> {
    fn family(&mut self, addr: &IpAddr) -> &mut Family<T> {
        match addr {
            IpAddr::V4(_) => &mut self.v4,
            IpAddr::V6(_) => &mut self.v6,
        }
    }

    /// Maps `prefix` to `value`, taking it away from any previous owner (as `wg set` does),
    /// and returns the previous owner.
    pub fn insert(&mut self, prefix: IpPrefix, value: T) -> Option<T> {
        self.family(&prefix.addr).insert(prefix, value)
    }

    pub fn remove(&mut self, prefix: &IpPrefix) -> Option<T> {
        self.family(&prefix.addr).remove(prefix)
    }

    /// The value owning the longest prefix that contains `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<T> {
        match addr {
            IpAddr::V4(_) => self.v4.lookup(addr),
            IpAddr::V6(_) => self.v6.lookup(addr),
        }
    }

    /// Removes every prefix owned by `value`.
    pub fn remove_value(&mut self, value: T) {
        self.v4.retain(|_, v| *v != value);
        self.v6.retain(|_, v| *v != value);
    }

    /// Every prefix owned by `value`, IPv4 first, shorter prefixes first.
    pub fn prefixes_of(&self, value: T) -> Vec<IpPrefix> {
        let mut out = Vec::new();
        for fam in [&self.v4, &self.v6] {
            if fam.default_route == Some(value) {
                out.push(fam.zero_prefix());
            }
            for (l, map) in fam.by_len.iter().enumerate().skip(1) {
                let mut here: Vec<IpPrefix> = map
                    .iter()
                    .filter(|(_, v)| **v == value)
                    .map(|(addr, _)| IpPrefix {
                        addr: *addr,
                        len: l as u8,
                    })
                    .collect();
                here.sort_by_key(|p| p.addr);
                out.extend(here);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpPrefix {
        s.parse().expect("test prefix")
    }
    fn a(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn longest_prefix_wins_in_both_families() {
        let mut t = AllowedIps::default();
        t.insert(p("0.0.0.0/0"), 1);
        t.insert(p("10.0.0.0/8"), 2);
        t.insert(p("10.1.0.0/16"), 3);
        t.insert(p("10.1.2.3/32"), 4);
        t.insert(p("fd00::/8"), 5);
        t.insert(p("fd00:1::/32"), 6);
        t.insert(p("fd00:1::7/128"), 8);
        t.insert(p("10.9.9.9/1"), 9);
        assert_eq!(t.lookup(a("192.168.1.1")), Some(1));
        assert_eq!(t.lookup(a("fd00:1::7")), Some(8));
        assert_eq!(t.lookup(a("127.0.0.1")), Some(9));
        assert_eq!(t.lookup(a("10.200.0.1")), Some(2));
        assert_eq!(t.lookup(a("10.1.9.9")), Some(3));
        assert_eq!(t.lookup(a("10.1.2.3")), Some(4));
        assert_eq!(t.lookup(a("fd00:1::5")), Some(6));
        assert_eq!(t.lookup(a("fd99::1")), Some(5));
        assert_eq!(t.lookup(a("2001:db8::1")), None);
    }

    #[test]
    fn host_bits_are_cleared_and_insert_moves_ownership() {
        let mut t = AllowedIps::default();
        assert_eq!(t.insert(p("10.0.0.77/24"), 1), None);
        assert_eq!(t.insert(p("10.0.0.0/24"), 2), Some(1));
        assert_eq!(t.lookup(a("10.0.0.1")), Some(2));
        assert_eq!(t.prefixes_of(1), vec![]);
        assert_eq!(t.prefixes_of(2), vec![p("10.0.0.0/24")]);
    }

    #[test]
    fn remove_value_drops_all_prefixes_of_one_owner_only() {
        let mut t = AllowedIps::default();
        t.insert(p("0.0.0.0/0"), 1);
        t.insert(p("::/0"), 1);
        t.insert(p("10.0.0.0/24"), 1);
        t.insert(p("10.0.1.0/24"), 2);
        t.remove_value(1);
        assert_eq!(t.lookup(a("10.0.0.1")), None);
        assert_eq!(t.lookup(a("::1")), None);
        assert_eq!(t.lookup(a("10.0.1.1")), Some(2));
        assert_eq!(t.prefixes_of(2), vec![p("10.0.1.0/24")]);
    }

    #[test]
    fn prefixes_of_lists_default_routes_and_sorts() {
        let mut t = AllowedIps::default();
        t.insert(p("::/0"), 7);
        t.insert(p("10.0.0.2/32"), 7);
        t.insert(p("0.0.0.0/0"), 7);
        t.insert(p("10.0.0.1/32"), 7);
        assert_eq!(
            t.prefixes_of(7),
            vec![
                p("0.0.0.0/0"),
                p("10.0.0.1/32"),
                p("10.0.0.2/32"),
                p("::/0")
            ]
        );
    }

    #[test]
    fn parse_errors_are_clear() {
        assert_eq!(
            "10.0.0.0/33".parse::<IpPrefix>(),
            Err(PrefixError::TooLong { len: 33, max: 32 })
        );
        assert!("10.0.0/8".parse::<IpPrefix>().is_err());
        assert!("fd00::/129".parse::<IpPrefix>().is_err());
        assert_eq!(
            "fd00::1".parse::<IpPrefix>().map(|p| p.prefix_len()),
            Ok(128)
        );
    }

    #[test]
    fn removing_last_prefix_of_a_length_keeps_lookups_right() {
        let mut t = AllowedIps::default();
        t.insert(p("10.0.0.0/24"), 1);
        t.insert(p("10.0.0.0/16"), 2);
        assert_eq!(t.remove(&p("10.0.0.0/24")), Some(1));
        assert_eq!(t.lookup(a("10.0.0.5")), Some(2));
        assert_eq!(t.remove(&p("10.0.0.0/24")), None);
    }
}

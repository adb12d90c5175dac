//! The host's own addresses, so that the internal CA's certificate covers the address
//! an operator actually browses to (an appliance's DHCP address) and the console banner
//! can show it.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Global addresses of this host's interfaces: not loopback, not link-local, in the
/// order the kernel lists them, without duplicates.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: on success getifaddrs points `head` at a list that stays valid until
    // freeifaddrs below; on failure we return before touching it.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr of the given family.
        let ip = match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6 addresses are sockaddr_in6.
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr))
            }
            _ => continue,
        };
        // SAFETY: ifa_name is a NUL-terminated interface name.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() == b"lo" || !is_global(ip) || out.contains(&ip) {
            continue;
        }
        out.push(ip);
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_link_local_are_left_out() {
        for ip in ["127.0.0.1", "::1", "169.254.1.2", "fe80::1", "0.0.0.0"] {
            assert!(!is_global(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["10.0.2.15", "192.168.1.10", "2001:db8::5", "fd00::1"] {
            assert!(is_global(ip.parse().expect("ip")), "{ip}");
        }
    }

    /// The FFI walk (byte order, sockaddr casts) agrees with iproute2's own list.
    #[test]
    fn matches_what_ip_reports_as_global() {
        let out = std::process::Command::new("ip")
            .args(["-o", "addr", "show", "scope", "global"])
            .output()
            .expect("iproute2's ip (Debian package iproute2) is needed for this test");
        assert!(out.status.success(), "ip addr failed");
        let mut want: Vec<IpAddr> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3))
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect();
        want.sort();
        want.dedup();
        let mut got = host_addresses();
        got.sort();
        assert_eq!(got, want);
    }
}

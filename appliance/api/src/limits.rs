//! Per-IP rate limits for login, 2FA and registration (SPEC §6): token buckets of
//! 10/min with a burst of 10, keyed by limiter name and client address; and a
//! per-agent limit on the agent API ([`AGENT_PER_MINUTE`]), keyed by device.

use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use watchgrid_core::IpPrefix;

pub const LOGIN: &str = "login";
pub const REGISTER: &str = "register";
pub const SETUP: &str = "setup";
/// 2FA setup, enable and disable: each checks a code, so each is a guess.
pub const SECOND_FACTOR: &str = "2fa";
/// The limiter name the agent limit reports in metrics.
pub const AGENT: &str = "agent";

/// Agent API calls per device and minute (also the burst). A healthy agent makes about
/// four (two heartbeats, two long polls) plus one per command result, so only a
/// runaway or stolen key reaches it.
pub const AGENT_PER_MINUTE: u32 = 120;

type Keyed = RateLimiter<
    (&'static str, IpAddr),
    governor::state::keyed::HashMapStateStore<(&'static str, IpAddr)>,
    DefaultClock,
>;

type PerAgent =
    RateLimiter<String, governor::state::keyed::HashMapStateStore<String>, DefaultClock>;

pub struct Limits {
    limiter: Keyed,
    agents: PerAgent,
    clock: DefaultClock,
}

impl Default for Limits {
    fn default() -> Self {
        let ten = NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN);
        let agent = NonZeroU32::new(AGENT_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        Limits {
            limiter: RateLimiter::hashmap_with_clock(
                Quota::per_minute(ten).allow_burst(ten),
                clock.clone(),
            ),
            agents: RateLimiter::hashmap_with_clock(
                Quota::per_minute(agent).allow_burst(agent),
                clock.clone(),
            ),
            clock,
        }
    }
}

impl Limits {
    /// Takes one token for `ip` from the named limiter, or says when to retry.
    pub fn check(&self, limiter: &'static str, ip: IpAddr) -> Result<(), ApiError> {
        self.limiter
            .check_key(&(limiter, bucket_of(ip)))
            .map_err(|not_until| self.retry_after(not_until))
    }

    /// Takes one token from the device's agent bucket.
    pub fn check_agent(&self, device_id: &str) -> Result<(), ApiError> {
        self.agents
            .check_key(&device_id.to_string())
            .map_err(|not_until| self.retry_after(not_until))
    }

    fn retry_after(
        &self,
        not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>,
    ) -> ApiError {
        let wait = not_until.wait_time_from(self.clock.now());
        ApiError::TooManyRequests {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    }

    /// Forgets buckets that have refilled completely: for them a fresh bucket behaves
    /// the same, so memory stays bounded without loosening any limit.
    pub fn evict_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.agents.retain_recent();
        self.agents.shrink_to_fit();
    }

    pub fn tracked(&self) -> usize {
        self.limiter.len() + self.agents.len()
    }
}

/// The bucket an address counts against: IPv4 by address, IPv6 by its /64. One
/// subscriber or host usually gets a whole /64, so keying by full address would give
/// an attacker 2^64 fresh buckets (the dataplane's source limiter does the same).
pub fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
        v4 => v4,
    }
}

/// The client address: the TCP peer, or, when that peer is a configured proxy, the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. An untrusted
/// client cannot choose its bucket by sending the header.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpPrefix]) -> IpAddr {
    // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; fences, proxies and
    // rate-limit buckets are written in IPv4, so compare in IPv4.
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|p| p.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(xff) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in xff.rsplit(',').map(str::trim) {
        match hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_clients_are_seen_as_ipv4() {
        let mapped: IpAddr = "::ffff:192.168.77.2".parse().expect("ip");
        let proxy: IpPrefix = "10.0.0.0/8".parse().expect("prefix");
        assert_eq!(
            client_ip(mapped, None, &[]),
            "192.168.77.2".parse::<IpAddr>().expect("ip")
        );
        let via_proxy: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(
            client_ip(via_proxy, Some("::ffff:203.0.113.9"), &[proxy]),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxies: Vec<IpPrefix> = vec!["10.0.0.0/8".parse().expect("p")];
        assert_eq!(
            client_ip(ip("203.0.113.5"), Some("1.2.3.4"), &proxies),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("1.2.3.4"), &proxies),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), Some("9.9.9.9, 1.2.3.4, 10.0.0.3"), &proxies),
            ip("1.2.3.4")
        );
        assert_eq!(client_ip(ip("10.0.0.2"), None, &proxies), ip("10.0.0.2"));
    }

    #[test]
    fn ten_per_minute_burst_ten_then_retry_after() {
        let l = Limits::default();
        for _ in 0..10 {
            l.check(LOGIN, ip("192.0.2.1")).expect("within burst");
        }
        match l.check(LOGIN, ip("192.0.2.1")) {
            Err(ApiError::TooManyRequests { retry_after_secs }) => {
                assert!((1..=6).contains(&retry_after_secs))
            }
            other => panic!("expected 429, got {other:?}"),
        }
        // Other limiters and other clients have their own buckets.
        l.check(REGISTER, ip("192.0.2.1")).expect("other limiter");
        l.check(LOGIN, ip("192.0.2.2")).expect("other client");
    }

    #[test]
    fn finding_06_ipv6_clients_share_one_bucket_per_64() {
        let l = Limits::default();
        for i in 0..10u16 {
            l.check(LOGIN, ip(&format!("2001:db8:1:2::{:x}", i + 1)))
                .expect("within burst");
        }
        let other_host = ip("2001:db8:1:2:ffff:1:2:3");
        assert!(matches!(
            l.check(LOGIN, other_host),
            Err(ApiError::TooManyRequests { .. })
        ));
        l.check(LOGIN, ip("2001:db8:1:3::1")).expect("another /64");
        assert_eq!(l.tracked(), 2, "one bucket per /64");
    }

    #[test]
    fn each_agent_has_its_own_bucket() {
        let l = Limits::default();
        for _ in 0..AGENT_PER_MINUTE {
            l.check_agent("dev-1").expect("within burst");
        }
        assert!(matches!(
            l.check_agent("dev-1"),
            Err(ApiError::TooManyRequests { .. })
        ));
        l.check_agent("dev-2").expect("another agent");
    }
}

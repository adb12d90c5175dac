//! Per-source rate limit for handshake messages, applied before any public-key work.
//!
//! boringtun's `RateLimiter` is device-wide: past a handshake budget per second it
//! demands cookies from everyone. A single noisy source would then push every
//! legitimate peer into the cookie round trip (an extra REKEY_TIMEOUT of 5 s). Capping
//! each source first, as wireguard-go does (20/s, burst 5), keeps one flooder from
//! spending the device-wide budget; many spoofed sources still trip the cookie path.

use governor::clock::{Clock, FakeRelativeClock};
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// Handshake messages allowed per second from one source.
const PER_SOURCE_PER_SECOND: u32 = 20;
/// Burst allowed from one source.
const PER_SOURCE_BURST: u32 = 5;
/// Buckets idle this long are forgotten.
const EVICT_EVERY: Duration = Duration::from_secs(10);

type Keyed = RateLimiter<
    IpAddr,
    governor::state::keyed::HashMapStateStore<IpAddr>,
    FakeRelativeClock,
    governor::middleware::NoOpMiddleware<<FakeRelativeClock as Clock>::Instant>,
>;

/// Token buckets keyed by source address (IPv6 grouped by /64, one host's usual share).
pub struct SourceLimiter {
    limiter: Keyed,
    /// governor's clock, advanced from the `now` the engine is given, so this stays sans-IO.
    clock: FakeRelativeClock,
    last_now: Option<Instant>,
    next_evict: Option<Instant>,
}

impl Default for SourceLimiter {
    fn default() -> Self {
        let per_second = NonZeroU32::new(PER_SOURCE_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(PER_SOURCE_BURST).unwrap_or(NonZeroU32::MIN);
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(per_second).allow_burst(burst);
        SourceLimiter {
            limiter: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
            last_now: None,
            next_evict: None,
        }
    }
}

impl SourceLimiter {
    fn advance(&mut self, now: Instant) {
        if let Some(last) = self.last_now {
            if now > last {
                self.clock.advance(now - last);
            } else {
                return;
            }
        }
        self.last_now = Some(now);
    }

    /// True when `src` may send another handshake message now.
    pub fn allow(&mut self, now: Instant, src: IpAddr) -> bool {
        self.advance(now);
        self.limiter.check_key(&bucket_key(src)).is_ok()
    }

    /// Drops buckets that have refilled completely; cheap to call on every timer tick.
    pub fn evict_idle(&mut self, now: Instant) {
        self.advance(now);
        if self.next_evict.is_some_and(|t| now < t) {
            return;
        }
        self.next_evict = Some(now + EVICT_EVERY);
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Number of sources currently tracked.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

fn bucket_key(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => src,
        IpAddr::V6(a) => {
            let prefix = u128::from(a) & (u128::MAX << 64);
            IpAddr::V6(prefix.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_source() {
        let mut l = SourceLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("addr");
        let b: IpAddr = "192.0.2.2".parse().expect("addr");
        let passed = (0..100).filter(|_| l.allow(t0, a)).count();
        assert_eq!(passed, PER_SOURCE_BURST as usize);
        // Another source is unaffected by the first one's flood.
        assert!(l.allow(t0, b));
        // After a second the bucket has refilled up to its burst again.
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..100).filter(|_| l.allow(t1, a)).count();
        assert_eq!(passed, PER_SOURCE_BURST as usize);
    }

    #[test]
    fn ipv6_sources_share_a_slash_64() {
        let mut l = SourceLimiter::default();
        let t0 = Instant::now();
        let passed = (0..100u16)
            .filter(|i| {
                l.allow(
                    t0,
                    IpAddr::V6(format!("fd00::{i:x}").parse().expect("addr")),
                )
            })
            .count();
        assert_eq!(passed, PER_SOURCE_BURST as usize);
    }

    #[test]
    fn idle_buckets_are_evicted() {
        let mut l = SourceLimiter::default();
        let t0 = Instant::now();
        for i in 0..50u8 {
            l.allow(t0, IpAddr::from([10, 0, 0, i]));
        }
        assert_eq!(l.tracked(), 50);
        l.evict_idle(t0 + Duration::from_secs(60));
        assert_eq!(l.tracked(), 0);
    }
}

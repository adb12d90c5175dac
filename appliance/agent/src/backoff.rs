//! Exponential backoff with jitter for reaching a hub that is away: 1 s doubling to
//! 60 s, each wait ±20 %, so a fleet that lost its hub does not return in lockstep.

use rand_core::RngCore;
use std::time::Duration;

const FIRST: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(60);

pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { next: FIRST }
    }

    pub fn reset(&mut self) {
        self.next = FIRST;
    }

    /// The wait before the next try.
    pub fn wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX);
        let jitter = (rand_core::OsRng.next_u32() % 401) as f64 / 1000.0 - 0.2;
        base.mul_f64(1.0 + jitter)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn waits_double_up_to_a_minute_and_reset() {
        let mut b = super::Backoff::new();
        let waits: Vec<f64> = (0..10).map(|_| b.wait().as_secs_f64()).collect();
        assert!((0.8..=1.2).contains(&waits[0]), "{waits:?}");
        assert!((1.6..=2.4).contains(&waits[1]), "{waits:?}");
        assert!(waits[9] <= 72.0 && waits[9] >= 48.0, "{waits:?}");
        b.reset();
        assert!(b.wait().as_secs_f64() <= 1.2);
    }
}

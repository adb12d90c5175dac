//! The engine's next deadline as one reusable, pinned `Sleep`.
//!
//! The loop hands every `Engine::poll_timeout` answer to [`Deadline::set`]; the sleep is
//! reset only when the deadline moves, and a device without a deadline (no peers, no
//! key) never wakes for its timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::time::Sleep;

pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// What `sleep` is set to; `None` when there is nothing to wait for.
    at: Option<Instant>,
}

impl Deadline {
    pub fn new() -> Deadline {
        Deadline {
            // Never polled while `at` is None, so its initial instant does not matter.
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            at: None,
        }
    }

    /// Follows the engine's wish; `None` disarms the timer.
    pub fn set(&mut self, at: Option<Instant>) {
        if at == self.at {
            return;
        }
        if let Some(at) = at {
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(at));
        }
        self.at = at;
    }

    /// Ready once the armed deadline passes; pending forever while disarmed. Firing
    /// disarms it until the next [`Deadline::set`].
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.at.is_none() {
            return Poll::Pending;
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        self.at = None;
        Poll::Ready(())
    }

    pub async fn expired(&mut self) {
        std::future::poll_fn(|cx| self.poll_expired(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const QUIET: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn fires_at_the_deadline_then_waits_for_the_next_one() {
        let mut d = Deadline::new();
        let start = Instant::now();
        d.set(Some(start + Duration::from_millis(30)));
        d.expired().await;
        assert!(start.elapsed() >= Duration::from_millis(30));
        // Disarmed after firing: it must not be ready again.
        let again = tokio::time::timeout(QUIET, d.expired()).await;
        assert!(
            again.is_err(),
            "a fired deadline stays quiet until set again"
        );
    }

    #[tokio::test]
    async fn a_moved_deadline_replaces_the_old_one() {
        let mut d = Deadline::new();
        let start = Instant::now();
        d.set(Some(start + Duration::from_secs(60)));
        d.set(Some(start + Duration::from_millis(10)));
        d.expired().await;
        assert!(start.elapsed() < Duration::from_secs(60));
        d.set(None);
        let quiet = tokio::time::timeout(QUIET, d.expired()).await;
        assert!(quiet.is_err(), "a disarmed deadline never fires");
    }
}

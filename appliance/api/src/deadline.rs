//! The time a request has to be answered. The listener gives every request the same
//! short deadline (so a slow client cannot hold a connection); a handler that takes a
//! large upload from a signed-in admin lengthens its own request's deadline, so the
//! decision sits with the route's protection, not with a list of paths.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct Deadline(Arc<Mutex<Instant>>);

impl Deadline {
    pub fn after(limit: Duration) -> Deadline {
        Deadline(Arc::new(Mutex::new(Instant::now() + limit)))
    }

    /// Moves the deadline to `limit` from now, if that is later.
    pub fn extend(&self, limit: Duration) {
        let mut at = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *at = (*at).max(Instant::now() + limit);
    }

    fn at(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `fut` until it finishes or the deadline (as it stands when it comes) passes.
    pub async fn run<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            let at = self.at();
            tokio::select! {
                out = &mut fut => return Some(out),
                _ = tokio::time::sleep_until(at) => {
                    if self.at() <= at {
                        return None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lengthened_deadline_lets_the_request_finish() {
        let d = Deadline::after(Duration::from_secs(5));
        let slow = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            "done"
        };
        assert_eq!(d.run(slow).await, None, "cut off at 5 s");
        let d = Deadline::after(Duration::from_secs(5));
        let extended = {
            let d = d.clone();
            async move {
                d.extend(Duration::from_secs(60));
                tokio::time::sleep(Duration::from_secs(10)).await;
                "done"
            }
        };
        assert_eq!(d.run(extended).await, Some("done"));
    }
}

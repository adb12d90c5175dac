//! Records that have outlived their use are pruned, so no tree grows without bound:
//! revoked sessions once the session would have expired anyway, and enrollment tokens
//! once they have expired.

use crate::{Result, Store};

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub revoked_sessions: usize,
    pub enrollment_tokens: usize,
}

impl Store {
    /// Prunes everything past its time at `now` (unix seconds).
    pub fn prune_expired(&self, now: u64) -> Result<Pruned> {
        let _change = self.durability.gate.change();
        // A session past its `exp` is refused by its signature check; its revocation
        // record no longer has anything to add.
        let revoked_sessions = self
            .revoked_sessions
            .remove_where(|r| r.expires_at <= now)?;
        let enrollment_tokens = self
            .enrollment_tokens
            .remove_where(|t| t.expires_at.is_some_and(|at| at <= now) || t.uses_left == 0)?;
        Ok(Pruned {
            revoked_sessions,
            enrollment_tokens,
        })
    }
}

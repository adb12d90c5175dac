//! The Watchgrid agent (SPEC §5), apart from its WireGuard interface: enrollment with a
//! pinned hub certificate ([`enroll`]), the hub client ([`client`]), the heartbeat facts
//! ([`facts`]), the command journal and runner that make remote commands run at most
//! once ([`journal`], [`runner`]), and the loop that ties them together ([`agent`]).
//! The binary supplies the tunnel through [`agent::Tunnel`].

pub mod agent;
pub mod backoff;
pub mod client;
pub mod enroll;
pub mod facts;
pub mod journal;
pub mod logs;
pub mod pin;
pub mod runner;
pub mod sshd;
pub mod state;

/// Seconds since the UNIX epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

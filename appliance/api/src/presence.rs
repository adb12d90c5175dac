//! Which agents are online: the last heartbeat of each, in memory. A heartbeat every
//! interval per agent is too frequent to sync to disk each time, and a restarted hub
//! learns every agent's state again within one interval.

use crate::dto::Heartbeat;
use std::collections::HashMap;
use std::sync::Mutex;

/// Heartbeats an agent may miss before it counts as offline.
pub const MISSED_BEFORE_OFFLINE: u64 = 3;

#[derive(Clone)]
pub struct Seen {
    pub at: u64,
    pub facts: Heartbeat,
    /// The offline transition was announced (audit log); cleared by the next heartbeat.
    pub reported_offline: bool,
}

#[derive(Default)]
pub struct Presence {
    agents: Mutex<HashMap<String, Seen>>,
}

impl Presence {
    /// Records a heartbeat; true when the agent had been announced offline (it is
    /// back).
    pub fn record(&self, device_id: &str, at: u64, facts: Heartbeat) -> bool {
        let seen = Seen {
            at,
            facts,
            reported_offline: false,
        };
        self.lock()
            .insert(device_id.to_string(), seen)
            .is_some_and(|old| old.reported_offline)
    }

    /// Agents that went offline since the last sweep (each is returned once per
    /// absence).
    pub fn newly_offline(&self, now: u64, interval_s: u64) -> Vec<String> {
        let mut gone = Vec::new();
        for (id, seen) in self.lock().iter_mut() {
            if !seen.reported_offline && !Self::is_online(seen, now, interval_s) {
                seen.reported_offline = true;
                gone.push(id.clone());
            }
        }
        gone.sort();
        gone
    }

    pub fn last(&self, device_id: &str) -> Option<Seen> {
        self.lock().get(device_id).cloned()
    }

    pub fn forget(&self, device_id: &str) {
        self.lock().remove(device_id);
    }

    /// Online: heard from within the last [`MISSED_BEFORE_OFFLINE`] intervals.
    pub fn is_online(seen: &Seen, now: u64, interval_s: u64) -> bool {
        now.saturating_sub(seen.at) < MISSED_BEFORE_OFFLINE * interval_s
    }

    pub fn online_count(&self, now: u64, interval_s: u64) -> usize {
        self.lock()
            .values()
            .filter(|s| Self::is_online(s, now, interval_s))
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        // The map holds no invariant a panicking writer could break halfway.
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(at: u64) -> Seen {
        Seen {
            at,
            reported_offline: false,
            facts: Heartbeat {
                agent_version: "1".into(),
                hostname: None,
                os: None,
                kernel: None,
                uptime_s: None,
                load: None,
                memory_total_bytes: None,
                memory_available_bytes: None,
                disk_total_bytes: None,
                disk_available_bytes: None,
                tunnel_rx_bytes: None,
                tunnel_tx_bytes: None,
                last_handshake_s: None,
                log_lines_dropped: None,
            },
        }
    }

    #[test]
    fn an_agent_is_offline_after_three_missed_intervals() {
        let p = Presence::default();
        p.record("dev-1", 1000, seen(1000).facts);
        p.record("dev-2", 900, seen(900).facts);
        assert!(Presence::is_online(&seen(1000), 1089, 30));
        assert!(!Presence::is_online(&seen(1000), 1090, 30));
        assert_eq!(
            p.online_count(1000, 30),
            1,
            "dev-2 was last heard 100 s ago"
        );
        p.forget("dev-1");
        assert_eq!(p.online_count(1000, 30), 0);
    }

    #[test]
    fn going_offline_is_announced_once_per_absence() {
        let p = Presence::default();
        assert!(!p.record("dev-1", 1000, seen(1000).facts));
        assert!(p.newly_offline(1089, 30).is_empty());
        assert_eq!(p.newly_offline(1090, 30), ["dev-1"]);
        assert!(p.newly_offline(1200, 30).is_empty(), "announced already");
        assert!(
            p.record("dev-1", 1201, seen(1201).facts),
            "back after an absence"
        );
        assert!(!p.record("dev-1", 1231, seen(1231).facts));
        assert_eq!(p.newly_offline(1400, 30), ["dev-1"]);
    }
}

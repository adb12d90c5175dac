//! Alerts: rules over login events and agent presence, stored with their delivery log
//! and sent to the operator's webhook ([`webhook`]).
//!
//! Rules:
//! - `failed_login_burst`: `burst_failures` failed or invalid-user sign-ins from one
//!   source address within `burst_window_s` (defaults 5 in 300 s), once per burst;
//! - `root_login`: any sign-in or session as root, and sudo to root;
//! - `new_source`: an accepted sign-in of a user from an address that user never signed
//!   in from before (on any machine of the fleet);
//! - `agent_offline`: an agent missed three heartbeats.
//!
//! The burst windows live in memory: a restarted hub starts counting afresh.

pub mod webhook;

use crate::error::ApiError;
use crate::state::AppState;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use watchgrid_store::{AlertRecord, DeliveryState, LogSettings, LoginRecord, LOG_SETTINGS_KEY};

/// Failure times per source address, for the burst rule.
#[derive(Default)]
pub struct BurstWindows {
    sources: Mutex<HashMap<String, VecDeque<u64>>>,
}

impl BurstWindows {
    /// Counts a failure; true when it completes a burst (the window then starts over).
    fn failure(&self, source: &str, at_s: u64, settings: &LogSettings) -> bool {
        let mut all = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let times = all.entry(source.to_string()).or_default();
        times.push_back(at_s);
        while times
            .front()
            .is_some_and(|t| at_s.saturating_sub(*t) >= settings.burst_window_s)
        {
            times.pop_front();
        }
        if times.len() as u64 >= u64::from(settings.burst_failures.max(1)) {
            times.clear();
            return true;
        }
        false
    }
}

pub fn settings(state: &AppState) -> Result<LogSettings, ApiError> {
    Ok(state
        .store
        .log_settings
        .get(LOG_SETTINGS_KEY)?
        .unwrap_or_default())
}

/// An alert about to be raised.
pub struct NewAlert {
    pub kind: &'static str,
    pub device_id: String,
    pub summary: String,
    pub details: serde_json::Value,
}

/// The alerts newly stored login events raise.
pub fn evaluate_logins(
    state: &AppState,
    device_id: &str,
    events: &[LoginRecord],
) -> Result<Vec<NewAlert>, ApiError> {
    let settings = settings(state)?;
    let mut out = Vec::new();
    for e in events {
        let source = e.source_ip.clone().unwrap_or_else(|| "local".into());
        let details = login_details(e);
        let alert = |kind, summary: String| NewAlert {
            kind,
            device_id: device_id.to_string(),
            summary,
            details: details.clone(),
        };
        match e.outcome.as_str() {
            "failed" | "invalid_user"
                if state
                    .burst_windows
                    .failure(&source, e.ts_us / 1_000_000, &settings) =>
            {
                out.push(alert(
                    "failed_login_burst",
                    format!(
                        "{} failed sign-ins from {source} within {} s (last user {:?})",
                        settings.burst_failures, settings.burst_window_s, e.user
                    ),
                ));
            }
            "root_session" | "sudo_root" => out.push(alert(
                "root_login",
                format!("root via {} by {:?} from {source}", e.service, e.user),
            )),
            _ => {}
        }
        let accepted = matches!(e.outcome.as_str(), "accepted" | "root_session");
        if e.outcome == "accepted" && e.user == "root" {
            out.push(alert("root_login", format!("root signed in from {source}")));
        }
        if let (true, Some(ip)) = (accepted, &e.source_ip) {
            if state.store.note_login_source(&e.user, ip, e.ts_us)? {
                out.push(alert(
                    "new_source",
                    format!("{:?} signed in from a new address {ip}", e.user),
                ));
            }
        }
    }
    Ok(out)
}

fn login_details(e: &LoginRecord) -> serde_json::Value {
    serde_json::json!({
        "outcome": e.outcome, "user": e.user, "source_ip": e.source_ip,
        "source_port": e.source_port, "method": e.method, "service": e.service,
        "ts_us": e.ts_us,
    })
}

/// Stores each alert (pending when a webhook is set) and wakes the sender.
pub fn raise(state: &AppState, alerts: Vec<NewAlert>) -> Result<(), ApiError> {
    if alerts.is_empty() {
        return Ok(());
    }
    let has_webhook = settings(state)?.webhook.is_some();
    for a in alerts {
        let id = format!("{:020}", state.store.next_id()?);
        let at_us = crate::state::unix_now_us();
        let payload = serde_json::json!({
            "id": id, "kind": a.kind, "device_id": a.device_id, "summary": a.summary,
            "at_us": at_us, "details": a.details,
        });
        tracing::warn!(kind = a.kind, device = %a.device_id, summary = %a.summary, "alert");
        state.store.alerts.put(
            &id,
            &AlertRecord {
                id: id.clone(),
                at_us,
                kind: a.kind.to_string(),
                device_id: a.device_id,
                summary: a.summary,
                payload: payload.to_string(),
                delivery: if has_webhook {
                    DeliveryState::Pending
                } else {
                    DeliveryState::NoWebhook
                },
                attempts: Vec::new(),
            },
        )?;
    }
    state.alert_bell.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_n_failures_within_the_window_and_counts_once() {
        let w = BurstWindows::default();
        let s = LogSettings {
            burst_failures: 3,
            burst_window_s: 60,
            ..LogSettings::default()
        };
        assert!(!w.failure("192.0.2.1", 0, &s));
        assert!(!w.failure("192.0.2.1", 10, &s));
        assert!(!w.failure("192.0.2.2", 11, &s), "another source");
        assert!(w.failure("192.0.2.1", 20, &s));
        assert!(!w.failure("192.0.2.1", 21, &s), "the window starts over");
        assert!(!w.failure("192.0.2.1", 100, &s));
        assert!(
            !w.failure("192.0.2.1", 170, &s),
            "the first fell out of the window"
        );
    }
}

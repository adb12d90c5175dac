//! Alerts raised by the hub's rules (failed-login bursts, root sign-ins, new sources,
//! agents offline), their webhook delivery log, and the settings of logs and alerts.

use crate::Sensitive;
use serde::{Deserialize, Serialize};

/// One alert and what became of its delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRecord {
    /// Zero-padded, so keys sort by creation.
    pub id: String,
    pub at_us: u64,
    /// failed_login_burst, root_login, new_source, agent_offline.
    pub kind: String,
    pub device_id: String,
    /// One line for people.
    pub summary: String,
    /// The JSON body sent to the webhook.
    pub payload: String,
    pub delivery: DeliveryState,
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for (another) attempt.
    Pending,
    Delivered,
    /// Given up after the last retry.
    Failed,
    /// No webhook was configured when it was raised.
    NoWebhook,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryAttempt {
    pub at_us: u64,
    /// `200`, `503`, or the transport error.
    pub result: String,
}

/// Settings of log storage, login events and alerts (one record, key [`LOG_SETTINGS_KEY`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Keep the raw log line of each login event (off by default, as in the seed).
    #[serde(default)]
    pub keep_raw_login_lines: bool,
    pub retention_days: u32,
    pub retention_max_bytes: u64,
    /// Failed sign-ins from one source address within `burst_window_s` that raise an alert.
    pub burst_failures: u32,
    pub burst_window_s: u64,
    #[serde(default)]
    pub webhook: Option<Webhook>,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            keep_raw_login_lines: false,
            retention_days: 30,
            retention_max_bytes: 2 << 30,
            burst_failures: 5,
            burst_window_s: 300,
            webhook: None,
        }
    }
}

/// Where alerts go; the secret signs each body (HMAC-SHA256) and is shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    pub secret: Sensitive<String>,
    pub created_at: u64,
}

/// The key of the single [`LogSettings`] record.
pub const LOG_SETTINGS_KEY: &str = "logs";

//! Delivering alerts to the operator's webhook: a JSON POST signed with
//! `X-Watchgrid-Signature: sha256=HEX(HMAC-SHA256(secret, body))`, retried with backoff
//! (2, 4, 8, … s; [`MAX_ATTEMPTS`] in all), every attempt in the alert's delivery log.
//! Pending alerts live in the store, so a restart resumes their delivery.

use crate::error::ApiError;
use crate::state::{unix_now_us, AppState};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::body::Bytes;
use sha2::Sha256;
use std::net::IpAddr;
use std::time::Duration;
use watchgrid_store::{AlertRecord, DeliveryAttempt, DeliveryState};

pub const SIGNATURE_HEADER: &str = "x-watchgrid-signature";
pub const MAX_ATTEMPTS: usize = 6;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Refuses URLs that are not http(s), carry credentials, or point at the hub itself:
/// loopback (its own listeners) and unspecified addresses, and the metrics port.
pub fn validate_url(url: &str, metrics_port: Option<u16>) -> Result<hyper::Uri, ApiError> {
    let bad = |why: &str| ApiError::Invalid(format!("url: {why}"));
    let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if scheme != "https" && scheme != "http" {
        return Err(bad("http:// or https:// only"));
    }
    if url.len() > 2048 || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad("at most 2048 characters, no user:password@"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| {
            let ip = ip.to_canonical();
            ip.is_loopback() || ip.is_unspecified()
        });
    if loopback {
        return Err(bad("may not point at the hub's own loopback listeners"));
    }
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    if metrics_port == Some(port) {
        return Err(bad("may not point at the hub's metrics listener"));
    }
    Ok(uri)
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn client() -> Result<Client, ApiError> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(ApiError::internal)?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// Delivers pending alerts until the runtime stops; woken by `state.alert_bell`.
pub async fn run(state: AppState) {
    let client = match client() {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "alert webhook client"),
    };
    loop {
        let next = match deliver_due(&state, &client).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "delivering alerts");
                Some(Duration::from_secs(5))
            }
        };
        let wait = next.unwrap_or(Duration::from_secs(3600));
        let _ = tokio::time::timeout(wait, state.alert_bell.notified()).await;
    }
}

/// When an alert with `n` attempts so far may be tried again.
fn due_at_us(a: &AlertRecord) -> u64 {
    match a.attempts.last() {
        None => 0,
        Some(last) => last.at_us + (1_000_000u64 << a.attempts.len().min(10)),
    }
}

/// Tries every due alert once; returns how long until the next one is due.
async fn deliver_due(state: &AppState, client: &Client) -> Result<Option<Duration>, ApiError> {
    let pending: Vec<AlertRecord> = state
        .store
        .alerts
        .list()?
        .into_iter()
        .filter(|a| a.delivery == DeliveryState::Pending)
        .collect();
    let now = unix_now_us();
    let mut next: Option<u64> = None;
    for mut alert in pending {
        let due = due_at_us(&alert);
        if due > now {
            next = Some(next.map_or(due, |n| n.min(due)));
            continue;
        }
        let result = attempt(state, client, &alert).await;
        let delivered = result == "200" || result.starts_with('2');
        alert.attempts.push(DeliveryAttempt {
            at_us: unix_now_us(),
            result: result.clone(),
        });
        alert.delivery = match (delivered, alert.attempts.len() >= MAX_ATTEMPTS) {
            (true, _) => DeliveryState::Delivered,
            (false, true) => DeliveryState::Failed,
            (false, false) => DeliveryState::Pending,
        };
        let label = match alert.delivery {
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            _ => "retry",
        };
        state.metrics.alert_sent(label);
        if alert.delivery == DeliveryState::Pending {
            let due = due_at_us(&alert);
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        state.store.alerts.put(&alert.id.clone(), &alert)?;
    }
    Ok(next.map(|n| Duration::from_micros(n.saturating_sub(unix_now_us()))))
}

/// One POST; the status code, or what went wrong.
async fn attempt(state: &AppState, client: &Client, alert: &AlertRecord) -> String {
    let Ok(settings) = super::settings(state) else {
        return "settings unreadable".into();
    };
    let Some(hook) = settings.webhook else {
        return "no webhook configured".into();
    };
    let body = alert.payload.clone().into_bytes();
    let req = hyper::Request::post(&hook.url)
        .header("content-type", "application/json")
        .header("user-agent", "watchgrid-alerts")
        .header(SIGNATURE_HEADER, signature(hook.secret.expose(), &body))
        .body(Full::new(Bytes::from(body)));
    let req = match req {
        Ok(r) => r,
        Err(e) => return format!("bad request: {e}"),
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(req)).await {
        Ok(Ok(resp)) => resp.status().as_u16().to_string(),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => format!("timed out after {ATTEMPT_TIMEOUT:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn webhooks_may_not_point_at_the_hub_itself() {
        for bad in [
            "ftp://example.com/",
            "https://127.0.0.1/hook",
            "http://localhost:8080/",
            "http://[::1]/",
            "http://0.0.0.0/",
            "http://[::ffff:127.0.0.1]/",
            "https://user:pw@example.com/",
            "http://10.100.0.1:9100/metrics",
        ] {
            assert!(validate_url(bad, Some(9100)).is_err(), "{bad}");
        }
        assert!(validate_url("https://hooks.example.com/watchgrid", Some(9100)).is_ok());
        assert!(validate_url("http://172.31.9.2:8080/alerts", Some(9100)).is_ok());
    }
}

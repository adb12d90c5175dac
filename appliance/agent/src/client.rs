//! The thin HTTPS client of the hub's agent API: one connection pool, the pinned
//! certificate check, typed answers and typed errors.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::ServerCertVerifier;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use watchgrid_api::dto::{
    Acked, AgentConfig, CommandOrders, CommandReport, Heartbeat, HeartbeatAnswer, HostCerts,
    LogBatch, LoginBatch, Registration,
};
use watchgrid_store::Sensitive;

/// Why a call to the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}: expected https://HOST[:PORT]")]
    BadUrl(String),
    /// The hub could not be reached or the TLS handshake failed (wrong pin included).
    #[error("cannot reach the hub: {0}")]
    Transport(String),
    #[error("the hub did not answer within {0:?}")]
    Timeout(Duration),
    /// The key is unknown, or the device is disabled, deleted or expired.
    #[error("the hub refused this agent's key (device disabled, deleted or expired)")]
    Unauthorized,
    #[error("the hub answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("the hub's answer is not what this agent understands: {0}")]
    Decode(String),
}

impl ClientError {
    /// Worth retrying later: the hub is away or busy, not refusing.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) | ClientError::Timeout(_) => true,
            ClientError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for one hub, trusting what `verifier` trusts.
#[derive(Clone)]
pub struct HubClient {
    base: String,
    key: Option<Arc<Sensitive<String>>>,
    http: Http,
}

/// Ordinary calls; the long poll adds its wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

impl HubClient {
    pub fn new(
        server: &str,
        verifier: Arc<dyn ServerCertVerifier>,
    ) -> Result<HubClient, ClientError> {
        let base = normalize_server(server)?;
        let tls = rustls::ClientConfig::builder_with_provider(crate::pin::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Transport(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp_connector());
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(HubClient {
            base,
            key: None,
            http,
        })
    }

    /// The same client, sending the agent key as its bearer credential.
    pub fn with_key(mut self, key: Sensitive<String>) -> HubClient {
        self.key = Some(Arc::new(key));
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn register(
        &self,
        token: &str,
        public_key: &str,
        hostname: &str,
        allow_commands: bool,
    ) -> Result<Registration, ClientError> {
        let body = serde_json::json!({"token": token, "public_key": public_key,
            "hostname": hostname, "allow_commands": allow_commands});
        self.json(Method::POST, "/api/register", Some(&body), CALL_TIMEOUT)
            .await
    }

    pub async fn heartbeat(&self, facts: &Heartbeat) -> Result<HeartbeatAnswer, ClientError> {
        self.json(Method::POST, "/api/heartbeat", Some(facts), CALL_TIMEOUT)
            .await
    }

    pub async fn config(&self) -> Result<AgentConfig, ClientError> {
        self.json::<(), _>(Method::GET, "/api/wg/config", None, CALL_TIMEOUT)
            .await
    }

    /// Waits up to `wait` for commands (the hub holds the request open).
    pub async fn poll_commands(&self, wait: Duration) -> Result<CommandOrders, ClientError> {
        let path = format!("/api/commands/?wait={}", wait.as_secs());
        self.json::<(), _>(Method::GET, &path, None, CALL_TIMEOUT + wait)
            .await
    }

    pub async fn report(&self, report: &CommandReport) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .json(
                Method::POST,
                "/api/commandresult",
                Some(report),
                CALL_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    /// Ships log lines; the hub answers the highest sequence it has stored.
    pub async fn ship_lines(&self, batch: &LogBatch) -> Result<u64, ClientError> {
        let acked: Acked = self
            .json(Method::POST, "/api/logs/", Some(batch), CALL_TIMEOUT)
            .await?;
        Ok(acked.acked_seq)
    }

    pub async fn ship_logins(&self, batch: &LoginBatch) -> Result<u64, ClientError> {
        let acked: Acked = self
            .json(Method::POST, "/api/logs/login", Some(batch), CALL_TIMEOUT)
            .await?;
        Ok(acked.acked_seq)
    }

    /// Host certificates for sshd's host keys (`--ssh-host-cert`).
    pub async fn ssh_host_certs(&self, host_keys: &[String]) -> Result<HostCerts, ClientError> {
        let body = serde_json::json!({ "host_keys": host_keys });
        self.json(
            Method::POST,
            "/api/agent/ssh-host-certs",
            Some(&body),
            CALL_TIMEOUT,
        )
        .await
    }

    /// A plain GET (the CA download before trusting the hub).
    pub async fn get_bytes(&self, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
        self.call(Method::GET, path, None, CALL_TIMEOUT).await
    }

    async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?),
            None => None,
        };
        let (status, bytes) = self.call(method, path, body, timeout).await?;
        match status {
            s if s.is_success() => {
                serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
            }
            StatusCode::UNAUTHORIZED => Err(ClientError::Unauthorized),
            status => Err(ClientError::Status {
                status,
                message: error_message(&bytes),
            }),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(
                "user-agent",
                concat!("watchgrid-agent/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        if let Some(key) = &self.key {
            req = req.header("authorization", format!("Bearer {}", key.expose()));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::BadUrl(e.to_string()))?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ClientError::Transport(error_chain(&e)))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }
}

/// TCP with dead-path detection. When the machine's address changes, or a NAT drops
/// its mapping, the pooled connection goes silent rather than closed: nothing answers,
/// nothing resets. Keepalive probes find an idle one (a long poll) dead within about
/// 11 s, and the user timeout ends one with unacknowledged data after 10 s, so the next
/// heartbeat dials afresh from the new address instead of waiting out its timeout on a
/// corpse.
fn tcp_connector() -> HttpConnector {
    let mut tcp = HttpConnector::new();
    // The HTTPS layer wraps this connector; it speaks TLS on any scheme it is given.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(Duration::from_secs(10)));
    tcp.set_keepalive(Some(Duration::from_secs(5)));
    tcp.set_keepalive_interval(Some(Duration::from_secs(2)));
    tcp.set_keepalive_retries(Some(3));
    tcp.set_tcp_user_timeout(Some(Duration::from_secs(10)));
    tcp
}

/// `https://host[:port]` without a trailing slash or path.
fn normalize_server(server: &str) -> Result<String, ClientError> {
    let trimmed = server.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .ok_or_else(|| ClientError::BadUrl(server.to_string()))?;
    if rest.is_empty() || rest.contains('/') || rest.contains('@') || rest.contains('?') {
        return Err(ClientError::BadUrl(server.to_string()));
    }
    let uri: hyper::Uri = trimmed
        .parse()
        .map_err(|_| ClientError::BadUrl(server.to_string()))?;
    if uri.host().is_none() {
        return Err(ClientError::BadUrl(server.to_string()));
    }
    Ok(trimmed.to_string())
}

/// The hub's `{"error": "..."}`, or the start of whatever it sent.
fn error_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned())
}

/// hyper-util's error says "client error (Connect)"; the cause (refused, TLS) is below.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::normalize_server;

    #[test]
    fn only_plain_https_hub_urls_are_taken() {
        assert_eq!(
            normalize_server("https://10.0.0.1/").expect("ok"),
            "https://10.0.0.1"
        );
        assert!(normalize_server("https://[fd00::1]:8443").is_ok());
        for bad in [
            "http://hub",
            "hub",
            "https://",
            "https://hub/api",
            "https://u@hub",
        ] {
            assert!(normalize_server(bad).is_err(), "{bad}");
        }
    }
}

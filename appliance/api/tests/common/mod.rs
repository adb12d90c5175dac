//! Shared by the in-process API tests: the router with a recording fake hub and
//! firewall, and request builders.
#![allow(dead_code, unused_imports)]

pub use axum::body::Body;
pub use axum::extract::ConnectInfo;
pub use axum::http::{header, Request, StatusCode};
pub use axum::Router;
pub use http_body_util::BodyExt;
pub use std::net::SocketAddr;
pub use std::os::unix::fs::PermissionsExt;
pub use std::sync::{Arc, Mutex};
pub use tower::ServiceExt;
pub use watchgrid_api::hub::{FirewallError, FirewallFuture, Hub, HubFuture, TlsSwitchError};
pub use watchgrid_api::{router, ApiConfig, AppState};
pub use watchgrid_core::{IpPrefix, PublicKey};
pub use watchgrid_store::Store;

#[derive(Default)]
pub struct FakeHub {
    pub peers: Mutex<Vec<(PublicKey, Vec<IpPrefix>)>>,
    pub address: Mutex<Option<(std::net::Ipv4Addr, u8)>>,
    /// While set, `set_peer` fails as a stopped dataplane does.
    pub fail: Mutex<bool>,
    /// Counters `peer_stats` reports for peers on the hub: key -> (rx, tx).
    pub counters: Mutex<std::collections::HashMap<PublicKey, (u64, u64)>>,
}

impl Hub for FakeHub {
    fn public_key(&self) -> PublicKey {
        PublicKey([0x1d; 32])
    }
    fn set_peer(&self, key: PublicKey, allowed: Vec<IpPrefix>) -> HubFuture {
        if self.fail.lock().map(|f| *f).unwrap_or(false) {
            return Box::pin(async { Err(watchgrid_api::hub::HubError::Stopped) });
        }
        if let Ok(mut p) = self.peers.lock() {
            p.retain(|(k, _)| *k != key);
            p.push((key, allowed));
        }
        Box::pin(async { Ok(()) })
    }
    fn remove_peer(&self, key: PublicKey) -> HubFuture {
        if self.fail.lock().map(|f| *f).unwrap_or(false) {
            return Box::pin(async { Err(watchgrid_api::hub::HubError::Stopped) });
        }
        if let Ok(mut p) = self.peers.lock() {
            p.retain(|(k, _)| *k != key);
        }
        Box::pin(async { Ok(()) })
    }
    fn peer_count(&self) -> usize {
        self.peers.lock().map(|p| p.len()).unwrap_or(0)
    }
    fn peer_stats(&self) -> watchgrid_api::hub::PeerStatsFuture {
        let peers: Vec<PublicKey> = self
            .peers
            .lock()
            .map(|p| p.iter().map(|(k, _)| *k).collect())
            .unwrap_or_default();
        let counters = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        let stats = peers
            .into_iter()
            .map(|k| {
                let (rx, tx) = counters.get(&k).copied().unwrap_or_default();
                watchgrid_api::hub::PeerStats {
                    public_key: k,
                    endpoint: Some(SocketAddr::from(([192, 0, 2, 7], 40_000))),
                    last_handshake_age: Some(std::time::Duration::from_secs(5)),
                    rx_bytes: rx,
                    tx_bytes: tx,
                }
            })
            .collect();
        Box::pin(async move { Ok(stats) })
    }
    fn set_hub_address(&self, address: std::net::Ipv4Addr, prefix: u8) -> HubFuture {
        if let Ok(mut a) = self.address.lock() {
            *a = Some((address, prefix));
        }
        Box::pin(async { Ok(()) })
    }
}

pub const TOKEN: &str = "setup-token-for-tests";
pub const PASSWORD: &str = "correct horse battery";

pub struct App {
    pub router: Router,
    pub hub: Arc<FakeHub>,
    pub state: AppState,
    pub _dir: tempfile::TempDir,
}

pub fn app_with(config: ApiConfig) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let store = Arc::new(Store::open(dir.path()).expect("store"));
    let hub = Arc::new(FakeHub::default());
    let state = AppState::new(
        store,
        hub.clone(),
        config,
        Some(TOKEN.into()),
        Some("PEM".into()),
    );
    App {
        router: router(state.clone()),
        hub,
        state,
        _dir: dir,
    }
}

pub fn app() -> App {
    app_with(ApiConfig::default())
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub json: serde_json::Value,
    pub text: String,
    pub bytes: Vec<u8>,
}

impl App {
    pub async fn call(&self, req: Request<Body>) -> Resp {
        self.call_from("192.168.0.10:40000", req).await
    }

    pub async fn call_from(&self, peer: &str, mut req: Request<Body>) -> Resp {
        let addr: SocketAddr = peer.parse().expect("peer addr");
        req.extensions_mut().insert(ConnectInfo(addr));
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Resp {
            status,
            headers,
            json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            text,
            bytes: bytes.to_vec(),
        }
    }

    pub async fn setup(&self) {
        let r = self.call(post("/api/setup", &setup_body(TOKEN))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }

    /// Setup, then an API token for admin calls.
    pub async fn admin_token(&self) -> String {
        self.setup().await;
        let cookie = self.login_cookie().await;
        let r = self
            .call(with(
                post("/api/tokens", &serde_json::json!({"name": "ci"})),
                header::COOKIE,
                &cookie,
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["token"].as_str().expect("token").to_string()
    }

    pub async fn login_cookie(&self) -> String {
        let r = self
            .call(post("/api/auth/login", &login_body(PASSWORD)))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let set = r
            .headers
            .get(header::SET_COOKIE)
            .expect("cookie")
            .to_str()
            .expect("ascii");
        set.split(';').next().expect("pair").to_string()
    }
}

pub fn setup_body(token: &str) -> serde_json::Value {
    serde_json::json!({
        "setup_token": token, "admin_username": "admin",
        "admin_password": PASSWORD, "endpoint": "vpn.example.com:51820",
    })
}

pub fn login_body(password: &str) -> serde_json::Value {
    serde_json::json!({ "username": "admin", "password": password })
}

pub fn post(path: &str, body: &serde_json::Value) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, "vpn.example.com")
        .body(Body::from(body.to_string()))
        .expect("request")
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header(header::HOST, "vpn.example.com")
        .body(Body::empty())
        .expect("request")
}

pub fn with(mut req: Request<Body>, name: header::HeaderName, value: &str) -> Request<Body> {
    req.headers_mut()
        .insert(name, value.parse().expect("header value"));
    req
}

pub fn bearer(req: Request<Body>, token: &str) -> Request<Body> {
    with(req, header::AUTHORIZATION, &format!("Bearer {token}"))
}

pub fn wg_key(i: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([i; 32])
}

/// A firewall that records applies and can be told to fail.
#[derive(Default)]
pub struct FakeFirewall {
    pub applies: Mutex<u32>,
    pub fail: Mutex<Option<String>>,
}

impl watchgrid_api::hub::Firewall for FakeFirewall {
    fn reconcile(&self) -> FirewallFuture {
        let fail = self.fail.lock().map(|f| f.clone()).unwrap_or(None);
        if let Ok(mut n) = self.applies.lock() {
            *n += 1;
        }
        let refused = |reason| FirewallError::Nft {
            program: "nft".into(),
            reason,
        };
        Box::pin(async move { fail.map_or(Ok(()), |reason| Err(refused(reason))) })
    }
    fn status(&self) -> watchgrid_api::hub::FirewallStatus {
        match self.fail.lock().map(|f| f.clone()).unwrap_or(None) {
            Some(error) => watchgrid_api::hub::FirewallStatus::Failed {
                at: 1,
                error,
                in_force: true,
            },
            None => watchgrid_api::hub::FirewallStatus::Applied { at: 1 },
        }
    }
}

pub fn with_firewall(a: &App) -> Arc<FakeFirewall> {
    let fw = Arc::new(FakeFirewall::default());
    assert!(a.state.firewall.set(fw.clone()).is_ok());
    fw
}

pub fn put(path: &str, body: &serde_json::Value) -> Request<Body> {
    let mut req = post(path, body);
    *req.method_mut() = axum::http::Method::PUT;
    req
}

pub fn applies(fw: &FakeFirewall) -> u32 {
    *fw.applies.lock().expect("lock")
}

/// Setup (which applies the firewall once, for the VPN it chose) and an API token.
pub async fn admin_with_firewall(a: &App, fw: &FakeFirewall) -> String {
    let token = a.admin_token().await;
    assert_eq!(applies(fw), 1, "setup applies the firewall");
    *fw.applies.lock().expect("lock") = 0;
    token
}

pub fn delete(path: &str) -> Request<Body> {
    Request::delete(path)
        .header(header::HOST, "vpn.example.com")
        .body(Body::empty())
        .expect("request")
}

/// A plain WireGuard device with the key `[key; 32]`: its id and public key.
pub async fn plain_device(a: &App, token: &str, key: u8) -> (String, PublicKey) {
    let r = a
        .call(bearer(
            post(
                "/api/devices",
                &serde_json::json!({"name": format!("laptop{key}"), "public_key": wg_key(key)}),
            ),
            token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["device"]["id"].as_str().expect("id").to_string();
    (id, PublicKey([key; 32]))
}

/// The fake hub has the peer.
pub fn on_hub(a: &App, key: &PublicKey) -> bool {
    a.hub
        .peers
        .lock()
        .expect("lock")
        .iter()
        .any(|(k, _)| k == key)
}

/// Turns 2FA on through the API; returns its secret and the recovery codes.
pub async fn enable_2fa(a: &App, token: &str) -> (String, Vec<String>) {
    let setup = a
        .call(bearer(
            post("/api/auth/2fa/setup", &serde_json::json!({})),
            token,
        ))
        .await;
    assert_eq!(setup.status, StatusCode::OK, "{}", setup.text);
    let secret = setup.json["secret"].as_str().expect("secret").to_string();
    let code =
        watchgrid_api::totp::code_at(&secret, watchgrid_api::state::unix_now()).expect("code");
    let en = a
        .call(bearer(
            post("/api/auth/2fa/enable", &serde_json::json!({"code": code})),
            token,
        ))
        .await;
    assert_eq!(en.status, StatusCode::OK, "{}", en.text);
    let codes = en.json["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    (secret, codes)
}

/// Registers an agent through a fresh enrollment token: its device id and agent key.
pub async fn register_agent(a: &App, admin: &str, hostname: &str, key: u8) -> (String, String) {
    let r = a
        .call(bearer(
            post("/api/enrollment-tokens", &serde_json::json!({})),
            admin,
        ))
        .await;
    let token = r.json["token"].as_str().expect("token").to_string();
    let body = serde_json::json!({"token": token, "public_key": wg_key(key), "hostname": hostname});
    let r = a.call(post("/api/register", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    (
        r.json["device_id"].as_str().expect("id").to_string(),
        r.json["agent_key"].as_str().expect("agent key").to_string(),
    )
}

//! What a machine needs to become an agent, in-process: the hub's binary (here the test
//! executable, which is what `/proc/self/exe` is) with its checksum, the install script
//! and the unit, and the dashboard's "Install an agent" section and its form.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tower::ServiceExt;
use watchgrid_api::hub::{Hub, HubFuture};
use watchgrid_api::{router, ApiConfig, AppState};
use watchgrid_core::{IpPrefix, PublicKey};
use watchgrid_store::Store;

struct NoHub;

impl Hub for NoHub {
    fn public_key(&self) -> PublicKey {
        PublicKey([0x1d; 32])
    }
    fn set_peer(&self, _key: PublicKey, _allowed: Vec<IpPrefix>) -> HubFuture {
        Box::pin(async { Ok(()) })
    }
    fn remove_peer(&self, _key: PublicKey) -> HubFuture {
        Box::pin(async { Ok(()) })
    }
    fn peer_count(&self) -> usize {
        0
    }
    fn peer_stats(&self) -> watchgrid_api::hub::PeerStatsFuture {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn set_hub_address(&self, _address: std::net::Ipv4Addr, _prefix: u8) -> HubFuture {
        Box::pin(async { Ok(()) })
    }
}

const SETUP_TOKEN: &str = "setup-token-for-download-tests";
const PASSWORD: &str = "correct horse battery";
const INSIDE: &str = "192.168.0.10:40000";
const OUTSIDE: &str = "203.0.113.7:40000";
const HOST: &str = "vpn.example.com";

/// Stands in for the CA certificate's DER: the fingerprint is the SHA-256 of whatever
/// the PEM block holds.
const CA_DER: &[u8] = b"stand-in for the internal CA's DER encoding";

fn ca_pem() -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(CA_DER);
    format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n")
}

/// What `watchgrid serve` prints for the CA: colon-separated uppercase hex.
fn ca_fingerprint() -> String {
    let hex: Vec<String> = Sha256::digest(CA_DER)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    hex.join(":")
}

struct App {
    router: Router,
    _dir: tempfile::TempDir,
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

fn app(ca: Option<String>) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let store = Arc::new(Store::open(dir.path()).expect("store"));
    let config = ApiConfig {
        admin_cidrs: vec!["192.168.0.0/24".parse().expect("cidr")],
        ..ApiConfig::default()
    };
    let state = AppState::new(store, Arc::new(NoHub), config, Some(SETUP_TOKEN.into()), ca);
    App {
        router: router(state),
        _dir: dir,
    }
}

impl App {
    async fn call(&self, from: &str, mut req: Request<Body>) -> Resp {
        let addr: SocketAddr = from.parse().expect("peer addr");
        req.extensions_mut().insert(ConnectInfo(addr));
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Completes setup and signs in; returns the session cookie (`name=value`).
    /// The CSRF token the devices page puts in its forms for this session.
    async fn csrf(&self, cookie: &str) -> String {
        let page = self
            .call(INSIDE, with_cookie(get("/devices"), cookie))
            .await
            .text();
        let (_, rest) = page
            .split_once("name=\"csrf\" value=\"")
            .expect("a CSRF field on the page");
        rest.split('"').next().expect("its value").to_string()
    }

    async fn session(&self) -> String {
        let setup = serde_json::json!({
            "setup_token": SETUP_TOKEN, "admin_username": "admin",
            "admin_password": PASSWORD, "endpoint": "vpn.example.com:51820",
        });
        let r = self.call(INSIDE, json("/api/setup", &setup)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let login = serde_json::json!({"username": "admin", "password": PASSWORD});
        let r = self.call(INSIDE, json("/api/auth/login", &login)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.header("set-cookie")
            .split(';')
            .next()
            .expect("cookie pair")
            .to_string()
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header(header::HOST, HOST)
        .body(Body::empty())
        .expect("request")
}

fn json(path: &str, body: &serde_json::Value) -> Request<Body> {
    Request::post(path)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

/// The dashboard's form post, as a browser sends it from the hub's own page.
fn form(cookie: Option<&str>, origin: &str, body: &str) -> Request<Body> {
    let mut req = Request::post("/api/enrollment-tokens/agent-install")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, origin)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Body::from(body.to_string())).expect("request")
}

fn with_cookie(mut req: Request<Body>, cookie: &str) -> Request<Body> {
    req.headers_mut()
        .insert(header::COOKIE, cookie.parse().expect("cookie"));
    req
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The install command as the page shows it, HTML-unescaped.
fn shown_command(page: &str) -> String {
    let start = page
        .find("<pre id=\"install-command\"><code>")
        .expect("the install command")
        + "<pre id=\"install-command\"><code>".len();
    let len = page[start..].find("</code>").expect("end of the command");
    unescape(&page[start..start + len])
}

fn expected_command(token: &str, allow: bool) -> String {
    let fp = ca_fingerprint();
    let hex = fp.replace(':', "").to_lowercase();
    let hub = format!("https://{HOST}");
    format!(
        "cd \"$(mktemp -d)\" && curl -fsSk {hub}/downloads/ca.crt -o watchgrid-ca.crt && \
         sed '/^-----/d' watchgrid-ca.crt | base64 -d > watchgrid-ca.der && \
         echo '{hex}  watchgrid-ca.der' | sha256sum -c && \
         curl -fsS --cacert watchgrid-ca.crt {hub}/downloads/install-agent.sh -o install-agent.sh && \
         sh install-agent.sh --server {hub} --token {token} --fingerprint SHA256:{fp}{}",
        if allow { " --allow-commands" } else { "" }
    )
}

#[tokio::test]
async fn the_binary_is_the_running_executable_with_its_checksum() {
    let a = app(Some(ca_pem()));
    let exe = std::fs::read("/proc/self/exe").expect("reading the test executable");
    let sum = hex::encode(Sha256::digest(&exe));
    // Public: before setup, and from outside the admin fence.
    let r = a.call(OUTSIDE, get("/downloads/watchgrid")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/octet-stream");
    assert_eq!(
        r.header("content-disposition"),
        "attachment; filename=\"watchgrid\""
    );
    assert_eq!(r.header("content-length"), exe.len().to_string());
    assert_eq!(r.header("x-checksum-sha256"), sum);
    assert!(r.body == exe, "the body is not the executable");
    // Served again from the cached checksum, still whole.
    let again = a.call(INSIDE, get("/downloads/watchgrid")).await;
    assert_eq!(again.header("x-checksum-sha256"), sum);
    assert_eq!(again.body.len(), exe.len());

    let r = a.call(OUTSIDE, get("/downloads/watchgrid.sha256")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), format!("{sum}  watchgrid\n"));
}

#[tokio::test]
async fn the_install_script_and_the_unit_are_the_files_in_dist() {
    let a = app(Some(ca_pem()));
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist");
    for (path, file) in [
        ("/downloads/install-agent.sh", "install-agent.sh"),
        (
            "/downloads/watchgrid-agent.service",
            "watchgrid-agent.service",
        ),
    ] {
        let want = std::fs::read_to_string(dist.join(file)).expect("dist file");
        let r = a.call(OUTSIDE, get(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header("content-type"), "text/plain; charset=utf-8");
        assert_eq!(r.text(), want, "{path}");
    }
}

#[tokio::test]
async fn the_devices_page_shows_the_install_command_with_the_ca_fingerprint() {
    let a = app(Some(ca_pem()));
    let cookie = a.session().await;
    let r = a.call(INSIDE, with_cookie(get("/devices"), &cookie)).await;
    assert_eq!(r.status, StatusCode::OK);
    let page = r.text();
    assert!(page.contains("Install an agent"), "{page}");
    assert!(
        page.contains(&format!(
            "<code id=\"ca-fingerprint\">{}</code>",
            ca_fingerprint()
        )),
        "{page}"
    );
    assert_eq!(
        shown_command(&page),
        expected_command("ENROLLMENT_TOKEN", false)
    );
    // Escaped: the command's quotes are entities, not markup.
    assert!(page.contains("cd &quot;$(mktemp -d)&quot;"), "{page}");
    assert!(page.contains("sed &#39;/^-----/d&#39;"), "{page}");
    assert!(!page.contains("sed '/^-----/d'"), "{page}");

    // A Host that is not a plain host[:port] never reaches the command.
    let mut odd = with_cookie(get("/devices"), &cookie);
    odd.headers_mut()
        .insert(header::HOST, "x$(id)<b>".parse().expect("header"));
    let page = a.call(INSIDE, odd).await.text();
    let shown = shown_command(&page);
    assert!(shown.contains("--server https://HUB "), "{shown}");
    assert!(!page.contains("$(id)") && !page.contains("<b>"), "{page}");
}

#[tokio::test]
async fn the_form_creates_a_token_that_the_command_carries_and_that_registers() {
    let a = app(Some(ca_pem()));
    let cookie = a.session().await;
    let csrf = a.csrf(&cookie).await;
    let origin = format!("https://{HOST}");
    let r = a
        .call(
            INSIDE,
            form(
                Some(&cookie),
                &origin,
                &format!("name=lab+%3Cb%3E&uses=2&expires_hours=24&allow_commands=on&csrf={csrf}"),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.header("content-type").starts_with("text/html"));
    let page = r.text();
    assert!(page.contains("id=\"install-token-note\""), "{page}");
    let shown = shown_command(&page);
    let token = shown
        .split("--token ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("a token in the command")
        .to_string();
    assert_eq!(token.len(), 43, "{shown}");
    assert_eq!(shown, expected_command(&token, true));

    // The token is a real one: listed with the form's uses and expiry, and it registers.
    let r = a
        .call(INSIDE, with_cookie(get("/api/enrollment-tokens"), &cookie))
        .await;
    let list: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    let t = &list["tokens"][0];
    assert_eq!(t["name"], "lab <b>");
    assert_eq!(t["uses_left"], 2);
    let created = t["created_at"].as_u64().expect("created_at");
    assert_eq!(t["expires_at"].as_u64(), Some(created + 24 * 3600));
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let reg = serde_json::json!({"token": token, "public_key": key, "hostname": "agent-1"});
    let r = a.call(OUTSIDE, json("/api/register", &reg)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Without the box ticked, the command has no --allow-commands.
    let r = a
        .call(
            INSIDE,
            form(
                Some(&cookie),
                &origin,
                &format!("uses=1&expires_hours=&csrf={csrf}"),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(!shown_command(&r.text()).contains("--allow-commands"));
}

#[tokio::test]
async fn the_form_has_the_admin_apis_protection_and_its_checks() {
    let a = app(Some(ca_pem()));
    let cookie = a.session().await;
    let csrf = a.csrf(&cookie).await;
    let origin = format!("https://{HOST}");
    let body = &format!("uses=1&csrf={csrf}");
    let r = a.call(INSIDE, form(None, &origin, body)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no session");
    let r = a
        .call(INSIDE, form(Some(&cookie), "https://evil.example", body))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "foreign origin");
    let r = a.call(OUTSIDE, form(Some(&cookie), &origin, body)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "outside the fence");
    // The session cookie alone is not enough for a form post: a page on a sibling
    // subdomain could send that much. Without the page's token, or with another
    // session's, nothing is created.
    for body in [
        "uses=1",
        "uses=1&csrf=",
        "uses=1&csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let r = a.call(INSIDE, form(Some(&cookie), &origin, body)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}");
        assert!(r.text().contains("security token"), "{body}: {}", r.text());
    }

    // Refused input: the page again, with the reason (escaped) and no token.
    for (body, why) in [
        ("uses=0", "uses: 1 to 100000"),
        ("uses=many", "uses: a number"),
        ("expires_hours=-1", "valid for"),
        ("uses=1&groups=%3Cb%3E", "unknown field"),
    ] {
        let body = format!("{body}&csrf={csrf}");
        let r = a.call(INSIDE, form(Some(&cookie), &origin, &body)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let page = r.text();
        assert!(page.contains("id=\"install-error\""), "{body}: {page}");
        assert!(page.contains(why), "{body}: {page}");
        assert!(!page.contains("<b>"), "{body}: {page}");
        assert!(shown_command(&page).contains("--token ENROLLMENT_TOKEN "));
    }
    let r = a
        .call(INSIDE, with_cookie(get("/api/enrollment-tokens"), &cookie))
        .await;
    let list: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(
        list["tokens"],
        serde_json::json!([]),
        "a refused form made a token"
    );
}

#[tokio::test]
async fn without_an_internal_ca_the_page_says_the_installer_cannot_pin_one() {
    let a = app(None);
    let cookie = a.session().await;
    let page = a
        .call(INSIDE, with_cookie(get("/devices"), &cookie))
        .await
        .text();
    assert!(page.contains("id=\"install-unavailable\""), "{page}");
    assert!(!page.contains("install-command"), "{page}");
}

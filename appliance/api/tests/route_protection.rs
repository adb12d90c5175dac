//! Every route is protected by the router it is registered in. These tests walk the
//! OpenAPI document the real router serves, and the routes the document does not
//! describe, and check each against its audience: an admin route added to the wrong
//! router, or an operation nobody classified, fails here.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tower::ServiceExt;
use watchgrid_api::hub::{Hub, HubFuture};
use watchgrid_api::{router, ApiConfig, AppState};
use watchgrid_core::{IpPrefix, PublicKey};
use watchgrid_store::Store;

/// Who may call a route (see the api crate's `audience` module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Audience {
    /// Every network, always.
    Public,
    /// Every network, after setup.
    Agent,
    /// The admin fence, before setup too.
    Setup,
    /// The admin fence, after setup.
    Admin,
}

use Audience::*;

/// The operations the document lists without a security requirement, and who may call
/// them. Every operation with a security requirement is an admin operation that needs
/// credentials; an operation with neither fails `every_documented_operation_is_classified`.
const OPEN_OPERATIONS: &[(&str, &str, Audience)] = &[
    ("get", "/healthz", Public),
    ("post", "/api/register", Agent),
    ("post", "/api/setup", Setup),
    ("post", "/api/setup/restore", Setup),
    // Signing in is for the admin audience, before there is a session.
    ("post", "/api/auth/login", Admin),
];

/// Routes the document does not describe: HTML pages, files and the document itself.
const UNDOCUMENTED: &[(&str, Audience)] = &[
    ("/", Admin),
    ("/login", Admin),
    ("/api/openapi.json", Admin),
    ("/setup", Setup),
    ("/static/app.css", Setup),
    ("/downloads/ca.crt", Public),
    // `/downloads/watchgrid` too (tests/downloads.rs: it is the whole test executable).
    ("/downloads/watchgrid.sha256", Public),
    ("/downloads/install-agent.sh", Public),
    ("/downloads/watchgrid-agent.service", Public),
    // The dashboard's install form (POST; a GET still meets the router's protection).
    ("/api/enrollment-tokens/agent-install", Admin),
];

const INSIDE: &str = "192.168.0.10:40000";
const OUTSIDE: &str = "203.0.113.7:40000";
const FENCED: &str = "Forbidden: the admin interface does not answer this network";
const FOREIGN_ORIGIN: &str = "https://evil.example";

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

const SETUP_TOKEN: &str = "setup-token-for-route-tests";
const PASSWORD: &str = "correct horse battery";

/// The real router, fenced to 192.168.0.0/24.
struct App {
    router: Router,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    set_cookie: Option<String>,
    text: String,
}

impl Answer {
    fn fenced(&self) -> bool {
        self.status == StatusCode::FORBIDDEN && self.text.contains(FENCED)
    }
}

impl App {
    fn new() -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let store = Arc::new(Store::open(dir.path()).expect("store"));
        let config = ApiConfig {
            admin_cidrs: vec!["192.168.0.0/24".parse().expect("cidr")],
            ..ApiConfig::default()
        };
        let state = AppState::new(
            store,
            Arc::new(NoHub),
            config,
            Some(SETUP_TOKEN.into()),
            Some("PEM".into()),
        );
        App {
            router: router(state),
            _dir: dir,
        }
    }

    async fn call(&self, from: &str, mut req: Request<Body>) -> Answer {
        let addr: SocketAddr = from.parse().expect("peer addr");
        req.extensions_mut().insert(ConnectInfo(addr));
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let set_cookie = resp
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Answer {
            status,
            set_cookie,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// Completes setup and returns an API token.
    async fn set_up(&self) -> String {
        let setup = serde_json::json!({
            "setup_token": SETUP_TOKEN, "admin_username": "admin",
            "admin_password": PASSWORD, "endpoint": "vpn.example.com:51820",
        });
        let r = self.call(INSIDE, json("/api/setup", &setup)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let login = serde_json::json!({"username": "admin", "password": PASSWORD});
        let r = self.call(INSIDE, json("/api/auth/login", &login)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let set_cookie = r.set_cookie.expect("session cookie");
        let cookie = set_cookie.split(';').next().expect("pair");
        let mut create = json("/api/tokens", &serde_json::json!({"name": "routes"}));
        create
            .headers_mut()
            .insert(header::COOKIE, cookie.parse().expect("cookie"));
        let r = self.call(INSIDE, create).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let body: serde_json::Value = serde_json::from_str(&r.text).expect("json");
        body["token"].as_str().expect("token").to_string()
    }
}

/// A request as a same-site client would send it, with an empty JSON object as the
/// body of the methods that carry one.
fn request(method: &str, path: &str, headers: &[(header::HeaderName, &str)]) -> Request<Body> {
    let method: Method = method.to_uppercase().parse().expect("method");
    let with_body = matches!(method, Method::POST | Method::PUT | Method::PATCH);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "vpn.example.com");
    if with_body {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    let body = if with_body {
        Body::from("{}")
    } else {
        Body::empty()
    };
    req.body(body).expect("request")
}

fn json(path: &str, body: &serde_json::Value) -> Request<Body> {
    Request::post(path)
        .header(header::HOST, "vpn.example.com")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

/// One operation of the document, with a concrete path to call.
#[derive(Debug)]
struct Operation {
    method: String,
    path: String,
    /// The document's path, with its `{parameters}`.
    template: String,
    /// An admin credential (bearer API token or session cookie) is required.
    secured: bool,
    /// The agent key is required: the agent audience.
    agent: bool,
}

/// Every operation in the document the router serves.
async fn documented_operations(app: &App) -> Vec<Operation> {
    let r = app
        .call(INSIDE, request("get", "/api/openapi.json", &[]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let doc: serde_json::Value = serde_json::from_str(&r.text).expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut ops = Vec::new();
    for (template, item) in paths {
        for method in methods {
            let Some(op) = item.get(method) else { continue };
            let schemes: Vec<&str> = op
                .get("security")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
                .filter_map(|req| req.as_object())
                .flat_map(|req| req.keys().map(String::as_str))
                .collect();
            let agent = schemes.contains(&"agent_key");
            ops.push(Operation {
                method: method.to_string(),
                path: concrete(template),
                template: template.clone(),
                secured: !schemes.is_empty() && !agent,
                agent,
            });
        }
    }
    assert!(
        ops.len() > OPEN_OPERATIONS.len(),
        "too few operations: {ops:?}"
    );
    ops
}

/// The path with each `{parameter}` replaced by a value no object has.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "dev-0"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Who may call an operation that needs no admin credential: agents for the agent key,
/// else the audience [`OPEN_OPERATIONS`] gives it.
fn open_audience(op: &Operation) -> Option<Audience> {
    if op.agent {
        return Some(Agent);
    }
    OPEN_OPERATIONS
        .iter()
        .find(|(m, p, _)| *m == op.method && *p == op.template)
        .map(|(_, _, a)| *a)
}

/// Fails with every finding at once, so one run shows the whole damage.
fn assert_none(findings: Vec<String>) {
    assert!(
        findings.is_empty(),
        "{} finding(s):\n  {}",
        findings.len(),
        findings.join("\n  ")
    );
}

#[tokio::test]
async fn every_documented_operation_is_classified() {
    let app = App::new();
    app.set_up().await;
    let ops = documented_operations(&app).await;
    let mut findings = Vec::new();
    for op in &ops {
        if op.agent {
            continue;
        }
        match (op.secured, open_audience(op)) {
            (true, None) | (false, Some(_)) => {}
            (true, Some(_)) => findings.push(format!(
                "{} {} needs credentials but is listed in OPEN_OPERATIONS",
                op.method, op.template
            )),
            (false, None) => findings.push(format!(
                "{} {} has no security requirement: give it `security((\"bearer\" = []), \
                 (\"cookie\" = []))` if admins call it, or list it in OPEN_OPERATIONS",
                op.method, op.template
            )),
        }
    }
    for op in ops.iter().filter(|op| op.agent) {
        if OPEN_OPERATIONS
            .iter()
            .any(|(m, p, _)| *m == op.method && *p == op.template)
        {
            findings.push(format!(
                "{} {} needs the agent key but is listed in OPEN_OPERATIONS",
                op.method, op.template
            ));
        }
    }
    for (method, template, _) in OPEN_OPERATIONS {
        if !ops
            .iter()
            .any(|op| op.method == *method && op.template == *template)
        {
            findings.push(format!(
                "{method} {template} is in OPEN_OPERATIONS but not in the document"
            ));
        }
    }
    assert_none(findings);
}

#[tokio::test]
async fn admin_operations_refuse_the_unauthenticated_the_fenced_off_and_foreign_pages() {
    let app = App::new();
    let token = app.set_up().await;
    let bearer = format!("Bearer {token}");
    let mut findings = Vec::new();
    let admin_ops: Vec<_> = documented_operations(&app)
        .await
        .into_iter()
        .filter(|op| op.secured)
        .collect();
    assert!(!admin_ops.is_empty());
    for op in &admin_ops {
        let (m, p) = (op.method.as_str(), op.path.as_str());
        let anonymous = app.call(INSIDE, request(m, p, &[])).await;
        if !matches!(
            anonymous.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            findings.push(format!(
                "{m} {p} without credentials answered {}",
                anonymous.status
            ));
        }
        let auth = [(header::AUTHORIZATION, bearer.as_str())];
        let outside = app.call(OUTSIDE, request(m, p, &auth)).await;
        if !outside.fenced() {
            findings.push(format!(
                "{m} {p} with a valid token from outside the fence answered {}: {}",
                outside.status, outside.text
            ));
        }
        let foreign = [auth[0].clone(), (header::ORIGIN, FOREIGN_ORIGIN)];
        let cross_site = app.call(INSIDE, request(m, p, &foreign)).await;
        if (cross_site.status, cross_site.text.as_str())
            != (StatusCode::FORBIDDEN, "Origin not allowed")
        {
            findings.push(format!(
                "{m} {p} with a valid token from a foreign page answered {}",
                cross_site.status
            ));
        }
    }
    assert_none(findings);
}

#[tokio::test]
async fn open_operations_and_undocumented_routes_answer_only_their_audience() {
    let app = App::new();
    let token = app.set_up().await;
    let bearer = format!("Bearer {token}");
    let auth = [(header::AUTHORIZATION, bearer.as_str())];
    let mut routes: Vec<(String, String, Audience)> = documented_operations(&app)
        .await
        .into_iter()
        .filter_map(|op| open_audience(&op).map(|a| (op.method, op.path, a)))
        .collect();
    routes.extend(
        UNDOCUMENTED
            .iter()
            .map(|(p, a)| ("get".to_string(), p.to_string(), *a)),
    );
    let mut findings = Vec::new();
    for (m, p, audience) in &routes {
        let outside = app.call(OUTSIDE, request(m, p, &auth)).await;
        let fenced = matches!(audience, Setup | Admin);
        if outside.fenced() != fenced {
            findings.push(format!(
                "{m} {p} ({audience:?}) from outside the fence answered {}: {}",
                outside.status, outside.text
            ));
        }
        let inside = app.call(INSIDE, request(m, p, &auth)).await;
        if matches!(
            inside.status,
            StatusCode::FORBIDDEN | StatusCode::SERVICE_UNAVAILABLE | StatusCode::NOT_FOUND
        ) {
            findings.push(format!(
                "{m} {p} ({audience:?}) from inside the fence answered {}",
                inside.status
            ));
        }
    }
    assert_none(findings);
}

#[tokio::test]
async fn before_setup_only_public_routes_and_the_wizard_answer() {
    let set_up = App::new();
    set_up.set_up().await;
    let mut routes: Vec<(String, String, Audience)> = documented_operations(&set_up)
        .await
        .into_iter()
        .map(|op| {
            let audience = open_audience(&op).unwrap_or(Admin);
            (op.method, op.path, audience)
        })
        .collect();
    routes.extend(
        UNDOCUMENTED
            .iter()
            .map(|(p, a)| ("get".to_string(), p.to_string(), *a)),
    );
    let fresh = App::new();
    let mut findings = Vec::new();
    for (m, p, audience) in &routes {
        let r = fresh.call(INSIDE, request(m, p, &[])).await;
        let waits = matches!(audience, Agent | Admin);
        if (r.status == StatusCode::SERVICE_UNAVAILABLE) != waits {
            findings.push(format!(
                "{m} {p} ({audience:?}) before setup answered {}",
                r.status
            ));
        }
    }
    assert_none(findings);
}

#[tokio::test]
async fn unknown_paths_tell_nothing_to_those_the_admin_surface_refuses() {
    let app = App::new();
    for path in ["/api/nothing-here", "/nothing-here"] {
        let r = app.call(INSIDE, request("get", path, &[])).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    app.set_up().await;
    for path in ["/api/nothing-here", "/nothing-here"] {
        let outside = app.call(OUTSIDE, request("get", path, &[])).await;
        assert!(outside.fenced(), "{path}: {}", outside.status);
        let inside = app.call(INSIDE, request("get", path, &[])).await;
        assert_eq!(inside.status, StatusCode::NOT_FOUND, "{path}");
        let foreign = [(header::ORIGIN, FOREIGN_ORIGIN)];
        let cross = app.call(INSIDE, request("get", path, &foreign)).await;
        assert_eq!(cross.status, StatusCode::FORBIDDEN, "{path}");
    }
}

/// Operations behind the agent key answer every network (agents are anywhere) but only
/// an agent key: no key, an admin's API token or a made-up key all get the same 401.
#[tokio::test]
async fn agent_operations_refuse_everything_but_an_agent_key() {
    let app = App::new();
    let token = app.set_up().await;
    let admin = format!("Bearer {token}");
    let agent_ops: Vec<_> = documented_operations(&app)
        .await
        .into_iter()
        .filter(|op| op.agent)
        .collect();
    assert!(agent_ops.len() >= 2, "{agent_ops:?}");
    let mut findings = Vec::new();
    for op in &agent_ops {
        let (m, p) = (op.method.as_str(), op.path.as_str());
        for (from, auth) in [
            (INSIDE, None),
            (OUTSIDE, None),
            (OUTSIDE, Some(admin.as_str())),
            (OUTSIDE, Some("Bearer made-up-agent-key")),
        ] {
            let headers: Vec<_> = auth
                .map(|a| (header::AUTHORIZATION, a))
                .into_iter()
                .collect();
            let r = app.call(from, request(m, p, &headers)).await;
            if r.status != StatusCode::UNAUTHORIZED || r.text != r#"{"error":"unauthorized"}"# {
                findings.push(format!(
                    "{m} {p} from {from} with {auth:?} answered {}: {}",
                    r.status, r.text
                ));
            }
        }
    }
    assert_none(findings);
}

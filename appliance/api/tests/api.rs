//! The control plane in-process: router + oneshot, a recording fake hub.

mod common;
use common::*;

#[tokio::test]
async fn setup_requires_the_token_and_happens_once() {
    let a = app();
    // Before setup only the wizard endpoints and /healthz answer.
    assert_eq!(
        a.call(get("/api/devices")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(a.call(get("/healthz")).await.json["setup_complete"], false);
    let wrong = a.call(post("/api/setup", &setup_body("wrong"))).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    a.setup().await;
    let again = a.call(post("/api/setup", &setup_body(TOKEN))).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(a.call(get("/healthz")).await.json["setup_complete"], true);
    // The token died with setup.
    assert!(a.state.setup_token.lock().expect("lock").is_none());
}

#[tokio::test]
async fn malformed_setup_changes_nothing_and_keeps_the_token() {
    let a = app();
    let mut weak = setup_body(TOKEN);
    weak["admin_password"] = "short".into();
    assert_eq!(
        a.call(post("/api/setup", &weak)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let mut extra = setup_body(TOKEN);
    extra["is_superuser"] = true.into();
    assert_eq!(
        a.call(post("/api/setup", &extra)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let bad_json = Request::post("/api/setup")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .expect("req");
    assert_eq!(
        a.call(bad_json).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(a.call(get("/healthz")).await.json["setup_complete"], false);
    a.setup().await;
}

#[tokio::test]
async fn session_cookie_is_hardened_and_revocable() {
    let a = app();
    a.setup().await;
    let r = a.call(post("/api/auth/login", &login_body(PASSWORD))).await;
    let set = r
        .headers
        .get(header::SET_COOKIE)
        .expect("cookie")
        .to_str()
        .expect("ascii")
        .to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().expect("pair").to_string();
    assert_eq!(
        a.call(with(get("/api/auth/me"), header::COOKIE, &cookie))
            .await
            .status,
        StatusCode::OK
    );
    let out = a
        .call(with(
            post("/api/auth/logout", &serde_json::json!({})),
            header::COOKIE,
            &cookie,
        ))
        .await;
    assert_eq!(out.status, StatusCode::OK);
    // The same cookie, replayed after logout, is refused.
    assert_eq!(
        a.call(with(get("/api/auth/me"), header::COOKIE, &cookie))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // A forged cookie is refused too.
    let forged = "watchgrid_session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.AAAA";
    assert_eq!(
        a.call(with(get("/api/auth/me"), header::COOKIE, forged))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn wrong_password_is_401_and_brute_force_gets_429_with_retry_after() {
    let a = app();
    a.setup().await;
    for _ in 0..10 {
        let r = a
            .call(post("/api/auth/login", &login_body("wrong password!")))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json["error"], "unauthorized");
    }
    let r = a.call(post("/api/auth/login", &login_body(PASSWORD))).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!(retry >= 1);
    let metrics = watchgrid_api::render_metrics(&a.state);
    assert!(
        metrics.contains("watchgrid_login_failures_total{reason=\"bad_credentials\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("watchgrid_rate_limit_rejections_total{limiter=\"login\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rotating_forwarded_for_from_an_untrusted_client_is_still_limited() {
    let a = app();
    a.setup().await;
    let mut limited = 0;
    for i in 0..15 {
        let req = with(
            post("/api/auth/login", &login_body("nope nope nope")),
            "x-forwarded-for".parse().expect("h"),
            &format!("198.51.100.{i}"),
        );
        if a.call(req).await.status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    assert_eq!(limited, 5);
}

#[tokio::test]
async fn forwarded_for_is_believed_from_a_trusted_proxy() {
    let a = app_with(ApiConfig {
        trusted_proxies: vec!["192.168.0.0/24".parse().expect("p")],
        ..ApiConfig::default()
    });
    a.setup().await;
    for i in 0..15 {
        // Clients on the LAN behind the proxy (inside the default admin fence).
        let req = with(
            post("/api/auth/login", &login_body("nope nope nope")),
            "x-forwarded-for".parse().expect("h"),
            &format!("10.20.0.{i}"),
        );
        assert_eq!(
            a.call(req).await.status,
            StatusCode::UNAUTHORIZED,
            "client {i} has its own bucket"
        );
    }
}

#[tokio::test]
async fn foreign_origin_is_403_but_agent_endpoints_are_exempt() {
    let a = app();
    let token = a.admin_token().await;
    let evil = |req| with(req, header::ORIGIN, "https://evil.example");
    let r = a.call(evil(bearer(get("/api/devices"), &token))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.text, "Origin not allowed");
    let same = a
        .call(with(
            bearer(get("/api/devices"), &token),
            header::ORIGIN,
            "https://vpn.example.com",
        ))
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(
        same.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://vpn.example.com"
    );
    // /api/register is agent-facing: a bad token is 401, never a CORS 403.
    let body = serde_json::json!({"token": "x", "public_key": wg_key(1), "hostname": "h"});
    assert_eq!(
        a.call(evil(post("/api/register", &body))).await.status,
        StatusCode::UNAUTHORIZED
    );
    let pre = Request::options("/api/devices")
        .header(header::HOST, "vpn.example.com")
        .header(header::ORIGIN, "https://vpn.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .expect("req");
    let r = a.call(pre).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.headers[header::ACCESS_CONTROL_MAX_AGE], "600");
}

#[tokio::test]
async fn security_headers_and_body_limit() {
    let a = app();
    let r = a.call(get("/healthz")).await;
    let csp = r.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("ascii");
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"));
    assert!(r.headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(r.headers.contains_key(header::REFERRER_POLICY));
    let mut big = setup_body(TOKEN);
    big["endpoint"] = "x".repeat(watchgrid_api::BODY_LIMIT + 1).into();
    assert_eq!(
        a.call(post("/api/setup", &big)).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(a.call(get("/healthz")).await.json["setup_complete"], false);
}

#[tokio::test]
async fn register_makes_the_peer_live_and_one_use_tokens_work_once_under_concurrency() {
    let a = app();
    let admin = a.admin_token().await;
    let r = a
        .call(bearer(
            post(
                "/api/enrollment-tokens",
                &serde_json::json!({"name": "lab", "uses": 1}),
            ),
            &admin,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.json["token"].as_str().expect("token").to_string();
    let mut tasks = Vec::new();
    for i in 1..=100u8 {
        let router = a.router.clone();
        let body = serde_json::json!({"token": token, "public_key": wg_key(i), "hostname": format!("h{i}")});
        tasks.push(tokio::spawn(async move {
            let mut req = post("/api/register", &body);
            // Distinct clients, so the per-IP limit is not what stops them.
            let addr: SocketAddr = format!("10.9.{}.{}:5000", i / 200, i % 200 + 1)
                .parse()
                .expect("addr");
            req.extensions_mut().insert(ConnectInfo(addr));
            router.oneshot(req).await.expect("infallible").status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            StatusCode::OK => ok += 1,
            StatusCode::UNAUTHORIZED => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(a.hub.peer_count(), 1, "exactly one peer reached the hub");
}

#[tokio::test]
async fn registration_response_and_device_lifecycle_reach_the_hub() {
    let a = app();
    let admin = a.admin_token().await;
    let r = a
        .call(bearer(
            post("/api/enrollment-tokens", &serde_json::json!({"uses": 2})),
            &admin,
        ))
        .await;
    let token = r.json["token"].as_str().expect("token").to_string();
    // Bad input does not burn the token.
    let bad = serde_json::json!({"token": token, "public_key": "not-a-key", "hostname": "h"});
    assert_eq!(
        a.call(post("/api/register", &bad)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let body = serde_json::json!({"token": token, "public_key": wg_key(7), "hostname": "laptop"});
    let r = a.call(post("/api/register", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["address"], "10.100.0.2/16");
    assert_eq!(r.json["allowed_ips"], serde_json::json!(["10.100.0.0/16"]));
    assert_eq!(r.json["endpoint"], "vpn.example.com:51820");
    assert_eq!(r.json["persistent_keepalive"], 25);
    assert_eq!(r.json["agent_key"].as_str().map(str::len), Some(43));
    assert_eq!(r.json["hub_public_key"], wg_key(0x1d));
    let id = r.json["device_id"].as_str().expect("id").to_string();
    assert_eq!(a.hub.peer_count(), 1);
    let peers = a.hub.peers.lock().expect("lock").clone();
    assert_eq!(
        peers[0].1,
        vec!["10.100.0.2/32".parse::<IpPrefix>().expect("p")]
    );

    let dis = a
        .call(bearer(
            post(
                &format!("/api/devices/{id}/disable"),
                &serde_json::json!({}),
            ),
            &admin,
        ))
        .await;
    assert_eq!(dis.status, StatusCode::OK);
    assert_eq!(a.hub.peer_count(), 0);
    let en = a
        .call(bearer(
            post(&format!("/api/devices/{id}/enable"), &serde_json::json!({})),
            &admin,
        ))
        .await;
    assert_eq!(en.status, StatusCode::OK);
    assert_eq!(a.hub.peer_count(), 1);
    let del = Request::delete(format!("/api/devices/{id}"))
        .header(header::HOST, "vpn.example.com")
        .body(Body::empty())
        .expect("req");
    assert_eq!(a.call(bearer(del, &admin)).await.status, StatusCode::OK);
    assert_eq!(a.hub.peer_count(), 0);
    // Every admin action is in the audit log.
    let actions: Vec<String> = a
        .state
        .store
        .audit
        .list()
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    for act in [
        "setup.complete",
        "enrollment_token.create",
        "device.register",
        "device.disable",
        "device.enable",
        "device.delete",
    ] {
        assert!(
            actions.iter().any(|a| a == act),
            "{act} missing from {actions:?}"
        );
    }
}

#[tokio::test]
async fn admin_fence_blocks_other_networks_even_with_a_valid_token() {
    let a = app_with(ApiConfig {
        admin_cidrs: vec!["192.168.0.0/24".parse().expect("p")],
        ..ApiConfig::default()
    });
    let token = a.admin_token().await;
    assert_eq!(
        a.call(bearer(get("/api/devices"), &token)).await.status,
        StatusCode::OK
    );
    let outside = a
        .call_from("203.0.113.7:1", bearer(get("/api/devices"), &token))
        .await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn passwords_are_argon2id_with_the_spec_floor() {
    let a = app();
    a.setup().await;
    let admin = a
        .state
        .store
        .admins
        .get("admin")
        .expect("get")
        .expect("admin");
    let hash = admin.password_hash.expose();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains(PASSWORD));
}

#[tokio::test]
async fn stored_tokens_are_hashes_not_the_tokens() {
    let a = app();
    let admin = a.admin_token().await;
    let stored = a.state.store.api_tokens.list().expect("list");
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].token_hash, admin);
    assert_eq!(
        stored[0].token_hash,
        watchgrid_api::secrets::token_hash(&admin)
    );
}

fn form(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "vpn.example.com")
        .header(header::ORIGIN, "https://vpn.example.com")
        .body(Body::from(body.to_string()))
        .expect("request")
}

#[tokio::test]
async fn wizard_and_sign_in_work_as_plain_html_forms() {
    let a = app();
    let page = a.call(get("/setup")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("action=\"/api/setup\""));
    assert!(!page.text.contains("<script"), "pages carry no script");
    assert_eq!(a.call(get("/static/app.css")).await.status, StatusCode::OK);
    // A wrong token re-renders the wizard with the error, and changes nothing.
    let bad = a.call(form("/api/setup", "setup_token=nope&admin_username=admin&admin_password=correct+horse+battery&endpoint=vpn.example.com%3A51820")).await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    assert!(bad.text.contains("invalid setup token") && bad.text.contains("<form"));
    let ok = a.call(form("/api/setup", &format!("setup_token={TOKEN}&admin_username=admin&admin_password=correct+horse+battery&endpoint=vpn.example.com%3A51820"))).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.text);
    assert_eq!(ok.headers[header::LOCATION], "/login");
    // After setup the wizard sends people to sign in.
    assert_eq!(
        a.call(get("/setup")).await.headers[header::LOCATION],
        "/login"
    );
    // The dashboard needs a session.
    assert_eq!(a.call(get("/")).await.headers[header::LOCATION], "/login");
    let wrong = a
        .call(form(
            "/api/auth/login",
            "username=admin&password=wrong+password",
        ))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.text.contains("<form"));
    let login = a
        .call(form(
            "/api/auth/login",
            "username=admin&password=correct+horse+battery",
        ))
        .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    let cookie = login.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("c")
        .to_string();
    let dash = a.call(with(get("/"), header::COOKIE, &cookie)).await;
    assert_eq!(dash.status, StatusCode::OK);
    assert!(dash.text.contains("<span id=\"whoami\">admin</span>"));
    // Unknown form fields are refused like unknown JSON fields.
    let extra = a
        .call(form("/api/auth/login", "username=admin&password=x&admin=1"))
        .await;
    assert_eq!(extra.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn markup_in_hostnames_is_refused_at_registration() {
    let a = app();
    let admin = a.admin_token().await;
    let r = a
        .call(bearer(
            post("/api/enrollment-tokens", &serde_json::json!({})),
            &admin,
        ))
        .await;
    let token = r.json["token"].as_str().expect("token").to_string();
    // Hostnames are validated, so markup cannot even be registered.
    let body = serde_json::json!({"token": token, "public_key": wg_key(9), "hostname": "<b>x</b>"});
    assert_eq!(
        a.call(post("/api/register", &body)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn totp_codes_are_single_use_recovery_codes_work_once_and_tokens_bypass() {
    let a = app();
    let api_token = a.admin_token().await;
    let setup = a
        .call(bearer(
            post("/api/auth/2fa/setup", &serde_json::json!({})),
            &api_token,
        ))
        .await;
    assert_eq!(setup.status, StatusCode::OK, "{}", setup.text);
    let secret = setup.json["secret"].as_str().expect("secret").to_string();
    assert!(
        setup.json["qr_svg"]
            .as_str()
            .expect("svg")
            .starts_with("<?xml")
            || setup.json["qr_svg"].as_str().expect("svg").contains("<svg")
    );
    let now = watchgrid_api::state::unix_now();
    let code_now = watchgrid_api::totp::code_at(&secret, now).expect("code");
    let wrong = a
        .call(bearer(
            post(
                "/api/auth/2fa/enable",
                &serde_json::json!({"code": "000000"}),
            ),
            &api_token,
        ))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let en = a
        .call(bearer(
            post(
                "/api/auth/2fa/enable",
                &serde_json::json!({"code": code_now}),
            ),
            &api_token,
        ))
        .await;
    assert_eq!(en.status, StatusCode::OK, "{}", en.text);
    let recovery: Vec<String> = en.json["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("s").to_string())
        .collect();
    assert_eq!(recovery.len(), 10);

    // Password alone is no longer enough.
    let r = a.call(post("/api/auth/login", &login_body(PASSWORD))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["error"], "two-factor code required");
    let with_code =
        |code: &str| serde_json::json!({"username": "admin", "password": PASSWORD, "totp": code});
    // The code used to enable 2FA cannot be used again.
    assert_eq!(
        a.call(post("/api/auth/login", &with_code(&code_now)))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // The next step's code works once.
    let next = watchgrid_api::totp::code_at(&secret, now + 30).expect("code");
    assert_eq!(
        a.call(post("/api/auth/login", &with_code(&next)))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        a.call(post("/api/auth/login", &with_code(&next)))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // A recovery code works once.
    assert_eq!(
        a.call(post("/api/auth/login", &with_code(&recovery[0])))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        a.call(post("/api/auth/login", &with_code(&recovery[0])))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Automation keeps working with its API token.
    assert_eq!(
        a.call(bearer(get("/api/devices"), &api_token)).await.status,
        StatusCode::OK
    );
    let metrics = watchgrid_api::render_metrics(&a.state);
    assert!(
        metrics.contains("watchgrid_login_failures_total{reason=\"bad_totp\"} 3"),
        "{metrics}"
    );
    // Secrets are stored hashed.
    let admin = a
        .state
        .store
        .admins
        .get("admin")
        .expect("get")
        .expect("admin");
    assert!(!admin.recovery_code_hashes.contains(&recovery[1]));
    assert_eq!(admin.recovery_code_hashes.len(), 9);
}

#[tokio::test]
async fn openapi_document_lists_every_json_endpoint() {
    let a = app();
    // Like everything but the wizard, it waits for setup (SPEC §4).
    assert_eq!(
        a.call(get("/api/openapi.json")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    a.setup().await;
    let r = a.call(get("/api/openapi.json")).await;
    assert_eq!(r.status, StatusCode::OK);
    let paths = r.json["paths"].as_object().expect("paths");
    for p in [
        "/healthz",
        "/api/setup",
        "/api/auth/login",
        "/api/auth/logout",
        "/api/auth/me",
        "/api/tokens",
        "/api/auth/2fa/setup",
        "/api/auth/2fa/enable",
        "/api/auth/2fa/disable",
        "/api/enrollment-tokens",
        "/api/register",
        "/api/devices",
        "/api/devices/{id}",
        "/api/devices/{id}/disable",
        "/api/devices/{id}/enable",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(r.json["components"]["schemas"]["Registration"].is_object());
}

#[tokio::test]
async fn admin_created_devices_get_a_config_and_keys_are_never_stored() {
    let a = app();
    let admin = a.admin_token().await;
    let r = a
        .call(bearer(
            post("/api/devices", &serde_json::json!({"name": "phone"})),
            &admin,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let private = r.json["private_key"]
        .as_str()
        .expect("generated private key")
        .to_string();
    let config = r.json["config"].as_str().expect("config");
    assert!(config.contains(&format!("PrivateKey = {private}")));
    assert!(config.contains("Endpoint = vpn.example.com:51820"));
    assert!(config.contains("Address = 10.100.0.2/16"));
    assert!(r.json["qr_svg"].as_str().expect("qr").contains("<svg"));
    assert_eq!(a.hub.peer_count(), 1);
    // The private key is nowhere in the store.
    let stored = serde_json::to_string(&a.state.store.devices.list().expect("list")).expect("json");
    assert!(!stored.contains(&private));
    // With the user's own key, no private key is returned.
    let own = a
        .call(bearer(
            post(
                "/api/devices",
                &serde_json::json!({"name": "laptop", "public_key": wg_key(3)}),
            ),
            &admin,
        ))
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    assert!(own.json["private_key"].is_null());
    let dup = a
        .call(bearer(
            post(
                "/api/devices",
                &serde_json::json!({"name": "again", "public_key": wg_key(3)}),
            ),
            &admin,
        ))
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let audit = a.call(bearer(get("/api/audit"), &admin)).await;
    assert_eq!(audit.json["entries"][0]["action"], "device.create");
}

#[tokio::test]
async fn devices_get_ipv6_addresses_in_the_vpn_ula() {
    let a = app();
    a.state
        .store
        .network_or_init([1, 2, 3, 4, 5, 6, 7])
        .expect("network");
    let admin = a.admin_token().await;
    let r = a
        .call(bearer(
            post("/api/enrollment-tokens", &serde_json::json!({})),
            &admin,
        ))
        .await;
    let token = r.json["token"].as_str().expect("token").to_string();
    let body = serde_json::json!({"token": token, "public_key": wg_key(5), "hostname": "v6"});
    let r = a.call(post("/api/register", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["address_v6"], "fd01:203:405:607::2/64");
    assert_eq!(
        r.json["allowed_ips"],
        serde_json::json!(["10.100.0.0/16", "fd01:203:405:607::/64"])
    );
    let peers = a.hub.peers.lock().expect("lock").clone();
    let want: Vec<IpPrefix> = vec![
        "10.100.0.2/32".parse().expect("p"),
        "fd01:203:405:607::2/128".parse().expect("p"),
    ];
    assert_eq!(peers[0].1, want);
    // The wg-quick file keeps wg-quick's own list syntax.
    let r = a
        .call(bearer(
            post("/api/devices", &serde_json::json!({"name": "phone"})),
            &admin,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let config = r.json["config"].as_str().expect("config");
    assert!(
        config.contains("\nAllowedIPs = 10.100.0.0/16, fd01:203:405:607::/64\n"),
        "{config}"
    );
    assert_eq!(
        r.json["device"]["public_key"].as_str().map(str::len),
        Some(44)
    );
}

#[tokio::test]
async fn expired_devices_leave_the_hub() {
    let a = app();
    let admin = a.admin_token().await;
    let r = a
        .call(bearer(
            post(
                "/api/devices",
                &serde_json::json!({"name": "temp", "expires_in_secs": 3600}),
            ),
            &admin,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.json["device"]["id"].as_str().expect("id").to_string();
    assert_eq!(
        watchgrid_api::routes::devices::expire_devices(&a.state)
            .await
            .expect("sweep"),
        0
    );
    assert_eq!(a.hub.peer_count(), 1);
    // Move the expiry into the past, as time would.
    a.state
        .store
        .devices
        .update(&id, |d| {
            Ok::<_, ()>(d.map(|d| watchgrid_store::Device {
                expires_at: Some(1),
                ..d
            }))
        })
        .expect("store")
        .expect("update");
    assert_eq!(
        watchgrid_api::routes::devices::expire_devices(&a.state)
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(a.hub.peer_count(), 0);
    let d = a
        .state
        .store
        .devices
        .get(&id)
        .expect("get")
        .expect("device");
    assert!(!d.enabled);
}

#[tokio::test]
async fn setup_can_choose_the_vpn_subnet_and_the_hub_moves_into_it() {
    let a = app();
    for bad in [
        "8.8.8.0/24",
        "10.50.0.1/24",
        "10.50.0.0/30",
        "10.50.0.0",
        "nonsense/8",
    ] {
        let mut body = setup_body(TOKEN);
        body["vpn_subnet"] = bad.into();
        let r = a.call(post("/api/setup", &body)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
    }
    assert!(
        a.hub.address.lock().expect("lock").is_none(),
        "refused input moved nothing"
    );
    let mut body = setup_body(TOKEN);
    body["vpn_subnet"] = "10.50.0.0/24".into();
    assert_eq!(
        a.call(post("/api/setup", &body)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        *a.hub.address.lock().expect("lock"),
        Some(("10.50.0.1".parse().expect("ip"), 24))
    );
    let cookie = a.login_cookie().await;
    let r = a
        .call(with(
            post("/api/enrollment-tokens", &serde_json::json!({})),
            header::COOKIE,
            &cookie,
        ))
        .await;
    let token = r.json["token"].as_str().expect("token").to_string();
    let reg = serde_json::json!({"token": token, "public_key": wg_key(11), "hostname": "n"});
    let r = a.call(post("/api/register", &reg)).await;
    assert_eq!(r.json["address"], "10.50.0.2/24", "{}", r.text);
    assert_eq!(r.json["allowed_ips"], serde_json::json!(["10.50.0.0/24"]));
}

#[derive(Default)]
struct FakeTls {
    calls: Mutex<Vec<String>>,
}

impl watchgrid_api::hub::TlsSwitch for FakeTls {
    fn use_uploaded(&self, cert_pem: &str, _key_pem: &str) -> Result<(), TlsSwitchError> {
        if cert_pem.contains("BROKEN") {
            return Err(TlsSwitchError::Unusable("not a certificate".into()));
        }
        self.calls
            .lock()
            .map_err(|e| TlsSwitchError::Unusable(e.to_string()))?
            .push("uploaded".into());
        Ok(())
    }
    fn use_acme(&self, domain: &str, _email: Option<&str>) -> Result<(), TlsSwitchError> {
        self.calls
            .lock()
            .map_err(|e| TlsSwitchError::Acme(e.to_string()))?
            .push(format!("acme {domain}"));
        Ok(())
    }
    fn status(&self) -> watchgrid_api::hub::TlsStatus {
        watchgrid_api::hub::TlsStatus {
            serving: watchgrid_api::hub::TlsServing::Internal,
            acme: None,
        }
    }
}

#[tokio::test]
async fn setup_can_choose_the_tls_mode() {
    let a = app();
    let tls = Arc::new(FakeTls::default());
    assert!(a.state.tls.set(tls.clone()).is_ok());
    let with = |pairs: &[(&str, &str)]| {
        let mut b = setup_body(TOKEN);
        for (k, v) in pairs {
            b[*k] = (*v).into();
        }
        b
    };
    for bad in [
        with(&[("tls_mode", "acme")]),
        with(&[("tls_mode", "acme"), ("acme_domain", "not a domain")]),
        with(&[("tls_mode", "uploaded"), ("tls_cert_pem", "x")]),
        with(&[("tls_mode", "smoke-signals")]),
        with(&[
            ("tls_mode", "uploaded"),
            ("tls_cert_pem", "BROKEN"),
            ("tls_key_pem", "k"),
        ]),
    ] {
        let r = a.call(post("/api/setup", &bad)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
    }
    assert!(
        tls.calls.lock().expect("lock").is_empty(),
        "nothing switched on refused input"
    );
    let ok = with(&[
        ("tls_mode", "acme"),
        ("acme_domain", "vpn.example.com"),
        ("acme_email", "ops@example.com"),
    ]);
    assert_eq!(a.call(post("/api/setup", &ok)).await.status, StatusCode::OK);
    assert_eq!(
        *tls.calls.lock().expect("lock"),
        vec!["acme vpn.example.com".to_string()]
    );
    let settings = a
        .state
        .store
        .settings
        .get(watchgrid_store::SETTINGS_KEY)
        .expect("get")
        .expect("settings");
    assert_eq!(
        settings.tls,
        watchgrid_store::TlsChoice::Acme {
            domain: "vpn.example.com".into(),
            email: Some("ops@example.com".into())
        }
    );
}

#[tokio::test]
async fn invalid_firewall_policies_are_refused_and_change_nothing() {
    let a = app();
    let fw = with_firewall(&a);
    let token = admin_with_firewall(&a, &fw).await;
    let rule = |extra: serde_json::Value| {
        let mut r =
            serde_json::json!({"from_group": "laptops", "to_group": "servers", "protocol": "tcp"});
        for (k, v) in extra.as_object().expect("object") {
            r[k] = v.clone();
        }
        serde_json::json!({"egress": true, "rules": [r]})
    };
    let bad = [
        rule(serde_json::json!({"from_group": "evil\n}"})),
        rule(serde_json::json!({"to_group": "", })),
        rule(serde_json::json!({"to_cidr": "10.0.0.0/8"})),
        rule(serde_json::json!({"protocol": "icmp", "ports": ["22"]})),
        rule(serde_json::json!({"protocol": "sctp"})),
        rule(serde_json::json!({"ports": ["0"]})),
        rule(serde_json::json!({"ports": ["90-80"]})),
        rule(serde_json::json!({"ports": ["22; flush ruleset"]})),
        rule(serde_json::json!({"extra": 1})),
        serde_json::json!({"egress": false, "rules": [], "admin_cidrs": ["10.0.0.0/33"]}),
        serde_json::json!({"egress": false, "rules": [], "unknown": true}),
    ];
    for body in &bad {
        let r = a.call(bearer(put("/api/firewall", body), &token)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
    }
    // The messages say which rule and what is wrong with it.
    for (body, message) in [
        (&bad[4], "rules[0]: protocol: tcp, udp, icmp or any"),
        (
            &bad[5],
            "rules[0]: ports: \"0\" is not a port (1-65535) or range (A-B)",
        ),
        (
            &bad[2],
            "rules[0]: give exactly one of to_group and to_cidr",
        ),
    ] {
        let r = a.call(bearer(put("/api/firewall", body), &token)).await;
        assert_eq!(r.json["error"], message, "{body}");
    }
    assert_eq!(applies(&fw), 0);
    let shown = a.call(bearer(get("/api/firewall"), &token)).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json["rules"], serde_json::json!([]));
    assert_eq!(shown.json["egress"], false);
    assert_eq!(shown.json["admin_cidrs_default"], true);
}

#[tokio::test]
async fn a_valid_policy_is_stored_applied_and_audited() {
    let a = app();
    let fw = with_firewall(&a);
    let token = admin_with_firewall(&a, &fw).await;
    let body = serde_json::json!({"egress": true, "admin_cidrs": null, "rules": [
        {"from_group": "dev's \"team\"; }", "to_group": "servers", "protocol": "tcp", "ports": ["8080", "9000-9100"]},
        {"from_group": "servers", "to_cidr": "192.168.60.0/24", "protocol": "any"},
    ]});
    let r = a.call(bearer(put("/api/firewall", &body), &token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(applies(&fw), 1);
    assert_eq!(r.json["state"], "applied");
    let shown = a.call(bearer(get("/api/firewall"), &token)).await;
    assert_eq!(shown.json["rules"][0]["from_group"], "dev's \"team\"; }");
    assert_eq!(
        shown.json["rules"][0]["ports"],
        serde_json::json!(["8080", "9000-9100"])
    );
    assert_eq!(shown.json["egress"], true);
    let audit = a.call(bearer(get("/api/audit"), &token)).await;
    assert!(audit.text.contains("firewall.update"), "{}", audit.text);
}

#[tokio::test]
async fn a_policy_the_firewall_refuses_is_rolled_back() {
    let a = app();
    let fw = with_firewall(&a);
    let token = a.admin_token().await;
    *fw.fail.lock().expect("lock") = Some("nft: Could not process rule".into());
    let body = serde_json::json!({"egress": true, "admin_cidrs": null, "rules": []});
    let r = a.call(bearer(put("/api/firewall", &body), &token)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.text.contains("nothing changed"), "{}", r.text);
    let shown = a.call(bearer(get("/api/firewall"), &token)).await;
    assert_eq!(shown.json["egress"], false);
    assert_eq!(shown.json["state"], "failed");
}

#[tokio::test]
async fn a_failed_firewall_makes_healthz_degraded() {
    let a = app();
    let fw = with_firewall(&a);
    let ok = a.call(get("/healthz")).await;
    assert_eq!(
        (ok.status, ok.json["firewall"].clone()),
        (StatusCode::OK, "applied".into())
    );
    assert!(watchgrid_api::render_metrics(&a.state).contains("watchgrid_firewall_applied 1"));
    *fw.fail.lock().expect("lock") = Some("nft: No such file or directory".into());
    assert!(watchgrid_api::render_metrics(&a.state).contains("watchgrid_firewall_applied 0"));
    let r = a.call(get("/healthz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json["status"], "degraded");
    // The reason is for the admin, not the WAN (finding 9).
    assert_eq!(r.json["firewall"], "failed");
}

#[tokio::test]
async fn the_admin_fence_follows_the_policy_and_never_shuts_out_its_editor() {
    let a = app();
    let token = a.admin_token().await;
    let only_other =
        serde_json::json!({"egress": false, "rules": [], "admin_cidrs": ["198.51.100.0/24"]});
    let r = a
        .call(bearer(put("/api/firewall", &only_other), &token))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("shut out"), "{}", r.text);
    let both = serde_json::json!({"egress": false, "rules": [], "admin_cidrs": ["192.168.0.0/24", "198.51.100.0/24"]});
    let r = a.call(bearer(put("/api/firewall", &both), &token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let from = |ip: &'static str, req| a.call_from(ip, req);
    assert_eq!(
        from("198.51.100.9:1", bearer(get("/api/devices"), &token))
            .await
            .status,
        StatusCode::OK
    );
    let outside = from("203.0.113.7:1", bearer(get("/api/devices"), &token)).await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN);
    for page in ["/", "/login", "/api/openapi.json", "/api/auth/me"] {
        assert_eq!(
            from("203.0.113.7:1", get(page)).await.status,
            StatusCode::FORBIDDEN,
            "{page}"
        );
    }
    // Devices enroll from anywhere: registration is outside the fence.
    let reg = serde_json::json!({"token": "nope", "public_key": wg_key(3), "hostname": "h"});
    assert_eq!(
        from("203.0.113.7:1", post("/api/register", &reg))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        from("203.0.113.7:1", get("/healthz")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_default_fence_admits_private_networks_only() {
    let a = app();
    let fence = watchgrid_api::routes::firewall::default_admin_fence(
        "100.64.0.0/16".parse().expect("vpn"),
        Some("fd00:1:2:3::/64".parse().expect("ula")),
    );
    *a.state.admin_fence.write().expect("lock") = fence;
    for ip in [
        "127.0.0.1:1",
        "10.1.2.3:1",
        "172.20.0.1:1",
        "192.168.1.5:1",
        "100.64.0.9:1",
        "[fd00:1:2:3::9]:1",
        "[fe80::1]:1",
    ] {
        assert_eq!(
            a.call_from(ip, get("/setup")).await.status,
            StatusCode::OK,
            "{ip}"
        );
    }
    for ip in ["203.0.113.7:1", "100.65.0.1:1", "[2001:db8::1]:1"] {
        assert_eq!(
            a.call_from(ip, get("/setup")).await.status,
            StatusCode::FORBIDDEN,
            "{ip}"
        );
    }
}

#[tokio::test]
async fn device_groups_take_any_printable_name_and_reach_the_firewall() {
    let a = app();
    let fw = with_firewall(&a);
    let token = admin_with_firewall(&a, &fw).await;
    let created = a
        .call(bearer(
            post("/api/devices", &serde_json::json!({"name": "laptop", "public_key": wg_key(7), "groups": ["b", "a", "a"]})),
            &token,
        ))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    assert_eq!(
        created.json["device"]["groups"],
        serde_json::json!(["a", "b"])
    );
    assert_eq!(applies(&fw), 1);
    let id = created.json["device"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let path = format!("/api/devices/{id}/groups");
    let hostile = "x\"; flush ruleset; }";
    let r = a
        .call(bearer(
            put(&path, &serde_json::json!({"groups": [hostile]})),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["groups"], serde_json::json!([hostile]));
    assert_eq!(applies(&fw), 2);
    for bad in [
        serde_json::json!(["line\nbreak"]),
        serde_json::json!([" padded"]),
        serde_json::json!([""]),
    ] {
        let r = a
            .call(bearer(
                put(&path, &serde_json::json!({"groups": bad})),
                &token,
            ))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    assert_eq!(applies(&fw), 2);
    let list = a.call(bearer(get("/api/devices"), &token)).await;
    assert_eq!(
        list.json["devices"][0]["groups"],
        serde_json::json!([hostile])
    );
    let audit = a.call(bearer(get("/api/audit"), &token)).await;
    assert!(audit.text.contains("device.groups"), "{}", audit.text);
}

#[tokio::test]
async fn devices_enrolled_with_a_grouped_token_join_its_groups() {
    let a = app();
    let fw = with_firewall(&a);
    let token = admin_with_firewall(&a, &fw).await;
    let bad = a
        .call(bearer(
            post(
                "/api/enrollment-tokens",
                &serde_json::json!({"groups": ["tab\there"]}),
            ),
            &token,
        ))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = a
        .call(bearer(
            post(
                "/api/enrollment-tokens",
                &serde_json::json!({"uses": 2, "groups": ["servers", "eu"]}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let enrol = r.json["token"].as_str().expect("token").to_string();
    let listed = a.call(bearer(get("/api/enrollment-tokens"), &token)).await;
    assert_eq!(
        listed.json["tokens"][0]["groups"],
        serde_json::json!(["eu", "servers"])
    );
    let reg = a
        .call(post(
            "/api/register",
            &serde_json::json!({"token": enrol, "public_key": wg_key(9), "hostname": "db-1"}),
        ))
        .await;
    assert_eq!(reg.status, StatusCode::OK, "{}", reg.text);
    assert_eq!(applies(&fw), 1, "a grouped device changes the firewall");
    let list = a.call(bearer(get("/api/devices"), &token)).await;
    assert_eq!(
        list.json["devices"][0]["groups"],
        serde_json::json!(["eu", "servers"])
    );
}

#[tokio::test]
async fn the_dashboard_shows_the_firewall_and_escapes_group_names() {
    let a = app();
    let fw = with_firewall(&a);
    let token = admin_with_firewall(&a, &fw).await;
    let created = a
        .call(bearer(
            post("/api/devices", &serde_json::json!({"name": "laptop", "public_key": wg_key(5), "groups": ["<script>x</script>"]})),
            &token,
        ))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let body = serde_json::json!({"egress": true, "admin_cidrs": null, "rules": [
        {"from_group": "<b>ops</b>", "to_cidr": "192.168.60.0/24", "protocol": "any"}]});
    assert_eq!(
        a.call(bearer(put("/api/firewall", &body), &token))
            .await
            .status,
        StatusCode::OK
    );
    let cookie = a.login_cookie().await;
    let page = a.call(with(get("/"), header::COOKIE, &cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("State: applied"), "{}", page.text);
    let devices = a.call(with(get("/devices"), header::COOKIE, &cookie)).await;
    assert!(
        devices.text.contains("&lt;script&gt;x&lt;/script&gt;")
            && !devices.text.contains("<script>x"),
        "{}",
        devices.text
    );
    assert!(
        page.text.contains("&lt;b&gt;ops&lt;/b&gt;"),
        "{}",
        page.text
    );
    assert!(
        !page.text.contains("<script>") && !page.text.contains("<b>ops"),
        "{}",
        page.text
    );
    assert!(page.text.contains("on (masqueraded)"), "{}", page.text);
}

#[tokio::test]
async fn groups_the_firewall_cannot_apply_are_rolled_back() {
    let a = app();
    let fw = with_firewall(&a);
    let token = admin_with_firewall(&a, &fw).await;
    let created = a
        .call(bearer(
            post(
                "/api/devices",
                &serde_json::json!({"name": "db", "public_key": wg_key(11), "groups": ["servers"]}),
            ),
            &token,
        ))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let id = created.json["device"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    *fw.fail.lock().expect("lock") = Some("nft: out of memory".into());
    let r = a
        .call(bearer(
            put(
                &format!("/api/devices/{id}/groups"),
                &serde_json::json!({"groups": ["laptops"]}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    let list = a.call(bearer(get("/api/devices"), &token)).await;
    assert_eq!(
        list.json["devices"][0]["groups"],
        serde_json::json!(["servers"])
    );
}

/// Registers a device with a fresh enrollment token; returns its id and agent key.
/// Bytes in an unpadded base64url string.
fn base64_url_len(s: &str) -> usize {
    assert!(s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    s.len() * 6 / 8
}

fn beat(version: &str) -> serde_json::Value {
    serde_json::json!({"agent_version": version, "hostname": "db1", "os": "Debian 12",
        "kernel": "6.1.0", "uptime_s": 42, "load": [0.1, 0.2, 0.3],
        "memory_total_bytes": 4_294_967_296u64, "memory_available_bytes": 1_073_741_824u64,
        "disk_total_bytes": 21_474_836_480u64, "disk_available_bytes": 10_737_418_240u64})
}

#[tokio::test]
async fn heartbeats_need_the_agents_own_key_and_mark_it_online() {
    let a = app();
    let admin = a.admin_token().await;
    let (id, key) = register_agent(&a, &admin, "db1", 31).await;
    for wrong in [None, Some(admin.as_str()), Some("not-a-key")] {
        let req = post("/api/heartbeat", &beat("1.0"));
        let req = match wrong {
            Some(k) => bearer(req, k),
            None => req,
        };
        let r = a.call(req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{wrong:?}: {}", r.text);
        assert_eq!(r.json["error"], "unauthorized", "generic");
    }
    let r = a
        .call(bearer(post("/api/heartbeat", &beat("1.0")), &key))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["interval_s"], 30);
    assert_eq!(r.json["commands_pending"], 0);
    assert!(r.json["config_etag"].as_str().is_some_and(|t| t.len() > 8));

    // The store keeps only the key's SHA-256: its 256 bits never sit in the database.
    let stored = a
        .state
        .store
        .devices
        .get(&id)
        .expect("get")
        .expect("device");
    assert_eq!(
        stored.agent_key_hash,
        watchgrid_api::secrets::token_hash(&key)
    );
    assert_ne!(stored.agent_key_hash, key);
    let decoded = base64_url_len(&key);
    assert_eq!(decoded, 32, "agent keys are 256-bit");

    let list = a.call(bearer(get("/api/devices"), &admin)).await;
    let dev = &list.json["devices"][0];
    assert_eq!(dev["id"], id.as_str());
    assert_eq!(dev["agent"]["online"], true);
    assert_eq!(dev["agent"]["agent_version"], "1.0");
    assert_eq!(dev["agent"]["kernel"], "6.1.0");
    assert_eq!(dev["agent"]["load"], serde_json::json!([0.1, 0.2, 0.3]));
    assert_eq!(dev["agent"]["memory_available_bytes"], 1_073_741_824u64);
    assert_eq!(dev["agent"]["disk_total_bytes"], 21_474_836_480u64);
    let metrics = watchgrid_api::render_metrics(&a.state);
    assert!(
        metrics.contains("watchgrid_agent_heartbeats_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("watchgrid_agents_online 1"), "{metrics}");
    let cookie = a.login_cookie().await;
    let detail = a
        .call(with(
            get(&format!("/devices/{id}")),
            header::COOKIE,
            &cookie,
        ))
        .await;
    assert!(
        detail.text.contains("0.10 0.20 0.30")
            && detail.text.contains("1.0 GiB of 4.0 GiB")
            && detail.text.contains("10.0 GiB of 20.0 GiB"),
        "{}",
        detail.text
    );
    let page = a.call(with(get("/devices"), header::COOKIE, &cookie)).await;
    assert!(
        page.text.contains("<span class=\"online\">online</span>")
            && page
                .text
                .contains("<span class=\"muted agent\">agent 1.0</span>"),
        "{}",
        page.text
    );
}

#[tokio::test]
async fn disabled_and_deleted_agents_get_401_and_enabled_ones_come_back() {
    let a = app();
    let admin = a.admin_token().await;
    let (id, key) = register_agent(&a, &admin, "web1", 32).await;
    let heartbeat = || bearer(post("/api/heartbeat", &beat("1.0")), &key);
    let admin_post = |path: String| bearer(post(&path, &serde_json::json!({})), &admin);
    assert_eq!(a.call(heartbeat()).await.status, StatusCode::OK);
    a.call(admin_post(format!("/api/devices/{id}/disable")))
        .await;
    assert_eq!(a.call(heartbeat()).await.status, StatusCode::UNAUTHORIZED);
    let config = bearer(get("/api/wg/config"), &key);
    assert_eq!(a.call(config).await.status, StatusCode::UNAUTHORIZED);
    a.call(admin_post(format!("/api/devices/{id}/enable")))
        .await;
    assert_eq!(a.call(heartbeat()).await.status, StatusCode::OK);
    let del = Request::delete(format!("/api/devices/{id}"))
        .header(header::HOST, "vpn.example.com")
        .body(Body::empty())
        .expect("req");
    assert_eq!(a.call(bearer(del, &admin)).await.status, StatusCode::OK);
    assert_eq!(a.call(heartbeat()).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_agent_gets_401_even_before_the_expiry_timer_disables_it() {
    let a = app();
    let admin = a.admin_token().await;
    let (id, key) = register_agent(&a, &admin, "temp1", 34).await;
    let heartbeat = || bearer(post("/api/heartbeat", &beat("1.0")), &key);
    assert_eq!(a.call(heartbeat()).await.status, StatusCode::OK);
    // Its expiry passes; it is still enabled (no timer ran in this test).
    let mut d = a
        .state
        .store
        .devices
        .get(&id)
        .expect("get")
        .expect("device");
    d.expires_at = Some(watchgrid_api::state::unix_now() - 1);
    a.state.store.devices.put(&id, &d).expect("put");
    let r = a.call(heartbeat()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The same generic answer as for a key that never existed.
    let unknown = bearer(post("/api/heartbeat", &beat("1.0")), &"A".repeat(43));
    assert_eq!(a.call(unknown).await.text, r.text);
}

#[tokio::test]
async fn bad_heartbeats_are_refused_and_record_nothing() {
    let a = app();
    let admin = a.admin_token().await;
    let (_, key) = register_agent(&a, &admin, "app1", 33).await;
    let mut unknown = beat("1.0");
    unknown["device_id"] = serde_json::json!("dev-999");
    let mut control = beat("1.0");
    control["hostname"] = serde_json::json!("db1\n<script>");
    let mut loads = beat("1.0");
    loads["load"] = serde_json::json!([1, 2, 3, 4]);
    for body in [unknown, control, loads, serde_json::json!({})] {
        let r = a.call(bearer(post("/api/heartbeat", &body), &key)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
    }
    let mut huge = beat("1.0");
    huge["os"] = serde_json::json!("x".repeat(70_000));
    let r = a.call(bearer(post("/api/heartbeat", &huge), &key)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let list = a.call(bearer(get("/api/devices"), &admin)).await;
    assert!(list.json["devices"][0]["agent"].is_null(), "{}", list.text);
}

#[tokio::test]
async fn wg_config_is_the_agents_own_with_an_etag_and_304() {
    let a = app();
    let admin = a.admin_token().await;
    let (id, key) = register_agent(&a, &admin, "db1", 34).await;
    let (_, other_key) = register_agent(&a, &admin, "db2", 35).await;
    let r = a.call(bearer(get("/api/wg/config"), &key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["device_id"], id.as_str());
    assert_eq!(r.json["address"], "10.100.0.2/16");
    assert_eq!(r.json["hub_public_key"], wg_key(0x1d));
    assert_eq!(r.json["endpoint"], "vpn.example.com:51820");
    let etag = r.headers[header::ETAG].to_str().expect("etag").to_string();
    let hb = a
        .call(bearer(post("/api/heartbeat", &beat("1.0")), &key))
        .await;
    assert_eq!(
        hb.json["config_etag"],
        etag.as_str(),
        "heartbeat names the same config"
    );

    let cached = with(
        bearer(get("/api/wg/config"), &key),
        header::IF_NONE_MATCH,
        &etag,
    );
    let r = a.call(cached).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.text.is_empty());
    let other = a.call(bearer(get("/api/wg/config"), &other_key)).await;
    assert_eq!(other.json["address"], "10.100.0.3/16");
    assert_ne!(other.headers[header::ETAG], etag.as_str());

    let file = a
        .call(bearer(get("/api/wg/config?format=wg-quick"), &key))
        .await;
    assert_eq!(file.status, StatusCode::OK);
    assert!(
        file.text.contains("Address = 10.100.0.2/16"),
        "{}",
        file.text
    );
    assert!(file.text.contains("Endpoint = vpn.example.com:51820"));
    assert!(
        !file.text.contains("PrivateKey ="),
        "the private key is the agent's alone"
    );
    let bad = a
        .call(bearer(get("/api/wg/config?format=yaml"), &key))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Registers an agent enrolled with `--allow-commands`; returns its id and agent key.
async fn register_commanded_agent(
    a: &App,
    admin: &str,
    hostname: &str,
    key: u8,
) -> (String, String) {
    let r = a
        .call(bearer(
            post("/api/enrollment-tokens", &serde_json::json!({})),
            admin,
        ))
        .await;
    let token = r.json["token"].as_str().expect("token").to_string();
    let body = serde_json::json!({"token": token, "public_key": wg_key(key),
        "hostname": hostname, "allow_commands": true});
    let r = a.call(post("/api/register", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    (
        r.json["device_id"].as_str().expect("id").to_string(),
        r.json["agent_key"].as_str().expect("agent key").to_string(),
    )
}

fn uname_result(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "exit_code": 0, "stdout": "6.1.0-test\n", "stderr": "",
        "started_at": 1_700_000_000u64, "duration_ms": 3})
}

#[tokio::test]
async fn commands_are_queued_only_for_agents_that_allow_them_and_results_count_once() {
    let a = app();
    let admin = a.admin_token().await;
    let (plain, _) = register_agent(&a, &admin, "plain1", 40).await;
    let (id, key) = register_commanded_agent(&a, &admin, "cmd1", 41).await;
    let (_, other_key) = register_commanded_agent(&a, &admin, "cmd2", 42).await;
    let uname = serde_json::json!({"argv": ["uname", "-r"], "timeout_s": 10});
    let r = a
        .call(bearer(
            post(&format!("/api/devices/{plain}/commands"), &uname),
            &admin,
        ))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("--allow-commands"), "{}", r.text);

    let r = a
        .call(bearer(
            post(&format!("/api/devices/{id}/commands"), &uname),
            &admin,
        ))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let cmd = r.json["id"].as_str().expect("id").to_string();
    let beat_answer = a
        .call(bearer(post("/api/heartbeat", &beat("1.0")), &key))
        .await;
    assert_eq!(beat_answer.json["commands_pending"], 1);
    // Another agent sees nothing of it.
    let r = a
        .call(bearer(get("/api/commands/?wait=0"), &other_key))
        .await;
    assert_eq!(r.json["commands"], serde_json::json!([]), "{}", r.text);
    let r = a.call(bearer(get("/api/commands/?wait=0"), &key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["commands"][0]["id"], cmd.as_str());
    assert_eq!(
        r.json["commands"][0]["argv"],
        serde_json::json!(["uname", "-r"])
    );
    let again = a.call(bearer(get("/api/commands/?wait=0"), &key)).await;
    assert_eq!(
        again.json["commands"],
        serde_json::json!([]),
        "delivered, lease running"
    );

    let r = a
        .call(bearer(
            post("/api/commandresult", &uname_result(&cmd)),
            &other_key,
        ))
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "another device's command: {}",
        r.text
    );
    for _ in 0..2 {
        let r = a
            .call(bearer(
                post("/api/commandresult", &uname_result(&cmd)),
                &key,
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["status"], "succeeded");
    }
    let mut changed = uname_result(&cmd);
    changed["exit_code"] = serde_json::json!(1);
    let r = a
        .call(bearer(post("/api/commandresult", &changed), &key))
        .await;
    assert_eq!(r.json["status"], "succeeded", "the first result stands");
    let r = a
        .call(bearer(get(&format!("/api/commands/{cmd}")), &admin))
        .await;
    assert_eq!(r.json["state"], "succeeded", "{}", r.text);
    assert_eq!(r.json["result"]["stdout"], "6.1.0-test\n");
    assert_eq!(r.json["queued_by"], "admin");
    let list = a
        .call(bearer(get(&format!("/api/devices/{id}/commands")), &admin))
        .await;
    assert_eq!(list.json["commands"].as_array().map(Vec::len), Some(1));
    // The device page shows the result: exit code and output.
    let cookie = a.login_cookie().await;
    let page = a
        .call(with(
            get(&format!("/devices/{id}")),
            header::COOKIE,
            &cookie,
        ))
        .await;
    assert!(
        page.text.contains("exit 0,")
            && page
                .text
                .contains("<pre class=\"stdout\">6.1.0-test\n</pre>"),
        "{}",
        page.text
    );
    let metrics = watchgrid_api::render_metrics(&a.state);
    for state in ["queued", "delivered", "succeeded"] {
        let line = format!("watchgrid_agent_commands_total{{state=\"{state}\"}} 1");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let audit = a.call(bearer(get("/api/audit"), &admin)).await;
    assert!(audit.text.contains("command.queue"), "{}", audit.text);
}

#[tokio::test]
async fn a_long_poll_wakes_when_a_command_is_queued() {
    let a = app();
    let admin = a.admin_token().await;
    let (id, key) = register_commanded_agent(&a, &admin, "cmd1", 43).await;
    let router = a.router.clone();
    let poll = {
        let mut req = bearer(get("/api/commands/?wait=30"), &key);
        let addr: SocketAddr = "192.168.0.10:40000".parse().expect("addr");
        req.extensions_mut().insert(ConnectInfo(addr));
        tokio::spawn(router.oneshot(req))
    };
    // Queue only once the poll is waiting, so this tests the wake-up, not the first look.
    while a.state.command_bell.open_polls() == 0 {
        tokio::task::yield_now().await;
    }
    let r = a
        .call(bearer(
            post(
                &format!("/api/devices/{id}/commands"),
                &serde_json::json!({"argv": ["true"]}),
            ),
            &admin,
        ))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let resp = poll.await.expect("join").expect("infallible");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    // A poll that was not woken would have answered an empty list after 30 s.
    assert_eq!(json["commands"][0]["id"], r.json["id"], "{json}");
}

#[tokio::test]
async fn only_commands_not_picked_up_can_be_cancelled() {
    let a = app();
    let admin = a.admin_token().await;
    let (id, key) = register_commanded_agent(&a, &admin, "cmd1", 44).await;
    let queue = || {
        bearer(
            post(
                &format!("/api/devices/{id}/commands"),
                &serde_json::json!({"argv": ["true"]}),
            ),
            &admin,
        )
    };
    let delete = |cmd: &str| {
        let req = Request::delete(format!("/api/commands/{cmd}"))
            .header(header::HOST, "vpn.example.com")
            .body(Body::empty())
            .expect("req");
        bearer(req, &admin)
    };
    let first = a.call(queue()).await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    let r = a.call(delete(&first)).await;
    assert_eq!(r.json["state"], "cancelled", "{}", r.text);
    let r = a.call(bearer(get("/api/commands/?wait=0"), &key)).await;
    assert_eq!(
        r.json["commands"],
        serde_json::json!([]),
        "a cancelled command is never delivered"
    );
    let second = a.call(queue()).await.json["id"]
        .as_str()
        .expect("id")
        .to_string();
    a.call(bearer(get("/api/commands/?wait=0"), &key)).await;
    let r = a.call(delete(&second)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(
        a.call(delete("cmd-404")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_command_input_is_refused_and_changes_nothing() {
    let a = app();
    let admin = a.admin_token().await;
    let (id, key) = register_commanded_agent(&a, &admin, "cmd1", 45).await;
    let path = format!("/api/devices/{id}/commands");
    for body in [
        serde_json::json!({"argv": []}),
        serde_json::json!({"argv": [""]}),
        serde_json::json!({"argv": ["true"], "timeout_s": 0}),
        serde_json::json!({"argv": ["true"], "shell": true}),
        serde_json::json!({"argv": "uname -r"}),
    ] {
        let r = a.call(bearer(post(&path, &body), &admin)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
    }
    let r = a.call(bearer(get(&path), &admin)).await;
    assert_eq!(
        r.json["commands"],
        serde_json::json!([]),
        "nothing was queued"
    );
    let queued = a
        .call(bearer(
            post(&path, &serde_json::json!({"argv": ["true"]})),
            &admin,
        ))
        .await;
    let cmd = queued.json["id"].as_str().expect("id").to_string();
    let r = a.call(bearer(get("/api/commands/?wait=31"), &key)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let mut both = uname_result(&cmd);
    both["error"] = serde_json::json!({"kind": "timeout", "message": "killed"});
    let mut unknown = uname_result(&cmd);
    unknown["device_id"] = serde_json::json!("dev-1");
    let mut long = uname_result(&cmd);
    long["stdout"] = serde_json::json!("x".repeat(70_000));
    for body in [both, unknown, long, serde_json::json!({"id": cmd})] {
        let r = a
            .call(bearer(post("/api/commandresult", &body), &key))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    }
    let mut huge = uname_result(&cmd);
    huge["stderr"] = serde_json::json!("\u{1}".repeat(200_000));
    let r = a
        .call(bearer(post("/api/commandresult", &huge), &key))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    let r = a
        .call(bearer(get(&format!("/api/commands/{cmd}")), &admin))
        .await;
    assert_eq!(
        r.json["state"], "queued",
        "no report was stored: {}",
        r.text
    );
}

#[tokio::test]
async fn an_agent_that_misses_three_heartbeats_is_offline_in_the_api_and_the_audit_log() {
    let a = app();
    let admin = a.admin_token().await;
    let (id, key) = register_agent(&a, &admin, "db1", 46).await;
    let r = a
        .call(bearer(post("/api/heartbeat", &beat("1.0")), &key))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let now = watchgrid_api::state::unix_now();
    assert!(watchgrid_api::routes::agents::sweep_offline(&a.state, now)
        .expect("sweep")
        .is_empty());
    let later = now + 3 * 30;
    let gone = watchgrid_api::routes::agents::sweep_offline(&a.state, later).expect("sweep");
    assert_eq!(gone, [id]);
    let audit = a.call(bearer(get("/api/audit"), &admin)).await;
    assert!(audit.text.contains("agent.offline"), "{}", audit.text);
    let list = a.call(bearer(get("/api/devices"), &admin)).await;
    assert_eq!(
        list.json["devices"][0]["agent"]["online"], true,
        "still within real time"
    );
    // The API shows it offline once the three intervals have passed in real time too;
    // here the sweep's clock ran ahead, so a heartbeat brings it back and is audited.
    let r = a
        .call(bearer(post("/api/heartbeat", &beat("1.0")), &key))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let audit = a.call(bearer(get("/api/audit"), &admin)).await;
    assert!(audit.text.contains("agent.online"), "{}", audit.text);
}

fn login_event(seq: u64, outcome: &str, user: &str, ip: &str) -> serde_json::Value {
    serde_json::json!({"seq": seq, "ts_us": 1_700_000_000_000_000u64 + seq, "outcome": outcome,
        "user": user, "source_ip": ip, "source_port": 50000 + seq, "method": "password",
        "service": "sshd", "raw": format!("Failed password for {user} from {ip}")})
}

#[tokio::test]
async fn login_events_are_stored_once_raise_alerts_and_read_with_either_header() {
    let a = app();
    let admin = a.admin_token().await;
    let (id, key) = register_agent(&a, &admin, "db1", 47).await;
    let events: Vec<_> = (1..=5)
        .map(|i| login_event(i, "failed", "<b>bob</b>", "192.0.2.9"))
        .chain([login_event(6, "accepted", "alice", "192.0.2.10")])
        .collect();
    let batch = serde_json::json!({ "events": events });
    // The Watchtower agent header is an alias of the bearer one.
    let send = |b: &serde_json::Value| {
        with(
            post("/api/logs/login", b),
            "x-login-alert-token".parse().expect("name"),
            &key,
        )
    };
    let r = a.call(send(&batch)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["acked_seq"], 6);
    // Sent again (the answer was lost): stored once.
    assert_eq!(a.call(send(&batch)).await.json["acked_seq"], 6);
    let r = a
        .call(with(
            get("/api/login-events?limit=100"),
            "x-admin-api-key".parse().expect("name"),
            &admin,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let stored = r.json["events"].as_array().expect("events");
    assert_eq!(stored.len(), 6, "{}", r.text);
    assert!(stored.iter().all(|e| e["device_id"] == id.as_str()));
    assert!(
        stored.iter().all(|e| e["raw"].is_null()),
        "raw lines are off by default"
    );
    let failed = a
        .call(bearer(get("/api/login-events?outcome=failed"), &admin))
        .await;
    assert_eq!(failed.json["events"].as_array().map(Vec::len), Some(5));
    let alerts = a.call(bearer(get("/api/alerts"), &admin)).await;
    let kinds: Vec<&str> = alerts.json["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|x| x["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "failed_login_burst").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "new_source").count(),
        1,
        "{kinds:?}"
    );
    assert!(alerts.text.contains("no_webhook"), "{}", alerts.text);
    let metrics = watchgrid_api::render_metrics(&a.state);
    assert!(
        metrics.contains("watchgrid_login_events_total{outcome=\"failed\"} 5"),
        "{metrics}"
    );
    let cookie = a.login_cookie().await;
    let page = a.call(with(get("/logins"), header::COOKIE, &cookie)).await;
    assert!(
        page.text.contains("&lt;b&gt;bob&lt;/b&gt;") && !page.text.contains("<b>bob"),
        "{}",
        page.text
    );
}

#[tokio::test]
async fn bad_login_batches_and_bad_keys_store_nothing() {
    let a = app();
    let admin = a.admin_token().await;
    let (_, key) = register_agent(&a, &admin, "db1", 48).await;
    let mut unknown = login_event(1, "failed", "bob", "192.0.2.9");
    unknown["extra"] = serde_json::json!(1);
    let mut long_user = login_event(1, "failed", "bob", "192.0.2.9");
    long_user["user"] = serde_json::json!("u".repeat(300));
    for body in [
        serde_json::json!({"events": []}),
        serde_json::json!({"events": [unknown]}),
        serde_json::json!({"events": [long_user]}),
        serde_json::json!({"events": [login_event(1, "hacked", "bob", "192.0.2.9")]}),
    ] {
        let r = a.call(bearer(post("/api/logs/login", &body), &key)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
    }
    let good = serde_json::json!({"events": [login_event(1, "failed", "bob", "192.0.2.9")]});
    let r = a
        .call(bearer(post("/api/logs/login", &good), "wrong-key"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = a.call(bearer(get("/api/login-events"), &admin)).await;
    assert_eq!(r.json["events"], serde_json::json!([]), "{}", r.text);
    let metrics = watchgrid_api::render_metrics(&a.state);
    assert!(
        metrics.contains("watchgrid_agent_auth_failures_total{reason=\"unknown_key\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn log_lines_are_acknowledged_once_and_searchable() {
    let a = app();
    let logs_dir = tempfile::tempdir().expect("tempdir");
    let store = watchgrid_logstore::LogStore::open(
        &logs_dir.path().join("logs"),
        watchgrid_logstore::Retention::default(),
    )
    .expect("log store");
    assert!(a.state.logs.set(Arc::new(store)).is_ok());
    let admin = a.admin_token().await;
    let (id, key) = register_agent(&a, &admin, "db1", 49).await;
    let line = |seq: u64, message: &str| {
        serde_json::json!({"seq": seq, "ts_us": 1_700_000_000_000_000u64 + seq,
            "source": "/var/log/app.log", "unit": null, "priority": 6, "message": message})
    };
    let batch = serde_json::json!({"lines": [line(1, "started <script>x</script>"), line(2, "listening on 8080")]});
    for _ in 0..2 {
        let r = a.call(bearer(post("/api/logs/", &batch), &key)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["acked_seq"], 2);
    }
    let r = a
        .call(bearer(get(&format!("/api/logs?device={id}")), &admin))
        .await;
    assert_eq!(
        r.json["lines"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.text
    );
    let r = a.call(bearer(get("/api/logs?q=listening"), &admin)).await;
    assert_eq!(
        r.json["lines"][0]["message"], "listening on 8080",
        "{}",
        r.text
    );
    let mut bad = line(3, "x");
    bad["priority"] = serde_json::json!(9);
    let r = a
        .call(bearer(
            post("/api/logs/", &serde_json::json!({"lines": [bad]})),
            &key,
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let metrics = watchgrid_api::render_metrics(&a.state);
    assert!(
        metrics.contains("watchgrid_log_lines_ingested_total 2"),
        "{metrics}"
    );
    let cookie = a.login_cookie().await;
    let page = a
        .call(with(
            get(&format!("/devices/{id}")),
            header::COOKIE,
            &cookie,
        ))
        .await;
    assert!(
        page.text.contains("&lt;script&gt;x&lt;/script&gt;"),
        "{}",
        page.text
    );
}

#[tokio::test]
async fn webhooks_that_point_at_the_hub_are_refused_and_the_secret_is_shown_once() {
    let a = app();
    let admin = a.admin_token().await;
    let put_hook = |url: &str| {
        let req = Request::put("/api/alerts/webhook")
            .header(header::HOST, "vpn.example.com")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::json!({ "url": url }).to_string()))
            .expect("req");
        bearer(req, &admin)
    };
    for bad in [
        "http://127.0.0.1:9100/metrics",
        "https://localhost/",
        "ftp://example.com/",
    ] {
        let r = a.call(put_hook(bad)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
    }
    let r = a
        .call(put_hook("https://hooks.example.com/watchgrid"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let secret = r.json["secret"].as_str().expect("secret").to_string();
    assert!(secret.len() >= 43);
    let settings = a.call(bearer(get("/api/logs/settings"), &admin)).await;
    assert_eq!(
        settings.json["webhook_url"],
        "https://hooks.example.com/watchgrid"
    );
    assert!(!settings.text.contains(&secret), "the secret is shown once");
}

/// Hardening finding 4: made-up methods and paths do not grow the metrics registry; the
/// method label is one of the known ones or OTHER, unmatched paths share one route value.
#[tokio::test]
async fn metric_labels_are_bounded() {
    let a = app();
    for i in 0..50 {
        let method = axum::http::Method::from_bytes(format!("X{i}").as_bytes()).expect("method");
        for path in [
            "/".to_string(),
            format!("/api/nowhere/{i}"),
            format!("/x{i}"),
        ] {
            let req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::HOST, "vpn.example.com")
                .body(Body::empty())
                .expect("request");
            a.call(req).await;
        }
    }
    let metrics = watchgrid_api::render_metrics(&a.state);
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("watchgrid_http_requests_total{"))
        .collect();
    assert!(
        series.iter().all(|l| !l.contains("method=\"X")),
        "{series:#?}"
    );
    assert!(
        series
            .iter()
            .all(|l| !l.contains("nowhere") && !l.contains("/x")),
        "{series:#?}"
    );
    assert!(
        series.iter().any(|l| l.contains("method=\"OTHER\"")),
        "{series:#?}"
    );
    // 150 distinct method/path pairs, a handful of series.
    assert!(series.len() <= 6, "{series:#?}");
}

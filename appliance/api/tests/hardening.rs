//! The hostile review's findings, one test (or more) per finding, named after it.

mod common;
use common::*;

#[tokio::test]
async fn finding_03_setup_removes_the_token_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("setup-token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("write");
    let a = app_with(ApiConfig {
        setup_token_file: Some(file.clone()),
        ..ApiConfig::default()
    });
    // A failed attempt keeps it: the token is still good.
    let r = a.call(post("/api/setup", &setup_body("wrong"))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(file.exists());
    a.setup().await;
    assert!(!file.exists(), "the dead token's file is gone");
}

#[tokio::test]
async fn finding_06_password_hashing_is_capped_then_503_with_retry_after() {
    use watchgrid_api::auth::{HASH_CONCURRENCY, HASH_SLOTS};
    let a = app();
    a.setup().await;
    // Every slot busy (as under a flood of sign-ins): the next one waits, then is told
    // to come back instead of starting another 19 MiB hash.
    let held = HASH_SLOTS
        .acquire_many(HASH_CONCURRENCY)
        .await
        .expect("slots");
    let r = a.call(post("/api/auth/login", &login_body(PASSWORD))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    drop(held);
    a.login_cookie().await;
}

#[tokio::test]
async fn finding_06_an_ipv6_64_is_one_client_for_the_login_limit() {
    let a = app();
    a.setup().await;
    let wrong = login_body("not the password");
    for i in 1..=10 {
        let peer = format!("[fd00:1:2:3::{i:x}]:40000");
        let r = a.call_from(&peer, post("/api/auth/login", &wrong)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{peer}: {}", r.text);
    }
    let r = a
        .call_from(
            "[fd00:1:2:3:a:b:c:d]:40000",
            post("/api/auth/login", &wrong),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    let r = a
        .call_from("[fd00:1:2:4::1]:40000", post("/api/auth/login", &wrong))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "another /64 has its own bucket"
    );
}

async fn enrollment_token(a: &App, admin: &str, uses: u32) -> String {
    let r = a
        .call(bearer(
            post("/api/enrollment-tokens", &serde_json::json!({"uses": uses})),
            admin,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json["token"].as_str().expect("token").to_string()
}

fn hex_key(h: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(hex::decode(h).expect("hex"))
}

async fn device_count(a: &App, admin: &str) -> Option<usize> {
    let r = a.call(bearer(get("/api/devices"), admin)).await;
    r.json["devices"].as_array().map(Vec::len)
}

#[tokio::test]
async fn finding_15_low_order_keys_are_refused() {
    let a = app();
    let admin = a.admin_token().await;
    let token = enrollment_token(&a, &admin, 1).await;
    let low_order = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    ];
    for h in low_order {
        let key = hex_key(h);
        let body = serde_json::json!({"token": token, "public_key": key, "hostname": "h"});
        let r = a.call(post("/api/register", &body)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{h}: {}",
            r.text
        );
        assert!(r.text.contains("small order"), "{}", r.text);
        let body = serde_json::json!({"name": "h", "public_key": key});
        let r = a.call(bearer(post("/api/devices", &body), &admin)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{h}: {}",
            r.text
        );
    }
    assert_eq!(a.hub.peer_count(), 0);
    // The refusals did not use the single-use token.
    let body = serde_json::json!({"token": token, "public_key": wg_key(9), "hostname": "h"});
    let r = a.call(post("/api/register", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn finding_15_a_hub_failure_gives_the_token_use_back() {
    let a = app();
    let admin = a.admin_token().await;
    let token = enrollment_token(&a, &admin, 1).await;
    let body = serde_json::json!({"token": token, "public_key": wg_key(9), "hostname": "h"});
    *a.hub.fail.lock().expect("lock") = true;
    let r = a.call(post("/api/register", &body)).await;
    assert!(r.status.is_server_error(), "{}: {}", r.status, r.text);
    assert_eq!(device_count(&a, &admin).await, Some(0));
    // Once the hub is back, the same single-use token enrolls the device.
    *a.hub.fail.lock().expect("lock") = false;
    let r = a.call(post("/api/register", &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(a.hub.peer_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_15_one_key_registers_once_under_concurrency() {
    let a = app();
    let admin = a.admin_token().await;
    let token = enrollment_token(&a, &admin, 20).await;
    let mut tasks = Vec::new();
    for i in 1..=20u8 {
        let router = a.router.clone();
        let body = serde_json::json!({"token": token, "public_key": wg_key(42), "hostname": format!("h{i}")});
        tasks.push(tokio::spawn(async move {
            let mut req = post("/api/register", &body);
            let addr: SocketAddr = format!("10.9.0.{i}:5000").parse().expect("addr");
            req.extensions_mut().insert(ConnectInfo(addr));
            router.oneshot(req).await.expect("infallible").status()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    assert_eq!(device_count(&a, &admin).await, Some(1));
    // The 19 refused registrations gave their uses back: 19 other keys still enroll.
    for i in 1..=19u8 {
        let body = serde_json::json!({"token": token, "public_key": wg_key(100 + i), "hostname": format!("o{i}")});
        let peer = format!("10.9.1.{i}:5000");
        let r = a.call_from(&peer, post("/api/register", &body)).await;
        assert_eq!(r.status, StatusCode::OK, "use {i}: {}", r.text);
    }
}

#[tokio::test]
async fn finding_08_an_empty_admin_fence_needs_open_to_all() {
    let a = app();
    let token = a.admin_token().await;
    let empty = serde_json::json!({"egress": false, "rules": [], "admin_cidrs": []});
    let r = a.call(bearer(put("/api/firewall", &empty), &token)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("open_to_all"), "{}", r.text);
    // Nothing changed: the default fence still keeps the WAN out.
    let outside = a
        .call_from("203.0.113.7:1", bearer(get("/api/devices"), &token))
        .await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN);
    let view = a.call(bearer(get("/api/firewall"), &token)).await;
    assert_eq!(view.json["admin_cidrs_default"], true, "{}", view.text);
    // Said explicitly, it is the operator's choice.
    let open =
        serde_json::json!({"egress": false, "rules": [], "admin_cidrs": [], "open_to_all": true});
    let r = a.call(bearer(put("/api/firewall", &open), &token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let outside = a
        .call_from("203.0.113.7:1", bearer(get("/api/devices"), &token))
        .await;
    assert_eq!(outside.status, StatusCode::OK, "{}", outside.text);
}

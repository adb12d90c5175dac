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

/// A new API token made with the session `cookie`, with extra request fields.
async fn new_token(a: &App, cookie: &str, extra: serde_json::Value) -> Resp {
    let mut body = serde_json::json!({"name": "automation"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    a.call(with(post("/api/tokens", &body), header::COOKIE, cookie))
        .await
}

async fn me_with_token(a: &App, token: &str) -> StatusCode {
    a.call(bearer(get("/api/auth/me"), token)).await.status
}

async fn me_with_cookie(a: &App, cookie: &str) -> StatusCode {
    a.call(with(get("/api/auth/me"), header::COOKIE, cookie))
        .await
        .status
}

#[tokio::test]
async fn finding_01_tokens_are_listed_without_the_secret_and_revoked_at_once() {
    let a = app();
    a.setup().await;
    let cookie = a.login_cookie().await;
    let made = new_token(&a, &cookie, serde_json::json!({})).await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.text);
    let token = made.json["token"].as_str().expect("token").to_string();
    let id = made.json["id"].as_str().expect("id").to_string();
    assert_eq!(me_with_token(&a, &token).await, StatusCode::OK);

    let list = a.call(bearer(get("/api/tokens"), &token)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert!(!list.text.contains(&token), "the list shows the token");
    let listed = &list.json["tokens"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["name"], "automation");
    assert_eq!(listed["username"], "admin");
    assert!(listed["created_at"].as_u64().is_some_and(|t| t > 0));
    assert!(listed["last_used_at"].as_u64().is_some(), "{listed}");
    assert_eq!(listed["expires_at"], serde_json::Value::Null);

    let gone = a
        .call(with(
            delete(&format!("/api/tokens/{id}")),
            header::COOKIE,
            &cookie,
        ))
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.text);
    assert_eq!(me_with_token(&a, &token).await, StatusCode::UNAUTHORIZED);
    let again = a
        .call(with(
            delete(&format!("/api/tokens/{id}")),
            header::COOKIE,
            &cookie,
        ))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn finding_01_a_token_past_its_expiry_is_refused() {
    let a = app();
    a.setup().await;
    let cookie = a.login_cookie().await;
    for bad in [0, 3651] {
        let r = new_token(&a, &cookie, serde_json::json!({"expires_in_days": bad})).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
    }
    assert!(a.state.store.api_tokens.list().expect("list").is_empty());
    let made = new_token(&a, &cookie, serde_json::json!({"expires_in_days": 1})).await;
    let token = made.json["token"].as_str().expect("token").to_string();
    let now = watchgrid_api::state::unix_now();
    let expires = made.json["expires_at"].as_u64().expect("expires_at");
    assert!(
        (now + 86_390..=now + 86_410).contains(&expires),
        "{expires}"
    );
    assert_eq!(me_with_token(&a, &token).await, StatusCode::OK);
    // A day later, as the clock would have it:
    let hash = watchgrid_api::secrets::token_hash(&token);
    let mut record = a
        .state
        .store
        .api_tokens
        .get(&hash)
        .expect("get")
        .expect("token");
    record.expires_at = Some(now - 1);
    a.state.store.api_tokens.put(&hash, &record).expect("put");
    assert_eq!(me_with_token(&a, &token).await, StatusCode::UNAUTHORIZED);
    let list = a
        .call(with(get("/api/tokens"), header::COOKIE, &cookie))
        .await;
    assert_eq!(list.json["tokens"][0]["expired"], true, "{}", list.text);
}

fn password_change(current: &str, new: &str) -> serde_json::Value {
    serde_json::json!({"current_password": current, "new_password": new})
}

#[tokio::test]
async fn finding_01_a_password_change_voids_every_session_and_token() {
    let a = app();
    let token = a.admin_token().await;
    let cookie = a.login_cookie().await;
    let other_cookie = a.login_cookie().await;
    let new_password = "a much better passphrase";

    // Wrong current password, or a weak new one: refused, nothing changes.
    for (body, want) in [
        (
            password_change("not the password", new_password),
            StatusCode::UNAUTHORIZED,
        ),
        (
            password_change(PASSWORD, "short"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let r = a
            .call(with(
                post("/api/auth/password", &body),
                header::COOKIE,
                &cookie,
            ))
            .await;
        assert_eq!(r.status, want, "{}", r.text);
    }
    assert_eq!(me_with_cookie(&a, &other_cookie).await, StatusCode::OK);
    assert_eq!(me_with_token(&a, &token).await, StatusCode::OK);

    let r = a
        .call(with(
            post(
                "/api/auth/password",
                &password_change(PASSWORD, new_password),
            ),
            header::COOKIE,
            &cookie,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let fresh = r
        .headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a fresh session cookie")
        .to_string();
    assert_eq!(me_with_cookie(&a, &fresh).await, StatusCode::OK);
    for old in [&cookie, &other_cookie] {
        assert_eq!(me_with_cookie(&a, old).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(me_with_token(&a, &token).await, StatusCode::UNAUTHORIZED);
    assert!(a.state.store.api_tokens.list().expect("list").is_empty());
    let old_login = a.call(post("/api/auth/login", &login_body(PASSWORD))).await;
    assert_eq!(old_login.status, StatusCode::UNAUTHORIZED);
    let new_login = a
        .call(post("/api/auth/login", &login_body(new_password)))
        .await;
    assert_eq!(new_login.status, StatusCode::OK);
}

#[tokio::test]
async fn finding_01_with_2fa_a_password_change_and_a_new_token_need_a_code() {
    let a = app();
    let token = a.admin_token().await;
    let (_, recovery) = enable_2fa(&a, &token).await;
    let no_code = a
        .call(bearer(
            post("/api/tokens", &serde_json::json!({"name": "second"})),
            &token,
        ))
        .await;
    assert_eq!(no_code.status, StatusCode::UNAUTHORIZED);
    assert_eq!(no_code.json["error"], "two-factor code required");
    let with_code = a
        .call(bearer(
            post(
                "/api/tokens",
                &serde_json::json!({"name": "second", "totp": recovery[0]}),
            ),
            &token,
        ))
        .await;
    assert_eq!(with_code.status, StatusCode::OK, "{}", with_code.text);

    let change = password_change(PASSWORD, "a much better passphrase");
    let r = a
        .call(bearer(post("/api/auth/password", &change), &token))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        me_with_token(&a, &token).await,
        StatusCode::OK,
        "changed anyway"
    );
    let mut change = change;
    change["totp"] = serde_json::json!(recovery[1]);
    let r = a
        .call(bearer(post("/api/auth/password", &change), &token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(me_with_token(&a, &token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn finding_02_re_enrolment_needs_a_current_factor() {
    let a = app();
    let token = a.admin_token().await;
    let (secret, recovery) = enable_2fa(&a, &token).await;
    let before = a
        .state
        .store
        .admins
        .get("admin")
        .expect("get")
        .expect("admin");
    for body in [serde_json::json!({}), serde_json::json!({"code": "000000"})] {
        let r = a
            .call(bearer(post("/api/auth/2fa/setup", &body), &token))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{body}: {}", r.text);
    }
    let after = a
        .state
        .store
        .admins
        .get("admin")
        .expect("get")
        .expect("admin");
    assert_eq!(after, before, "a refused re-enrolment changed the admin");
    assert_eq!(
        after.totp_secret.as_ref().map(|s| s.expose().clone()),
        Some(secret)
    );

    let r = a
        .call(bearer(
            post(
                "/api/auth/2fa/setup",
                &serde_json::json!({"code": recovery[0]}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let after = a
        .state
        .store
        .admins
        .get("admin")
        .expect("get")
        .expect("admin");
    assert!(after.totp_pending.is_some());
}

#[tokio::test]
async fn finding_02_second_factor_changes_are_rate_limited() {
    let a = app();
    let token = a.admin_token().await;
    enable_2fa(&a, &token).await;
    // Guessing codes for disable: the burst of ten, then 429.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = a
            .call(bearer(
                post(
                    "/api/auth/2fa/disable",
                    &serde_json::json!({"code": "000000"}),
                ),
                &token,
            ))
            .await;
        statuses.push(r.status);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // And the same bucket covers re-enrolment.
    let r = a
        .call(bearer(
            post(
                "/api/auth/2fa/setup",
                &serde_json::json!({"code": "000000"}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

/// A firewall that failed at start: no ruleset in force until `works` is set.
#[derive(Default)]
struct StartFailedFirewall {
    works: Mutex<bool>,
}

impl watchgrid_api::hub::Firewall for StartFailedFirewall {
    fn reconcile(&self) -> FirewallFuture {
        Box::pin(async { Ok(()) })
    }
    fn status(&self) -> watchgrid_api::hub::FirewallStatus {
        if *self.works.lock().expect("lock") {
            return watchgrid_api::hub::FirewallStatus::Applied { at: 2 };
        }
        watchgrid_api::hub::FirewallStatus::Failed {
            at: 1,
            error: "nft: /usr/sbin/nft: Operation not permitted (table inet watchgrid)".into(),
            in_force: false,
        }
    }
}

#[tokio::test]
async fn finding_09_without_a_ruleset_only_healthz_answers() {
    let a = app();
    let fw = Arc::new(StartFailedFirewall::default());
    assert!(a.state.firewall.set(fw.clone()).is_ok());
    let health = a.call(get("/healthz")).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json["status"], "degraded");
    assert_eq!(health.json["firewall"], "failed");
    for leak in ["nft", "Operation not permitted", "peers"] {
        assert!(
            !health.text.contains(leak),
            "/healthz shows {leak:?}: {}",
            health.text
        );
    }
    // Nothing else answers: not the wizard, not sign-in, not agents, not downloads,
    // not even an unknown path (which would tell the admin surface is there).
    let shut = [
        post("/api/setup", &setup_body(TOKEN)),
        post("/api/auth/login", &login_body(PASSWORD)),
        get("/setup"),
        get("/downloads/ca.crt"),
        post("/api/register", &serde_json::json!({})),
        get("/no/such/path"),
    ];
    for req in shut {
        let path = req.uri().to_string();
        let r = a.call(req).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            r.text
        );
        assert!(
            r.text.contains("firewall is not applied"),
            "{path}: {}",
            r.text
        );
    }
    assert!(
        a.state.store.admins.list().expect("admins").is_empty(),
        "setup ran with the firewall down"
    );

    // Once an apply succeeds, the appliance opens.
    *fw.works.lock().expect("lock") = true;
    assert_eq!(a.call(get("/healthz")).await.json["status"], "ok");
    a.setup().await;
    a.login_cookie().await;
}

#[tokio::test]
async fn finding_09_a_refused_change_keeps_the_surface_open_and_healthz_quiet() {
    let a = app();
    let fw = with_firewall(&a);
    let token = admin_with_firewall(&a, &fw).await;
    *fw.fail.lock().expect("lock") = Some("nft: syntax error near 10.0.0.0/8".into());
    let health = a.call(get("/healthz")).await;
    assert_eq!(health.json["status"], "degraded");
    assert!(!health.text.contains("syntax error"), "{}", health.text);
    // The last good ruleset is still in force, so the admin can fix the policy.
    assert_eq!(me_with_token(&a, &token).await, StatusCode::OK);
    let view = a.call(bearer(get("/api/firewall"), &token)).await;
    assert!(
        view.text.contains("syntax error"),
        "the admin API shows why: {}",
        view.text
    );
}

#[tokio::test]
async fn finding_07_the_audit_log_is_read_one_page_at_a_time() {
    let a = app();
    let token = a.admin_token().await;
    for i in 0..250u64 {
        a.state
            .store
            .audit(&watchgrid_store::AuditEntry {
                at: 1_000 + i,
                actor: "admin".into(),
                action: "test.entry".into(),
                target: i.to_string(),
            })
            .expect("audit");
    }
    let first = a.call(bearer(get("/api/audit"), &token)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let entries = first.json["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 100, "the default page");
    assert_eq!(entries[0]["target"], "249", "newest first");

    // Following the cursors visits every entry once, newest to oldest.
    let mut targets = Vec::new();
    let mut cursor = None::<String>;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/audit?limit=64&cursor={c}"),
            None => "/api/audit?limit=64".into(),
        };
        let page = a.call(bearer(get(&path), &token)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let entries = page.json["entries"].as_array().expect("entries");
        assert!(entries.len() <= 64);
        targets.extend(
            entries
                .iter()
                .filter(|e| e["action"] == "test.entry")
                .filter_map(|e| e["target"].as_str().map(str::to_string)),
        );
        match page.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let want: Vec<String> = (0..250).rev().map(|i: u32| i.to_string()).collect();
    assert_eq!(targets, want);

    for bad in [
        "limit=0",
        "limit=1001",
        "cursor=..%2F",
        "cursor=12",
        "page=2",
    ] {
        let r = a
            .call(bearer(get(&format!("/api/audit?{bad}")), &token))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
    }
}

/// A device made through the API; returns its id and public key.
fn enabled_in_store(a: &App, id: &str) -> Option<bool> {
    a.state
        .store
        .devices
        .get(id)
        .expect("get")
        .map(|d| d.enabled)
}

#[tokio::test]
async fn finding_10_a_hub_that_refuses_leaves_store_and_hub_as_they_were() {
    let a = app();
    let token = a.admin_token().await;
    let (id, key) = plain_device(&a, &token, 21).await;
    *a.hub.fail.lock().expect("lock") = true;

    let r = a
        .call(bearer(
            post(
                &format!("/api/devices/{id}/disable"),
                &serde_json::json!({}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert!(r.text.contains("nothing changed"), "{}", r.text);
    assert_eq!(
        enabled_in_store(&a, &id),
        Some(true),
        "the store says disabled"
    );
    assert!(on_hub(&a, &key));

    let r = a
        .call(bearer(delete(&format!("/api/devices/{id}")), &token))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(
        enabled_in_store(&a, &id),
        Some(true),
        "deleted from the store"
    );
    assert!(on_hub(&a, &key));

    // And the other way round: a disabled device the hub will not take back.
    *a.hub.fail.lock().expect("lock") = false;
    let r = a
        .call(bearer(
            post(
                &format!("/api/devices/{id}/disable"),
                &serde_json::json!({}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!on_hub(&a, &key));
    *a.hub.fail.lock().expect("lock") = true;
    let r = a
        .call(bearer(
            post(&format!("/api/devices/{id}/enable"), &serde_json::json!({})),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(
        enabled_in_store(&a, &id),
        Some(false),
        "the store says enabled"
    );
}

#[tokio::test]
async fn finding_10_a_device_leaves_the_hub_at_its_expiry() {
    let a = app();
    let token = a.admin_token().await;
    tokio::spawn(watchgrid_api::expiry::run(a.state.clone()));
    let (id, key) = plain_device(&a, &token, 22).await;
    let (_, other) = plain_device(&a, &token, 23).await;
    // Due in a second (the API's shortest expiry is a minute; the store is the clock's
    // side of it). The timer has to be told, as the API tells it on every add.
    let due = watchgrid_api::state::unix_now() + 1;
    let mut d = a
        .state
        .store
        .devices
        .get(&id)
        .expect("get")
        .expect("device");
    d.expires_at = Some(due);
    a.state.store.devices.put(&id, &d).expect("put");
    a.state.expiry_bell.notify_one();

    // Bounded generously: the old sweep ran every 30 s; the timer fires on the second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while on_hub(&a, &key) {
        assert!(
            std::time::Instant::now() < deadline,
            "still a peer after its expiry"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        watchgrid_api::state::unix_now() >= due,
        "removed before its time"
    );
    assert_eq!(enabled_in_store(&a, &id), Some(false));
    assert!(on_hub(&a, &other), "a device without expiry was touched");
    let audit = a.call(bearer(get("/api/audit"), &token)).await;
    assert!(audit.text.contains("device.expire"), "{}", audit.text);
}

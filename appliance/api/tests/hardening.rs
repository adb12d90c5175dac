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

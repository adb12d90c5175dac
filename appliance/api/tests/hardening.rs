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

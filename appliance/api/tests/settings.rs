//! Settings after setup: the endpoint changes, bad input changes nothing.

mod common;
use common::*;

#[tokio::test]
async fn the_endpoint_changes_and_new_configs_dial_it() {
    let a = app();
    let token = a.admin_token().await;
    let r = a.call(bearer(get("/api/settings"), &token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["endpoint"], "vpn.example.com:51820");
    assert_eq!(r.json["vpn_subnet"], "10.100.0.0/16");

    let r = a
        .call(bearer(
            put(
                "/api/settings",
                &serde_json::json!({"endpoint": "edge.example.net:443"}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["endpoint"], "edge.example.net:443");
    let audit = a.state.store.audit.list().expect("audit");
    assert!(audit.iter().any(|e| e.action == "settings.endpoint"));

    let r = a
        .call(bearer(
            post("/api/devices", &serde_json::json!({"name": "tablet"})),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let config = r.json["config"].as_str().expect("config");
    assert!(
        config.contains("Endpoint = edge.example.net:443"),
        "{config}"
    );
}

#[tokio::test]
async fn bad_settings_are_refused_and_change_nothing() {
    let a = app();
    let token = a.admin_token().await;
    for body in [
        serde_json::json!({"endpoint": "no-port"}),
        serde_json::json!({"endpoint": "host:0"}),
        serde_json::json!({"endpoint": "a b:51820"}),
        serde_json::json!({"endpoint": "vpn.example.com:51820", "vpn_subnet": "10.0.0.0/8"}),
        serde_json::json!({}),
    ] {
        let r = a.call(bearer(put("/api/settings", &body), &token)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
    }
    let r = a.call(bearer(get("/api/settings"), &token)).await;
    assert_eq!(r.json["endpoint"], "vpn.example.com:51820");
    let r = a
        .call(put(
            "/api/settings",
            &serde_json::json!({"endpoint": "x.example:1"}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

//! Traffic accounting against a fake hub whose counters the tests set: samples become
//! history, counter resets are not lost, quotas act once a month and the month's turn
//! undoes them, and per-device metrics appear only when asked for.

mod common;
use common::*;
use watchgrid_api::accounting::Sampler;

// 2026-12-07T10:00:00Z, and the first second of January 2027.
const T0: u64 = 1_796_637_600;
const JANUARY: u64 = 1_798_761_600;

fn counters(a: &App, key: PublicKey, rx: u64, tx: u64) {
    a.hub.counters.lock().expect("lock").insert(key, (rx, tx));
}

fn month_bytes(a: &App, id: &str, at: u64) -> (u64, u64) {
    let (_, first) = watchgrid_api::accounting::month_of(at);
    a.state
        .store
        .traffic_total(id, first, at + 1)
        .expect("total")
}

#[tokio::test]
async fn samples_become_history_and_a_counter_reset_loses_nothing() {
    let a = app();
    let token = a.admin_token().await;
    let (id, key) = plain_device(&a, &token, 31).await;
    let (other, other_key) = plain_device(&a, &token, 32).await;
    let mut s = Sampler::default();

    counters(&a, key, 1000, 200);
    s.sample(&a.state, T0).await.expect("sample");
    counters(&a, key, 1500, 300);
    counters(&a, other_key, 5, 5);
    s.sample(&a.state, T0 + 60).await.expect("sample");
    // The peer was removed and added back: its counters start over below the last reading.
    counters(&a, key, 100, 50);
    s.sample(&a.state, T0 + 120).await.expect("sample");

    assert_eq!(month_bytes(&a, &id, T0 + 120), (1600, 350));
    assert_eq!(month_bytes(&a, &other, T0 + 120), (5, 5));
    let minutes = a
        .state
        .store
        .traffic(&id, watchgrid_store::Resolution::Minute, 0, u64::MAX)
        .expect("minutes");
    let rx: Vec<u64> = minutes.iter().map(|p| p.rx).collect();
    assert_eq!(rx, vec![1000, 500, 100]);
}

#[tokio::test]
async fn a_restarted_sampler_adds_to_the_stored_history() {
    let a = app();
    let token = a.admin_token().await;
    let (id, key) = plain_device(&a, &token, 33).await;
    counters(&a, key, 700, 70);
    Sampler::default()
        .sample(&a.state, T0)
        .await
        .expect("sample");
    // A restart: a new sampler, and the dataplane's counters begin from zero again.
    counters(&a, key, 300, 30);
    Sampler::default()
        .sample(&a.state, T0 + 60)
        .await
        .expect("sample");
    assert_eq!(month_bytes(&a, &id, T0 + 60), (1000, 100));
}

#[tokio::test]
async fn the_api_serves_a_zero_filled_series_and_monthly_totals() {
    let a = app();
    let token = a.admin_token().await;
    let (id, key) = plain_device(&a, &token, 34).await;
    let now = watchgrid_api::state::unix_now();
    counters(&a, key, 4096, 1024);
    Sampler::default()
        .sample(&a.state, now)
        .await
        .expect("sample");

    let r = a
        .call(bearer(
            get(&format!("/api/devices/{id}/traffic?range=hour")),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let points = r.json["points"].as_array().expect("points");
    assert_eq!(points.len(), 60);
    assert_eq!(r.json["step_s"], 60);
    assert_eq!(points[59]["rx"], 4096);
    assert_eq!(points[0]["rx"], 0);
    assert_eq!(
        (r.json["total_rx"].as_u64(), r.json["total_tx"].as_u64()),
        (Some(4096), Some(1024))
    );

    let r = a.call(bearer(get("/api/traffic?range=year"), &token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["points"].as_array().map(Vec::len), Some(365));
    assert_eq!(r.json["total_rx"], 4096);

    let r = a.call(bearer(get("/api/traffic/monthly"), &token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let row = &r.json["devices"][0];
    assert_eq!(
        (row["device_id"].as_str(), row["rx"].as_u64()),
        (Some(id.as_str()), Some(4096))
    );

    for bad in [
        format!("/api/devices/{id}/traffic?range=decade"),
        format!("/api/devices/{id}/traffic?since=0"),
        "/api/traffic/monthly?month=2026-13".to_string(),
    ] {
        let r = a.call(bearer(get(&bad), &token)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
    }
    let r = a
        .call(bearer(get("/api/devices/dev-nope/traffic"), &token))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a.call(get(&format!("/api/devices/{id}/traffic"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_device_table_shows_each_link_and_its_month() {
    let a = app();
    let token = a.admin_token().await;
    let (_, key) = plain_device(&a, &token, 39).await;
    counters(&a, key, 3 << 20, 1536);
    Sampler::default()
        .sample(&a.state, watchgrid_api::state::unix_now())
        .await
        .expect("sample");
    let cookie = a.login_cookie().await;
    let r = a.call(with(get("/devices"), header::COOKIE, &cookie)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.text
            .contains("<td class=\"endpoint\">192.0.2.7:40000</td>"),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("<td class=\"traffic\">3.0 MiB / 1.5 KiB</td>"),
        "{}",
        r.text
    );
}

fn audited(a: &App, action: &str) -> usize {
    a.state
        .store
        .audit
        .list()
        .expect("audit")
        .iter()
        .filter(|e| e.action == action)
        .count()
}

#[tokio::test]
async fn a_disabling_quota_acts_once_and_the_month_turn_undoes_it() {
    let a = app();
    let token = a.admin_token().await;
    let (id, key) = plain_device(&a, &token, 35).await;
    let r = a
        .call(bearer(
            put(
                &format!("/api/devices/{id}/quota"),
                &serde_json::json!({"monthly_bytes": 1 << 20, "action": "disable"}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["crossed"], false);

    let mut s = Sampler::default();
    counters(&a, key, 600_000, 400_000);
    s.sample(&a.state, T0).await.expect("sample");
    assert!(on_hub(&a, &key), "under the quota the device stays");
    counters(&a, key, 700_000, 500_000);
    s.sample(&a.state, T0 + 60).await.expect("sample");
    assert!(
        !on_hub(&a, &key),
        "over the quota the device leaves the hub"
    );
    let stored = a
        .state
        .store
        .devices
        .get(&id)
        .expect("get")
        .expect("device");
    assert!(!stored.enabled);
    assert_eq!(audited(&a, "device.quota_exceeded"), 1);
    let alerts = a.state.store.alerts.list().expect("alerts");
    assert!(alerts
        .iter()
        .any(|al| al.kind == "quota_exceeded" && al.device_id == id));

    // Later samples this month change nothing more.
    s.sample(&a.state, T0 + 120).await.expect("sample");
    assert_eq!(audited(&a, "device.quota_exceeded"), 1);

    // January: the device is back on the hub.
    s.sample(&a.state, JANUARY + 30).await.expect("sample");
    assert!(on_hub(&a, &key));
    assert_eq!(audited(&a, "device.quota_reset"), 1);
    let q = a.state.store.quotas.get(&id).expect("get").expect("quota");
    assert!(!q.disabled_by_quota);
}

#[tokio::test]
async fn an_alerting_quota_keeps_the_device_and_an_admin_override_holds() {
    let a = app();
    let token = a.admin_token().await;
    let (id, key) = plain_device(&a, &token, 36).await;
    let quota = |action: &str| {
        put(
            &format!("/api/devices/{id}/quota"),
            &serde_json::json!({"monthly_bytes": 2 << 20, "action": action}),
        )
    };
    assert_eq!(
        a.call(bearer(quota("alert"), &token)).await.status,
        StatusCode::OK
    );
    let mut s = Sampler::default();
    counters(&a, key, 3 << 20, 0);
    s.sample(&a.state, T0).await.expect("sample");
    assert!(on_hub(&a, &key), "an alert quota never disables");
    assert_eq!(audited(&a, "device.quota_exceeded"), 1);

    // Switching to disable re-arms the quota against the same month's bytes.
    assert_eq!(
        a.call(bearer(quota("disable"), &token)).await.status,
        StatusCode::OK
    );
    s.sample(&a.state, T0 + 60).await.expect("sample");
    assert!(!on_hub(&a, &key));
    // The admin enables it anyway: it stays on, and the month's turn leaves it to the admin.
    let r = a
        .call(bearer(
            post(&format!("/api/devices/{id}/enable"), &serde_json::json!({})),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    s.sample(&a.state, T0 + 120).await.expect("sample");
    assert!(on_hub(&a, &key));
    s.sample(&a.state, JANUARY).await.expect("sample");
    assert_eq!(audited(&a, "device.quota_reset"), 0);

    let r = a
        .call(bearer(get(&format!("/api/devices/{id}/quota")), &token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["action"], "disable");
}

#[tokio::test]
async fn bad_quotas_are_refused_and_change_nothing() {
    let a = app();
    let token = a.admin_token().await;
    let (id, _) = plain_device(&a, &token, 37).await;
    for body in [
        serde_json::json!({"monthly_bytes": 1000, "action": "disable"}),
        serde_json::json!({"monthly_bytes": 1 << 30, "action": "throttle"}),
        serde_json::json!({"monthly_bytes": 1 << 30, "action": "alert", "extra": 1}),
        serde_json::json!({"monthly_bytes": -1, "action": "alert"}),
        serde_json::json!({"monthly_bytes": 9_223_372_036_854_775_808_u64, "action": "alert"}),
    ] {
        let r = a
            .call(bearer(
                put(&format!("/api/devices/{id}/quota"), &body),
                &token,
            ))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
    }
    assert!(a.state.store.quotas.get(&id).expect("get").is_none());
    let r = a
        .call(bearer(delete(&format!("/api/devices/{id}/quota")), &token))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a
        .call(bearer(
            put(
                "/api/devices/dev-nope/quota",
                &serde_json::json!({"monthly_bytes": 1 << 30, "action": "alert"}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn per_device_metrics_appear_only_when_asked_for() {
    for opted_in in [false, true] {
        let a = app_with(ApiConfig {
            peer_metrics: opted_in,
            ..ApiConfig::default()
        });
        let token = a.admin_token().await;
        let (id, key) = plain_device(&a, &token, 38).await;
        counters(&a, key, 1234, 567);
        Sampler::default()
            .sample(&a.state, T0)
            .await
            .expect("sample");
        let text = watchgrid_api::render_metrics(&a.state);
        let rx = format!("watchgrid_peer_rx_bytes_total{{device=\"{id}\"}} 1234");
        let tx = format!("watchgrid_peer_tx_bytes_total{{device=\"{id}\"}} 567");
        assert_eq!(text.contains(&rx), opted_in, "{text}");
        assert_eq!(text.contains(&tx), opted_in, "{text}");
        if opted_in {
            let r = a
                .call(bearer(delete(&format!("/api/devices/{id}")), &token))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            let text = watchgrid_api::render_metrics(&a.state);
            assert!(
                !text.contains(&rx),
                "a deleted device's series goes: {text}"
            );
        }
    }
}

#[tokio::test]
async fn each_devices_endpoint_is_stored_when_a_sample_sees_it_move() {
    let a = app();
    let token = a.admin_token().await;
    let (id, key) = plain_device(&a, &token, 34).await;
    let stored = |a: &App| {
        a.state
            .store
            .devices
            .get(&id)
            .expect("read")
            .expect("device")
            .last_endpoint
    };
    assert_eq!(stored(&a), None);
    counters(&a, key, 1, 1);
    Sampler::default()
        .sample(&a.state, T0)
        .await
        .expect("sample");
    // The fake hub reports every peer at 192.0.2.7:40000.
    assert_eq!(stored(&a).as_deref(), Some("192.0.2.7:40000"));
}

//! The dashboard's pages and forms, in-process: every form needs its session's CSRF
//! token, refused input shows the API's reason and changes nothing, and what a form
//! does is what the API then reports.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::*;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A signed-in browser: its cookie and the CSRF token its pages carry.
struct Browser {
    cookie: String,
    csrf: String,
}

async fn browser(a: &App) -> Browser {
    let cookie = a.login_cookie().await;
    let page = a
        .call(with(get("/settings"), header::COOKIE, &cookie))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    Browser {
        csrf: csrf_of(&page.text),
        cookie,
    }
}

fn csrf_of(page: &str) -> String {
    let (_, rest) = page
        .split_once("name=\"csrf\" value=\"")
        .expect("a CSRF field on the page");
    rest.split('"').next().expect("its value").to_string()
}

impl Browser {
    fn get(&self, path: &str) -> Request<Body> {
        with(get(path), header::COOKIE, &self.cookie)
    }

    /// A form post from our own page: the token rides along.
    fn submit(&self, path: &str, body: &str) -> Request<Body> {
        let body = if body.is_empty() {
            format!("csrf={}", self.csrf)
        } else {
            format!("{body}&csrf={}", self.csrf)
        };
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::HOST, "vpn.example.com")
            .header(header::ORIGIN, "https://vpn.example.com")
            .header(header::COOKIE, &self.cookie)
            .body(Body::from(body))
            .expect("request")
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let (_, rest) = text.split_once(start).expect(start);
    rest.split_once(end).expect(end).0
}

#[tokio::test]
async fn every_page_answers_signed_in_and_sends_strangers_to_sign_in() {
    let a = app();
    let token = a.admin_token().await;
    let (id, _) = plain_device(&a, &token, 3).await;
    let b = browser(&a).await;
    for path in [
        "/".to_string(),
        "/devices".to_string(),
        format!("/devices/{id}"),
        "/firewall".to_string(),
        "/logins".to_string(),
        "/audit".to_string(),
        "/backup".to_string(),
        "/ssh".to_string(),
        "/settings".to_string(),
    ] {
        let r = a.call(b.get(&path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert!(r.text.contains("aria-current=\"page\""), "{path}: no nav");
        assert!(
            r.text.contains(&b.csrf),
            "{path}: sign-out form without a token"
        );
        let r = a.call(get(&path)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path} without a session");
        assert_eq!(r.headers[header::LOCATION], "/login");
    }
}

#[tokio::test]
async fn adding_a_device_shows_its_config_once_and_the_key_matches_the_hub_record() {
    let a = app();
    a.setup().await;
    let b = browser(&a).await;
    let r = a
        .call(b.submit(
            "/forms/devices",
            "name=phone-1&groups=staff&expires_days=30",
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let config = between(&r.text, "<pre id=\"wg-config\">", "</pre>");
    assert!(
        config.contains("Endpoint = vpn.example.com:51820"),
        "{config}"
    );
    assert!(r.text.contains("<div id=\"qr\"><svg"), "no QR code");
    let private = between(config, "PrivateKey = ", "\n");
    let public = watchgrid_core::Secret::from_base64(private)
        .expect("a real private key")
        .public_key();
    let token = {
        let r = a
            .call(with(
                post("/api/tokens", &serde_json::json!({"name": "check"})),
                header::COOKIE,
                &b.cookie,
            ))
            .await;
        r.json["token"].as_str().expect("token").to_string()
    };
    let list = a.call(bearer(get("/api/devices"), &token)).await;
    let d = &list.json["devices"][0];
    assert_eq!(d["name"], "phone-1");
    assert_eq!(d["public_key"], public.to_string());
    assert_eq!(d["groups"], serde_json::json!(["staff"]));
    assert!(d["expires_at"].as_u64().is_some());
    // The download carries the same file.
    let href = between(&r.text, "href=\"data:text/plain;base64,", "\"");
    use base64::Engine;
    let file = base64::engine::general_purpose::STANDARD
        .decode(href)
        .expect("base64");
    assert_eq!(
        String::from_utf8(file).expect("utf-8"),
        html_unescape(config)
    );
    // The private key is nowhere else: not on the device page.
    let id = d["id"].as_str().expect("id");
    let detail = a.call(b.get(&format!("/devices/{id}"))).await;
    assert!(
        !detail.text.contains(private),
        "the private key outlived its page"
    );
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[tokio::test]
async fn a_refused_device_form_says_why_and_adds_nothing() {
    let a = app();
    let token = a.admin_token().await;
    let b = browser(&a).await;
    for (body, why) in [
        ("name=%3Cb%3E", "hostname"),
        ("name=ok&expires_days=0", "expires after"),
        ("name=ok&admin=1", "unknown field"),
    ] {
        let r = a.call(b.submit("/forms/devices", body)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(r.text.contains("id=\"error\""), "{body}: {}", r.text);
        assert!(r.text.to_lowercase().contains(why), "{body}: {}", r.text);
        assert!(!r.text.contains("<b>"), "{body}: unescaped");
    }
    let list = a.call(bearer(get("/api/devices"), &token)).await;
    assert_eq!(list.json["devices"], serde_json::json!([]));
}

#[tokio::test]
async fn forms_without_the_sessions_token_change_nothing() {
    let a = app();
    let token = a.admin_token().await;
    let b = browser(&a).await;
    let other = browser(&a).await;
    assert_ne!(b.csrf, other.csrf, "each session has its own token");
    let without = Request::post("/forms/devices")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "vpn.example.com")
        .header(header::COOKIE, &b.cookie)
        .body(Body::from("name=sneaky"))
        .expect("request");
    let r = a.call(without).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let foreign = Browser {
        cookie: b.cookie.clone(),
        csrf: other.csrf.clone(),
    };
    let r = a
        .call(foreign.submit("/forms/devices", "name=sneaky"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "another session's token");
    let text_plain = Request::post("/forms/devices")
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::HOST, "vpn.example.com")
        .header(header::COOKIE, &b.cookie)
        .body(Body::from(format!("name=sneaky&csrf={}", b.csrf)))
        .expect("request");
    assert_eq!(a.call(text_plain).await.status, StatusCode::FORBIDDEN);
    let list = a.call(bearer(get("/api/devices"), &token)).await;
    assert_eq!(list.json["devices"], serde_json::json!([]));
    // API tokens post JSON and forms alike without one: no browser sends them.
    let r = a
        .call(bearer(
            post("/api/devices", &serde_json::json!({"name": "scripted"})),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn a_device_is_deleted_only_when_its_name_is_typed() {
    let a = app();
    let token = a.admin_token().await;
    let (id, key) = plain_device(&a, &token, 4).await;
    let name = {
        let list = a.call(bearer(get("/api/devices"), &token)).await;
        list.json["devices"][0]["name"]
            .as_str()
            .expect("name")
            .to_string()
    };
    let b = browser(&a).await;
    let path = format!("/forms/devices/{id}/delete");
    for typed in ["", "wrong", "x"] {
        let r = a.call(b.submit(&path, &format!("confirm={typed}"))).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{typed:?}");
        assert!(r.text.contains("not deleted"), "{}", r.text);
        assert!(
            on_hub(&a, &key),
            "a refused delete took the peer off the hub"
        );
    }
    let r = a.call(b.submit(&path, &format!("confirm={name}"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(r.headers[header::LOCATION], "/devices?done=deleted");
    assert!(!on_hub(&a, &key));
    let list = a.call(bearer(get("/api/devices"), &token)).await;
    assert_eq!(list.json["devices"], serde_json::json!([]));
}

#[tokio::test]
async fn disable_and_enable_from_the_device_page_follow_the_hub() {
    let a = app();
    let token = a.admin_token().await;
    let (id, key) = plain_device(&a, &token, 5).await;
    let b = browser(&a).await;
    let r = a
        .call(b.submit(&format!("/forms/devices/{id}/disable"), ""))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert!(!on_hub(&a, &key));
    let page = a.call(b.get(&format!("/devices/{id}?done=disabled"))).await;
    assert!(page.text.contains("id=\"device-enable\""), "{}", page.text);
    assert!(page.text.contains("The device is disabled"));
    let r = a
        .call(b.submit(&format!("/forms/devices/{id}/enable"), ""))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(on_hub(&a, &key));
}

#[tokio::test]
async fn enrollment_tokens_are_created_listed_and_revoked_from_the_page() {
    let a = app();
    let token = a.admin_token().await;
    let b = browser(&a).await;
    let r = a
        .call(b.submit(
            "/forms/enrollment-tokens",
            "name=rack+%3Cb%3E&uses=3&expires_hours=2&groups=eu%2C+servers",
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let secret = between(&r.text, "<code id=\"new-token\">", "</code>").to_string();
    assert_eq!(secret.len(), 43);
    assert!(r.text.contains("rack &lt;b&gt;"), "escaped name");
    let list = a.call(bearer(get("/api/enrollment-tokens"), &token)).await;
    let t = &list.json["tokens"][0];
    assert_eq!(t["uses_left"], 3);
    assert_eq!(t["groups"], serde_json::json!(["eu", "servers"]));
    let id = t["id"].as_str().expect("id").to_string();
    // Listed on the page later, never with the secret.
    let page = a.call(b.get("/devices")).await;
    assert!(page.text.contains(&format!("data-token=\"{id}\"")));
    assert!(!page.text.contains(&secret), "the token was shown twice");

    let r = a
        .call(b.submit(&format!("/forms/enrollment-tokens/{id}/revoke"), ""))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let list = a.call(bearer(get("/api/enrollment-tokens"), &token)).await;
    assert_eq!(list.json["tokens"], serde_json::json!([]));
    let body = serde_json::json!({"token": secret, "public_key": wg_key(8), "hostname": "late"});
    let reg = a.call(post("/api/register", &body)).await;
    assert_eq!(
        reg.status,
        StatusCode::UNAUTHORIZED,
        "a revoked token enrolled"
    );
    // The API's revoke: unknown and malformed ids are 404.
    for bad in ["000000000000", "zz", "0123456789abcdef"] {
        let r = a
            .call(bearer(
                delete(&format!("/api/enrollment-tokens/{bad}")),
                &token,
            ))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn settings_forms_change_the_endpoint_and_refuse_bad_values_unchanged() {
    let a = app();
    let token = a.admin_token().await;
    let b = browser(&a).await;
    let r = a
        .call(b.submit("/forms/settings/endpoint", "endpoint=not+an+endpoint"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("id=\"error\""));
    let s = a.call(bearer(get("/api/settings"), &token)).await;
    assert_eq!(s.json["endpoint"], "vpn.example.com:51820");
    let r = a
        .call(b.submit("/forms/settings/endpoint", "endpoint=hub.example.org%3A443"))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let s = a.call(bearer(get("/api/settings"), &token)).await;
    assert_eq!(s.json["endpoint"], "hub.example.org:443");
}

#[tokio::test]
async fn api_tokens_from_the_settings_page_work_and_revoke() {
    let a = app();
    a.setup().await;
    let b = browser(&a).await;
    let r = a
        .call(b.submit(
            "/forms/tokens",
            "name=backup+script&expires_in_days=7&totp=",
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let secret = between(&r.text, "<code id=\"new-secret\">", "</code>").to_string();
    let me = a.call(bearer(get("/api/auth/me"), &secret)).await;
    assert_eq!(me.status, StatusCode::OK, "the new token does not work");
    let page = a.call(b.get("/settings")).await;
    let id = between(&page.text, "data-api-token=\"", "\"").to_string();
    assert!(!page.text.contains(&secret));
    let r = a
        .call(b.submit(&format!("/forms/tokens/{id}/revoke"), ""))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let me = a.call(bearer(get("/api/auth/me"), &secret)).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    // A bad expiry is refused with its reason and makes no token.
    let r = a
        .call(b.submit("/forms/tokens", "name=x&expires_in_days=soon"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("expires_in_days"), "{}", r.text);
}

#[tokio::test]
async fn a_password_change_from_the_page_keeps_this_browser_and_signs_out_others() {
    let a = app();
    a.setup().await;
    let b = browser(&a).await;
    let other = a.login_cookie().await;
    let wrong = a
        .call(b.submit(
            "/forms/password",
            "current_password=nope&new_password=another+long+password",
        ))
        .await;
    assert_eq!(
        wrong.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        wrong.text
    );
    assert!(wrong.text.contains("not right"), "{}", wrong.text);
    let r = a
        .call(b.submit(
            "/forms/password",
            "current_password=correct+horse+battery&new_password=another+long+password",
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let fresh = r.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let page = a.call(with(get("/settings"), header::COOKIE, &fresh)).await;
    assert_eq!(page.status, StatusCode::OK, "this browser was signed out");
    let page = a.call(with(get("/settings"), header::COOKIE, &other)).await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "another session survived"
    );
}

#[tokio::test]
async fn the_audit_page_filters_by_actor_and_action_and_pages_on() {
    let a = app();
    let token = a.admin_token().await;
    for i in 0..60u8 {
        plain_device(&a, &token, 10 + i).await;
    }
    let b = browser(&a).await;
    let page = a.call(b.get("/audit?action=device.create")).await;
    let rows = page.text.matches("<td>device.create</td>").count();
    assert_eq!(rows, 50, "one page of matches");
    assert!(!page.text.contains("<td>token.create</td>"));
    let next = between(&page.text, "id=\"audit-next\" href=\"", "\"").replace("&amp;", "&");
    assert!(next.contains("action=device.create"), "{next}");
    let more = a.call(b.get(&next)).await;
    assert_eq!(more.text.matches("<td>device.create</td>").count(), 10);
    let agent = a.call(b.get("/audit?actor=nobody")).await;
    assert!(!agent.text.contains("<td>device.create</td>"));
}

#[tokio::test]
async fn the_firewall_editor_saves_rules_through_the_api_and_shows_its_refusals() {
    let a = app();
    let fw = with_firewall(&a);
    let token = admin_with_firewall(&a, &fw).await;
    let b = browser(&a).await;
    let before = applies(&fw);
    let r = a
        .call(b.submit(
            "/forms/firewall",
            "from_0=staff&to_0=192.168.50.0%2F24&protocol_0=tcp&ports_0=22%2C+443\
             &from_1=ops&to_1=servers&protocol_1=any&ports_1=&egress=on&admin_cidrs=",
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(applies(&fw), before + 1, "saved without applying");
    let view = a.call(bearer(get("/api/firewall"), &token)).await;
    assert_eq!(view.json["egress"], true);
    assert_eq!(view.json["rules"][0]["to_cidr"], "192.168.50.0/24");
    assert_eq!(
        view.json["rules"][0]["ports"],
        serde_json::json!(["22", "443"])
    );
    assert_eq!(view.json["rules"][1]["to_group"], "servers");
    assert_eq!(view.json["admin_cidrs_default"], true);

    // Removing the first row and adding a bad network: refused whole, nothing changes.
    let r = a
        .call(b.submit(
            "/forms/firewall",
            "from_0=staff&to_0=192.168.50.0%2F24&protocol_0=tcp&ports_0=22&remove_0=on\
             &from_1=ops&to_1=10.0.0.0%2F99&protocol_1=tcp&ports_1=",
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("id=\"error\""), "{}", r.text);
    assert_eq!(applies(&fw), before + 1, "a refused policy was applied");
    let again = a.call(bearer(get("/api/firewall"), &token)).await;
    assert_eq!(again.json["rules"], view.json["rules"]);

    // The fence: a list that shuts out the admin's own address is refused.
    let r = a
        .call(b.submit("/forms/firewall", "admin_cidrs=10.9.9.0%2F24"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("shut out"), "{}", r.text);
    // The removal alone is taken.
    let r = a
        .call(b.submit(
            "/forms/firewall",
            "from_0=staff&to_0=192.168.50.0%2F24&protocol_0=tcp&remove_0=on",
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let last = a.call(bearer(get("/api/firewall"), &token)).await;
    assert_eq!(last.json["rules"], serde_json::json!([]));
    assert_eq!(last.json["egress"], false);
}

#[tokio::test]
async fn groups_and_the_monthly_quota_are_set_from_the_device_page() {
    let a = app();
    let token = a.admin_token().await;
    let (id, _) = plain_device(&a, &token, 6).await;
    let b = browser(&a).await;
    let r = a
        .call(b.submit(&format!("/forms/devices/{id}/groups"), "groups=web%2C+eu"))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let list = a.call(bearer(get("/api/devices"), &token)).await;
    assert_eq!(
        list.json["devices"][0]["groups"],
        serde_json::json!(["eu", "web"])
    );
    let too_long = format!("groups=ok%2C{}", "x".repeat(65));
    let r = a
        .call(b.submit(&format!("/forms/devices/{id}/groups"), &too_long))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let list = a.call(bearer(get("/api/devices"), &token)).await;
    assert_eq!(
        list.json["devices"][0]["groups"],
        serde_json::json!(["eu", "web"])
    );

    let path = format!("/forms/devices/{id}/quota");
    let r = a.call(b.submit(&path, "gib=1.5&action=disable")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let q = a
        .call(bearer(get(&format!("/api/devices/{id}/quota")), &token))
        .await;
    assert_eq!(q.json["monthly_bytes"], 1_610_612_736u64);
    assert_eq!(q.json["action"], "disable");
    for bad in [
        "gib=0&action=alert",
        "gib=lots&action=alert",
        "gib=2&action=explode",
    ] {
        let r = a.call(b.submit(&path, bad)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
        assert!(r.text.contains("id=\"error\""), "{bad}");
    }
    let q = a
        .call(bearer(get(&format!("/api/devices/{id}/quota")), &token))
        .await;
    assert_eq!(
        q.json["monthly_bytes"], 1_610_612_736u64,
        "a refusal changed it"
    );
    let page = a.call(b.get(&format!("/devices/{id}"))).await;
    assert!(
        page.text.contains("0 B of 1.5 GiB used this month"),
        "{}",
        page.text
    );
    let r = a
        .call(b.submit(&format!("/forms/devices/{id}/quota/remove"), ""))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let q = a
        .call(bearer(get(&format!("/api/devices/{id}/quota")), &token))
        .await;
    assert_eq!(q.status, StatusCode::NOT_FOUND);
}

async fn expiry_of(a: &App, token: &str) -> serde_json::Value {
    let list = a.call(bearer(get("/api/devices"), token)).await;
    list.json["devices"][0]["expires_at"].clone()
}

#[tokio::test]
async fn the_expiry_is_set_and_cleared_from_the_device_page_and_bad_values_change_nothing() {
    let a = app();
    let token = a.admin_token().await;
    let (id, key) = plain_device(&a, &token, 7).await;
    let b = browser(&a).await;
    assert_eq!(expiry_of(&a, &token).await, serde_json::Value::Null);
    let before = unix_now();
    let path = format!("/forms/devices/{id}/expiry");
    let r = a.call(b.submit(&path, "days=2")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let at = expiry_of(&a, &token).await.as_u64().expect("an expiry");
    assert!(
        (before + 172_800..=unix_now() + 172_800).contains(&at),
        "{at}"
    );
    for bad in ["days=0", "days=3651", "days=soon", "days=0.0001", "days=-1"] {
        let r = a.call(b.submit(&path, bad)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
        assert!(r.text.contains("id=\"error\""), "{bad}");
        assert_eq!(expiry_of(&a, &token).await, at, "{bad} changed it");
    }
    let api = format!("/api/devices/{id}/expiry");
    let r = a
        .call(bearer(
            put(&api, &serde_json::json!({"expires_in_secs": 59})),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(expiry_of(&a, &token).await, at);
    let page = a.call(b.get(&format!("/devices/{id}?done=expiry"))).await;
    assert!(page.text.contains("The expiry is saved."), "{}", page.text);
    assert!(page.text.contains("id=\"expiry-clear\""));

    let r = a
        .call(b.submit(&format!("/forms/devices/{id}/expiry/clear"), ""))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(expiry_of(&a, &token).await, serde_json::Value::Null);
    assert!(on_hub(&a, &key), "an expiry change must not touch the peer");
    let audit = a.call(bearer(get("/api/audit"), &token)).await;
    let actions: Vec<_> = audit.json["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "device.expiry")
        .map(|e| e["target"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(actions, [format!("{id} never"), format!("{id} until {at}")]);
    let missing = a
        .call(bearer(
            put(
                "/api/devices/nope/expiry",
                &serde_json::json!({"expires_in_secs": null}),
            ),
            &token,
        ))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_live_stream_is_for_signed_in_admins_and_carries_each_devices_state() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let a = app();
    let token = a.admin_token().await;
    let (id, _) = plain_device(&a, &token, 7).await;
    assert_eq!(
        a.call(get("/api/live")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let b = browser(&a).await;
    let mut req = b.get("/api/live");
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [192, 168, 0, 10],
            40000,
        ))));
    let resp = a.router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    // The first update comes at once; the stream then goes on (read only this frame).
    let mut body = resp.into_body();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("a first update")
        .expect("a frame")
        .expect("no error");
    let text = String::from_utf8(frame.into_data().expect("data").to_vec()).expect("utf-8");
    assert!(text.starts_with("event: counters\n"), "{text}");
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let counters: serde_json::Value = serde_json::from_str(data).expect("json");
    assert_eq!(counters["devices"], 1);
    assert_eq!(counters["online"], 0);
    assert_eq!(counters["states"][&id], "offline");
}

#[tokio::test]
async fn the_backup_page_sets_the_schedule_and_shows_refusals_and_failures() {
    let a = app();
    let token = a.admin_token().await;
    let b = browser(&a).await;
    let page = a.call(b.get("/backup")).await;
    assert!(page.text.contains("No passphrase is set"), "{}", page.text);
    assert!(page.text.contains("id=\"backups-none\""));
    let r = a
        .call(b.submit("/forms/backup/schedule", "passphrase=short&keep=3&totp="))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("12 to 1024 characters"), "{}", r.text);
    let v = a.call(bearer(get("/api/backups"), &token)).await;
    assert_eq!(v.json["scheduled"], false, "a refusal set it");
    let r = a
        .call(b.submit(
            "/forms/backup/schedule",
            "passphrase=a+long+daily+passphrase&keep=3&totp=",
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let v = a.call(bearer(get("/api/backups"), &token)).await;
    assert_eq!(
        (v.json["scheduled"].clone(), v.json["keep"].clone()),
        (true.into(), 3.into())
    );
    // This app has no backup source: the run fails, the page says why and keeps it.
    let r = a.call(b.submit("/forms/backup/run", "")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("not available"), "{}", r.text);
    let page = a.call(b.get("/backup")).await;
    assert!(page.text.contains("id=\"backup-error\""), "{}", page.text);
    assert!(page.text.contains("Daily, keeping the newest 3."));
}

#[tokio::test]
async fn the_backup_page_sets_tests_and_removes_the_sftp_target() {
    let a = app();
    let token = a.admin_token().await;
    let b = browser(&a).await;
    let page = a.call(b.get("/backup")).await;
    assert!(
        page.text.contains("Off: backups stay on the appliance."),
        "{}",
        page.text
    );
    let public_key = between(&page.text, "<pre id=\"offsite-public-key\">", "</pre>").to_string();
    assert!(public_key.starts_with("ssh-ed25519 "), "{public_key}");

    let host_key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIaSm1a12YtuYLZw4vHixGfKIiksPtc0T2afO+eXjnVX";
    let r = a
        .call(b.submit(
            "/forms/backup/offsite",
            "host=127.0.0.1&port=1&user=wg&dir=%2Fb&host_key=nonsense&totp=",
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("not an OpenSSH public key"), "{}", r.text);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let form = format!(
        "host=127.0.0.1&port={port}&user=wg&dir=%2Fb&host_key={}&totp=",
        url_encode(host_key)
    );
    let r = a.call(b.submit("/forms/backup/offsite", &form)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let page = a.call(b.get("/backup")).await;
    assert!(
        page.text.contains("<code>wg@127.0.0.1:/b</code>"),
        "{}",
        page.text
    );
    assert!(page.text.contains("SHA256:"), "{}", page.text);
    assert!(page.text.contains(&public_key), "the key changed");

    // Nothing listens there: the test says so, naming the address.
    let r = a.call(b.submit("/forms/backup/offsite/test", "")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert!(
        r.text.contains("The test failed: connecting to 127.0.0.1"),
        "{}",
        r.text
    );

    let r = a.call(b.submit("/forms/backup/offsite/key", "totp=")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let page = a.call(b.get("/backup")).await;
    assert!(!page.text.contains(&public_key), "the key was not replaced");

    let r = a.call(b.submit("/forms/backup/offsite/remove", "")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let v = a.call(bearer(get("/api/backups/offsite"), &token)).await;
    assert_eq!(v.json["enabled"], false);
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_ssh_page_signs_a_user_key_revokes_it_and_rotates_the_ca() {
    let a = app();
    let token = a.admin_token().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = watchgrid_sshca::SshCa::open_or_create(&dir.path().join("ssh"), unix_now() - 60)
        .expect("ca");
    assert!(a.state.ssh_ca.set(std::sync::Arc::new(ca)).is_ok());
    let b = browser(&a).await;
    let page = a.call(b.get("/ssh")).await;
    assert!(page.text.contains("id=\"ssh-certs-none\""), "{}", page.text);
    assert!(page.text.contains("@cert-authority"), "{}", page.text);

    let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .expect("key")
        .public_key()
        .to_openssh()
        .expect("openssh");
    for bad in [
        format!("public_key={}&principals=&hours=16", url_encode(&key)),
        format!("public_key={}&principals=root&hours=0", url_encode(&key)),
        "public_key=ssh-ed25519+nonsense&principals=root&hours=16".to_string(),
    ] {
        let r = a.call(b.submit("/forms/ssh/user-cert", &bad)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
        assert!(r.text.contains("id=\"error\""), "{bad}: no reason shown");
    }
    let list = a.call(bearer(get("/api/ssh/certs"), &token)).await;
    assert_eq!(
        list.json["certs"].as_array().map(Vec::len),
        Some(0),
        "a refusal signed"
    );

    let form = format!(
        "public_key={}&principals=root%2C+deploy&hours=2",
        url_encode(&key)
    );
    let r = a.call(b.submit("/forms/ssh/user-cert", &form)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let shown = html_unescape(between(
        &r.text,
        "id=\"issued-cert\" class=\"scroll\">",
        "</pre>",
    ));
    let cert = ssh_key::Certificate::from_openssh(&shown).expect("the page shows the certificate");
    assert_eq!(cert.valid_principals(), ["root", "deploy"]);
    assert_eq!(cert.valid_before() - cert.valid_after(), 2 * 3600);
    let serial = cert.serial();

    let r = a
        .call(b.submit(&format!("/forms/ssh/certs/{serial}/revoke"), ""))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let list = a.call(bearer(get("/api/ssh/certs"), &token)).await;
    assert!(
        list.json["certs"][0]["revoked_at"].is_u64(),
        "{}",
        list.text
    );
    let page = a.call(b.get("/ssh?done=revoked")).await;
    assert!(page.text.contains("revoked"), "{}", page.text);
    assert!(
        !page.text.contains(&format!("id=\"revoke-{serial}\"")),
        "still revocable"
    );

    let r = a.call(b.submit("/forms/ssh/ca/rotate", "")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let ca = a.call(bearer(get("/api/ssh/ca"), &token)).await;
    let keys = ca.json["keys"].as_array().expect("keys").clone();
    assert_eq!(keys.len(), 2, "{}", ca.text);
    let old = keys[0]["fingerprint"].as_str().expect("fp");
    let r = a
        .call(b.submit(
            "/forms/ssh/ca/retire",
            &format!("fingerprint={}", url_encode(old)),
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let ca = a.call(bearer(get("/api/ssh/ca"), &token)).await;
    assert_eq!(
        ca.json["keys"].as_array().map(Vec::len),
        Some(1),
        "{}",
        ca.text
    );
}

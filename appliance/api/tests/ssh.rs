//! The SSH CA through the API: admins sign, list and revoke; every certificate is in
//! the audit log; the CA's keys and the revocation list are public downloads.

mod common;

use common::*;
use std::sync::Arc;

fn subject() -> String {
    let key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .expect("key");
    key.public_key().to_openssh().expect("openssh")
}

#[tokio::test]
async fn certificates_are_signed_audited_listed_and_revoked_into_the_krl() {
    let a = app();
    let token = a.admin_token().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca =
        watchgrid_sshca::SshCa::open_or_create(&dir.path().join("ssh"), 1_800_000_000).expect("ca");
    assert!(a.state.ssh_ca.set(Arc::new(ca)).is_ok());

    let body = serde_json::json!({"public_key": subject(), "principals": ["root", "deploy"]});
    let r = a.call(post("/api/ssh/user-certs", &body)).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "signing without credentials"
    );
    let r = a
        .call(bearer(post("/api/ssh/user-certs", &body), &token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let serial = r.json["serial"].as_u64().expect("serial");
    let cert = ssh_key::Certificate::from_openssh(r.json["certificate"].as_str().expect("cert"))
        .expect("an OpenSSH certificate");
    assert_eq!(cert.serial(), serial);
    assert_eq!(cert.valid_principals(), ["root", "deploy"]);
    assert_eq!(cert.valid_before() - cert.valid_after(), 16 * 3600);

    let audit = a.call(bearer(get("/api/audit"), &token)).await;
    let entry = audit.json["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "ssh.cert.user")
        .expect("the certificate is audited")
        .clone();
    let target = entry["target"].as_str().expect("target");
    assert!(target.contains(&format!("serial {serial}")), "{target}");
    assert!(
        target.contains(r.json["key_fingerprint"].as_str().expect("fp")),
        "{target}"
    );
    assert!(target.contains("principals root,deploy"), "{target}");

    for bad in [
        serde_json::json!({"public_key": subject(), "principals": []}),
        serde_json::json!({"public_key": "ssh-ed25519 nonsense", "principals": ["x"]}),
        serde_json::json!({"public_key": subject(), "principals": ["x"], "validity_secs": 10}),
    ] {
        let r = a
            .call(bearer(post("/api/ssh/user-certs", &bad), &token))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
    }
    let host = serde_json::json!({"public_key": subject(), "principals": ["web-1.wg"]});
    let r = a
        .call(bearer(post("/api/ssh/host-certs", &host), &token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let empty_krl = a.call(get("/downloads/ssh-revoked.krl")).await;
    assert_eq!(empty_krl.status, StatusCode::OK);
    let r = a
        .call(bearer(
            post(
                &format!("/api/ssh/certs/{serial}/revoke"),
                &serde_json::json!({}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let krl = a.call(get("/downloads/ssh-revoked.krl")).await;
    let tail = &krl.bytes[krl.bytes.len() - 8..];
    assert_eq!(
        tail,
        serial.to_be_bytes(),
        "the revoked serial ends the KRL"
    );
    let list = a.call(bearer(get("/api/ssh/certs"), &token)).await;
    assert_eq!(list.json["certs"].as_array().map(Vec::len), Some(2));
    assert!(
        list.json["certs"][1]["revoked_at"].is_u64(),
        "{}",
        list.text
    );
    let r = a
        .call(bearer(
            post("/api/ssh/certs/999999/revoke", &serde_json::json!({})),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let pubs = a.call(get("/downloads/ssh-ca.pub")).await;
    assert!(pubs.text.starts_with("ssh-ed25519 "), "{}", pubs.text);
    let hosts = a.call(get("/downloads/ssh-known-hosts")).await;
    assert!(
        hosts.text.starts_with("@cert-authority * ssh-ed25519 "),
        "{}",
        hosts.text
    );
}

fn host_keys(n: usize) -> serde_json::Value {
    serde_json::json!({ "host_keys": (0..n).map(|_| subject()).collect::<Vec<_>>() })
}

#[tokio::test]
async fn agents_get_host_certificates_for_their_own_names_only_and_heartbeats_tell_of_revocations()
{
    let a = app();
    let admin = a.admin_token().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca =
        watchgrid_sshca::SshCa::open_or_create(&dir.path().join("ssh"), 1_800_000_000).expect("ca");
    assert!(a.state.ssh_ca.set(Arc::new(ca)).is_ok());
    let (web, web_key) = register_agent(&a, &admin, "web-1", 1).await;
    let path = "/api/agent/ssh-host-certs";

    let r = a.call(post(path, &host_keys(1))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no agent key");
    let r = a.call(bearer(post(path, &host_keys(1)), &admin)).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "an admin token is no agent key"
    );
    for bad in [
        host_keys(0),
        host_keys(9),
        serde_json::json!({"host_keys": ["nonsense"]}),
    ] {
        let r = a.call(bearer(post(path, &bad), &web_key)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
    }
    let asked = serde_json::json!({"host_keys": [subject()], "principals": ["bank.example"]});
    let r = a.call(bearer(post(path, &asked), &web_key)).await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an agent may not name principals"
    );

    let r = a.call(bearer(post(path, &host_keys(2)), &web_key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let certs = r.json["certificates"].as_array().expect("certs");
    assert_eq!(certs.len(), 2);
    let principals: Vec<&str> = certs[0]["principals"]
        .as_array()
        .expect("principals")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert_eq!(
        &principals[..3],
        ["web-1.wg", "web-1", "10.100.0.2"],
        "{principals:?}"
    );
    let cert = ssh_key::Certificate::from_openssh(certs[1]["certificate"].as_str().expect("c"))
        .expect("an OpenSSH certificate");
    assert_eq!(cert.cert_type(), ssh_key::certificate::CertType::Host);
    assert_eq!(cert.valid_before() - cert.valid_after(), 30 * 86_400);
    let audit = a.call(bearer(get("/api/audit"), &admin)).await;
    assert!(
        audit.text.contains(&format!("agent:{web}")),
        "host certificates are audited as the agent's: {}",
        audit.text
    );

    // A second device with the same name: neither gets the name any more.
    let (_, twin_key) = register_agent(&a, &admin, "WEB-1", 2).await;
    for key in [&web_key, &twin_key] {
        let r = a.call(bearer(post(path, &host_keys(1)), key)).await;
        let principals = r.json["certificates"][0]["principals"].to_string();
        assert!(
            !principals.contains("web-1") && !principals.contains("WEB-1"),
            "{principals}"
        );
    }

    // The heartbeat's ssh_etag changes when a certificate is revoked, and only then.
    let beat = serde_json::json!({"agent_version": "1"});
    let etag = |r: &Resp| r.json["ssh_etag"].as_str().expect("ssh_etag").to_string();
    let first = etag(
        &a.call(bearer(post("/api/heartbeat", &beat), &web_key))
            .await,
    );
    let same = etag(
        &a.call(bearer(post("/api/heartbeat", &beat), &web_key))
            .await,
    );
    assert_eq!(first, same);
    let serial = certs[0]["serial"].as_u64().expect("serial");
    let r = a
        .call(bearer(
            post(
                &format!("/api/ssh/certs/{serial}/revoke"),
                &serde_json::json!({}),
            ),
            &admin,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let after = etag(
        &a.call(bearer(post("/api/heartbeat", &beat), &web_key))
            .await,
    );
    assert_ne!(first, after, "a revocation must reach the agents");
}

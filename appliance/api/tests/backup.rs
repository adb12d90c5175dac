//! `POST /api/backup`: admin only, a passphrase of 12 characters at least, and with 2FA
//! on a current code, all checked before a backup is taken; every download audited.

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use watchgrid_api::hub::{BackupRefused, BackupSource};

/// Counts the backups taken; answers fixed bytes.
#[derive(Default)]
struct CountingSource(AtomicUsize);

impl BackupSource for CountingSource {
    fn take(&self, passphrase: &str) -> Result<(Vec<u8>, String), BackupRefused> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok((
            format!("backup to {passphrase}").into_bytes(),
            "watchgrid-1.wgbackup".into(),
        ))
    }

    fn verify(&self, _: &std::path::Path, _: &str) -> Result<String, BackupRefused> {
        Err(BackupRefused::Failed("not kept".into()))
    }

    fn dir(&self) -> std::path::PathBuf {
        std::path::PathBuf::from("/nonexistent")
    }

    fn stage_restore(&self, _: &[u8], _: &str) -> Result<String, BackupRefused> {
        Err(BackupRefused::Failed("not here".into()))
    }

    fn restart(&self) {}
}

fn request(passphrase: &str, totp: Option<&str>) -> serde_json::Value {
    serde_json::json!({"passphrase": passphrase, "totp": totp})
}

#[tokio::test]
async fn a_backup_needs_an_admin_a_passphrase_and_with_2fa_a_code() {
    let a = app();
    let token = a.admin_token().await;
    let body = request("a long enough passphrase", None);
    let r = a.call(bearer(post("/api/backup", &body), &token)).await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no source yet: {}",
        r.text
    );

    let source = Arc::new(CountingSource::default());
    assert!(a.state.backup.set(source.clone()).is_ok());
    let r = a.call(post("/api/backup", &body)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = a
        .call(bearer(post("/api/backup", &request("short", None)), &token))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        source.0.load(Ordering::SeqCst),
        0,
        "taken before the checks"
    );

    let r = a.call(bearer(post("/api/backup", &body), &token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.text, "backup to a long enough passphrase");
    assert_eq!(
        r.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"watchgrid-1.wgbackup\""
    );

    let (_, recovery) = enable_2fa(&a, &token).await;
    let r = a.call(bearer(post("/api/backup", &body), &token)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["error"], "two-factor code required");
    assert_eq!(source.0.load(Ordering::SeqCst), 1, "taken without the code");
    let with_code = request("a long enough passphrase", Some(&recovery[0]));
    let r = a
        .call(bearer(post("/api/backup", &with_code), &token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let audit = a.call(bearer(get("/api/audit"), &token)).await;
    let downloads = audit.json["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "backup.download")
        .count();
    assert_eq!(downloads, 2);
}

/// Scheduled backups into a real directory: each take writes `backup N to PASSPHRASE`;
/// a verify reads the file back and checks it was made with the given passphrase.
struct DirSource {
    dir: tempfile::TempDir,
    taken: AtomicUsize,
}

impl BackupSource for DirSource {
    fn take(&self, passphrase: &str) -> Result<(Vec<u8>, String), BackupRefused> {
        let n = self.taken.fetch_add(1, Ordering::SeqCst) + 1;
        Ok((
            format!("backup {n} to {passphrase}").into_bytes(),
            format!("watchgrid-{n}.wgbackup"),
        ))
    }

    fn verify(&self, file: &std::path::Path, passphrase: &str) -> Result<String, BackupRefused> {
        let text =
            std::fs::read_to_string(file).map_err(|e| BackupRefused::Failed(e.to_string()))?;
        if text.ends_with(&format!(" to {passphrase}")) {
            Ok(format!("good: {text}"))
        } else {
            Err(BackupRefused::Failed("wrong passphrase".into()))
        }
    }

    fn dir(&self) -> std::path::PathBuf {
        self.dir.path().join("backups")
    }

    fn stage_restore(&self, _: &[u8], _: &str) -> Result<String, BackupRefused> {
        Err(BackupRefused::Failed("not here".into()))
    }

    fn restart(&self) {}
}

/// The metric's sample line (`NAME VALUE`).
fn metric_line(a: &App, name: &str) -> String {
    a.state
        .metrics
        .render()
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|v| v.starts_with(' ')))
        .unwrap_or_default()
        .to_string()
}

fn metric(a: &App) -> String {
    metric_line(a, "watchgrid_backup_last_success_timestamp_seconds")
}

#[tokio::test]
async fn scheduled_backups_keep_the_newest_report_failures_and_are_verified() {
    let a = app();
    let token = a.admin_token().await;
    let source = Arc::new(DirSource {
        dir: tempfile::tempdir().expect("tempdir"),
        taken: AtomicUsize::new(0),
    });
    assert!(a.state.backup.set(source.clone()).is_ok());
    let run = || bearer(post("/api/backups/run", &serde_json::json!({})), &token);

    // No passphrase yet: the run fails, says why, and the failure is an alert.
    let r = a.call(run()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let v = a.call(bearer(get("/api/backups"), &token)).await;
    assert!(
        v.json["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("no backup passphrase"),
        "{}",
        v.text
    );
    assert_eq!(v.json["last_success_at"], serde_json::Value::Null);
    assert_eq!(
        metric(&a),
        "watchgrid_backup_last_success_timestamp_seconds 0"
    );
    let alerts = a.call(bearer(get("/api/alerts"), &token)).await;
    assert!(alerts.text.contains("backup_failed"), "{}", alerts.text);

    let schedule = serde_json::json!({"passphrase": "the daily passphrase", "keep": 2});
    let r = a
        .call(bearer(put("/api/backups/schedule", &schedule), &token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let short = serde_json::json!({"passphrase": "short", "keep": 2});
    let r = a
        .call(bearer(put("/api/backups/schedule", &short), &token))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    for _ in 0..3 {
        let r = a.call(run()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let mut kept: Vec<String> = std::fs::read_dir(source.dir())
        .expect("backup dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["watchgrid-2.wgbackup", "watchgrid-3.wgbackup"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(source.dir().join("watchgrid-3.wgbackup"))
            .expect("meta")
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "a backup open to others");
    let v = a.call(bearer(get("/api/backups"), &token)).await;
    assert_eq!(
        v.json["last_error"],
        serde_json::Value::Null,
        "a success clears the error"
    );
    let success = v.json["last_success_at"].as_u64().expect("a success time");
    assert_eq!(
        metric(&a),
        format!("watchgrid_backup_last_success_timestamp_seconds {success}")
    );
    assert_eq!(
        v.json["stored"][0]["name"], "watchgrid-3.wgbackup",
        "newest first"
    );

    let r = a
        .call(bearer(
            post(
                "/api/backups/watchgrid-3.wgbackup/verify",
                &serde_json::json!({}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["ok"], true, "{}", r.text);
    let v = a.call(bearer(get("/api/backups"), &token)).await;
    assert_eq!(v.json["stored"][0]["verification"]["ok"], true);
    assert_eq!(v.json["stored"][1]["verification"], serde_json::Value::Null);
    // A new passphrase: the old file no longer checks out, and the table says so.
    let other = serde_json::json!({"passphrase": "another long passphrase"});
    a.call(bearer(put("/api/backups/schedule", &other), &token))
        .await;
    let r = a
        .call(bearer(
            post(
                "/api/backups/watchgrid-2.wgbackup/verify",
                &serde_json::json!({}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.json["ok"], false, "{}", r.text);
    for missing in ["nope.wgbackup", "..%2Fwatchgrid-3.wgbackup"] {
        let r = a
            .call(bearer(
                post(
                    &format!("/api/backups/{missing}/verify"),
                    &serde_json::json!({}),
                ),
                &token,
            ))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{missing}");
    }
}

/// Stages whatever it is given, when the passphrase is right; counts restarts.
#[derive(Default)]
struct Staging {
    staged: std::sync::Mutex<Vec<Vec<u8>>>,
    restarts: AtomicUsize,
}

impl BackupSource for Staging {
    fn take(&self, _: &str) -> Result<(Vec<u8>, String), BackupRefused> {
        Err(BackupRefused::Failed("not here".into()))
    }

    fn verify(&self, _: &std::path::Path, _: &str) -> Result<String, BackupRefused> {
        Err(BackupRefused::Failed("not here".into()))
    }

    fn dir(&self) -> std::path::PathBuf {
        std::path::PathBuf::from("/nonexistent")
    }

    fn stage_restore(&self, backup: &[u8], passphrase: &str) -> Result<String, BackupRefused> {
        if passphrase != "the right passphrase" {
            return Err(BackupRefused::Invalid("wrong passphrase".into()));
        }
        self.staged.lock().expect("lock").push(backup.to_vec());
        Ok("a good backup".into())
    }

    fn restart(&self) {
        self.restarts.fetch_add(1, Ordering::SeqCst);
    }
}

fn multipart(fields: &[(&str, &[u8])]) -> axum::http::Request<axum::body::Body> {
    let boundary = "wgboundary1234";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").bytes(),
        );
        if *name == "backup" {
            body.extend(b"; filename=\"a.wgbackup\"\r\nContent-Type: application/octet-stream");
        }
        body.extend(b"\r\n\r\n");
        body.extend(*value);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    axum::http::Request::post("/api/setup/restore")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header(header::ACCEPT, "application/json")
        .body(axum::body::Body::from(body))
        .expect("request")
}

#[tokio::test]
async fn a_first_boot_restore_needs_the_setup_token_and_a_good_backup_and_only_once() {
    let a = app();
    let source = Arc::new(Staging::default());
    assert!(a.state.backup.set(source.clone()).is_ok());
    let file: &[u8] = b"age-encryption.org/v1 ...";
    let r = a
        .call(multipart(&[
            ("setup_token", b"wrong"),
            ("passphrase", b"the right passphrase"),
            ("backup", file),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = a
        .call(multipart(&[
            ("setup_token", TOKEN.as_bytes()),
            ("passphrase", b"a wrong one"),
            ("backup", file),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("wrong passphrase"), "{}", r.text);
    let r = a
        .call(multipart(&[
            ("setup_token", TOKEN.as_bytes()),
            ("passphrase", b"the right passphrase"),
        ]))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no file: {}",
        r.text
    );
    assert!(source.staged.lock().expect("lock").is_empty());
    assert_eq!(source.restarts.load(Ordering::SeqCst), 0);

    let r = a
        .call(multipart(&[
            ("setup_token", TOKEN.as_bytes()),
            ("passphrase", b"the right passphrase"),
            ("backup", file),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"], "restoring");
    assert_eq!(
        source.staged.lock().expect("lock").as_slice(),
        [file.to_vec()]
    );
    assert_eq!(source.restarts.load(Ordering::SeqCst), 1);
    // The token is spent: neither a second restore nor a setup can follow.
    let r = a
        .call(multipart(&[
            ("setup_token", TOKEN.as_bytes()),
            ("passphrase", b"the right passphrase"),
            ("backup", file),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = a.call(post("/api/setup", &setup_body(TOKEN))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

#[tokio::test]
async fn after_setup_a_restore_through_the_wizard_is_refused() {
    let a = app();
    a.setup().await;
    let source = Arc::new(Staging::default());
    assert!(a.state.backup.set(source.clone()).is_ok());
    let r = a
        .call(multipart(&[
            ("setup_token", TOKEN.as_bytes()),
            ("passphrase", b"the right passphrase"),
            ("backup", b"x"),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(source.staged.lock().expect("lock").is_empty());
}

const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIaSm1a12YtuYLZw4vHixGfKIiksPtc0T2afO+eXjnVX";

#[tokio::test]
async fn offsite_settings_are_checked_and_need_a_code_with_2fa() {
    let a = app();
    let token = a.admin_token().await;
    let r = a.call(get("/api/backups/offsite")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let v = a.call(bearer(get("/api/backups/offsite"), &token)).await;
    assert_eq!(v.status, StatusCode::OK, "{}", v.text);
    assert_eq!(v.json["enabled"], false);
    let public_key = v.json["public_key"].as_str().expect("a key").to_string();
    assert!(public_key.starts_with("ssh-ed25519 "), "{public_key}");
    let again = a.call(bearer(get("/api/backups/offsite"), &token)).await;
    assert_eq!(
        again.json["public_key"],
        public_key.as_str(),
        "one key, kept"
    );

    let good = serde_json::json!({"host": "backup.example.net", "user": "wg",
        "dir": "backups", "host_key": format!("[backup.example.net]:22 {HOST_KEY}")});
    for (field, bad) in [
        ("host", serde_json::json!("bad host!")),
        ("user", serde_json::json!("")),
        ("dir", serde_json::json!("")),
        ("host_key", serde_json::json!("not a key")),
        ("port", serde_json::json!(0)),
    ] {
        let mut body = good.clone();
        body[field] = bad;
        let r = a
            .call(bearer(put("/api/backups/offsite", &body), &token))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {}",
            r.text
        );
    }
    let v = a.call(bearer(get("/api/backups/offsite"), &token)).await;
    assert_eq!(
        v.json["enabled"], false,
        "a refused change changed something"
    );

    let r = a
        .call(bearer(put("/api/backups/offsite", &good), &token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["enabled"], true);
    assert_eq!(r.json["port"], 22);
    assert_eq!(r.json["public_key"], public_key.as_str());
    let fingerprints = r.json["host_key_fingerprints"].as_array().expect("list");
    assert_eq!(fingerprints.len(), 1);
    assert!(fingerprints[0]
        .as_str()
        .unwrap_or_default()
        .starts_with("SHA256:"));

    let (_, recovery) = enable_2fa(&a, &token).await;
    let elsewhere = serde_json::json!({"host": "evil.example.net", "user": "x",
        "dir": "d", "host_key": HOST_KEY});
    let r = a
        .call(bearer(put("/api/backups/offsite", &elsewhere), &token))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = a
        .call(bearer(
            post("/api/backups/offsite/key", &serde_json::json!({})),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let v = a.call(bearer(get("/api/backups/offsite"), &token)).await;
    assert_eq!(v.json["host"], "backup.example.net");
    assert_eq!(v.json["public_key"], public_key.as_str());

    let r = a
        .call(bearer(
            post(
                "/api/backups/offsite/key",
                &serde_json::json!({"totp": recovery[0]}),
            ),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_ne!(r.json["public_key"], public_key.as_str(), "a new key");

    let r = a.call(bearer(delete("/api/backups/offsite"), &token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["enabled"], false);
    let audit = a.call(bearer(get("/api/audit"), &token)).await;
    for action in [
        "backup.offsite",
        "backup.offsite.key",
        "backup.offsite.remove",
    ] {
        assert!(
            audit.json["entries"]
                .as_array()
                .expect("entries")
                .iter()
                .any(|e| e["action"] == action),
            "{action} not audited"
        );
    }
}

#[tokio::test]
async fn a_failed_copy_off_the_box_keeps_the_backup_and_is_reported() {
    let a = app();
    let token = a.admin_token().await;
    let source = Arc::new(DirSource {
        dir: tempfile::tempdir().expect("tempdir"),
        taken: AtomicUsize::new(0),
    });
    assert!(a.state.backup.set(source.clone()).is_ok());
    let schedule = serde_json::json!({"passphrase": "the daily passphrase"});
    a.call(bearer(put("/api/backups/schedule", &schedule), &token))
        .await;
    let run = || bearer(post("/api/backups/run", &serde_json::json!({})), &token);
    let r = a.call(run()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["offsite"], serde_json::Value::Null, "copies are off");

    // Nothing listens on this loopback port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let target = serde_json::json!({"host": "127.0.0.1", "port": port, "user": "wg",
        "dir": "/backups", "host_key": HOST_KEY});
    let r = a
        .call(bearer(put("/api/backups/offsite", &target), &token))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = a
        .call(bearer(
            post("/api/backups/offsite/test", &serde_json::json!({})),
            &token,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["ok"], false);
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("connecting to 127.0.0.1"),
        "{}",
        r.text
    );

    let r = a.call(run()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "watchgrid-2.wgbackup");
    assert_eq!(r.json["offsite"]["ok"], false, "{}", r.text);
    assert!(
        source.dir().join("watchgrid-2.wgbackup").is_file(),
        "the local backup is kept"
    );
    let v = a.call(bearer(get("/api/backups/offsite"), &token)).await;
    assert!(
        v.json["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("connecting"),
        "{}",
        v.text
    );
    assert_eq!(v.json["last_success_at"], serde_json::Value::Null);
    assert!(v.json["last_attempt_at"].as_u64().is_some());
    assert_eq!(
        metric_line(
            &a,
            "watchgrid_backup_offsite_last_success_timestamp_seconds"
        ),
        "watchgrid_backup_offsite_last_success_timestamp_seconds 0"
    );
    let alerts = a.call(bearer(get("/api/alerts"), &token)).await;
    assert!(
        alerts.text.contains("backup_offsite_failed"),
        "{}",
        alerts.text
    );
    let local = a.call(bearer(get("/api/backups"), &token)).await;
    assert_eq!(
        local.json["last_error"],
        serde_json::Value::Null,
        "the local run succeeded"
    );

    let cookie = a.login_cookie().await;
    let page = a.call(with(get("/backup"), header::COOKIE, &cookie)).await;
    assert!(page.text.contains("id=\"offsite-error\""), "{}", page.text);
}

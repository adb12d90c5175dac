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

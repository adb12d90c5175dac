//! `/api/update`: an admin uploads a bundle; only one signed by a key the image trusts,
//! intact, for this machine and not older than the running version is staged, and
//! nothing is staged or asked for otherwise. The outcome after the reboot shows in the
//! view, in `/healthz` and, once, in the audit log.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use watchgrid_api::update::UpdateSite;
use watchgrid_update::bundle::{self, Contents};
use watchgrid_update::keys::SigningKey;
use watchgrid_update::manifest::{SlotIds, SLOT_PLACEHOLDER};
use watchgrid_update::slots::Slot;
use watchgrid_update::state::{self, Outcome, Record};

struct Site {
    dir: tempfile::TempDir,
    key: SigningKey,
}

impl Site {
    fn update_dir(&self) -> PathBuf {
        self.dir.path().join("update")
    }

    /// A bundle of `version` signed by `key`, as bytes.
    fn bundle(&self, key: &SigningKey, version: &str, arch: &str) -> Vec<u8> {
        let root = self.dir.path().join("root.squashfs");
        let uki = self.dir.path().join("uki.efi");
        std::fs::write(&root, vec![7u8; 100_000]).expect("root");
        std::fs::write(&uki, b"MZ kernel").expect("uki");
        let out = self.dir.path().join("out.update");
        let cmdline = format!("root=PARTUUID={SLOT_PLACEHOLDER} ro");
        let contents = Contents {
            version,
            arch,
            cmdline: &cmdline,
            slots: SlotIds {
                a: "5a7c0b10-5e2b-4c39-9e4f-57a7c4c0d00a".into(),
                b: "5a7c0b10-5e2b-4c39-9e4f-57a7c4c0d00b".into(),
            },
            root: &root,
            uki: &uki,
        };
        bundle::create(&out, key, &contents).expect("bundle");
        std::fs::read(&out).expect("read")
    }
}

/// The app with updates set up: running 1.0.0 from slot A, trusting one key.
fn with_updates(a: &App) -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir");
    let key = SigningKey::generate().expect("key");
    std::fs::write(keys.join("release.pub"), key.public().to_base64()).expect("pub");
    let site = Site { dir, key };
    let update = UpdateSite {
        dir: site.update_dir(),
        trusted_keys: keys,
        running_version: watchgrid_update::semver::Version::new(1, 0, 0),
        running_slot: Some(Slot::A),
    };
    assert!(a.state.update.set(Arc::new(update)).is_ok());
    site
}

fn upload(query: &str, body: Vec<u8>, token: &str) -> Request<Body> {
    let req = Request::post(format!("/api/update{query}"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::HOST, "vpn.example.com")
        .body(Body::from(body))
        .expect("request");
    bearer(req, token)
}

fn nothing_staged(dir: &Path) {
    for name in [state::STAGED, state::REQUEST, "upload.partial"] {
        assert!(!dir.join(name).exists(), "{name} is there");
    }
}

#[tokio::test]
async fn only_a_trusted_intact_newer_bundle_for_this_machine_is_staged() {
    let a = app();
    let token = a.admin_token().await;
    let site = with_updates(&a);
    let good = site.bundle(&site.key, "1.1.0", watchgrid_update::ARCH);

    let anonymous = Request::post("/api/update")
        .header(header::HOST, "vpn.example.com")
        .body(Body::from(good.clone()))
        .expect("request");
    assert_eq!(a.call(anonymous).await.status, StatusCode::UNAUTHORIZED);

    let other = SigningKey::generate().expect("key");
    let mut flipped = good.clone();
    let at = flipped.len() - 5_000;
    flipped[at] ^= 1;
    let refused = [
        (
            "garbage",
            b"not a bundle at all".to_vec(),
            "",
            "not a watchgrid update bundle",
        ),
        (
            "another key",
            site.bundle(&other, "1.1.0", watchgrid_update::ARCH),
            "",
            "does not verify",
        ),
        ("a flipped byte", flipped, "", "damaged"),
        (
            "another architecture",
            site.bundle(&site.key, "1.1.0", "aarch64"),
            "",
            "is for aarch64",
        ),
        (
            "an older version",
            site.bundle(&site.key, "0.9.0", watchgrid_update::ARCH),
            "",
            "older than the running 1.0.0",
        ),
        ("zero tries", good.clone(), "?tries=0", "tries"),
    ];
    for (what, body, query, why) in refused {
        let r = a.call(upload(query, body, &token)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {}",
            r.text
        );
        assert!(r.text.contains(why), "{what}: {}", r.text);
        nothing_staged(&site.update_dir());
    }

    let r = a
        .call(upload("?tries=2&reboot=true", good.clone(), &token))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["busy"], true);
    assert_eq!(
        std::fs::read(site.update_dir().join(state::STAGED)).expect("staged"),
        good
    );
    let request: state::Request = state::read(&site.update_dir(), state::REQUEST)
        .expect("read")
        .expect("request");
    assert_eq!(
        request,
        state::Request {
            allow_downgrade: false,
            reboot: true,
            tries: 2
        }
    );

    let r = a.call(upload("", good, &token)).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "a second install while one waits: {}",
        r.text
    );
    let audit = a.call(bearer(get("/api/audit"), &token)).await;
    assert_eq!(
        audit.text.matches("update.staged").count(),
        1,
        "{}",
        audit.text
    );

    let view = a.call(bearer(get("/api/update"), &token)).await;
    assert_eq!(view.json["running_version"], "1.0.0");
    assert_eq!(view.json["running_slot"], "a");
    assert_eq!(view.json["busy"], true);
}

#[tokio::test]
async fn an_older_bundle_is_staged_when_a_downgrade_is_asked_for() {
    let a = app();
    let token = a.admin_token().await;
    let site = with_updates(&a);
    let old = site.bundle(&site.key, "0.9.0", watchgrid_update::ARCH);
    let r = a.call(upload("?allow_downgrade=true", old, &token)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert!(site.update_dir().join(state::STAGED).exists());
}

#[tokio::test]
async fn a_rollback_shows_in_the_view_in_healthz_and_once_in_the_audit_log() {
    let a = app();
    let token = a.admin_token().await;
    let site = with_updates(&a);
    let r = a.call(get("/healthz")).await;
    assert!(r.json.get("update").is_none(), "no update yet: {}", r.text);
    std::fs::create_dir_all(site.update_dir()).expect("mkdir");
    let record = Record {
        from_version: "1.0.0".into(),
        from_slot: Slot::A,
        to_version: "1.1.0".into(),
        to_slot: Slot::B,
        generation: 2,
        applied_at: 100,
        applied_boot: "boot-1".into(),
        outcome: Outcome::RolledBack,
        decided_at: Some(200),
    };
    state::write(&site.update_dir(), state::RECORD, &record).expect("write");
    watchgrid_api::update::audit_outcome(&a.state);
    watchgrid_api::update::audit_outcome(&a.state);

    let said = "update to 1.1.0 failed, rolled back to 1.0.0";
    let view = a.call(bearer(get("/api/update"), &token)).await;
    assert_eq!(view.json["outcome"], "rolled_back", "{}", view.text);
    assert_eq!(view.json["summary"], said);
    assert_eq!(a.call(get("/healthz")).await.json["update"], said);
    let audit = a.call(bearer(get("/api/audit"), &token)).await;
    assert_eq!(
        audit.text.matches("update.rolled_back").count(),
        1,
        "{}",
        audit.text
    );
}

#[tokio::test]
async fn the_settings_page_shows_the_version_the_outcome_and_the_upload_form() {
    let a = app();
    a.setup().await;
    let cookie = a.login_cookie().await;
    let page = a
        .call(with(get("/settings"), header::COOKIE, &cookie))
        .await;
    assert!(
        page.text.contains("id=\"update-off\""),
        "no update site yet: {}",
        page.status
    );
    let site = with_updates(&a);
    std::fs::create_dir_all(site.update_dir()).expect("mkdir");
    let record = Record {
        from_version: "0.9.0".into(),
        from_slot: Slot::B,
        to_version: "1.0.0".into(),
        to_slot: Slot::A,
        generation: 3,
        applied_at: 100,
        applied_boot: "boot-1".into(),
        outcome: Outcome::Good,
        decided_at: Some(200),
    };
    state::write(&site.update_dir(), state::RECORD, &record).expect("write");
    let page = a
        .call(with(get("/settings"), header::COOKIE, &cookie))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text
            .contains("<strong id=\"update-running\">Watchgrid 1.0.0</strong> from root slot A"),
        "{}",
        page.text
    );
    assert!(page.text.contains("updated from 0.9.0 to 1.0.0"));
    assert!(page.text.contains("id=\"update-form\"") && page.text.contains("name=\"csrf\""));
    let script = a.call(get("/static/app.js")).await;
    assert!(
        script.text.contains("'x-csrf-token'")
            && script.text.contains("getElementById('update-form')")
    );
}

#[tokio::test]
async fn an_install_that_stopped_reporting_does_not_block_the_next_upload() {
    let a = app();
    let token = a.admin_token().await;
    let site = with_updates(&a);
    std::fs::create_dir_all(site.update_dir()).expect("mkdir");
    let mut progress = state::Progress {
        phase: state::Phase::Writing,
        percent: 40,
        version: Some("1.1.0".into()),
        detail: "writing the inactive root slot".into(),
        at: state::now(),
    };
    state::write(&site.update_dir(), state::PROGRESS, &progress).expect("write");
    let good = site.bundle(&site.key, "1.1.0", watchgrid_update::ARCH);
    let r = a.call(upload("", good.clone(), &token)).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "an install is writing: {}",
        r.text
    );
    progress.at -= 3600;
    state::write(&site.update_dir(), state::PROGRESS, &progress).expect("write");
    let r = a.call(upload("", good, &token)).await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "the silent one is dead: {}",
        r.text
    );
}

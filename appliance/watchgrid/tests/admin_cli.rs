//! `watchgrid admin` against real data dirs.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use watchgrid_store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_watchgrid");

fn provisioned_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let store = Store::open(dir.path()).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(watchgrid_api::routes::setup::provision(
        &store,
        "admin",
        "first password here",
        "vpn.example.com:51820",
        None,
        ("10.100.0.0".parse().expect("net"), 16),
        watchgrid_store::TlsChoice::Internal,
    ))
    .expect("provision");
    dir
}

fn admin(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .arg("admin")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watchgrid");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_reports_a_stopped_data_dir() {
    let dir = provisioned_dir();
    let d = dir.path().to_str().expect("utf8");
    let (ok, out, err) = admin(&["status", "--data-dir", d], "");
    assert!(ok, "{err}");
    assert!(out.contains("setup:             complete"), "{out}");
    assert!(out.contains("admins:            admin"), "{out}");
    assert!(
        out.contains("endpoint:          vpn.example.com:51820"),
        "{out}"
    );
}

/// An API token of `username`, as `POST /api/tokens` stores it.
fn plant_api_token(dir: &std::path::Path, username: &str) {
    let store = Store::open(dir).expect("store");
    store
        .api_tokens
        .put(
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            &watchgrid_store::ApiToken {
                token_hash: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
                    .into(),
                name: "automation".into(),
                username: username.into(),
                created_at: 1,
                expires_at: None,
                last_used_at: None,
                epoch: 0,
            },
        )
        .expect("put token");
}

#[test]
fn reset_password_replaces_the_hash_and_refuses_weak_input() {
    let dir = provisioned_dir();
    let d = dir.path().to_str().expect("utf8");
    let (ok, _, err) = admin(&["reset-password", "--data-dir", d], "short\n");
    assert!(!ok && err.contains("at least 12"), "{err}");
    let (ok, _, err) = admin(
        &["reset-password", "--data-dir", d, "--username", "nobody"],
        "x\n",
    );
    assert!(!ok && err.contains("no admin named"), "{err}");
    plant_api_token(dir.path(), "admin");
    let (ok, out, err) = admin(
        &["reset-password", "--data-dir", d],
        "the second password\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("sessions are signed out"));
    let store = Store::open(dir.path()).expect("store");
    let a = store.admins.get("admin").expect("get").expect("admin");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let verify = |p: &str| {
        rt.block_on(watchgrid_api::auth::verify_password(
            p.into(),
            Some(a.password_hash.expose().clone()),
        ))
        .expect("verify")
    };
    assert!(verify("the second password"));
    assert!(!verify("first password here"));
    assert!(
        a.credential_epoch > 0,
        "sessions of the old epoch stay valid"
    );
    assert!(
        store.api_tokens.list().expect("tokens").is_empty(),
        "the reset left an API token working"
    );
    let audit: Vec<String> = store
        .audit
        .list()
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(audit.contains(&"admin.reset_password".to_string()));
}

#[test]
fn a_running_daemon_keeps_admin_commands_out() {
    let dir = provisioned_dir();
    let d = dir.path().to_str().expect("utf8");
    let _held = Store::open(dir.path()).expect("store");
    let (ok, _, err) = admin(&["status", "--data-dir", d], "");
    assert!(
        !ok && err.contains("in use by a running watchgrid"),
        "{err}"
    );
}

#[test]
fn finding_13_rotate_ca_retires_the_whole_ca_and_only_with_the_daemon_stopped() {
    let dir = provisioned_dir();
    let d = dir.path().to_str().expect("utf8");
    let (ok, _, err) = admin(&["rotate-ca", "--data-dir", d], "");
    assert!(!ok && err.contains("no internal CA"), "{err}");
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).expect("mkdir");
    for f in [
        "ca.key",
        "ca.crt",
        "ca-scope.json",
        "leaf.key",
        "leaf.crt",
        "leaf.json",
    ] {
        std::fs::write(tls.join(f), f).expect("write");
    }
    {
        // A running daemon holds the store.
        let _running = Store::open(dir.path()).expect("store");
        let (ok, _, err) = admin(&["rotate-ca", "--data-dir", d], "");
        assert!(!ok && err.contains("stop it first"), "{err}");
        assert!(
            tls.join("ca.key").exists(),
            "rotated under a running daemon"
        );
    }
    let (ok, out, err) = admin(&["rotate-ca", "--data-dir", d], "");
    assert!(ok, "{err}");
    assert!(out.contains("re-enroll"), "{out}");
    let retired: Vec<std::path::PathBuf> = std::fs::read_dir(&tls)
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(retired.len(), 1, "{retired:?}");
    for f in [
        "ca.key",
        "ca.crt",
        "ca-scope.json",
        "leaf.key",
        "leaf.crt",
        "leaf.json",
    ] {
        assert!(!tls.join(f).exists(), "{f} left in place");
        assert_eq!(
            std::fs::read_to_string(retired[0].join(f)).expect("kept"),
            f
        );
    }
    let store = Store::open(dir.path()).expect("store");
    let audit: Vec<String> = store
        .audit
        .list()
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(audit.contains(&"admin.rotate_ca".to_string()));
}

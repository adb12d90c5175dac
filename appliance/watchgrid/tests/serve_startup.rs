//! `watchgrid serve` refuses to start on a stored policy it cannot enforce, or with a
//! secret file others can read.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use watchgrid_store::{Migration, MigrationError, Store, FIREWALL_KEY, MIGRATIONS};

const BIN: &str = env!("CARGO_BIN_EXE_watchgrid");

/// A forward rule with a protocol no build accepts, as if written by hand or by a
/// future build.
fn plant_bad_rule(db: &sled::Db) -> Result<(), MigrationError> {
    let policy = r#"{"admin_cidrs":null,"egress":false,"rules":[{"from_group":"ops","to_group":"db","to_cidr":null,"protocol":"sctp","ports":[]}]}"#;
    let tree = db.open_tree("firewall")?;
    tree.insert(FIREWALL_KEY, policy.as_bytes())?;
    tree.flush()?;
    Ok(())
}

fn last_migration_then_plant(db: &sled::Db) -> Result<(), MigrationError> {
    if let Some(last) = MIGRATIONS.last() {
        (last.run)(db)?;
    }
    plant_bad_rule(db)
}

#[test]
fn a_stored_rule_that_does_not_parse_stops_the_start_and_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let data = dir.path().join("data");
    // This build's migrations, the last one also planting the record, so the data
    // stays at the schema version serve expects.
    let mut steps: Vec<Migration> = MIGRATIONS.to_vec();
    if let Some(last) = steps.last_mut() {
        last.run = last_migration_then_plant;
    }
    drop(Store::open_with(&data, &steps).expect("plant"));
    // This process's umask made sled's files 0644; the daemon makes its own private.
    make_private(&data);
    let err = refused_start(dir.path(), &data);
    assert!(
        err.contains("from group \"ops\" to group \"db\"") && err.contains("protocol"),
        "{err}"
    );
}

/// chmod go-rwx, recursively.
fn make_private(path: &std::path::Path) {
    let mode = if path.is_dir() { 0o700 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir") {
            make_private(&entry.expect("entry").path());
        }
    }
}

#[test]
fn finding_12_a_secret_file_others_can_read_stops_the_start_and_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // The internal CA's key, as a careless copy back from a backup would leave it.
    std::fs::create_dir(data.join("tls")).expect("mkdir");
    let key = data.join("tls/ca.key");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = refused_start(dir.path(), &data);
    assert!(
        err.contains(&key.display().to_string()) && err.contains("chmod go-rwx"),
        "{err}"
    );
    assert!(
        !data.join("db").exists(),
        "the store was opened before the secrets were checked"
    );
}

/// Runs `watchgrid serve` on `data`, which must refuse to start; returns its stderr.
fn refused_start(dir: &std::path::Path, data: &std::path::Path) -> String {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--firewall",
            "off",
            "--wg-interface",
            "wgtest-bad0",
        ])
        .arg("--data-dir")
        .arg(data)
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watchgrid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watchgrid serve kept running on a data dir it must refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    err
}

//! Backups of a real data dir: what goes in comes back out, and every kind of bad file
//! is refused with its own message before anything is written.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use watchgrid_backup::{open, restore, take, BackupError, Manifest, FORMAT};
use watchgrid_store::{Device, Store};

const PASSPHRASE: &str = "correct horse battery staple";

fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

fn device(n: u8) -> Device {
    Device {
        id: format!("dev-{n}"),
        name: format!("host-{n}"),
        public_key: watchgrid_core::PublicKey([n; 32]),
        address_v4: std::net::Ipv4Addr::UNSPECIFIED,
        address_v6: None,
        enabled: true,
        created_at: 1,
        expires_at: None,
        agent_key_hash: String::new(),
        last_endpoint: None,
        groups: vec!["web".into()],
        allow_commands: false,
    }
}

/// A data dir as the daemon leaves it: a store with devices, the hub key, TLS and ACME
/// files, and a leftover temporary file that must not travel.
fn data_dir() -> (tempfile::TempDir, Store, watchgrid_core::Secret) {
    let dir = private_dir();
    let store = Store::open(dir.path()).expect("open");
    for n in 1..=3 {
        store
            .create_device(device(n), "10.9.0.0".parse().expect("ip"), 24)
            .expect("create");
    }
    let key = watchgrid_core::Secret::generate_private();
    let write = |rel: &str, body: &[u8]| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, body).expect("write");
    };
    write(
        "wg-private.key",
        format!("{}\n", key.to_base64()).as_bytes(),
    );
    write("tls/ca.key", b"ca key");
    write("tls/ca.pem", b"ca cert");
    write("tls/retired-1/ca.key", b"old ca");
    write("acme/account", b"acme account");
    write("tls/leaf.key.tmp", b"half written");
    write("logs/not-carried", b"log index");
    (dir, store, key)
}

fn backup_of(store: &Store, dir: &Path) -> Vec<u8> {
    take(store, dir, 1_700_000_000)
        .expect("take")
        .seal(PASSPHRASE, Vec::new())
        .expect("seal")
}

#[test]
fn a_restored_data_dir_has_the_same_store_key_and_tls_files() {
    let (dir, store, key) = data_dir();
    let bytes = backup_of(&store, dir.path());
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));

    let opened = open(bytes.as_slice(), PASSPHRASE).expect("open");
    assert_eq!(opened.manifest.hub_public_key, key.public_key().to_string());
    assert_eq!(opened.manifest.format, FORMAT);
    assert_eq!(opened.manifest.created_at, 1_700_000_000);
    let mut carried: Vec<_> = opened.files.iter().map(|f| f.path.as_str()).collect();
    carried.sort();
    assert_eq!(
        carried,
        [
            "acme/account",
            "tls/ca.key",
            "tls/ca.pem",
            "tls/retired-1/ca.key",
            "wg-private.key"
        ]
    );

    let target = private_dir();
    let new_dir = target.path().join("data");
    restore(&opened, &new_dir).expect("restore");
    for rel in carried {
        let path = new_dir.join(rel);
        assert_eq!(
            std::fs::read(&path).expect("read"),
            std::fs::read(dir.path().join(rel)).expect("read"),
            "{rel}"
        );
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{rel} is open to others");
    }
    let restored = Store::open(&new_dir).expect("the restored store opens");
    let mut before = store.devices.list().expect("list");
    let mut after = restored.devices.list().expect("list");
    before.sort_by(|a, b| a.id.cmp(&b.id));
    after.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(before, after);
    assert!(!new_dir.join(".restoring").exists());

    // Over a data dir that holds anything, a restore is refused.
    match restore(&opened, dir.path()) {
        Err(BackupError::NotEmpty(_)) => {}
        other => panic!("restoring over a data dir: {other:?}"),
    }
}

fn refused(bytes: &[u8], passphrase: &str) -> BackupError {
    match open(bytes, passphrase) {
        Ok(_) => panic!("a bad backup was accepted"),
        Err(e) => e,
    }
}

#[test]
fn a_wrong_passphrase_a_cut_file_and_a_flipped_byte_are_each_refused() {
    let (dir, store, _) = data_dir();
    let bytes = backup_of(&store, dir.path());
    let e = refused(&bytes, "not the passphrase at all");
    assert!(matches!(e, BackupError::WrongPassphrase), "{e}");
    assert!(e.to_string().contains("wrong passphrase"));

    for cut in [10, 200, bytes.len() / 2, bytes.len() - 17, bytes.len() - 1] {
        let e = refused(&bytes[..cut], PASSPHRASE);
        assert!(
            matches!(e, BackupError::NotAge | BackupError::Damaged(_)),
            "cut at {cut}: {e}"
        );
    }
    for at in [40, 150, bytes.len() / 3, bytes.len() - 5] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x01;
        let e = refused(&flipped, PASSPHRASE);
        assert!(
            matches!(
                e,
                BackupError::NotAge | BackupError::Damaged(_) | BackupError::WrongPassphrase
            ),
            "flip at {at}: {e}"
        );
    }
    let e = refused(b"PK\x03\x04 a zip file", PASSPHRASE);
    assert!(matches!(e, BackupError::NotAge), "{e}");
}

#[test]
fn a_backup_from_a_newer_watchgrid_is_refused_by_name() {
    let (dir, store, _) = data_dir();
    let contents = take(&store, dir.path(), 1).expect("take");
    let future = |parts| Manifest {
        format: FORMAT,
        watchgrid_version: "99.0.0".into(),
        schema: contents.store.schema,
        hub_public_key: String::new(),
        created_at: 1,
        parts,
    };
    let bytes = watchgrid_backup::seal(
        future,
        &contents.store,
        &contents.files,
        PASSPHRASE,
        Vec::new(),
    )
    .expect("seal");
    let e = refused(&bytes, PASSPHRASE);
    assert!(matches!(e, BackupError::Newer { .. }), "{e}");
    assert!(e.to_string().contains("made by watchgrid 99.0.0"), "{e}");

    let mut newer_store = contents.store;
    newer_store.schema += 1;
    let ours = |parts| Manifest {
        format: FORMAT,
        watchgrid_version: watchgrid_backup::VERSION.into(),
        schema: newer_store.schema,
        hub_public_key: String::new(),
        created_at: 1,
        parts,
    };
    let bytes =
        watchgrid_backup::seal(ours, &newer_store, &[], PASSPHRASE, Vec::new()).expect("seal");
    let e = refused(&bytes, PASSPHRASE);
    assert!(e.to_string().contains("schema"), "{e}");
}

/// Encrypts a hand-made tar: what a hostile file could hold, which `seal` never writes.
fn hostile(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, body) in entries {
        let mut header = tar::Header::new_gnu();
        let raw = &mut header.as_gnu_mut().expect("gnu").name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(body.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append(&header, *body).expect("append");
    }
    let plain = tar.into_inner().expect("tar");
    let mut recipient = age::scrypt::Recipient::new(PASSPHRASE.to_string().into());
    recipient.set_work_factor(10);
    let enc = age::Encryptor::with_recipients(std::iter::once(&recipient as _)).expect("enc");
    let mut out = enc.wrap_output(Vec::new()).expect("wrap");
    std::io::Write::write_all(&mut out, &plain).expect("write");
    out.finish().expect("finish")
}

#[test]
fn a_part_that_would_leave_the_data_dir_or_a_short_passphrase_is_refused() {
    let (dir, store, _) = data_dir();
    let contents = take(&store, dir.path(), 1).expect("take");
    let store_bytes = contents.store.encode();
    let sum = |name: &str, b: &[u8]| watchgrid_backup::PartSum {
        name: name.into(),
        size: b.len() as u64,
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b)),
    };
    let manifest = Manifest {
        format: FORMAT,
        watchgrid_version: watchgrid_backup::VERSION.into(),
        schema: contents.store.schema,
        hub_public_key: String::new(),
        created_at: 1,
        parts: vec![
            sum("store.bin", &store_bytes),
            sum("files/../outside", b"x"),
        ],
    };
    let manifest = serde_json::to_vec(&manifest).expect("json");
    let bytes = hostile(&[
        ("manifest.json", &manifest),
        ("store.bin", &store_bytes),
        ("files/../outside", b"x"),
    ]);
    let e = refused(&bytes, PASSPHRASE);
    assert!(e.to_string().contains("leaves the data dir"), "{e}");
    // The same archive without the hostile part is a good backup: the refusal above
    // is the path's, not the hand-made file's.
    let good = hostile(&[
        (
            "manifest.json",
            &serde_json::to_vec(&Manifest {
                format: FORMAT,
                watchgrid_version: watchgrid_backup::VERSION.into(),
                schema: contents.store.schema,
                hub_public_key: String::new(),
                created_at: 1,
                parts: vec![sum("store.bin", &store_bytes)],
            })
            .expect("json"),
        ),
        ("store.bin", &store_bytes),
    ]);
    open(good.as_slice(), PASSPHRASE).expect("the control backup opens");
    match contents.seal("short", Vec::new()) {
        Err(BackupError::WeakPassphrase(12)) => {}
        other => panic!("a short passphrase: {:?}", other.map(|b| b.len())),
    }
}

//! Snapshots for backups: a copy taken while writers run holds every acknowledged
//! change whole, and a restored store continues where the old one stopped.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use watchgrid_store::{Device, SnapshotError, Store, StoreError, StoreSnapshot};

fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

fn device(n: u32) -> Device {
    let mut key = [7u8; 32];
    key[..4].copy_from_slice(&n.to_be_bytes());
    Device {
        id: format!("dev-{n}"),
        name: format!("host-{n}"),
        public_key: watchgrid_core::PublicKey(key),
        address_v4: std::net::Ipv4Addr::UNSPECIFIED,
        address_v6: None,
        enabled: true,
        created_at: 1,
        expires_at: None,
        agent_key_hash: format!("agent-{n}"),
        last_endpoint: None,
        groups: Vec::new(),
        allow_commands: false,
    }
}

const BASE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 80, 0, 0);

#[test]
fn a_snapshot_taken_under_writes_restores_every_acknowledged_device_whole() {
    let dir = private_dir();
    let store = Arc::new(Store::open(dir.path()).expect("open"));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u32)
        .map(|w| {
            let (store, acked, stop) = (store.clone(), acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = w * 100_000;
                while !stop.load(Ordering::Relaxed) {
                    let d = store.create_device(device(n), BASE, 16).expect("create");
                    acked.lock().expect("lock").push(d.id);
                    // Deletes run through the snapshot too: they touch three trees. A
                    // device being deleted is no longer one the snapshot must hold.
                    if n % 3 == 0 {
                        acked
                            .lock()
                            .expect("lock")
                            .retain(|id| *id != format!("dev-{n}"));
                        store.delete_device(&format!("dev-{n}")).expect("delete");
                    }
                    n += 1;
                }
            })
        })
        .collect();
    while acknowledged.lock().expect("lock").len() < 60 {
        std::thread::yield_now();
    }
    let before: Vec<String> = acknowledged.lock().expect("lock").clone();
    let snapshot = store.snapshot().expect("snapshot");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let old_next = store.next_id().expect("id");

    let copy = StoreSnapshot::decode(&snapshot.encode()).expect("decode");
    assert_eq!(copy, snapshot);
    let target = private_dir();
    let restored_dir = target.path().join("data");
    Store::restore(&restored_dir, &copy).expect("restore");
    let restored = Store::open(&restored_dir).expect("open restored");
    let devices = restored.devices.list().expect("list");
    let ids: std::collections::HashSet<_> = devices.iter().map(|d| d.id.clone()).collect();
    for id in &before {
        assert!(
            ids.contains(id),
            "{id} was acknowledged before the snapshot"
        );
    }
    for d in &devices {
        let by_key = restored
            .device_by_agent_key(&d.agent_key_hash)
            .expect("index");
        assert_eq!(
            by_key.map(|x| x.id),
            Some(d.id.clone()),
            "index of {}",
            d.id
        );
        // Its key and address are still claimed: a second device with either is refused
        // or placed elsewhere.
        let mut twin = d.clone();
        twin.id = format!("{}-twin", d.id);
        twin.agent_key_hash = format!("{}-twin", d.agent_key_hash);
        assert!(matches!(
            restored.create_device(twin, BASE, 16),
            Err(StoreError::Conflict(_))
        ));
    }
    let fresh = restored
        .create_device(device(999_999), BASE, 16)
        .expect("new");
    assert!(devices.iter().all(|d| d.address_v4 != fresh.address_v4));
    assert!(
        restored.next_id().expect("id") >= snapshot.next_id,
        "a restored store would reuse ids"
    );
    assert!(snapshot.next_id <= old_next);
}

#[test]
fn a_newer_schema_or_a_damaged_copy_is_refused_and_nothing_is_written() {
    let dir = private_dir();
    let store = Store::open(dir.path()).expect("open");
    store.create_device(device(1), BASE, 24).expect("create");
    let mut snapshot = store.snapshot().expect("snapshot");
    let bytes = snapshot.encode();
    for cut in [0, 7, 20, bytes.len() - 1] {
        assert!(
            matches!(
                StoreSnapshot::decode(&bytes[..cut]),
                Err(SnapshotError::Malformed(_))
            ),
            "cut at {cut}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(StoreSnapshot::decode(&longer).is_err());

    snapshot.schema += 1;
    let target = private_dir();
    let restored_dir = target.path().join("data");
    match Store::restore(&restored_dir, &snapshot) {
        Err(SnapshotError::NewerSchema { found, supported }) => assert_eq!(found, supported + 1),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert!(
        !restored_dir.exists(),
        "a refused restore wrote {restored_dir:?}"
    );
    snapshot.schema -= 1;
    match Store::restore(dir.path(), &snapshot) {
        Err(SnapshotError::NotEmpty(_)) => {}
        other => panic!("restoring over a store must be refused, got {other:?}"),
    }
}

#[test]
fn a_snapshot_from_an_older_schema_is_brought_up_to_date_at_restore() {
    let dir = private_dir();
    let store = Store::open(dir.path()).expect("open");
    store.create_device(device(5), BASE, 24).expect("create");
    let mut snapshot = store.snapshot().expect("snapshot");
    // As schema 3 wrote it: no public-key index (migration 4 builds it).
    snapshot.schema = 3;
    snapshot
        .trees
        .retain(|(name, _)| name.as_slice() != b"public_keys");
    for (name, records) in &mut snapshot.trees {
        if name.as_slice() == b"meta" {
            for (k, v) in records.iter_mut() {
                if k.as_slice() == b"schema_version" {
                    *v = 3u32.to_be_bytes().to_vec();
                }
            }
        }
    }
    let target = private_dir();
    let restored_dir = target.path().join("data");
    Store::restore(&restored_dir, &snapshot).expect("restore");
    let restored = Store::open(&restored_dir).expect("open");
    assert_eq!(
        restored.schema_version().expect("v"),
        watchgrid_store::MIGRATIONS.last().expect("m").version
    );
    let mut twin = device(5);
    twin.id = "dev-twin".into();
    twin.agent_key_hash = "other".into();
    assert!(
        matches!(
            restored.create_device(twin, BASE, 24),
            Err(StoreError::Conflict(_))
        ),
        "the migration did not index the restored device's key"
    );
}

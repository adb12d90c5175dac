use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use watchgrid_store::{
    AuditEntry, Device, EnrollmentToken, Migration, MigrationError, Redemption, Store, StoreError,
    MIGRATIONS,
};

fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

/// A device whose public key is its id's bytes (one key per device, as the store
/// requires).
fn device(id: &str) -> Device {
    let mut key = [0u8; 32];
    for (i, b) in id.bytes().take(32).enumerate() {
        key[i] = b;
    }
    Device {
        id: id.to_string(),
        name: format!("host-{id}"),
        public_key: watchgrid_core::PublicKey(key),
        address_v4: std::net::Ipv4Addr::UNSPECIFIED,
        address_v6: None,
        enabled: true,
        created_at: 1,
        expires_at: None,
        agent_key_hash: String::new(),
        last_endpoint: None,
        groups: Vec::new(),
        allow_commands: false,
    }
}

fn token(hash: &str, uses: u32, expires_at: Option<u64>) -> EnrollmentToken {
    EnrollmentToken {
        token_hash: hash.to_string(),
        name: "t".to_string(),
        uses_left: uses,
        expires_at,
        created_at: 0,
        groups: Vec::new(),
    }
}

#[test]
fn data_survives_reopen_and_schema_is_current() {
    let dir = private_dir();
    {
        let s = Store::open(dir.path()).expect("open");
        s.devices.put("a", &device("a")).expect("put");
        s.audit(&AuditEntry {
            at: 1,
            actor: "admin".into(),
            action: "device.create".into(),
            target: "a".into(),
        })
        .expect("audit");
    }
    let s = Store::open(dir.path()).expect("reopen");
    assert_eq!(s.devices.get("a").expect("get"), Some(device("a")));
    assert_eq!(s.audit.list().expect("list").len(), 1);
    assert_eq!(
        s.schema_version().expect("version"),
        MIGRATIONS.len() as u32
    );
}

#[test]
fn second_open_of_the_same_dir_is_refused() {
    let dir = private_dir();
    let _first = Store::open(dir.path()).expect("open");
    match Store::open(dir.path()) {
        Err(StoreError::Locked(_)) => {}
        other => panic!("expected Locked, got {:?}", other.err()),
    }
}

#[test]
fn group_readable_data_dir_is_refused() {
    let dir = private_dir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let err = Store::open(dir.path()).err().expect("must fail");
    assert!(
        matches!(err, StoreError::Permissions { mode: 0o750, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod go-rwx"));
}

fn ok(_: &sled::Db) -> Result<(), MigrationError> {
    Ok(())
}
fn broken(_: &sled::Db) -> Result<(), MigrationError> {
    Err(MigrationError::Record {
        tree: "devices".into(),
        key: "dev-1".into(),
        reason: "no address".into(),
    })
}

#[test]
fn failing_migration_stops_open_and_names_itself() {
    let dir = private_dir();
    let steps = [
        Migration {
            version: 1,
            name: "one",
            run: ok,
            rollback: watchgrid_store::Rollback::Compatible,
        },
        Migration {
            version: 2,
            name: "two",
            run: broken,
            rollback: watchgrid_store::Rollback::Compatible,
        },
    ];
    let err = Store::open_with(dir.path(), &steps)
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("migration 2 (two) failed: devices record \"dev-1\": no address"),
        "{msg}"
    );
    assert!(msg.contains("schema version 1"), "{msg}");
    // Fixed migration: the open resumes at step 2 and completes.
    let fixed = [
        Migration {
            version: 1,
            name: "one",
            run: broken,
            rollback: watchgrid_store::Rollback::Compatible,
        },
        Migration {
            version: 2,
            name: "two",
            run: ok,
            rollback: watchgrid_store::Rollback::Compatible,
        },
    ];
    let s = Store::open_with(dir.path(), &fixed).expect("resume after fix");
    assert_eq!(s.schema_version().expect("v"), 2);
}

#[test]
fn one_use_token_redeems_exactly_once_under_100_concurrent_callers() {
    let dir = private_dir();
    let s = Arc::new(Store::open(dir.path()).expect("open"));
    s.enrollment_tokens
        .put("h1", &token("h1", 1, None))
        .expect("put");
    s.enrollment_tokens
        .put("h3", &token("h3", 3, None))
        .expect("put");
    for (hash, expected) in [("h1", 1), ("h3", 3)] {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let s = s.clone();
                let hash = hash.to_string();
                std::thread::spawn(move || s.redeem_enrollment_token(&hash, 10).expect("redeem"))
            })
            .collect();
        let accepted = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|r| matches!(r, Redemption::Accepted(_)))
            .count();
        assert_eq!(accepted, expected, "token {hash}");
        assert_eq!(
            s.enrollment_tokens.get(hash).expect("get"),
            None,
            "used up tokens are deleted"
        );
    }
}

#[test]
fn expired_and_unknown_tokens_are_rejected_alike() {
    let dir = private_dir();
    let s = Store::open(dir.path()).expect("open");
    s.enrollment_tokens
        .put("old", &token("old", 5, Some(100)))
        .expect("put");
    assert_eq!(
        s.redeem_enrollment_token("old", 100).expect("r"),
        Redemption::Rejected
    );
    assert_eq!(
        s.redeem_enrollment_token("nope", 1).expect("r"),
        Redemption::Rejected
    );
    // A rejected redemption changes nothing.
    assert_eq!(
        s.enrollment_tokens
            .get("old")
            .expect("get")
            .map(|t| t.uses_left),
        Some(5)
    );
}

#[test]
fn a_returned_use_is_redeemable_again_even_after_the_last_one() {
    let dir = private_dir();
    let s = Store::open(dir.path()).expect("open");
    s.enrollment_tokens
        .put("one", &token("one", 1, None))
        .expect("put");
    s.enrollment_tokens
        .put("two", &token("two", 2, None))
        .expect("put");
    for hash in ["one", "two"] {
        let Redemption::Accepted(redeemed) = s.redeem_enrollment_token(hash, 1).expect("r") else {
            panic!("{hash} must redeem");
        };
        s.return_enrollment_use(&redeemed).expect("return");
        let left = s
            .enrollment_tokens
            .get(hash)
            .expect("get")
            .map(|t| t.uses_left);
        assert_eq!(left, Some(redeemed.uses_left), "{hash}: the use is back");
    }
    // The single-use token came back from deletion and still works exactly once.
    assert!(matches!(
        s.redeem_enrollment_token("one", 1).expect("r"),
        Redemption::Accepted(_)
    ));
    assert_eq!(
        s.redeem_enrollment_token("one", 1).expect("r"),
        Redemption::Rejected
    );
}

#[test]
fn concurrent_device_creation_never_shares_an_address() {
    let dir = private_dir();
    let s = Arc::new(Store::open(dir.path()).expect("open"));
    let base: std::net::Ipv4Addr = "10.100.0.0".parse().expect("addr");
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                s.create_device(device(&format!("d{i}")), base, 24)
                    .expect("create")
            })
        })
        .collect();
    let mut addrs: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread").address_v4)
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 50);
    assert_eq!(
        addrs[0],
        "10.100.0.2".parse::<std::net::Ipv4Addr>().expect("a")
    );
    // Deleting a device frees its address for the next one.
    let freed = s
        .delete_device("d0")
        .expect("delete")
        .expect("existed")
        .address_v4;
    assert_eq!(
        s.create_device(device("new"), base, 24)
            .expect("create")
            .address_v4,
        freed
    );
}

#[test]
fn ipv6_addresses_follow_the_ipv4_host_number_in_the_ula() {
    let dir = private_dir();
    let s = Store::open(dir.path()).expect("open");
    let n = s
        .network_or_init([0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde])
        .expect("init");
    assert_eq!(
        n.ula_prefix,
        "fd12:3456:789a:bcde::"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
    );
    // A second initialisation keeps the first prefix.
    assert_eq!(s.network_or_init([0; 7]).expect("again"), n);
    let base: std::net::Ipv4Addr = "10.100.0.0".parse().expect("addr");
    let d = s.create_device(device("a"), base, 16).expect("create");
    assert_eq!(
        d.address_v4,
        "10.100.0.2".parse::<std::net::Ipv4Addr>().expect("v4")
    );
    assert_eq!(
        d.address_v6,
        Some("fd12:3456:789a:bcde::2".parse().expect("v6"))
    );
}

#[test]
fn full_subnet_is_a_clear_error() {
    let dir = private_dir();
    let s = Store::open(dir.path()).expect("open");
    let base: std::net::Ipv4Addr = "10.100.0.0".parse().expect("addr");
    // A /30 has one address for a device (.2): .0 network, .1 hub, .3 broadcast.
    s.create_device(device("a"), base, 30).expect("first fits");
    let err = s.create_device(device("b"), base, 30).expect_err("full");
    assert!(err.to_string().contains("no free address"), "{err}");
}

/// Every kind of write syncs the file system before it returns (the power-cut harness in
/// tests/netns proves that this is what makes it durable; this catches a write path that
/// skips it).
#[test]
fn every_write_path_syncs_before_returning() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = private_dir();
    let store = Store::open(dir.path()).expect("open");
    let syncs = Arc::new(AtomicU32::new(0));
    let seen = syncs.clone();
    store.observe_syncs(Box::new(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    let mut last = 0;
    let mut synced = |what: &str| {
        let now = syncs.load(Ordering::SeqCst);
        assert!(now > last, "{what} returned without a sync");
        last = now;
    };
    store
        .enrollment_tokens
        .put("a", &token("a", 1, None))
        .expect("put");
    synced("put");
    assert!(store.devices.put_new("d1", &device("d1")).expect("put_new"));
    synced("put_new");
    store
        .devices
        .update::<()>("d1", |d| {
            Ok(d.map(|d| Device {
                enabled: false,
                ..d
            }))
        })
        .expect("update")
        .expect("updated");
    synced("update");
    store.devices.remove("d1").expect("remove");
    synced("remove");
    let created = store
        .create_device(device("d2"), std::net::Ipv4Addr::new(10, 100, 0, 0), 16)
        .expect("create_device");
    synced("create_device");
    store.delete_device(&created.id).expect("delete_device");
    synced("delete_device");
    store
        .audit(&AuditEntry {
            at: 1,
            actor: "admin".into(),
            action: "test".into(),
            target: "x".into(),
        })
        .expect("audit");
    synced("audit");
}

fn command(device: &str, id: &str, queued_at: u64) -> watchgrid_store::AgentCommand {
    watchgrid_store::AgentCommand {
        id: id.to_string(),
        device_id: device.to_string(),
        argv: vec!["true".into()],
        timeout_s: 10,
        queued_by: "admin".into(),
        queued_at,
        expires_at: queued_at + 3600,
        state: watchgrid_store::CommandState::Queued,
        delivered_at: None,
        deliveries: 0,
        last_delivered_at: None,
        result: None,
    }
}

fn outcome(code: i32) -> watchgrid_store::CommandOutcome {
    watchgrid_store::CommandOutcome {
        exit_code: Some(code),
        error: None,
        stdout: format!("run {code}"),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        started_at: 5,
        duration_ms: 1,
        reported_at: 6,
    }
}

#[test]
fn a_command_is_redelivered_until_its_result_and_the_first_result_stands() {
    use watchgrid_store::{CommandState, ResultRecorded};
    let dir = private_dir();
    let store = Store::open(dir.path()).expect("open");
    store
        .queue_command(&command("dev-1", "cmd-1", 10))
        .expect("queue");
    store
        .queue_command(&command("dev-2", "cmd-2", 10))
        .expect("queue");
    let (first, _) = store.deliver_commands("dev-1", 20, 30).expect("deliver");
    assert_eq!(first.len(), 1, "only dev-1's command: {first:?}");
    assert_eq!(first[0].state, CommandState::Delivered);
    let (soon, _) = store.deliver_commands("dev-1", 49, 30).expect("deliver");
    assert!(soon.is_empty(), "not again before the lease ends: {soon:?}");
    // The answer was lost: a later poll hands it out again, even after a restart.
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    let (again, _) = store.deliver_commands("dev-1", 50, 30).expect("deliver");
    assert_eq!((again.len(), again[0].deliveries), (1, 2));
    assert_eq!(again[0].delivered_at, Some(20), "first delivery time kept");
    // Another device cannot report for it.
    assert_eq!(
        store
            .record_command_result("dev-2", "cmd-1", CommandState::Succeeded, outcome(0))
            .expect("record"),
        ResultRecorded::Unknown
    );
    let stored = store
        .record_command_result("dev-1", "cmd-1", CommandState::Failed, outcome(3))
        .expect("record");
    assert!(matches!(stored, ResultRecorded::Stored(ref c) if c.state == CommandState::Failed));
    let retried = store
        .record_command_result("dev-1", "cmd-1", CommandState::Succeeded, outcome(0))
        .expect("record");
    match retried {
        ResultRecorded::AlreadyFinal(c) => {
            assert_eq!(c.state, CommandState::Failed);
            assert_eq!(c.result.map(|r| r.exit_code), Some(Some(3)));
        }
        other => panic!("a second report must not replace the first: {other:?}"),
    }
    let (none, _) = store.deliver_commands("dev-1", 400, 30).expect("deliver");
    assert!(
        none.is_empty(),
        "a final command is not delivered: {none:?}"
    );
}

#[test]
fn only_a_command_not_picked_up_can_be_cancelled_and_queued_ones_expire() {
    use watchgrid_store::{Cancellation, CommandState};
    let dir = private_dir();
    let store = Store::open(dir.path()).expect("open");
    store
        .queue_command(&command("dev-1", "cmd-1", 10))
        .expect("queue");
    store.deliver_commands("dev-1", 11, 30).expect("deliver");
    store
        .queue_command(&command("dev-1", "cmd-2", 12))
        .expect("queue");
    assert!(matches!(
        store.cancel_command("cmd-1").expect("cancel"),
        Cancellation::TooLate(_)
    ));
    assert!(matches!(
        store.cancel_command("cmd-2").expect("cancel"),
        Cancellation::Cancelled(_)
    ));
    assert_eq!(
        store.cancel_command("cmd-9").expect("cancel"),
        Cancellation::Unknown
    );
    store
        .queue_command(&command("dev-1", "cmd-3", 100))
        .expect("queue");
    let (deliver, expired) = store
        .deliver_commands("dev-1", 100 + 3600, 30)
        .expect("deliver");
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, "cmd-3");
    assert_eq!(
        deliver.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["cmd-1"]
    );
    let states: Vec<_> = store
        .commands_of("dev-1")
        .expect("list")
        .iter()
        .map(|c| c.state)
        .collect();
    assert_eq!(
        states,
        [
            CommandState::Delivered,
            CommandState::Cancelled,
            CommandState::Expired
        ]
    );
}

fn login(
    device: &str,
    seq: u64,
    ts_us: u64,
    outcome: &str,
    user: &str,
) -> watchgrid_store::LoginRecord {
    watchgrid_store::LoginRecord {
        device_id: device.into(),
        seq,
        ts_us,
        received_at_us: ts_us,
        outcome: outcome.into(),
        user: user.into(),
        source_ip: Some("192.0.2.7".into()),
        source_port: Some(50000),
        method: Some("password".into()),
        service: "sshd".into(),
        raw: None,
    }
}

#[test]
fn login_events_are_stored_once_per_seq_and_read_newest_first() {
    use watchgrid_store::LoginQuery;
    let dir = private_dir();
    let store = Store::open(dir.path()).expect("open");
    let first = vec![
        login("dev-1", 2, 20, "failed", "bob"),
        login("dev-1", 1, 10, "accepted", "alice"),
    ];
    let r = store
        .ingest_login_events("dev-1", first.clone())
        .expect("ingest");
    assert_eq!((r.acked_seq, r.stored.len()), (2, 2));
    // The same batch again (the answer was lost), after a restart: nothing new.
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    let again = store.ingest_login_events("dev-1", first).expect("ingest");
    assert_eq!((again.acked_seq, again.stored.len()), (2, 0));
    // Another device's record in this device's batch is not taken.
    let mixed = vec![
        login("dev-1", 3, 30, "invalid_user", "<script>"),
        login("dev-2", 4, 40, "failed", "x"),
    ];
    let r = store.ingest_login_events("dev-1", mixed).expect("ingest");
    assert_eq!((r.acked_seq, r.stored.len()), (3, 1));
    let all = store
        .login_events(&LoginQuery {
            limit: 10,
            ..Default::default()
        })
        .expect("query");
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [3, 2, 1], "newest first");
    let failed = store
        .login_events(&LoginQuery {
            outcome: Some("failed".into()),
            limit: 10,
            ..Default::default()
        })
        .expect("query");
    assert_eq!(failed.len(), 1);
    let since = store
        .login_events(&LoginQuery {
            since_us: Some(15),
            limit: 10,
            ..Default::default()
        })
        .expect("query");
    assert_eq!(since.len(), 2);
    assert!(store
        .note_login_source("alice", "192.0.2.7", 1)
        .expect("note"));
    assert!(!store
        .note_login_source("alice", "192.0.2.7", 2)
        .expect("note"));
    assert_eq!(store.prune_login_events(25).expect("prune"), 2);
}

#[test]
fn finding_07_expired_sessions_and_enrollment_tokens_are_pruned() {
    let dir = private_dir();
    let store = Store::open(dir.path()).expect("open");
    for (jti, expires_at) in [("old", 99), ("edge", 100), ("live", 101)] {
        store
            .revoked_sessions
            .put(
                jti,
                &watchgrid_store::RevokedSession {
                    jti: jti.into(),
                    expires_at,
                },
            )
            .expect("put");
    }
    for t in [
        token("expired", 3, Some(50)),
        token("forever", 1, None),
        token("later", 2, Some(500)),
    ] {
        store
            .enrollment_tokens
            .put(&t.token_hash.clone(), &t)
            .expect("put");
    }
    let pruned = store.prune_expired(100).expect("prune");
    assert_eq!(
        pruned,
        watchgrid_store::Pruned {
            revoked_sessions: 2,
            enrollment_tokens: 1
        }
    );
    let sessions: Vec<String> = store
        .revoked_sessions
        .list()
        .expect("list")
        .into_iter()
        .map(|r| r.jti)
        .collect();
    assert_eq!(sessions, ["live"]);
    let tokens: Vec<String> = store
        .enrollment_tokens
        .list()
        .expect("list")
        .into_iter()
        .map(|t| t.token_hash)
        .collect();
    assert_eq!(tokens, ["forever", "later"]);
    // Nothing left to prune: a second sweep writes nothing.
    assert_eq!(store.prune_expired(100).expect("prune"), Default::default());
}

#[test]
fn audit_pages_run_newest_first_without_gaps_or_repeats() {
    let dir = private_dir();
    let store = Store::open(dir.path()).expect("open");
    for i in 0..25u64 {
        store
            .audit(&AuditEntry {
                at: i,
                actor: "a".into(),
                action: "x".into(),
                target: i.to_string(),
            })
            .expect("audit");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .audit
            .page_before(cursor.as_deref(), 10)
            .expect("page");
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|(k, _)| k.clone());
        seen.extend(page.into_iter().map(|(_, e)| e.at));
    }
    assert_eq!(seen, (0..25).rev().collect::<Vec<u64>>());
}

#[test]
fn a_second_device_with_a_key_is_refused_and_the_key_is_free_again_after_delete() {
    let dir = private_dir();
    let s = Store::open(dir.path()).expect("open");
    let base = std::net::Ipv4Addr::new(10, 100, 0, 0);
    let first = s.create_device(device("a"), base, 24).expect("create");
    let mut twin = device("b");
    twin.public_key = first.public_key;
    let err = s
        .create_device(twin.clone(), base, 24)
        .expect_err("same key");
    assert!(err.to_string().contains("public key"), "{err}");
    assert!(
        s.devices.get("b").expect("get").is_none(),
        "the refused device was stored"
    );
    // Its address was not taken: the next device gets .3, right after the first.
    let other = s.create_device(device("c"), base, 24).expect("create");
    assert_eq!(other.address_v4, std::net::Ipv4Addr::new(10, 100, 0, 3));
    s.delete_device("a").expect("delete");
    let again = s
        .create_device(twin, base, 24)
        .expect("the key is free again");
    assert_eq!(again.id, "b");
}

#[test]
fn a_full_subnet_releases_the_key_it_claimed() {
    let dir = private_dir();
    let s = Store::open(dir.path()).expect("open");
    let base = std::net::Ipv4Addr::new(10, 100, 0, 0);
    s.create_device(device("a"), base, 30).expect("first fits");
    let err = s.create_device(device("b"), base, 30).expect_err("full");
    assert!(err.to_string().contains("no free address"), "{err}");
    // The same key, in a bigger subnet, is not held by the failed attempt.
    let d = s.create_device(device("b"), base, 24).expect("create");
    assert_eq!(d.id, "b");
}

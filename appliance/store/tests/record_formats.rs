//! Records written by earlier builds stay readable, typed fields keep their on-disk
//! form, and secrets never show in `Debug` output.

use std::os::unix::fs::PermissionsExt;
use watchgrid_core::PublicKey;
use watchgrid_firewall::{Protocol, Target};
use watchgrid_store::{
    AdminUser, Device, FirewallPolicy, Migration, MigrationError, Sensitive, Settings, Store,
    StoreError, TlsChoice, FIREWALL_KEY, MIGRATIONS, SETTINGS_KEY,
};

/// A device record as builds with string keys wrote it (`serde_json`, field order kept).
const OLD_DEVICE: &str = r#"{"id":"dev-1","name":"laptop","public_key":"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=","address_v4":"10.100.0.2","address_v6":"fd00::2","enabled":true,"created_at":5,"expires_at":null,"agent_key_hash":"","last_endpoint":null,"groups":["laptops"]}"#;

/// A firewall policy as builds with string rules wrote it.
const OLD_POLICY: &str = r#"{"admin_cidrs":null,"egress":true,"rules":[{"from_group":"laptops","to_group":"servers","to_cidr":null,"protocol":"tcp","ports":["22","9000-9100"]},{"from_group":"servers","to_group":null,"to_cidr":"192.168.60.0/24","protocol":"any","ports":[]}]}"#;

/// A stored rule no build of the API would have accepted.
const BAD_POLICY: &str = r#"{"admin_cidrs":null,"egress":false,"rules":[{"from_group":"ops","to_group":"db","to_cidr":null,"protocol":"sctp","ports":[]}]}"#;

fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

fn insert(db: &sled::Db, tree: &str, key: &str, json: &str) -> Result<(), MigrationError> {
    let t = db.open_tree(tree)?;
    t.insert(key, json.as_bytes())?;
    t.flush()?;
    Ok(())
}

fn write_old_records(db: &sled::Db) -> Result<(), MigrationError> {
    insert(db, "devices", "dev-1", OLD_DEVICE)?;
    insert(db, "firewall", FIREWALL_KEY, OLD_POLICY)
}

fn write_bad_policy(db: &sled::Db) -> Result<(), MigrationError> {
    insert(db, "firewall", FIREWALL_KEY, BAD_POLICY)
}

/// Opens a store whose last migration writes raw records, as an older build left them.
fn store_with(dir: &std::path::Path, writer: fn(&sled::Db) -> Result<(), MigrationError>) -> Store {
    let mut steps: Vec<Migration> = MIGRATIONS.to_vec();
    steps.push(Migration {
        version: MIGRATIONS.len() as u32 + 1,
        name: "records from an older build",
        run: writer,
        rollback: watchgrid_store::Rollback::Compatible,
    });
    Store::open_with(dir, &steps).expect("open")
}

#[test]
fn a_device_written_with_a_string_key_reads_as_a_public_key_and_writes_back_unchanged() {
    let dir = private_dir();
    let store = store_with(dir.path(), write_old_records);
    let d = store.devices.get("dev-1").expect("read").expect("present");
    let want: PublicKey = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        .parse()
        .expect("key");
    assert_eq!(d.public_key, want);
    assert_eq!(d.groups, vec!["laptops".to_string()]);
    // The store encodes with serde_json: the same bytes an older build wrote.
    assert_eq!(serde_json::to_string(&d).expect("encode"), OLD_DEVICE);
}

#[test]
fn a_policy_written_with_string_rules_reads_as_typed_rules_and_writes_back_unchanged() {
    let dir = private_dir();
    let store = store_with(dir.path(), write_old_records);
    let policy = store.firewall_policy().expect("read");
    assert!(policy.egress);
    assert_eq!(policy.rules.len(), 2);
    assert_eq!(policy.rules[0].to, Target::Group("servers".into()));
    assert_eq!(policy.rules[0].ports.len(), 2);
    assert_eq!(policy.rules[1].protocol, Protocol::Any);
    assert_eq!(serde_json::to_string(&policy).expect("encode"), OLD_POLICY);
}

#[test]
fn a_stored_rule_that_does_not_parse_is_an_error_naming_it() {
    let dir = private_dir();
    let store = store_with(dir.path(), write_bad_policy);
    let err = store.firewall_policy().expect_err("must not be skipped");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("from group \"ops\" to group \"db\"")
            && msg.contains("protocol: tcp, udp, icmp or any"),
        "{msg}"
    );
}

#[test]
fn without_a_stored_policy_the_default_applies() {
    let dir = private_dir();
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(
        store.firewall_policy().expect("read"),
        FirewallPolicy::default()
    );
}

#[test]
fn debug_output_never_contains_secrets() {
    let jwt = "0123456789abcdef0123456789abcdef-jwt";
    let settings = Settings {
        endpoint: "vpn.example.com:51820".into(),
        vpn_subnet_v4: std::net::Ipv4Addr::new(10, 100, 0, 0),
        vpn_prefix_v4: 16,
        jwt_secret: Sensitive::new(jwt.into()),
        setup_completed_at: 1,
        tls: TlsChoice::Internal,
    };
    let admin = AdminUser {
        username: "admin".into(),
        password_hash: Sensitive::new("$argon2id$v=19$secret-hash".into()),
        sessions_valid_after: 0,
        created_at: 0,
        totp_secret: Some(Sensitive::new("JBSWY3DPEHPK3PXPTOTPSECRET".into())),
        totp_pending: Some(Sensitive::new("PENDINGPENDINGPENDING".into())),
        totp_last_step: 0,
        recovery_code_hashes: Vec::new(),
        credential_epoch: 0,
    };
    let shown = format!("{settings:?} {admin:?}");
    for secret in [jwt, "secret-hash", "TOTPSECRET", "PENDINGPENDING"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("vpn.example.com"),
        "the rest still shows: {shown}"
    );
    // The stored form is the plain string, as before.
    let json = serde_json::to_string(&settings).expect("encode");
    assert!(
        json.contains(&format!("\"jwt_secret\":\"{jwt}\"")),
        "{json}"
    );
    let dir = private_dir();
    let store = Store::open(dir.path()).expect("open");
    store.settings.put(SETTINGS_KEY, &settings).expect("put");
    let back = store
        .settings
        .get(SETTINGS_KEY)
        .expect("get")
        .expect("present");
    assert_eq!(back.jwt_secret.expose(), jwt);
}

#[test]
fn a_device_is_active_while_enabled_and_before_its_expiry() {
    let mut d: Device = serde_json::from_str(OLD_DEVICE).expect("device");
    assert!(d.is_active(1_000));
    d.expires_at = Some(100);
    assert!(d.is_active(99));
    assert!(!d.is_active(100), "expiry is inclusive");
    assert!(d.is_expired(100));
    d.expires_at = None;
    d.enabled = false;
    assert!(!d.is_active(0));
    assert!(!d.is_expired(0));
}

/// An agent's device as a build before the agent key index wrote it.
const OLD_AGENT: &str = r#"{"id":"dev-7","name":"server","public_key":"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=","address_v4":"10.100.0.7","address_v6":null,"enabled":true,"created_at":5,"expires_at":null,"agent_key_hash":"aa11","last_endpoint":null,"groups":[]}"#;

fn write_old_agent(db: &sled::Db) -> Result<(), MigrationError> {
    insert(db, "devices", "dev-7", OLD_AGENT)
}

#[test]
fn agents_enrolled_before_the_key_index_are_found_by_their_key() {
    let dir = private_dir();
    let index = MIGRATIONS
        .iter()
        .find(|m| m.name == "agent key index")
        .expect("the index migration");
    let older: Vec<Migration> = MIGRATIONS
        .iter()
        .filter(|m| m.version < index.version)
        .copied()
        .collect();
    let mut steps = older.clone();
    steps.push(Migration {
        version: index.version,
        name: "records from an older build",
        run: write_old_agent,
        rollback: watchgrid_store::Rollback::Compatible,
    });
    steps.push(Migration {
        version: index.version + 1,
        ..*index
    });
    let store = Store::open_with(dir.path(), &steps).expect("open");
    let found = store.device_by_agent_key("aa11").expect("lookup");
    assert_eq!(found.map(|d| d.id), Some("dev-7".to_string()));
    assert!(store.device_by_agent_key("bb22").expect("lookup").is_none());
    store.delete_device("dev-7").expect("delete");
    assert!(store.device_by_agent_key("aa11").expect("lookup").is_none());
}

#[test]
fn devices_from_before_the_public_key_index_keep_their_keys_unique() {
    let dir = private_dir();
    let index = MIGRATIONS
        .iter()
        .find(|m| m.name == "public key index")
        .expect("the index migration");
    let mut steps: Vec<Migration> = MIGRATIONS
        .iter()
        .filter(|m| m.version < index.version)
        .copied()
        .collect();
    steps.push(Migration {
        version: index.version,
        name: "records from an older build",
        run: write_old_agent,
        rollback: watchgrid_store::Rollback::Compatible,
    });
    steps.push(Migration {
        version: index.version + 1,
        ..*index
    });
    let store = Store::open_with(dir.path(), &steps).expect("open");
    let old: Device = serde_json::from_str(OLD_AGENT).expect("device");
    let mut twin = old.clone();
    twin.id = "dev-8".into();
    twin.agent_key_hash = String::new();
    let err = store
        .create_device(twin, std::net::Ipv4Addr::new(10, 100, 0, 0), 24)
        .expect_err("the old device's key is taken");
    assert!(err.to_string().contains("public key"), "{err}");
}

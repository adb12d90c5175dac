//! The appliance's embedded store: typed sled trees, schema migrations, and
//! flush-before-acknowledge.
//!
//! Rules this crate keeps:
//! - one process owns a data dir: [`Store::open`] takes an exclusive lock on `DIR/lock`;
//! - the data dir must not be group- or world-accessible (SPEC §2), or opening fails;
//! - every write method returns only after sled has flushed it and the file system has
//!   made it durable ([`durable`]), so a caller that reports success to a client never
//!   acknowledges data a crash or a power cut could lose (SPEC §7);
//! - the schema version lives in the store; migrations run in order at open, and a
//!   failing migration stops the open with an error that names it.

mod alerts;
mod backups;
mod commands;
mod credentials;
pub mod durable;
mod entities;
mod housekeeping;
mod logins;
mod migrate;
mod sensitive;
mod snapshot;
mod ssh;
mod table;
mod traffic;

pub use alerts::{
    AlertRecord, DeliveryAttempt, DeliveryState, LogSettings, Webhook, LOG_SETTINGS_KEY,
};
pub use backups::{
    BackupSchedule, BackupStatus, OffsiteKey, OffsiteSettings, OffsiteStatus, Verification,
    BACKUP_KEY,
};
pub use commands::{AgentCommand, Cancellation, CommandOutcome, CommandState, ResultRecorded};
pub use entities::{
    AdminUser, ApiToken, AuditEntry, Device, EnrollmentToken, FirewallPolicy, Network, Redemption,
    RevokedSession, Settings, TlsChoice,
};
pub use housekeeping::Pruned;
pub use logins::{LoginIngest, LoginQuery, LoginRecord};
pub use migrate::{Migrated, Migration, MigrationError, Rollback, Trial, MIGRATIONS};
pub use sensitive::Sensitive;
pub use snapshot::{SnapshotError, StoreSnapshot, TreeCopy};
pub use ssh::{ssh_cert_key, SshCertRecord};
pub use table::Table;
pub use traffic::{DeviceQuota, QuotaAction, Resolution, TrafficDelta, TrafficPoint};

use durable::DiskSync;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything that can go wrong with the store, each with what the operator should do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data dir {0} is in use by another watchgrid process; stop it first")]
    Locked(PathBuf),
    #[error("{path} is accessible to group or others (mode {mode:o}); run `chmod go-rwx {path}`")]
    Permissions { path: String, mode: u32 },
    #[error("data dir {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error(
        "migration {version} ({name}) failed: {reason}; the data is left at schema version {at}"
    )]
    Migration {
        version: u32,
        name: &'static str,
        #[source]
        reason: MigrationError,
        at: u32,
    },
    #[error("the data was written by a newer watchgrid (schema {found}, this build knows up to {supported}); upgrade watchgrid")]
    NewerSchema { found: u32, supported: u32 },
    #[error("stored {tree} record {key:?} is unreadable: {reason}")]
    Corrupt {
        tree: String,
        key: String,
        reason: String,
    },
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Commits writes: sled's flush, then the file system's sync. Shared by every table.
#[derive(Clone)]
pub(crate) struct Durability {
    sync: Arc<DiskSync>,
    dir: Arc<Path>,
    pub(crate) gate: WriteGate,
}

/// Every change holds the gate shared for as long as it writes (all the trees it
/// touches); a snapshot holds it alone while it copies the trees, so a backup never
/// holds half a change (a device without its address claim, say). Shared entry is
/// recursive because compound changes call the tables' own writes.
#[derive(Clone, Default)]
pub(crate) struct WriteGate(Arc<parking_lot::RwLock<()>>);

impl WriteGate {
    pub(crate) fn change(&self) -> parking_lot::RwLockReadGuard<'_, ()> {
        self.0.read_recursive()
    }

    pub(crate) fn quiet(&self) -> parking_lot::RwLockWriteGuard<'_, ()> {
        self.0.write()
    }
}

impl Durability {
    pub(crate) fn open(dir: &Path) -> Result<Durability> {
        let sync = DiskSync::open(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Durability {
            sync: Arc::new(sync),
            dir: dir.into(),
            gate: WriteGate::default(),
        })
    }

    /// sled's log is shared by all trees, so one flush covers every write made so far.
    pub(crate) fn commit(&self, tree: &sled::Tree) -> Result<()> {
        tree.flush()?;
        self.sync.sync().map_err(|source| StoreError::Io {
            path: self.dir.display().to_string(),
            source,
        })
    }
}

/// The open store.
pub struct Store {
    db: sled::Db,
    durability: Durability,
    /// Held for the life of the store; the OS releases the lock when it closes.
    _lock: File,
    migrations: Vec<Migration>,
    /// Steps held back while an update is on trial.
    held: std::sync::atomic::AtomicUsize,
    /// Added to sled's id generator: a restored store starts above the ids of the one
    /// it came from.
    id_floor: u64,
    pub devices: Table<Device>,
    pub enrollment_tokens: Table<EnrollmentToken>,
    pub audit: Table<AuditEntry>,
    /// One record, key [`SETTINGS_KEY`]; present once setup has completed.
    pub settings: Table<Settings>,
    pub admins: Table<AdminUser>,
    pub api_tokens: Table<ApiToken>,
    pub revoked_sessions: Table<RevokedSession>,
    /// One record, key [`NETWORK_KEY`].
    pub network: Table<Network>,
    /// One record, key [`FIREWALL_KEY`]; absent means the default policy.
    pub firewall: Table<FirewallPolicy>,
    /// Remote commands, keyed `DEVICE_ID/COMMAND_ID` (see [`AgentCommand`]).
    pub commands: Table<AgentCommand>,
    /// Alerts and their delivery log, keyed by zero-padded id.
    pub alerts: Table<AlertRecord>,
    /// One record, key [`LOG_SETTINGS_KEY`]; absent means the defaults.
    pub log_settings: Table<LogSettings>,
    /// Monthly traffic quotas, keyed by device id (see [`DeviceQuota`]).
    pub quotas: Table<DeviceQuota>,
    /// One record, key [`BACKUP_KEY`]; absent until the operator sets a schedule.
    pub backup_schedule: Table<BackupSchedule>,
    /// One record, key [`BACKUP_KEY`].
    pub backup_status: Table<BackupStatus>,
    /// One record, key [`BACKUP_KEY`]: where backups are copied off the box.
    pub backup_offsite: Table<OffsiteSettings>,
    /// One record, key [`BACKUP_KEY`]: the key those copies sign in with.
    pub backup_offsite_key: Table<OffsiteKey>,
    /// Certificates the SSH CA issued, keyed by [`ssh_cert_key`].
    pub ssh_certs: Table<SshCertRecord>,
}

/// Agent key hash -> device id (see [`Store::device_by_agent_key`]).
pub(crate) const AGENT_KEYS_TREE: &str = "agent_keys";

/// WireGuard public key (32 bytes) -> device id: one device per key, checked and claimed
/// in one step when a device is created.
pub(crate) const PUBLIC_KEYS_TREE: &str = "public_keys";

/// The key of the single firewall policy record.
pub const FIREWALL_KEY: &str = "policy";

/// The key of the single network record.
pub const NETWORK_KEY: &str = "network";

/// The key of the single settings record.
pub const SETTINGS_KEY: &str = "settings";

impl Store {
    /// Opens (creating if needed) the store in `dir` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Store> {
        Self::open_with(dir, MIGRATIONS)
    }

    /// Like [`Store::open`], holding back the steps an older build could not read while
    /// this version is on trial after an update ([`Store::migrate_held`] runs them).
    pub fn open_on_trial(dir: &Path, trial: Trial) -> Result<Store> {
        Self::open_migrating(dir, MIGRATIONS, trial)
    }

    /// Like [`Store::open`] with an explicit migration list (tests use their own).
    pub fn open_with(dir: &Path, migrations: &[Migration]) -> Result<Store> {
        Self::open_migrating(dir, migrations, Trial::No)
    }

    /// Runs the steps held back at open, once the update is marked good.
    pub fn migrate_held(&self) -> Result<Migrated> {
        let done = migrate::run(&self.db, &self.durability, &self.migrations, Trial::No)?;
        self.held
            .store(done.held, std::sync::atomic::Ordering::SeqCst);
        Ok(done)
    }

    /// Steps held back at open (0 when none wait).
    pub fn held_migrations(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn open_migrating(dir: &Path, migrations: &[Migration], trial: Trial) -> Result<Store> {
        let io = |source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        };
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        check_private(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Every write flushes itself, so sled's periodic flusher thread is not needed;
        // without it the database closes (and unlocks) as soon as the store is dropped.
        let db = open_sled(&dir.join("db"))?;
        let durability = Durability::open(dir)?;
        let migrated = migrate::run(&db, &durability, migrations, trial)?;
        let d = &durability;
        let id_floor = snapshot::id_floor(&db)?;
        Ok(Store {
            migrations: migrations.to_vec(),
            held: std::sync::atomic::AtomicUsize::new(migrated.held),
            id_floor,
            devices: Table::open(&db, d, "devices")?,
            enrollment_tokens: Table::open(&db, d, "enrollment_tokens")?,
            audit: Table::open(&db, d, "audit")?,
            settings: Table::open(&db, d, "settings")?,
            admins: Table::open(&db, d, "admins")?,
            api_tokens: Table::open(&db, d, "api_tokens")?,
            revoked_sessions: Table::open(&db, d, "revoked_sessions")?,
            network: Table::open(&db, d, "network")?,
            firewall: Table::open(&db, d, "firewall")?,
            commands: Table::open(&db, d, "commands")?,
            alerts: Table::open(&db, d, "alerts")?,
            log_settings: Table::open(&db, d, "log_settings")?,
            quotas: Table::open(&db, d, "quotas")?,
            backup_schedule: Table::open(&db, d, "backup_schedule")?,
            backup_status: Table::open(&db, d, "backup_status")?,
            backup_offsite: Table::open(&db, d, "backup_offsite")?,
            backup_offsite_key: Table::open(&db, d, "backup_offsite_key")?,
            ssh_certs: Table::open(&db, d, "ssh_certs")?,
            db,
            durability,
            _lock: lock,
        })
    }

    pub fn schema_version(&self) -> Result<u32> {
        migrate::version(&self.db)
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }

    /// The firewall policy, or the default when none was stored. A stored rule that
    /// no longer parses is a [`StoreError::Corrupt`] naming the rule.
    pub fn firewall_policy(&self) -> Result<FirewallPolicy> {
        Ok(self.firewall.get(FIREWALL_KEY)?.unwrap_or_default())
    }

    /// Reports the duration of every sync that commits a write (what durability costs).
    pub fn observe_syncs(&self, observer: durable::SyncObserver) {
        self.durability.sync.observe(observer);
    }

    /// Commits every write made so far (for multi-tree changes).
    pub(crate) fn commit(&self) -> Result<()> {
        self.durability.commit(&self.db)
    }

    /// A fresh, strictly increasing id (survives restarts).
    pub fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?.saturating_add(self.id_floor))
    }
}

/// Opens sled. Our `lock` file already excludes other processes, so a busy sled lock
/// can only belong to a handle of this process that sled's IO threads are still
/// closing (a store dropped and reopened in one process); wait for it. Under heavy IO
/// load the release has been seen to take seconds, hence the generous bound.
/// sled's page cache: a fleet's devices, tokens and settings fit many times over.
const CACHE_BYTES: u64 = 32 << 20;

fn open_sled(path: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // Every write flushes itself, so sled's periodic flusher thread is not needed.
        // sled's page cache defaults to 1 GiB; the store is devices, tokens and settings.
        let config = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .cache_capacity(CACHE_BYTES);
        match config.open() {
            // sled reports a busy lock as WouldBlock, or wrapped as Other with this text.
            Err(sled::Error::Io(e))
                if (e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock"))
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

fn check_private(path: &Path) -> Result<()> {
    let mode = fs::metadata(path)
        .map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(StoreError::Permissions {
            path: path.display().to_string(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

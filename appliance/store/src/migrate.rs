//! Schema versions and ordered migrations, run at open.
//!
//! An update can roll back: the new version fails its health check and the old one boots
//! again on the same data. So every step says whether an older build can still use the
//! store after it ([`Rollback`]):
//!
//! - [`Rollback::Compatible`] steps (a new tree, an index) run at once. An older build
//!   that opens a store with such steps past its own schema opens it anyway and lowers
//!   the recorded version to its own, so the newer build runs those steps again when it
//!   is back; they must therefore be idempotent (an index is rebuilt from scratch).
//! - [`Rollback::Breaks`] steps (records an older build cannot read) are held back while
//!   the new version is on trial after an update, and run once it is marked good. The
//!   store then records the step as its floor, and builds that do not know it refuse to
//!   open it ([`StoreError::NewerSchema`]).

use crate::{Result, StoreError};

/// One step from schema `version - 1` to `version`.
#[derive(Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub run: fn(&sled::Db) -> std::result::Result<(), MigrationError>,
    pub rollback: Rollback,
}

/// Whether an older build can use the store after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollback {
    /// It can: the step runs at once, and again after an older build has run.
    Compatible,
    /// It cannot: held back while an update is on trial.
    Breaks,
}

/// Whether steps that break a rollback may run now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trial {
    /// No update is on trial: every step runs.
    No,
    /// This version is on trial after an update: [`Rollback::Breaks`] steps wait.
    OnTrial,
}

/// Why a migration step could not run.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    /// A stored record the step cannot convert.
    #[error("{tree} record {key:?}: {reason}")]
    Record {
        tree: String,
        key: String,
        reason: String,
    },
    #[error("migrations must be consecutive; expected {expected}")]
    OutOfOrder { expected: u32 },
}

/// The migrations of this build, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial trees",
        run: initial_trees,
        rollback: Rollback::Compatible,
    },
    Migration {
        version: 2,
        name: "firewall policy tree",
        run: firewall_tree,
        rollback: Rollback::Compatible,
    },
    Migration {
        version: 3,
        name: "agent key index",
        run: agent_key_index,
        rollback: Rollback::Compatible,
    },
    Migration {
        version: 4,
        name: "public key index",
        run: public_key_index,
        rollback: Rollback::Compatible,
    },
];

pub(crate) const META: &str = "meta";
const VERSION_KEY: &str = "schema_version";
/// The newest [`Rollback::Breaks`] step applied: builds that do not know it cannot open
/// the store.
const FLOOR_KEY: &str = "schema_floor";

fn initial_trees(db: &sled::Db) -> std::result::Result<(), MigrationError> {
    for tree in [
        "devices",
        "enrollment_tokens",
        "audit",
        "settings",
        "admins",
        "api_tokens",
        "revoked_sessions",
        "address_claims",
        "network",
    ] {
        db.open_tree(tree)?;
    }
    Ok(())
}

fn firewall_tree(db: &sled::Db) -> std::result::Result<(), MigrationError> {
    db.open_tree("firewall")?;
    Ok(())
}

/// Calls `each` with every stored device, naming the record a step cannot read.
fn each_device(
    db: &sled::Db,
    mut each: impl FnMut(crate::Device) -> std::result::Result<(), MigrationError>,
) -> std::result::Result<(), MigrationError> {
    for kv in db.open_tree("devices")?.iter() {
        let (key, value) = kv?;
        let device = serde_json::from_slice(&value).map_err(|e| MigrationError::Record {
            tree: "devices".into(),
            key: String::from_utf8_lossy(&key).into_owned(),
            reason: e.to_string(),
        })?;
        each(device)?;
    }
    Ok(())
}

/// Agents authenticate with a key whose hash each device keeps; the index finds the
/// device from the hash without reading every device.
fn agent_key_index(db: &sled::Db) -> std::result::Result<(), MigrationError> {
    let index = db.open_tree(crate::AGENT_KEYS_TREE)?;
    // From scratch: an older build may have changed devices without the index.
    index.clear()?;
    each_device(db, |device| {
        if !device.agent_key_hash.is_empty() {
            index.insert(device.agent_key_hash.as_bytes(), device.id.as_bytes())?;
        }
        Ok(())
    })
}

/// A new device's key is checked against every other's; the index makes that one
/// lookup instead of reading every device (registrations slowed as the fleet grew).
fn public_key_index(db: &sled::Db) -> std::result::Result<(), MigrationError> {
    let index = db.open_tree(crate::PUBLIC_KEYS_TREE)?;
    index.clear()?;
    each_device(db, |device| {
        index.insert(device.public_key.0, device.id.as_bytes())?;
        Ok(())
    })
}

/// The newest schema this build knows.
pub(crate) fn supported() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

pub(crate) fn version(db: &sled::Db) -> Result<u32> {
    read_u32(db, VERSION_KEY)
}

fn read_u32(db: &sled::Db, key: &str) -> Result<u32> {
    let meta = db.open_tree(META)?;
    match meta.get(key)? {
        None => Ok(0),
        Some(bytes) => {
            let raw: [u8; 4] = bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                tree: META.to_string(),
                key: key.to_string(),
                reason: format!("{} bytes, expected 4", bytes.len()),
            })?;
            Ok(u32::from_be_bytes(raw))
        }
    }
}

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version the store is at now.
    pub at: u32,
    /// Steps held back because an update is on trial.
    pub held: usize,
}

/// Applies every migration newer than the stored version, recording each step and
/// flushing it before the next, so a crash mid-way resumes at the right step. See the
/// module's notes for rollbacks.
pub(crate) fn run(
    db: &sled::Db,
    durability: &crate::Durability,
    migrations: &[Migration],
    trial: Trial,
) -> Result<Migrated> {
    let supported = migrations.last().map(|m| m.version).unwrap_or(0);
    let mut at = version(db)?;
    let meta = db.open_tree(META)?;
    if at > supported {
        let floor = read_u32(db, FLOOR_KEY)?;
        if floor > supported {
            return Err(StoreError::NewerSchema {
                found: floor,
                supported,
            });
        }
        // A newer build's compatible steps: use the store, and have them run again.
        meta.insert(VERSION_KEY, &supported.to_be_bytes())?;
        durability.commit(db)?;
        return Ok(Migrated {
            at: supported,
            held: 0,
        });
    }
    let start = at;
    let pending: Vec<&Migration> = migrations.iter().filter(|m| m.version > start).collect();
    for (done, m) in pending.iter().enumerate() {
        if m.version != at + 1 {
            return Err(StoreError::Migration {
                version: m.version,
                name: m.name,
                reason: MigrationError::OutOfOrder { expected: at + 1 },
                at,
            });
        }
        if m.rollback == Rollback::Breaks && trial == Trial::OnTrial {
            return Ok(Migrated {
                at,
                held: pending.len() - done,
            });
        }
        (m.run)(db).map_err(|reason| StoreError::Migration {
            version: m.version,
            name: m.name,
            reason,
            at,
        })?;
        meta.insert(VERSION_KEY, &m.version.to_be_bytes())?;
        if m.rollback == Rollback::Breaks {
            meta.insert(FLOOR_KEY, &m.version.to_be_bytes())?;
        }
        durability.commit(db)?;
        at = m.version;
    }
    Ok(Migrated { at, held: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static RUNS: AtomicU32 = AtomicU32::new(0);

    fn ok(_: &sled::Db) -> std::result::Result<(), MigrationError> {
        Ok(())
    }

    fn counted(_: &sled::Db) -> std::result::Result<(), MigrationError> {
        RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn step(version: u32, rollback: Rollback) -> Migration {
        Migration {
            version,
            name: "step",
            run: ok,
            rollback,
        }
    }

    fn db() -> (sled::Db, tempfile::TempDir, crate::Durability) {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = crate::Durability::open(dir.path()).expect("durability");
        (db, dir, d)
    }

    #[test]
    fn data_past_a_step_this_build_cannot_read_is_refused() {
        let (db, _dir, d) = db();
        let newer = [step(1, Rollback::Compatible), step(2, Rollback::Breaks)];
        run(&db, &d, &newer, Trial::No).expect("migrate");
        assert_eq!(version(&db).expect("v"), 2);
        match run(&db, &d, &newer[..1], Trial::No) {
            Err(StoreError::NewerSchema {
                found: 2,
                supported: 1,
            }) => {}
            other => panic!("expected NewerSchema, got {other:?}"),
        }
        // Running the same list again is a no-op.
        assert_eq!(
            run(&db, &d, &newer, Trial::No).expect("idempotent"),
            Migrated { at: 2, held: 0 }
        );
    }

    #[test]
    fn a_step_that_breaks_rollback_waits_while_an_update_is_on_trial() {
        let (db, _dir, d) = db();
        let steps = [
            step(1, Rollback::Compatible),
            step(2, Rollback::Compatible),
            step(3, Rollback::Breaks),
            step(4, Rollback::Compatible),
        ];
        let trial = run(&db, &d, &steps, Trial::OnTrial).expect("on trial");
        assert_eq!(trial, Migrated { at: 2, held: 2 });
        // The old build (it knows steps 1 and 2) still opens the store on a rollback.
        assert_eq!(
            run(&db, &d, &steps[..2], Trial::No).expect("old build"),
            Migrated { at: 2, held: 0 }
        );
        let good = run(&db, &d, &steps, Trial::No).expect("marked good");
        assert_eq!(good, Migrated { at: 4, held: 0 });
        assert!(matches!(
            run(&db, &d, &steps[..2], Trial::No),
            Err(StoreError::NewerSchema { found: 3, .. })
        ));
    }

    #[test]
    fn an_older_build_uses_a_store_with_newer_compatible_steps_which_then_run_again() {
        let (db, _dir, d) = db();
        let counted_step = Migration {
            run: counted,
            ..step(2, Rollback::Compatible)
        };
        let steps = [step(1, Rollback::Compatible), counted_step];
        let before = RUNS.load(Ordering::SeqCst);
        run(&db, &d, &steps, Trial::No).expect("new build");
        assert_eq!(
            run(&db, &d, &steps[..1], Trial::No).expect("old build"),
            Migrated { at: 1, held: 0 }
        );
        run(&db, &d, &steps, Trial::No).expect("new build again");
        assert_eq!(
            RUNS.load(Ordering::SeqCst) - before,
            2,
            "step 2 ran again after the old build"
        );
    }
}

//! Schema versions and ordered migrations, run at open.

use crate::{Result, StoreError};

/// One step from schema `version - 1` to `version`.
#[derive(Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub run: fn(&sled::Db) -> std::result::Result<(), MigrationError>,
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
    },
    Migration {
        version: 2,
        name: "firewall policy tree",
        run: firewall_tree,
    },
    Migration {
        version: 3,
        name: "agent key index",
        run: agent_key_index,
    },
    Migration {
        version: 4,
        name: "public key index",
        run: public_key_index,
    },
];

pub(crate) const META: &str = "meta";
const VERSION_KEY: &str = "schema_version";

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
    let meta = db.open_tree(META)?;
    match meta.get(VERSION_KEY)? {
        None => Ok(0),
        Some(bytes) => {
            let raw: [u8; 4] = bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                tree: META.to_string(),
                key: VERSION_KEY.to_string(),
                reason: format!("{} bytes, expected 4", bytes.len()),
            })?;
            Ok(u32::from_be_bytes(raw))
        }
    }
}

/// Applies every migration newer than the stored version, recording each step and
/// flushing it before the next, so a crash mid-way resumes at the right step.
pub(crate) fn run(
    db: &sled::Db,
    durability: &crate::Durability,
    migrations: &[Migration],
) -> Result<()> {
    let supported = migrations.last().map(|m| m.version).unwrap_or(0);
    let mut at = version(db)?;
    if at > supported {
        return Err(StoreError::NewerSchema {
            found: at,
            supported,
        });
    }
    let meta = db.open_tree(META)?;
    let start = at;
    for m in migrations.iter().filter(|m| m.version > start) {
        if m.version != at + 1 {
            return Err(StoreError::Migration {
                version: m.version,
                name: m.name,
                reason: MigrationError::OutOfOrder { expected: at + 1 },
                at,
            });
        }
        (m.run)(db).map_err(|reason| StoreError::Migration {
            version: m.version,
            name: m.name,
            reason,
            at,
        })?;
        meta.insert(VERSION_KEY, &m.version.to_be_bytes())?;
        durability.commit(db)?;
        at = m.version;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &sled::Db) -> std::result::Result<(), MigrationError> {
        Ok(())
    }

    #[test]
    fn data_from_a_newer_build_is_refused() {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = crate::Durability::open(dir.path()).expect("durability");
        let newer = [
            Migration {
                version: 1,
                name: "one",
                run: ok,
            },
            Migration {
                version: 2,
                name: "two",
                run: ok,
            },
        ];
        run(&db, &d, &newer).expect("migrate");
        assert_eq!(version(&db).expect("v"), 2);
        match run(&db, &d, &newer[..1]) {
            Err(StoreError::NewerSchema {
                found: 2,
                supported: 1,
            }) => {}
            other => panic!("expected NewerSchema, got {other:?}"),
        }
        // Running the same list again is a no-op.
        run(&db, &d, &newer).expect("idempotent");
    }
}

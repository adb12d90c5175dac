//! Scheduled backups: the passphrase and retention they are taken with, and what became
//! of each run and of each stored file's verification.

use crate::Sensitive;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The key of the single schedule record and of the single status record.
pub const BACKUP_KEY: &str = "backups";

/// How scheduled backups are taken. Absent: the timer's runs fail, saying so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSchedule {
    /// Scheduled backups are encrypted to it; the operator keeps a copy off the box.
    pub passphrase: Sensitive<String>,
    /// Backups kept in the backup directory; older ones are removed after a success.
    pub keep: u32,
    pub updated_at: u64,
}

/// What the scheduled runs and the verifications found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStatus {
    pub last_attempt_at: Option<u64>,
    pub last_success_at: Option<u64>,
    /// The last run's error; cleared by a success.
    pub last_error: Option<String>,
    /// Stored file name -> its last verification.
    #[serde(default)]
    pub verified: BTreeMap<String, Verification>,
    /// The copies off the box that followed the runs.
    #[serde(default)]
    pub offsite: OffsiteStatus,
}

/// What became of the copies off the box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsiteStatus {
    pub last_attempt_at: Option<u64>,
    pub last_success_at: Option<u64>,
    /// The last attempt's error; cleared by a success.
    pub last_error: Option<String>,
    /// The server's path of the last copy that arrived.
    pub last_copy: Option<String>,
}

/// Where scheduled backups are copied off the box, over SFTP. Absent: they stay here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsiteSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The remote directory (it must exist).
    pub dir: String,
    /// The server's pinned host keys, one OpenSSH public key per line.
    pub host_key: String,
    pub updated_at: u64,
}

/// The appliance's own SSH key for those copies. It outlives the settings, so turning
/// copies off and on again does not mean authorizing a new key on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsiteKey {
    /// OpenSSH private key, unencrypted (the store is the appliance's secret).
    pub private: Sensitive<String>,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub at: u64,
    pub ok: bool,
    /// What the check found: the manifest's summary, or why it failed.
    pub detail: String,
}

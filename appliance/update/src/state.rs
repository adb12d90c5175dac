//! What an update leaves in the data dir's `update/` directory, shared by the unprivileged
//! daemon (which takes uploads and shows progress) and the root helper (which installs):
//!
//! - `staged.update`: a bundle waiting to be installed;
//! - `request.json`: the daemon's request to install it ([`Request`]); its appearance
//!   starts the helper (a systemd path unit), which takes it by renaming it;
//! - `progress.json`: the helper's progress ([`Progress`]);
//! - `state.json`: the last install and its outcome ([`Record`]), decided after the
//!   reboot by `watchgrid update boot-check` ([`decide`]).
//!
//! The helper writes its files owned by the directory's owner, so the daemon can read
//! and remove them.

use crate::slots::Slot;
use crate::UpdateError;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DIR: &str = "update";
pub const STAGED: &str = "staged.update";
pub const REQUEST: &str = "request.json";
pub const TAKEN: &str = "request.taken";
pub const PROGRESS: &str = "progress.json";
pub const RECORD: &str = "state.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub allow_downgrade: bool,
    /// Reboot into the new version once it is written.
    pub reboot: bool,
    pub tries: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Verifying,
    Writing,
    /// Written: the next boot runs it.
    Done,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: Phase,
    pub percent: u8,
    pub version: Option<String>,
    pub detail: String,
    pub at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Installed; the new version has not yet booted healthy.
    Pending,
    /// The new version booted and passed its health check.
    Good,
    /// The new version did not pass within its tries; the old one runs again.
    RolledBack,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub from_version: String,
    pub from_slot: Slot,
    pub to_version: String,
    pub to_slot: Slot,
    pub generation: u64,
    pub applied_at: u64,
    /// The boot that installed it (`/proc/sys/kernel/random/boot_id`).
    pub applied_boot: String,
    pub outcome: Outcome,
    pub decided_at: Option<u64>,
}

impl Record {
    /// One line for people: the dashboard, the audit log and `/healthz`.
    pub fn summary(&self) -> String {
        match self.outcome {
            Outcome::Pending => format!(
                "update to {} installed in slot {}; reboot to finish",
                self.to_version, self.to_slot
            ),
            Outcome::Good => format!("updated from {} to {}", self.from_version, self.to_version),
            Outcome::RolledBack => format!(
                "update to {} failed, rolled back to {}",
                self.to_version, self.from_version
            ),
        }
    }
}

/// What the boot check concludes about the last install on this boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to decide: no install waits, or its boot has not ended yet.
    Nothing,
    /// The new version runs and is healthy.
    Good,
    /// The new version runs and is not healthy: reboot, so the tries run down.
    Retry,
    /// Another boot, on the old slot: the new version gave up.
    RolledBack,
}

pub fn decide(record: &Record, running: Slot, boot: &str, healthy: bool) -> Decision {
    if record.outcome != Outcome::Pending || record.applied_boot == boot {
        return Decision::Nothing;
    }
    match (running == record.to_slot, healthy) {
        (true, true) => Decision::Good,
        (true, false) => Decision::Retry,
        (false, _) => Decision::RolledBack,
    }
}

/// Whether this boot runs a new version that has not yet been marked good: the store
/// then holds back the migrations an older version could not read.
pub fn on_trial(record: &Record, running: Option<Slot>, boot: &str) -> bool {
    record.outcome == Outcome::Pending
        && running == Some(record.to_slot)
        && record.applied_boot != boot
}

/// The update directory of a data dir.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR)
}

/// Reads one of the JSON files; a missing one is `None`.
pub fn read<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>, UpdateError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            UpdateError::io(&path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(UpdateError::io(&path)(e)),
    }
}

/// Writes one of the JSON files durably (through a temporary file and a rename), owned by
/// the directory's owner and mode 0600 before it takes the name, so the daemon never
/// finds a file it cannot read.
pub fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), UpdateError> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| UpdateError::io(&path)(std::io::Error::other(e)))?;
    let owner = std::fs::metadata(dir).map_err(UpdateError::io(dir))?;
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(UpdateError::io(&tmp))?;
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::fchown(&f, Some(owner.uid()), Some(owner.gid()))
            .map_err(UpdateError::io(&tmp))?;
    }
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(UpdateError::io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(UpdateError::io(&path))?;
    watchgrid_store::durable::sync_dir(dir).map_err(UpdateError::io(dir))
}

/// This boot's id.
pub fn boot_id() -> Result<String, UpdateError> {
    let path = Path::new("/proc/sys/kernel/random/boot_id");
    Ok(std::fs::read_to_string(path)
        .map_err(UpdateError::io(path))?
        .trim()
        .to_string())
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            from_version: "1.0.0".into(),
            from_slot: Slot::A,
            to_version: "1.1.0".into(),
            to_slot: Slot::B,
            generation: 2,
            applied_at: 1,
            applied_boot: "boot-1".into(),
            outcome: Outcome::Pending,
            decided_at: None,
        }
    }

    #[test]
    fn the_outcome_is_decided_only_on_a_later_boot() {
        let r = record();
        assert_eq!(
            decide(&r, Slot::A, "boot-1", true),
            Decision::Nothing,
            "not rebooted yet"
        );
        assert_eq!(decide(&r, Slot::B, "boot-2", true), Decision::Good);
        assert_eq!(decide(&r, Slot::B, "boot-2", false), Decision::Retry);
        assert_eq!(decide(&r, Slot::A, "boot-4", true), Decision::RolledBack);
        let done = Record {
            outcome: Outcome::Good,
            ..record()
        };
        assert_eq!(decide(&done, Slot::A, "boot-9", true), Decision::Nothing);
        let back = Record {
            outcome: Outcome::RolledBack,
            ..record()
        };
        assert_eq!(
            back.summary(),
            "update to 1.1.0 failed, rolled back to 1.0.0"
        );
    }

    #[test]
    fn files_round_trip_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read::<Record>(dir.path(), RECORD).expect("read"), None);
        write(dir.path(), RECORD, &record()).expect("write");
        assert_eq!(
            read::<Record>(dir.path(), RECORD).expect("read"),
            Some(record())
        );
        std::fs::write(dir.path().join(PROGRESS), b"{").expect("write");
        assert!(read::<Progress>(dir.path(), PROGRESS).is_err());
    }
}

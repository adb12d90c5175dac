//! The command journal: one durable file per command id, written before the command
//! starts and again when it ends. It is what makes a command run at most once: an id
//! the hub delivers again is answered from the journal, and an id that was started by
//! an agent that then stopped is reported as interrupted, never run a second time.

use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use watchgrid_api::dto::{CommandError, CommandErrorKind, CommandOrder, CommandReport};
use watchgrid_store::durable;

/// Reported entries are kept this long to answer late re-deliveries, then pruned.
const KEEP_REPORTED_S: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub order: CommandOrder,
    pub started_at: u64,
    /// Set when the command has ended (or was found interrupted).
    pub report: Option<CommandReport>,
    /// The hub has stored the report.
    pub reported: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("command id {0:?} is not a plain id; refused")]
    BadId(String),
    #[error("command journal {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("command journal {path} is unreadable: {reason}")]
    Corrupt { path: String, reason: String },
}

pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn open(dir: PathBuf) -> Result<Journal, JournalError> {
        let err = |source| JournalError::Io {
            path: dir.display().to_string(),
            source,
        };
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(err)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
            durable::sync_dir(dir.parent().unwrap_or(Path::new("/"))).map_err(err)?;
        }
        Ok(Journal { dir })
    }

    /// Ids come from the hub; they name files, so only plain ids are taken.
    fn path(&self, id: &str) -> Result<PathBuf, JournalError> {
        let plain = (1..=64).contains(&id.len())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !plain {
            return Err(JournalError::BadId(id.to_string()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    pub fn get(&self, id: &str) -> Result<Option<Entry>, JournalError> {
        let path = self.path(id)?;
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| JournalError::Corrupt {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(JournalError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Writes the entry; when this returns it survives a crash or power cut.
    pub fn put(&self, entry: &Entry) -> Result<(), JournalError> {
        let path = self.path(&entry.order.id)?;
        let json = serde_json::to_vec(entry).map_err(|e| JournalError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        durable::write_file(&path, &json, 0o600).map_err(|source| JournalError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Records that the command is about to start. Must return before it starts.
    pub fn start(&self, order: &CommandOrder, now: u64) -> Result<Entry, JournalError> {
        let entry = Entry {
            order: order.clone(),
            started_at: now,
            report: None,
            reported: false,
        };
        self.put(&entry)?;
        Ok(entry)
    }

    /// Every entry, for the start-up sweep.
    pub fn entries(&self) -> Result<Vec<Entry>, JournalError> {
        let err = |source| JournalError::Io {
            path: self.dir.display().to_string(),
            source,
        };
        let mut out = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(err)? {
            let name = item.map_err(err)?.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Some(e) = self.get(id)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// At start: entries a previous run started but never finished become
    /// "interrupted" reports (they are not run again); returns the reports still owed
    /// to the hub, and prunes old reported entries.
    pub fn recover(&self, now: u64) -> Result<Vec<CommandReport>, JournalError> {
        let mut owed = Vec::new();
        for mut e in self.entries()? {
            if e.report.is_none() {
                e.report = Some(interrupted(&e, now));
                self.put(&e)?;
            }
            if e.reported {
                if now.saturating_sub(e.started_at) > KEEP_REPORTED_S {
                    let path = self.path(&e.order.id)?;
                    durable::remove_file(&path).map_err(|source| JournalError::Io {
                        path: path.display().to_string(),
                        source,
                    })?;
                }
                continue;
            }
            owed.extend(e.report);
        }
        Ok(owed)
    }

    pub fn finish(&self, mut entry: Entry, report: CommandReport) -> Result<Entry, JournalError> {
        entry.report = Some(report);
        self.put(&entry)?;
        Ok(entry)
    }

    pub fn mark_reported(&self, id: &str) -> Result<(), JournalError> {
        if let Some(mut e) = self.get(id)? {
            if !e.reported {
                e.reported = true;
                self.put(&e)?;
            }
        }
        Ok(())
    }
}

/// The report for a command whose run was cut short by the agent stopping.
pub fn interrupted(e: &Entry, now: u64) -> CommandReport {
    CommandReport {
        id: e.order.id.clone(),
        exit_code: None,
        error: Some(CommandError {
            kind: CommandErrorKind::Interrupted,
            message: "the agent stopped while the command ran; it was not run again".into(),
        }),
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        started_at: e.started_at,
        duration_ms: now.saturating_sub(e.started_at) * 1000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str) -> CommandOrder {
        CommandOrder {
            id: id.into(),
            argv: vec!["true".into()],
            timeout_s: 5,
        }
    }

    #[test]
    fn a_started_command_found_at_start_is_reported_interrupted_not_rerun() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(dir.path().join("commands")).expect("open");
        j.start(&order("cmd-1"), 100).expect("start");
        let done = j.start(&order("cmd-2"), 100).expect("start");
        let report = interrupted(&done, 101);
        j.finish(
            done,
            CommandReport {
                exit_code: Some(0),
                error: None,
                ..report
            },
        )
        .expect("finish");
        // A new agent process opens the journal.
        let j = Journal::open(dir.path().join("commands")).expect("reopen");
        let mut owed = j.recover(110).expect("recover");
        owed.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(owed.len(), 2);
        assert_eq!(owed[0].id, "cmd-1");
        assert_eq!(
            owed[0].error.as_ref().map(|e| e.kind),
            Some(CommandErrorKind::Interrupted)
        );
        assert_eq!(owed[1].exit_code, Some(0));
        j.mark_reported("cmd-1").expect("mark");
        j.mark_reported("cmd-2").expect("mark");
        assert!(j.recover(120).expect("recover").is_empty());
        assert!(
            j.get("cmd-1").expect("get").is_some(),
            "kept for late re-deliveries"
        );
        assert!(j
            .recover(100 + KEEP_REPORTED_S + 1)
            .expect("recover")
            .is_empty());
        assert!(
            j.get("cmd-1").expect("get").is_none(),
            "pruned after a week"
        );
    }

    #[test]
    fn ids_that_are_not_plain_never_name_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::open(dir.path().join("commands")).expect("open");
        for bad in ["../x", "a/b", "", ".json", &"a".repeat(65)] {
            assert!(
                matches!(j.start(&order(bad), 1), Err(JournalError::BadId(_))),
                "{bad}"
            );
        }
    }
}

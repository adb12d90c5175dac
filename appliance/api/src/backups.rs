//! Scheduled backups: taken by the image's daily timer (through the daemon's local
//! socket) or from the dashboard, kept in the backup directory (the newest `keep`),
//! verified on demand. Every run's outcome is in the store, on the Backup page and in
//! `watchgrid_backup_last_success_timestamp_seconds`; a failed run raises an alert.

use crate::error::ApiError;
use crate::hub::{BackupRefused, BackupSource};
use crate::state::{unix_now, AppState};
use std::path::Path;
use std::sync::Arc;
use watchgrid_store::{durable, BackupStatus, Verification, BACKUP_KEY};

/// Backups kept when the operator does not say.
pub const DEFAULT_KEEP: u32 = 7;

/// The file name ending of a backup.
const SUFFIX: &str = ".wgbackup";

/// One backup in the backup directory.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StoredBackup {
    pub name: String,
    pub size: u64,
    /// Unix seconds of the file's last change.
    pub modified_at: u64,
    pub verification: Option<VerificationView>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct VerificationView {
    pub at: u64,
    pub ok: bool,
    pub detail: String,
}

fn source(state: &AppState) -> Result<Arc<dyn BackupSource>, ApiError> {
    state
        .backup
        .get()
        .cloned()
        .ok_or_else(|| ApiError::Unavailable("backups are not available here".into()))
}

fn refused(e: BackupRefused) -> ApiError {
    match e {
        BackupRefused::Invalid(m) => ApiError::Invalid(m),
        BackupRefused::Failed(m) => ApiError::Unavailable(m),
        BackupRefused::Busy => ApiError::Busy {
            retry_after_secs: 5,
        },
    }
}

/// Takes a scheduled backup now (blocking: run it off the async threads); its file name.
pub fn run_scheduled(state: &AppState) -> Result<String, ApiError> {
    let now = unix_now();
    let result = take_and_keep(state);
    let recorded = record_run(state, now, &result);
    let name = result?;
    recorded?;
    Ok(name)
}

fn take_and_keep(state: &AppState) -> Result<String, ApiError> {
    let source = source(state)?;
    let schedule = state
        .store
        .backup_schedule
        .get(BACKUP_KEY)?
        .ok_or_else(|| {
            ApiError::Invalid(
            "no backup passphrase is set: set one on the Backup page (or PUT /api/backups/schedule)"
                .into(),
        )
        })?;
    let (bytes, name) = source.take(schedule.passphrase.expose()).map_err(refused)?;
    let dir = source.dir();
    private_dir(&dir)?;
    let path = dir.join(&name);
    durable::write_file(&path, &bytes, 0o600)
        .map_err(|e| ApiError::Unavailable(format!("writing {}: {e}", path.display())))?;
    prune(&dir, schedule.keep)?;
    Ok(name)
}

fn private_dir(dir: &Path) -> Result<(), ApiError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ApiError::Unavailable(format!("creating {}: {e}", dir.display())))
}

/// Removes all but the newest `keep` backups.
fn prune(dir: &Path, keep: u32) -> Result<(), ApiError> {
    let names = backup_names(dir)?;
    let excess = names.len().saturating_sub(keep.max(1) as usize);
    for name in &names[..excess] {
        durable::remove_file(&dir.join(name))
            .map_err(|e| ApiError::Unavailable(format!("removing {name}: {e}")))?;
    }
    Ok(())
}

/// Backup file names in `dir`, oldest first (names carry the creation time).
fn backup_names(dir: &Path) -> Result<Vec<String>, ApiError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ApiError::Unavailable(format!("{}: {e}", dir.display()))),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(SUFFIX))
        .collect();
    names.sort_by_key(|n| (n.len(), n.clone()));
    Ok(names)
}

/// Stores the run's outcome, sets the metric, and raises an alert for a failure.
fn record_run(
    state: &AppState,
    at: u64,
    result: &Result<String, ApiError>,
) -> Result<(), ApiError> {
    let kept =
        backup_names(&source(state).map(|s| s.dir()).unwrap_or_default()).unwrap_or_default();
    let (success, error) = match result {
        Ok(_) => (Some(at), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let stored = state.store.backup_status.update(BACKUP_KEY, |cur| {
        let mut s = cur.unwrap_or_default();
        s.last_attempt_at = Some(at);
        s.last_success_at = success.or(s.last_success_at);
        s.last_error = error.clone();
        s.verified.retain(|name, _| kept.contains(name));
        Ok::<_, ()>(Some(s))
    })?;
    if let Ok(Some(s)) = &stored {
        publish(state, s);
    }
    if let Some(error) = error {
        crate::alerts::raise(
            state,
            vec![crate::alerts::NewAlert {
                kind: "backup_failed",
                device_id: String::new(),
                summary: format!("the scheduled backup failed: {error}"),
                details: serde_json::json!({ "at": at, "error": error }),
            }],
        )?;
    }
    Ok(())
}

/// The metric follows the stored status (also at start, from what the store says).
pub fn publish(state: &AppState, status: &BackupStatus) {
    let at = status.last_success_at.unwrap_or(0);
    state
        .metrics
        .backup_last_success
        .set(i64::try_from(at).unwrap_or(i64::MAX));
    let copied = status.offsite.last_success_at.unwrap_or(0);
    state
        .metrics
        .backup_offsite_last_success
        .set(i64::try_from(copied).unwrap_or(i64::MAX));
}

/// Decrypts and checks one stored backup with the schedule's passphrase (blocking).
pub fn verify_stored(state: &AppState, name: &str) -> Result<VerificationView, ApiError> {
    let source = source(state)?;
    let dir = source.dir();
    if !backup_names(&dir)?.iter().any(|n| n == name) {
        return Err(ApiError::NotFound);
    }
    let schedule = state
        .store
        .backup_schedule
        .get(BACKUP_KEY)?
        .ok_or_else(|| ApiError::Invalid("no backup passphrase is set".into()))?;
    let checked = source.verify(&dir.join(name), schedule.passphrase.expose());
    let v = Verification {
        at: unix_now(),
        ok: checked.is_ok(),
        detail: match checked {
            Ok(summary) => summary,
            Err(BackupRefused::Invalid(m) | BackupRefused::Failed(m)) => m,
            Err(e @ BackupRefused::Busy) => e.to_string(),
        },
    };
    let _stored = state.store.backup_status.update(BACKUP_KEY, |cur| {
        let mut s = cur.unwrap_or_default();
        s.verified.insert(name.to_string(), v.clone());
        Ok::<_, ()>(Some(s))
    })?;
    Ok(view(&v))
}

fn view(v: &Verification) -> VerificationView {
    VerificationView {
        at: v.at,
        ok: v.ok,
        detail: v.detail.clone(),
    }
}

/// The stored backups, newest first, with their last verification.
pub fn stored(state: &AppState) -> Result<Vec<StoredBackup>, ApiError> {
    let Some(source) = state.backup.get() else {
        return Ok(Vec::new());
    };
    let dir = source.dir();
    let status = state
        .store
        .backup_status
        .get(BACKUP_KEY)?
        .unwrap_or_default();
    let mut out = Vec::new();
    for name in backup_names(&dir)?.into_iter().rev() {
        let Ok(meta) = std::fs::metadata(dir.join(&name)) else {
            continue;
        };
        let modified_at = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        out.push(StoredBackup {
            verification: status.verified.get(&name).map(view),
            name,
            size: meta.len(),
            modified_at,
        });
    }
    Ok(out)
}

/// What a scheduled run did: the stored file, and its copy off the box when copies are on.
pub struct RunOutcome {
    pub name: String,
    /// The server and path of the copy, or why it failed; None when copies are off.
    pub offsite: Option<Result<String, String>>,
}

/// Takes a scheduled backup (off the async threads), then copies it off the box.
pub async fn run_and_copy(state: &AppState) -> Result<RunOutcome, ApiError> {
    let s = state.clone();
    let name = tokio::task::spawn_blocking(move || run_scheduled(&s))
        .await
        .map_err(|e| ApiError::internal(format!("the backup task: {e}")))??;
    let offsite = crate::offsite::copy(state, &name).await;
    Ok(RunOutcome { name, offsite })
}

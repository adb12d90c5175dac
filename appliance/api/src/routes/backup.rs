//! `POST /api/backup`: the whole appliance as one encrypted file. It holds the hub's
//! private key, every password hash and 2FA secret, so with 2FA on it needs a current
//! code, like minting an API token.

use super::{audit, session::require_second_factor};
use crate::auth::Admin;
use crate::backups::{StoredBackup, VerificationView, DEFAULT_KEEP};
use crate::dto::ErrorBody;
use crate::error::ApiError;
use crate::hub::BackupRefused;
use crate::json::StrictJson;
use crate::state::AppState;
use axum::extract::Path;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use watchgrid_store::{BackupSchedule, BACKUP_KEY};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/backup", post(download))
        .route("/api/backups", get(show))
        .route("/api/backups/schedule", put(set_schedule))
        .route("/api/backups/run", post(run_now))
        .route("/api/backups/{name}/verify", post(verify))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupRequest {
    /// The backup is encrypted to it (age, scrypt); at least 12 characters. Keep it
    /// apart from the appliance: without it the backup cannot be restored.
    #[schema(min_length = 12, max_length = 1024)]
    pub(crate) passphrase: String,
    /// With 2FA on: a current TOTP code or a recovery code.
    pub(crate) totp: Option<String>,
}

/// An encrypted backup of the store, the hub key, TLS material and CAs, as a download.
#[utoipa::path(post, path = "/api/backup", tag = "admin", request_body = BackupRequest,
    responses((status = 200, description = "the age-encrypted backup",
            content_type = "application/octet-stream"),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn download(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<BackupRequest>,
) -> Result<Response, ApiError> {
    if req.passphrase.chars().count() < 12 || req.passphrase.len() > 1024 {
        return Err(ApiError::Invalid(
            "passphrase: 12 to 1024 characters".into(),
        ));
    }
    require_second_factor(&state, &admin.username, req.totp.as_deref())?;
    let source = state
        .backup
        .get()
        .cloned()
        .ok_or_else(|| ApiError::Unavailable("backups are not available here".into()))?;
    let taken = tokio::task::spawn_blocking(move || source.take(&req.passphrase))
        .await
        .map_err(|e| ApiError::internal(format!("the backup task: {e}")))?;
    let (bytes, file_name) = taken.map_err(|e| match e {
        BackupRefused::Invalid(m) => ApiError::Invalid(m),
        BackupRefused::Failed(m) => ApiError::internal(format!("taking a backup: {m}")),
        BackupRefused::Busy => ApiError::Busy {
            retry_after_secs: 5,
        },
    })?;
    audit(&state, &admin.username, "backup.download", &file_name)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// The schedule, the last run, and the stored backups.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct BackupsView {
    /// False until a passphrase is set; until then the daily runs fail, saying so.
    pub scheduled: bool,
    pub keep: u32,
    pub last_attempt_at: Option<u64>,
    pub last_success_at: Option<u64>,
    pub last_error: Option<String>,
    /// Newest first.
    pub stored: Vec<StoredBackup>,
}

pub(crate) fn view(state: &AppState) -> Result<BackupsView, ApiError> {
    let schedule = state.store.backup_schedule.get(BACKUP_KEY)?;
    let status = state
        .store
        .backup_status
        .get(BACKUP_KEY)?
        .unwrap_or_default();
    Ok(BackupsView {
        scheduled: schedule.is_some(),
        keep: schedule.map_or(DEFAULT_KEEP, |s| s.keep),
        last_attempt_at: status.last_attempt_at,
        last_success_at: status.last_success_at,
        last_error: status.last_error,
        stored: crate::backups::stored(state)?,
    })
}

/// The backup schedule's state and the backups kept on the appliance.
#[utoipa::path(get, path = "/api/backups", tag = "admin",
    responses((status = 200, body = BackupsView), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<BackupsView>, ApiError> {
    Ok(Json(view(&state)?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleRequest {
    /// Scheduled backups are encrypted to it; at least 12 characters.
    #[schema(min_length = 12, max_length = 1024)]
    pub(crate) passphrase: String,
    /// Backups kept on the appliance (1 to 365, default 7).
    #[schema(minimum = 1, maximum = 365)]
    pub(crate) keep: Option<u32>,
    /// With 2FA on: a current TOTP code or a recovery code.
    pub(crate) totp: Option<String>,
}

/// Sets the passphrase and retention of the daily backups. With 2FA on it needs a code:
/// the passphrase decides who can read every backup from now on.
#[utoipa::path(put, path = "/api/backups/schedule", tag = "admin", request_body = ScheduleRequest,
    responses((status = 200, body = BackupsView), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn set_schedule(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<ScheduleRequest>,
) -> Result<Json<BackupsView>, ApiError> {
    check_passphrase(&req.passphrase)?;
    let keep = req.keep.unwrap_or(DEFAULT_KEEP);
    if !(1..=365).contains(&keep) {
        return Err(ApiError::Invalid("keep: 1 to 365".into()));
    }
    require_second_factor(&state, &admin.username, req.totp.as_deref())?;
    state.store.backup_schedule.put(
        BACKUP_KEY,
        &BackupSchedule {
            passphrase: req.passphrase.into(),
            keep,
            updated_at: crate::state::unix_now(),
        },
    )?;
    audit(
        &state,
        &admin.username,
        "backup.schedule",
        &format!("keep {keep}"),
    )?;
    Ok(Json(view(&state)?))
}

fn check_passphrase(p: &str) -> Result<(), ApiError> {
    if p.chars().count() < 12 || p.len() > 1024 {
        return Err(ApiError::Invalid(
            "passphrase: 12 to 1024 characters".into(),
        ));
    }
    Ok(())
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct BackupRun {
    /// The stored backup's file name.
    pub name: String,
    /// Its copy off the box; absent when copies are off.
    pub offsite: Option<OffsiteCopy>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct OffsiteCopy {
    pub ok: bool,
    /// `host:port:/path` of the copy, or why it failed.
    pub detail: String,
}

/// Takes a scheduled backup now (what the daily timer does) and copies it off the box
/// when copies are on. A failed copy leaves the stored backup in place and says why.
#[utoipa::path(post, path = "/api/backups/run", tag = "admin",
    responses((status = 200, body = BackupRun), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn run_now(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<BackupRun>, ApiError> {
    let run = crate::backups::run_and_copy(&state).await?;
    audit(&state, &admin.username, "backup.run", &run.name)?;
    Ok(Json(BackupRun {
        name: run.name,
        offsite: run.offsite.map(|r| match r {
            Ok(detail) => OffsiteCopy { ok: true, detail },
            Err(detail) => OffsiteCopy { ok: false, detail },
        }),
    }))
}

/// Decrypts and checks a stored backup with the schedule's passphrase; the result is
/// kept and shown with the backup.
#[utoipa::path(post, path = "/api/backups/{name}/verify", tag = "admin",
    params(("name" = String, Path, description = "a stored backup's file name")),
    responses((status = 200, body = VerificationView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<VerificationView>, ApiError> {
    let s = state.clone();
    let checked_name = name.clone();
    let v = tokio::task::spawn_blocking(move || crate::backups::verify_stored(&s, &checked_name))
        .await
        .map_err(|e| ApiError::internal(format!("the verify task: {e}")))??;
    audit(&state, &admin.username, "backup.verify", &name)?;
    Ok(Json(v))
}

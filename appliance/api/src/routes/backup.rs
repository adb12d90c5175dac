//! `POST /api/backup`: the whole appliance as one encrypted file. It holds the hub's
//! private key, every password hash and 2FA secret, so with 2FA on it needs a current
//! code, like minting an API token.

use super::{audit, session::require_second_factor};
use crate::auth::Admin;
use crate::dto::ErrorBody;
use crate::error::ApiError;
use crate::hub::BackupRefused;
use crate::json::StrictJson;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/backup", post(download))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupRequest {
    /// The backup is encrypted to it (age, scrypt); at least 12 characters. Keep it
    /// apart from the appliance: without it the backup cannot be restored.
    #[schema(min_length = 12, max_length = 1024)]
    passphrase: String,
    /// With 2FA on: a current TOTP code or a recovery code.
    totp: Option<String>,
}

/// An encrypted backup of the store, the hub key, TLS material and CAs, as a download.
#[utoipa::path(post, path = "/api/backup", tag = "admin", request_body = BackupRequest,
    responses((status = 200, description = "the age-encrypted backup",
            content_type = "application/octet-stream"),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
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

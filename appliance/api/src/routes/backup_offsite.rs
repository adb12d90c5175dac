//! `/api/backups/offsite`: where scheduled backups are copied off the box over SFTP, the
//! appliance's key for it, and a test of the settings.

use super::{audit, session::require_second_factor};
use crate::auth::Admin;
use crate::dto::ErrorBody;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use watchgrid_offsite::PinnedHostKey;
use watchgrid_store::{OffsiteStatus, BACKUP_KEY};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/backups/offsite", get(show).put(set).delete(remove))
        .route("/api/backups/offsite/test", post(test))
        .route("/api/backups/offsite/key", post(new_key))
}

/// The SFTP target, the appliance's public key, and how the last copy went.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct OffsiteView {
    /// False: backups stay on the appliance.
    pub enabled: bool,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub dir: Option<String>,
    /// SHA256 fingerprints of the pinned host keys.
    pub host_key_fingerprints: Vec<String>,
    /// The line to add to the account's `authorized_keys` on the server.
    pub public_key: String,
    pub public_key_fingerprint: String,
    pub last_attempt_at: Option<u64>,
    pub last_success_at: Option<u64>,
    pub last_error: Option<String>,
    /// `host:port:/path` of the last copy that arrived.
    pub last_copy: Option<String>,
}

pub(crate) fn view(state: &AppState) -> Result<OffsiteView, ApiError> {
    let settings = state.store.backup_offsite.get(BACKUP_KEY)?;
    let key = crate::offsite::client_key(state)?;
    let status: OffsiteStatus = state
        .store
        .backup_status
        .get(BACKUP_KEY)?
        .unwrap_or_default()
        .offsite;
    let fingerprints = settings
        .as_ref()
        .and_then(|s| PinnedHostKey::parse(&s.host_key).ok())
        .map(|p| p.fingerprints())
        .unwrap_or_default();
    Ok(OffsiteView {
        enabled: settings.is_some(),
        host: settings.as_ref().map(|s| s.host.clone()),
        port: settings.as_ref().map(|s| s.port),
        user: settings.as_ref().map(|s| s.user.clone()),
        dir: settings.as_ref().map(|s| s.dir.clone()),
        host_key_fingerprints: fingerprints,
        public_key: key.authorized_line(),
        public_key_fingerprint: key.fingerprint(),
        last_attempt_at: status.last_attempt_at,
        last_success_at: status.last_success_at,
        last_error: status.last_error,
        last_copy: status.last_copy,
    })
}

/// Where backups are copied off the box, and the appliance's key for it (created on the
/// first look).
#[utoipa::path(get, path = "/api/backups/offsite", tag = "admin",
    responses((status = 200, body = OffsiteView), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<OffsiteView>, ApiError> {
    Ok(Json(view(&state)?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OffsiteRequest {
    /// The SSH server: a DNS name or an IP address.
    pub(crate) host: String,
    /// Default 22.
    pub(crate) port: Option<u16>,
    pub(crate) user: String,
    /// A directory that exists on the server (relative: from the account's home).
    pub(crate) dir: String,
    /// The server's host public key(s): `ssh-ed25519 AAAA…` lines, or `ssh-keyscan`
    /// output. Copies go only to a server presenting one of them.
    pub(crate) host_key: String,
    /// With 2FA on: a current TOTP code or a recovery code.
    pub(crate) totp: Option<String>,
}

/// Sets where scheduled backups are copied. The settings are checked, not tried: use
/// `POST /api/backups/offsite/test` for that. With 2FA on it needs a code.
#[utoipa::path(put, path = "/api/backups/offsite", tag = "admin", request_body = OffsiteRequest,
    responses((status = 200, body = OffsiteView), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn set(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<OffsiteRequest>,
) -> Result<Json<OffsiteView>, ApiError> {
    if req.host_key.len() > 16 * 1024 {
        return Err(ApiError::Invalid("host_key: at most 16 KiB".into()));
    }
    let settings = crate::offsite::checked_settings(
        req.host,
        req.port.unwrap_or(22),
        req.user,
        req.dir,
        &req.host_key,
    )?;
    require_second_factor(&state, &admin.username, req.totp.as_deref())?;
    crate::offsite::client_key(&state)?;
    state.store.backup_offsite.put(BACKUP_KEY, &settings)?;
    audit(
        &state,
        &admin.username,
        "backup.offsite",
        &format!(
            "{}@{}:{} {}",
            settings.user, settings.host, settings.port, settings.dir
        ),
    )?;
    Ok(Json(view(&state)?))
}

/// Stops copying backups off the box (the appliance's key is kept).
#[utoipa::path(delete, path = "/api/backups/offsite", tag = "admin",
    responses((status = 200, body = OffsiteView), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<OffsiteView>, ApiError> {
    state.store.backup_offsite.remove(BACKUP_KEY)?;
    audit(&state, &admin.username, "backup.offsite.remove", "")?;
    Ok(Json(view(&state)?))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct OffsiteTest {
    pub ok: bool,
    /// What the test did, or why it failed (a host key mismatch names the key the server
    /// presented).
    pub detail: String,
}

/// Signs in to the server with the stored settings and writes and removes a probe file.
#[utoipa::path(post, path = "/api/backups/offsite/test", tag = "admin",
    responses((status = 200, body = OffsiteTest), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn test(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<OffsiteTest>, ApiError> {
    let result = match crate::offsite::test(&state).await {
        Ok(detail) => OffsiteTest { ok: true, detail },
        Err(ApiError::Unavailable(detail)) => OffsiteTest { ok: false, detail },
        Err(e) => return Err(e),
    };
    audit(
        &state,
        &admin.username,
        "backup.offsite.test",
        if result.ok { "ok" } else { "failed" },
    )?;
    Ok(Json(result))
}

/// Replaces the appliance's SSH key for copies; the new public key must be authorized
/// on the server. With 2FA on it needs a code.
#[utoipa::path(post, path = "/api/backups/offsite/key", tag = "admin",
    request_body = KeyRequest,
    responses((status = 200, body = OffsiteView), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn new_key(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<KeyRequest>,
) -> Result<Json<OffsiteView>, ApiError> {
    require_second_factor(&state, &admin.username, req.totp.as_deref())?;
    let key = crate::offsite::new_client_key(&state)?;
    audit(
        &state,
        &admin.username,
        "backup.offsite.key",
        &key.fingerprint(),
    )?;
    Ok(Json(view(&state)?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyRequest {
    /// With 2FA on: a current TOTP code or a recovery code.
    pub(crate) totp: Option<String>,
}

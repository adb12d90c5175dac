//! Changing the signed-in admin's password. It needs the current password and, with
//! 2FA on, a code, so a stolen session or token alone cannot take the account over;
//! it voids every session and API token the admin held and signs the caller back in.

use super::{audit, limit, session::require_second_factor};
use crate::auth::{hash_password, issue_session, verify_password, Admin, ClientIp};
use crate::dto::{ErrorBody, Status};
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::limits::LOGIN;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/auth/password", post(change))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordChange {
    current_password: String,
    /// At least 12 characters.
    #[schema(min_length = 12, max_length = 1024)]
    new_password: String,
    /// With 2FA on: a current TOTP code or a recovery code.
    totp: Option<String>,
}

/// Changes the password; every other session and every API token of the admin stops
/// working, and the answer carries a fresh session cookie.
#[utoipa::path(post, path = "/api/auth/password", tag = "auth", request_body = PasswordChange,
    responses((status = 200, body = Status), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn change(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    admin: Admin,
    StrictJson(req): StrictJson<PasswordChange>,
) -> Result<Response, ApiError> {
    limit(&state, LOGIN, ip)?;
    super::setup::validate_password(&req.new_password).map_err(|_| {
        ApiError::Invalid("new_password: 12 to 1024 bytes, at least 12 characters".into())
    })?;
    let stored = state
        .store
        .admins
        .get(&admin.username)?
        .ok_or(ApiError::Unauthorized)?;
    let current = stored.password_hash.into_inner();
    if !verify_password(req.current_password, Some(current)).await? {
        tracing::warn!(client = %ip, "password change with a wrong current password");
        return Err(ApiError::Unauthorized);
    }
    require_second_factor(&state, &admin.username, req.totp.as_deref())?;
    let hash = hash_password(req.new_password).await?;
    state
        .store
        .change_admin_password(&admin.username, hash)?
        .ok_or(ApiError::Unauthorized)?;
    audit(&state, &admin.username, "auth.password_change", "")?;
    let (_, cookie) = issue_session(&state, &admin.username)?;
    Ok(([(header::SET_COOKIE, cookie)], Json(Status::new("ok"))).into_response())
}

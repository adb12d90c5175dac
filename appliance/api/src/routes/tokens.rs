//! API tokens for automation: create (shown once), list (never the token), revoke,
//! optional expiry. A token acts as its admin without a second factor, so minting one
//! needs that factor when 2FA is on.

use super::{audit, session::require_second_factor};
use crate::auth::Admin;
use crate::dto::{ApiTokenCreated, ApiTokenList, ApiTokenView, ErrorBody, Status};
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::secrets::{new_token, token_hash};
use crate::state::{unix_now, AppState};
use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use watchgrid_store::ApiToken;

/// The longest expiry a token can be given: ten years.
const MAX_EXPIRY_DAYS: u32 = 3650;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/tokens", get(list).post(create))
        .route("/api/tokens/{id}", delete(revoke))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Days until the token is refused; absent: it never expires.
    #[schema(minimum = 1, maximum = 3650)]
    expires_in_days: Option<u32>,
    /// With 2FA on: a current TOTP code or a recovery code.
    totp: Option<String>,
}

/// Creates an API token for automation; with 2FA on, it needs a current code.
#[utoipa::path(post, path = "/api/tokens", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = ApiTokenCreated), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<TokenRequest>,
) -> Result<Json<ApiTokenCreated>, ApiError> {
    if req.name.is_empty() || req.name.len() > 100 {
        return Err(ApiError::Invalid("name: 1 to 100 characters".into()));
    }
    if req
        .expires_in_days
        .is_some_and(|d| d == 0 || d > MAX_EXPIRY_DAYS)
    {
        return Err(ApiError::Invalid(format!(
            "expires_in_days: 1 to {MAX_EXPIRY_DAYS}"
        )));
    }
    require_second_factor(&state, &admin.username, req.totp.as_deref())?;
    let epoch = state
        .store
        .admins
        .get(&admin.username)?
        .ok_or(ApiError::Unauthorized)?
        .credential_epoch;
    let now = unix_now();
    let token = new_token();
    let record = ApiToken {
        token_hash: token_hash(&token),
        name: req.name,
        username: admin.username.clone(),
        created_at: now,
        expires_at: req.expires_in_days.map(|d| now + u64::from(d) * 86_400),
        last_used_at: None,
        epoch,
    };
    state.store.api_tokens.put(&record.token_hash, &record)?;
    audit(&state, &admin.username, "token.create", &record.name)?;
    // Shown once; only its hash is stored.
    Ok(Json(ApiTokenCreated {
        token,
        id: record.id().to_string(),
        name: record.name,
        expires_at: record.expires_at,
    }))
}

/// Every API token: name, owner, created, last used, expiry — never the token.
#[utoipa::path(get, path = "/api/tokens", tag = "auth",
    responses((status = 200, body = ApiTokenList), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<ApiTokenList>, ApiError> {
    let now = unix_now();
    let mut tokens: Vec<ApiTokenView> = state
        .store
        .api_tokens
        .list()?
        .into_iter()
        .map(|t| ApiTokenView {
            id: t.id().to_string(),
            expired: t.expires_at.is_some_and(|at| now >= at),
            name: t.name,
            username: t.username,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        })
        .collect();
    tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(Json(ApiTokenList { tokens }))
}

/// Revokes a token at once.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "auth",
    params(("id" = String, Path, description = "The token id from the list")),
    responses((status = 200, body = Status), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Status>, ApiError> {
    let token = state
        .store
        .api_token_by_id(&id)?
        .ok_or(ApiError::NotFound)?;
    state
        .store
        .api_tokens
        .remove(&token.token_hash)?
        .ok_or(ApiError::NotFound)?;
    audit(&state, &admin.username, "token.revoke", &token.name)?;
    Ok(Json(Status::new("ok")))
}

//! Admin login, logout and API tokens.

use super::{audit, limit};
use crate::auth::{clear_cookie, issue_session, verify_password, Admin, ClientIp};
use crate::error::ApiError;
use crate::json::{JsonOrForm, StrictJson};
use crate::limits::LOGIN;
use crate::routes::pages::{login_form, page};
use crate::secrets::{new_token, token_hash};
use crate::state::{unix_now, AppState};
use axum::extract::State;
use axum::http::header;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use watchgrid_store::{ApiToken, RevokedSession};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
        .route("/api/tokens", post(create_token))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
    /// Second factor; accepted for the contract, checked once 2FA is enabled for a user.
    #[allow(dead_code)]
    totp: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Result<JsonOrForm<LoginRequest>, ApiError>,
) -> Response {
    let from_form = body.as_ref().is_ok_and(|b| b.from_form);
    let result = match body {
        Ok(b) => run_login(&state, ip, b.value).await,
        Err(e) => Err(e),
    };
    match (result, from_form) {
        (Ok((cookie, user)), false) => (
            [(header::SET_COOKIE, cookie)],
            Json(serde_json::json!({ "username": user })),
        )
            .into_response(),
        (Ok((cookie, _)), true) => {
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        (Err(e), true) => (
            e.status(),
            page("Sign in", &login_form(Some(&e.to_string()))),
        )
            .into_response(),
        (Err(e), false) => e.into_response(),
    }
}

/// Checks the credentials; returns the Set-Cookie value and the user name.
async fn run_login(
    state: &AppState,
    ip: std::net::IpAddr,
    req: LoginRequest,
) -> Result<(String, String), ApiError> {
    limit(state, LOGIN, ip)?;
    let stored = state.store.admins.get(&req.username)?;
    let ok = verify_password(req.password, stored.map(|a| a.password_hash)).await?;
    if !ok {
        state.metrics.login_failure("bad_credentials");
        tracing::warn!(client = %ip, "failed admin login");
        return Err(ApiError::Unauthorized);
    }
    let (_, cookie) = issue_session(state, &req.username)?;
    audit(state, &req.username, "auth.login", &ip.to_string())?;
    Ok((cookie, req.username))
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    admin: Admin,
) -> Result<Response, ApiError> {
    if let Some(claims) = &admin.session {
        state.store.revoked_sessions.put(
            &claims.jti,
            &RevokedSession {
                jti: claims.jti.clone(),
                expires_at: claims.exp,
            },
        )?;
    }
    audit(&state, &admin.username, "auth.logout", "")?;
    let from_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let cookie = [(header::SET_COOKIE, clear_cookie())];
    Ok(if from_form {
        (cookie, Redirect::to("/login")).into_response()
    } else {
        (cookie, Json(serde_json::json!({ "status": "ok" }))).into_response()
    })
}

async fn me(admin: Admin) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "username": admin.username }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    name: String,
}

async fn create_token(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<TokenRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if req.name.is_empty() || req.name.len() > 100 {
        return Err(ApiError::Invalid("name: 1 to 100 characters".into()));
    }
    let token = new_token();
    state.store.api_tokens.put(
        &token_hash(&token),
        &ApiToken {
            token_hash: token_hash(&token),
            name: req.name.clone(),
            username: admin.username.clone(),
            created_at: unix_now(),
        },
    )?;
    audit(&state, &admin.username, "token.create", &req.name)?;
    // Shown once; only its hash is stored.
    Ok(Json(
        serde_json::json!({ "token": token, "name": req.name }),
    ))
}

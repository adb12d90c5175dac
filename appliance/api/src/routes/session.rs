//! Admin login, logout and API tokens.

use super::{audit, limit};
use crate::auth::{clear_cookie, issue_session, verify_password, Admin, ClientIp};
use crate::error::ApiError;
use crate::json::{JsonOrForm, StrictJson};
use crate::limits::LOGIN;
use crate::routes::pages::{login_form, page};
use crate::secrets::{new_token, token_hash};
use crate::state::{unix_now, AppState};
use crate::totp;
use axum::extract::State;
use axum::http::header;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::{Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use watchgrid_store::{AdminUser, ApiToken, RevokedSession};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
        .route("/api/tokens", post(create_token))
        .route("/api/auth/2fa/setup", post(totp_setup))
        .route("/api/auth/2fa/enable", post(totp_enable))
        .route("/api/auth/2fa/disable", post(totp_disable))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
    /// Second factor: a current TOTP code or an unused recovery code, when 2FA is on.
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
    let totp_secret = stored.as_ref().and_then(|a| a.totp_secret.clone());
    let ok = verify_password(req.password, stored.map(|a| a.password_hash)).await?;
    if !ok {
        state.metrics.login_failure("bad_credentials");
        tracing::warn!(client = %ip, "failed admin login");
        return Err(ApiError::Unauthorized);
    }
    if let Some(secret) = totp_secret {
        let Some(code) = req.totp.as_deref().filter(|c| !c.trim().is_empty()) else {
            return Err(ApiError::TwoFactorRequired);
        };
        if !use_second_factor(state, &req.username, &secret, code)? {
            state.metrics.login_failure("bad_totp");
            tracing::warn!(client = %ip, "failed admin login (second factor)");
            return Err(ApiError::Unauthorized);
        }
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

/// Accepts a TOTP code newer than the last one used, or consumes a recovery code.
/// Atomic on the admin record, so one code cannot win two concurrent logins.
fn use_second_factor(
    state: &AppState,
    username: &str,
    secret: &str,
    code: &str,
) -> Result<bool, ApiError> {
    let code = code.trim();
    if code.contains('-') {
        let hash = token_hash(code);
        let used = state.store.admins.update(username, |cur| match cur {
            Some(mut a)
                if a.recovery_code_hashes
                    .iter()
                    .any(|h| crate::secrets::ct_eq(h, &hash)) =>
            {
                a.recovery_code_hashes.retain(|h| *h != hash);
                Ok(Some(a))
            }
            _ => Err(()),
        })?;
        return Ok(used.is_ok());
    }
    let Some(step) = totp::matching_step(secret, code, unix_now())? else {
        return Ok(false);
    };
    let used = state.store.admins.update(username, |cur| match cur {
        Some(a) if step > a.totp_last_step => Ok(Some(AdminUser {
            totp_last_step: step,
            ..a
        })),
        _ => Err(()),
    })?;
    Ok(used.is_ok())
}

async fn totp_setup(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let secret = totp::new_secret();
    let pending = secret.clone();
    state
        .store
        .admins
        .update(&admin.username, |cur| match cur {
            Some(a) => Ok(Some(AdminUser {
                totp_pending: Some(pending.clone()),
                ..a
            })),
            None => Err(()),
        })?
        .map_err(|()| ApiError::Unauthorized)?;
    let url = totp::otpauth_url(&secret, &admin.username);
    audit(&state, &admin.username, "2fa.setup", "")?;
    Ok(Json(serde_json::json!({
        "secret": secret, "otpauth_url": url, "qr_svg": totp::qr_svg(&url)?,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeRequest {
    code: String,
}

async fn totp_enable(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<CodeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = state
        .store
        .admins
        .get(&admin.username)?
        .ok_or(ApiError::Unauthorized)?;
    let pending = user
        .totp_pending
        .ok_or_else(|| ApiError::Invalid("start with POST /api/auth/2fa/setup".into()))?;
    let step = totp::matching_step(&pending, &req.code, unix_now())?
        .ok_or_else(|| ApiError::Invalid("code: does not match the new secret".into()))?;
    let (codes, hashes) = totp::recovery_codes();
    state
        .store
        .admins
        .update(&admin.username, |cur| match cur {
            Some(a) if a.totp_pending.as_deref() == Some(pending.as_str()) => Ok(Some(AdminUser {
                totp_secret: Some(pending.clone()),
                totp_pending: None,
                totp_last_step: step,
                recovery_code_hashes: hashes.clone(),
                ..a
            })),
            _ => Err(()),
        })?
        .map_err(|()| ApiError::Conflict("2FA setup changed meanwhile; start again".into()))?;
    audit(&state, &admin.username, "2fa.enable", "")?;
    // Shown once; only hashes are kept.
    Ok(Json(serde_json::json!({ "recovery_codes": codes })))
}

async fn totp_disable(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<CodeRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = state
        .store
        .admins
        .get(&admin.username)?
        .ok_or(ApiError::Unauthorized)?;
    let secret = user
        .totp_secret
        .ok_or_else(|| ApiError::Invalid("2FA is not enabled".into()))?;
    if !use_second_factor(&state, &admin.username, &secret, &req.code)? {
        return Err(ApiError::Unauthorized);
    }
    state
        .store
        .admins
        .update(&admin.username, |cur| match cur {
            Some(a) => Ok(Some(AdminUser {
                totp_secret: None,
                totp_pending: None,
                recovery_code_hashes: Vec::new(),
                ..a
            })),
            None => Err(()),
        })?
        .map_err(|()| ApiError::Unauthorized)?;
    audit(&state, &admin.username, "2fa.disable", "")?;
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

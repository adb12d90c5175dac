//! Admin login, logout and API tokens.

use super::{audit, limit};
use crate::auth::{clear_cookie, issue_session, verify_password, Admin, ClientIp};
use crate::dto::{ErrorBody, RecoveryCodes, Status, TotpSetup, Username};
use crate::error::ApiError;
use crate::json::{JsonOrForm, StrictJson};
use crate::limits::{LOGIN, SECOND_FACTOR};
use crate::routes::pages::{login_form, page};
use crate::secrets::token_hash;
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
use watchgrid_store::{AdminUser, RevokedSession, Sensitive};

/// Signing in, which needs no session yet.
pub fn sign_in_router() -> Router<AppState> {
    Router::new().route("/api/auth/login", post(login))
}

/// Everything else, for signed-in admins.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
        .route("/api/auth/2fa/setup", post(totp_setup))
        .route("/api/auth/2fa/enable", post(totp_enable))
        .route("/api/auth/2fa/disable", post(totp_disable))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    username: String,
    password: String,
    /// Second factor: a current TOTP code or an unused recovery code, when 2FA is on.
    totp: Option<String>,
}

/// Signs in; sets the session cookie (also accepts an HTML form post).
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = Username), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub(crate) async fn login(
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
        (Ok((cookie, username)), false) => {
            ([(header::SET_COOKIE, cookie)], Json(Username { username })).into_response()
        }
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
    let ok = verify_password(req.password, stored.map(|a| a.password_hash.into_inner())).await?;
    if !ok {
        state.metrics.login_failure("bad_credentials");
        tracing::warn!(client = %ip, "failed admin login");
        return Err(ApiError::Unauthorized);
    }
    if let Some(secret) = totp_secret {
        let Some(code) = req.totp.as_deref().filter(|c| !c.trim().is_empty()) else {
            return Err(ApiError::TwoFactorRequired);
        };
        if !use_second_factor(state, &req.username, secret.expose(), code)? {
            state.metrics.login_failure("bad_totp");
            tracing::warn!(client = %ip, "failed admin login (second factor)");
            return Err(ApiError::Unauthorized);
        }
    }
    let (_, cookie) = issue_session(state, &req.username)?;
    audit(state, &req.username, "auth.login", &ip.to_string())?;
    Ok((cookie, req.username))
}

/// Signs out: the session is revoked and the cookie cleared.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses((status = 200, body = Status), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn logout(
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
        (cookie, Json(Status::new("ok"))).into_response()
    })
}

/// The signed-in admin.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, body = Username), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn me(admin: Admin) -> Json<Username> {
    Json(Username {
        username: admin.username,
    })
}

/// The step-up check of sensitive changes (password, 2FA, new API tokens): with 2FA on,
/// `code` must be a current TOTP code or an unused recovery code, which it consumes.
/// Without 2FA there is nothing to check.
pub(crate) fn require_second_factor(
    state: &AppState,
    username: &str,
    code: Option<&str>,
) -> Result<(), ApiError> {
    let admin = state
        .store
        .admins
        .get(username)?
        .ok_or(ApiError::Unauthorized)?;
    let Some(secret) = admin.totp_secret else {
        return Ok(());
    };
    let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
        return Err(ApiError::TwoFactorRequired);
    };
    if use_second_factor(state, username, secret.expose(), code)? {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetupRequest {
    /// Re-enrolment while 2FA is on: a current TOTP code or a recovery code.
    code: Option<String>,
}

/// Starts 2FA enrolment: a new secret, its otpauth URL and QR code. With 2FA already on
/// (re-enrolment), it needs a current code, or a stolen session could swap the factor.
#[utoipa::path(post, path = "/api/auth/2fa/setup", tag = "auth", request_body = SetupRequest,
    responses((status = 200, body = TotpSetup), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn totp_setup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    admin: Admin,
    body: Result<JsonOrForm<SetupRequest>, ApiError>,
) -> Result<Response, ApiError> {
    limit(&state, SECOND_FACTOR, ip)?;
    let req = body?.value;
    require_second_factor(&state, &admin.username, req.code.as_deref())?;
    let secret = Sensitive::new(totp::new_secret());
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
    let url = totp::otpauth_url(secret.expose(), &admin.username);
    audit(&state, &admin.username, "2fa.setup", "")?;
    let qr_svg = totp::qr_svg(&url)?;
    if is_form(&headers) {
        let csrf = crate::auth::csrf_token(&state, &admin)?.unwrap_or_default();
        return Ok(page(
            "Two-factor authentication",
            &crate::routes::pages::totp_setup_page(secret.expose(), &qr_svg, &csrf, None),
        )
        .into_response());
    }
    Ok(Json(TotpSetup {
        secret,
        otpauth_url: url,
        qr_svg,
    })
    .into_response())
}

/// True for HTML form posts, which get a page back instead of JSON.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CodeRequest {
    /// A 6-digit TOTP code, or a recovery code.
    #[schema(min_length = 6)]
    code: String,
}

/// Confirms 2FA with a code from the new secret; returns the recovery codes once.
#[utoipa::path(post, path = "/api/auth/2fa/enable", tag = "auth", request_body = CodeRequest,
    responses((status = 200, body = RecoveryCodes), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn totp_enable(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    admin: Admin,
    body: Result<JsonOrForm<CodeRequest>, ApiError>,
) -> Response {
    let from_form = body.as_ref().is_ok_and(|b| b.from_form);
    let result = match (limit(&state, SECOND_FACTOR, ip), body) {
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(()), Ok(b)) => finish_enrolment(&state, &admin.username, &b.value.code),
    };
    let title = "Two-factor authentication";
    match (result, from_form) {
        (Ok(codes), false) => Json(RecoveryCodes {
            recovery_codes: codes,
        })
        .into_response(),
        (Ok(codes), true) => {
            page(title, &crate::routes::pages::recovery_codes_page(&codes)).into_response()
        }
        (Err(e), true) => (
            e.status(),
            page(
                title,
                &crate::routes::pages::message_page(title, &e.to_string()),
            ),
        )
            .into_response(),
        (Err(e), false) => e.into_response(),
    }
}

/// Confirms the pending secret with a code; returns the recovery codes (shown once,
/// only their hashes are kept).
fn finish_enrolment(state: &AppState, username: &str, code: &str) -> Result<Vec<String>, ApiError> {
    let user = state
        .store
        .admins
        .get(username)?
        .ok_or(ApiError::Unauthorized)?;
    let pending = user.totp_pending.ok_or_else(|| {
        ApiError::Conflict("no 2FA enrolment in progress: POST /api/auth/2fa/setup first".into())
    })?;
    let step =
        totp::matching_step(pending.expose(), code, unix_now())?.ok_or(ApiError::Unauthorized)?;
    let (codes, hashes) = totp::recovery_codes();
    state
        .store
        .admins
        .update(username, |cur| match cur {
            Some(a) if a.totp_pending.as_ref() == Some(&pending) => Ok(Some(AdminUser {
                totp_secret: Some(pending.clone()),
                totp_pending: None,
                totp_last_step: step,
                recovery_code_hashes: hashes.clone(),
                ..a
            })),
            _ => Err(()),
        })?
        .map_err(|()| ApiError::Conflict("2FA setup changed meanwhile; start again".into()))?;
    audit(state, username, "2fa.enable", "")?;
    Ok(codes)
}

/// Turns 2FA off; needs a current code or a recovery code.
#[utoipa::path(post, path = "/api/auth/2fa/disable", tag = "auth", request_body = CodeRequest,
    responses((status = 200, body = Status), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn totp_disable(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    admin: Admin,
    StrictJson(req): StrictJson<CodeRequest>,
) -> Result<Json<Status>, ApiError> {
    limit(&state, SECOND_FACTOR, ip)?;
    let user = state
        .store
        .admins
        .get(&admin.username)?
        .ok_or(ApiError::Unauthorized)?;
    let secret = user
        .totp_secret
        .ok_or_else(|| ApiError::Conflict("2FA is not enabled".into()))?;
    if !use_second_factor(&state, &admin.username, secret.expose(), &req.code)? {
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
    Ok(Json(Status::new("ok")))
}

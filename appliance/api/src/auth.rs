//! Admin authentication: argon2id passwords, JWT session cookies with revocation, API
//! tokens, the layer that requires them, and the client-address extractor.

use crate::error::ApiError;
use crate::limits::client_ip;
use crate::secrets::token_hash;
use crate::state::{unix_now, AppState};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{decode, encode, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

pub const SESSION_COOKIE: &str = "watchgrid_session";

/// argon2id with SPEC §6's floor: m = 19 MiB, t = 2, p = 1.
fn argon2() -> Result<Argon2<'static>, ApiError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(ApiError::internal)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password on the calling thread (tens of milliseconds by design).
pub fn hash_password_blocking(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut rand_core::OsRng);
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// Password hashes running at once. Each argon2id hash holds 19 MiB for tens of
/// milliseconds; without a cap, a burst of logins from many addresses would run one per
/// blocking thread (up to 512) and could exhaust memory.
pub const HASH_CONCURRENCY: u32 = 4;

/// How long a request waits in line for a hash slot before it is told to come back.
pub const HASH_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The hash slots; public so tests can occupy them.
pub static HASH_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(HASH_CONCURRENCY as usize);

/// Runs `work` on a blocking thread once a hash slot is free: queued up to
/// [`HASH_QUEUE_WAIT`], then 503 with Retry-After.
async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = tokio::time::timeout(HASH_QUEUE_WAIT, HASH_SLOTS.acquire())
        .await
        .map_err(|_| ApiError::Busy {
            retry_after_secs: 2,
        })?
        .map_err(ApiError::internal)?;
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(ApiError::internal)?;
    result
}

/// Hashes a password off the async runtime.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    hashing(move || hash_password_blocking(&password)).await
}

/// Verifies a password off the async runtime. With no stored hash, a dummy hash is
/// checked anyway so unknown users take as long as wrong passwords.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool, ApiError> {
    hashing(move || {
        let dummy = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2VpMb3lAqNYk3uPVpOqvOMbZOY2VkjwZDBvXfrRB8z8";
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| dummy.to_string());
        let parsed = PasswordHash::new(&stored).map_err(ApiError::internal)?;
        let ok = argon2()?.verify_password(password.as_bytes(), &parsed).is_ok();
        Ok(known && ok)
    })
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    /// The admin's credential epoch at sign-in; a password change moves it on.
    #[serde(default)]
    pub epoch: u64,
}

fn jwt_secret(state: &AppState) -> Result<watchgrid_store::Sensitive<String>, ApiError> {
    if let Some(s) = &state.config.jwt_secret {
        return Ok(s.clone());
    }
    let settings = state
        .store
        .settings
        .get(watchgrid_store::SETTINGS_KEY)?
        .ok_or(ApiError::SetupRequired)?;
    Ok(settings.jwt_secret)
}

/// Issues a session token and the Set-Cookie value that carries it.
pub fn issue_session(state: &AppState, username: &str) -> Result<(String, String), ApiError> {
    let now = unix_now();
    let epoch = state
        .store
        .admins
        .get(username)?
        .ok_or(ApiError::Unauthorized)?
        .credential_epoch;
    let claims = Claims {
        sub: username.to_string(),
        jti: crate::secrets::new_token(),
        iat: now,
        exp: now + state.config.session_ttl_secs,
        epoch,
    };
    let token = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(jwt_secret(state)?.expose().as_bytes()),
    )
    .map_err(ApiError::internal)?;
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        state.config.session_ttl_secs
    );
    Ok((token, cookie))
}

/// The Set-Cookie value that clears the session cookie.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// The requesting client's address (after trusted-proxy handling).
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| ApiError::internal("connection info missing"))?;
        let xff = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(ClientIp(client_ip(
            peer,
            xff,
            &state.config.trusted_proxies,
        )))
    }
}

/// An authenticated administrator: a session cookie or an API token.
#[derive(Clone)]
pub struct Admin {
    pub username: String,
    /// The session id when authenticated by cookie (for logout).
    pub session: Option<Claims>,
}

/// The admin [`require_admin`] found, kept in the request for the handler's [`Admin`]
/// extractor so a request is authenticated once. Private, so that nothing but this
/// module can vouch for a request.
#[derive(Clone)]
struct Authenticated(Admin);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(Authenticated(admin)) = parts.extensions.get::<Authenticated>() {
            return Ok(admin.clone());
        }
        authenticate(&parts.headers, state)
    }
}

/// Lets through only requests with a valid session cookie or API token: the layer of
/// the signed-in admin routes, so a handler there is protected even if it never asks
/// who is calling. The network fence is a separate layer (`middleware::admin_fence`).
pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let admin = match authenticate(req.headers(), &state) {
        Ok(admin) => admin,
        Err(e) => return e.into_response(),
    };
    let mut req = req;
    if crate::csrf::required(&req, admin.session.is_some()) {
        let expected = match csrf_token(&state, &admin) {
            Ok(t) => t.unwrap_or_default(),
            Err(e) => return e.into_response(),
        };
        req = match crate::csrf::verify(req, &expected).await {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        };
    }
    req.extensions_mut().insert(Authenticated(admin));
    next.run(req).await
}

/// The CSRF token of the admin's session; `None` for an API token (no forms).
pub fn csrf_token(state: &AppState, admin: &Admin) -> Result<Option<String>, ApiError> {
    let Some(session) = &admin.session else {
        return Ok(None);
    };
    let secret = jwt_secret(state)?;
    Ok(Some(crate::csrf::token(
        secret.expose().as_bytes(),
        session,
    )))
}

/// The header Watchtower-style admin clients send their key in; an alias of
/// `Authorization: Bearer` for API tokens.
pub const ADMIN_KEY_HEADER: &str = "x-admin-api-key";

/// An API token from `Authorization: Bearer` or its alias [`ADMIN_KEY_HEADER`].
fn api_token_header(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer.or_else(|| headers.get(ADMIN_KEY_HEADER).and_then(|v| v.to_str().ok()))
}

/// Checks the API token, or else the session cookie.
fn authenticate(headers: &HeaderMap, state: &AppState) -> Result<Admin, ApiError> {
    if let Some(bearer) = api_token_header(headers) {
        return authenticate_token(bearer.trim(), state);
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
        .ok_or(ApiError::Unauthorized)?;
    let claims = decode::<Claims>(
        &cookie,
        &DecodingKey::from_secret(jwt_secret(state)?.expose().as_bytes()),
        &Validation::default(),
    )
    .map_err(|_| ApiError::Unauthorized)?
    .claims;
    if state.store.revoked_sessions.get(&claims.jti)?.is_some() {
        return Err(ApiError::Unauthorized);
    }
    let admin = state
        .store
        .admins
        .get(&claims.sub)?
        .ok_or(ApiError::Unauthorized)?;
    if claims.iat < admin.sessions_valid_after || claims.epoch != admin.credential_epoch {
        return Err(ApiError::Unauthorized);
    }
    Ok(Admin {
        username: admin.username,
        session: Some(claims),
    })
}

/// How often a token's `last_used_at` is written: often enough for a list to tell a
/// live token from a forgotten one, rarely enough that automation does not turn every
/// request into a store write.
const LAST_USED_GRANULARITY_SECS: u64 = 60;

/// An API token is good while it exists, has not expired and belongs to the admin's
/// current credential epoch (a password change voids it even before it is deleted).
fn authenticate_token(bearer: &str, state: &AppState) -> Result<Admin, ApiError> {
    // The lookup is by SHA-256 of the token, so timing reveals nothing usable.
    let token = state
        .store
        .api_tokens
        .get(&token_hash(bearer))?
        .ok_or(ApiError::Unauthorized)?;
    let now = unix_now();
    if token.expires_at.is_some_and(|at| now >= at) {
        return Err(ApiError::Unauthorized);
    }
    let admin = state
        .store
        .admins
        .get(&token.username)?
        .ok_or(ApiError::Unauthorized)?;
    if token.epoch != admin.credential_epoch {
        return Err(ApiError::Unauthorized);
    }
    if token
        .last_used_at
        .is_none_or(|at| now.saturating_sub(at) >= LAST_USED_GRANULARITY_SECS)
    {
        note_token_use(state, &token.token_hash, now);
    }
    Ok(Admin {
        username: admin.username,
        session: None,
    })
}

/// Records when a token was last used. A failed write costs only the list's accuracy,
/// so it is logged rather than failing the request.
fn note_token_use(state: &AppState, hash: &str, now: u64) {
    let written = state.store.api_tokens.update(hash, |current| {
        Ok::<_, ()>(current.map(|t| watchgrid_store::ApiToken {
            last_used_at: Some(now),
            ..t
        }))
    });
    if let Err(e) = written {
        tracing::warn!(error = %e, "could not record an API token's last use");
    }
}

//! Enrollment tokens and device registration (SPEC §5).

use super::{audit, limit};
use crate::auth::{Admin, ClientIp};
use crate::dto::{
    EnrollmentTokenCreated, EnrollmentTokenList, EnrollmentTokenView, ErrorBody, Registration,
};
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::limits::REGISTER;
use crate::secrets::{new_token, token_hash};
use crate::state::{unix_now, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::Deserialize;
use watchgrid_core::PublicKey;
use watchgrid_store::{EnrollmentToken, Redemption, Sensitive, SETTINGS_KEY};

/// Ten years: longer-lived tokens should simply not expire.
const MAX_TOKEN_LIFETIME: u64 = 315_360_000;

/// Enrollment tokens, for signed-in admins.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/api/enrollment-tokens", post(create).get(list))
        .route("/api/enrollment-tokens/{id}", delete(revoke))
        // The dashboard's "Install an agent" form (an HTML answer), here for the admin
        // API's protection: session, Origin check, fence.
        .route(
            "/api/enrollment-tokens/agent-install",
            post(super::device_pages::agent_install),
        )
}

/// Registration, for devices and agents (they authenticate with the token they redeem).
pub fn agent_router() -> Router<AppState> {
    Router::new().route("/api/register", post(register))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    #[schema(max_length = 100)]
    pub(crate) name: Option<String>,
    /// Redemptions allowed (default 1).
    #[schema(minimum = 1, maximum = 100000)]
    pub(crate) uses: Option<u32>,
    /// At most ten years.
    #[schema(minimum = 1, maximum = 315360000)]
    pub(crate) expires_in_secs: Option<u64>,
    /// Groups every device enrolled with this token joins (firewall rules refer to them).
    #[serde(default)]
    #[schema(max_items = 16)]
    pub(crate) groups: Vec<String>,
}

/// Creates an enrollment token (one use by default).
#[utoipa::path(post, path = "/api/enrollment-tokens", tag = "devices", request_body = CreateRequest,
    responses((status = 200, body = EnrollmentTokenCreated), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<CreateRequest>,
) -> Result<Json<EnrollmentTokenCreated>, ApiError> {
    Ok(Json(create_token(&state, &admin, req)?))
}

/// Validates and stores a new enrollment token (the API and the dashboard's form).
pub(crate) fn create_token(
    state: &AppState,
    admin: &Admin,
    req: CreateRequest,
) -> Result<EnrollmentTokenCreated, ApiError> {
    let name = req.name.unwrap_or_default();
    if name.len() > 100 {
        return Err(ApiError::Invalid("name: at most 100 characters".into()));
    }
    let uses = req.uses.unwrap_or(1);
    if uses == 0 || uses > 100_000 {
        return Err(ApiError::Invalid("uses: 1 to 100000".into()));
    }
    let groups = super::firewall::normalize_groups(&req.groups)?;
    let now = unix_now();
    let expires_at = match req.expires_in_secs {
        Some(s) if s == 0 || s > MAX_TOKEN_LIFETIME => {
            return Err(ApiError::Invalid(
                "expires_in_secs: 1 to 315360000 (ten years)".into(),
            ))
        }
        Some(s) => Some(now.saturating_add(s)),
        None => None,
    };
    let token = new_token();
    let hash = token_hash(&token);
    state.store.enrollment_tokens.put(
        &hash,
        &EnrollmentToken {
            token_hash: hash.clone(),
            name: name.clone(),
            uses_left: uses,
            expires_at,
            created_at: now,
            groups,
        },
    )?;
    audit(state, &admin.username, "enrollment_token.create", &name)?;
    Ok(EnrollmentTokenCreated {
        token,
        name,
        uses,
        expires_at,
    })
}

/// Lists enrollment tokens (never the tokens themselves).
#[utoipa::path(get, path = "/api/enrollment-tokens", tag = "devices",
    responses((status = 200, body = EnrollmentTokenList), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<EnrollmentTokenList>, ApiError> {
    let tokens = state
        .store
        .enrollment_tokens
        .list()?
        .into_iter()
        .map(|t| EnrollmentTokenView {
            id: t.token_hash.get(..12).unwrap_or_default().to_string(),
            name: t.name,
            uses_left: t.uses_left,
            expires_at: t.expires_at,
            created_at: t.created_at,
            groups: t.groups,
        })
        .collect();
    Ok(Json(EnrollmentTokenList { tokens }))
}

/// Revokes an enrollment token by the id the list shows: it enrolls nothing more.
/// Devices it enrolled stay.
#[utoipa::path(delete, path = "/api/enrollment-tokens/{id}", tag = "devices",
    params(("id" = String, Path, description = "the id from the token list")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    revoke_token(&state, &admin, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The list's id is the first 12 hex digits of the token's hash; anything else, or a
/// prefix that no longer names exactly one token, is not found.
pub(crate) fn revoke_token(state: &AppState, admin: &Admin, id: &str) -> Result<(), ApiError> {
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::NotFound);
    }
    let matches = state.store.enrollment_tokens.list_prefix(id)?;
    let [token] = matches.as_slice() else {
        return Err(ApiError::NotFound);
    };
    state.store.enrollment_tokens.remove(&token.token_hash)?;
    audit(
        state,
        &admin.username,
        "enrollment_token.revoke",
        &token.name,
    )?;
    Ok(())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    #[schema(min_length = 1)]
    token: String,
    /// The device's WireGuard public key, base64 (`wg pubkey`).
    #[schema(pattern = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")]
    public_key: String,
    #[schema(min_length = 1, max_length = 63, pattern = "^[A-Za-z0-9.-]+$")]
    hostname: String,
    /// An agent enrolled with `--allow-commands`: the operator may queue commands for it.
    #[serde(default)]
    allow_commands: bool,
}

/// A public key from a request, with a 422 that says what is wrong with it.
pub(crate) fn parse_public_key(s: &str) -> Result<PublicKey, ApiError> {
    let key: PublicKey = s
        .parse()
        .map_err(|e| ApiError::Invalid(format!("public_key: {e}")))?;
    if key.is_low_order() {
        return Err(ApiError::Invalid(
            "public_key: a point of small order (like all zeros) is not a usable key".into(),
        ));
    }
    Ok(key)
}

pub(crate) fn validate_hostname(h: &str) -> Result<(), ApiError> {
    let ok = (1..=63).contains(&h.len())
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            "hostname: 1 to 63 letters, digits, '-' or '.'".into(),
        ))
    }
}

/// Registers a device with an enrollment token; the peer is live on the hub before the
/// answer. Agent-facing: no session, exempt from CORS.
#[utoipa::path(post, path = "/api/register", tag = "agents", request_body = RegisterRequest,
    responses((status = 200, body = Registration), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    StrictJson(req): StrictJson<RegisterRequest>,
) -> Result<Json<Registration>, ApiError> {
    limit(&state, REGISTER, ip)?;
    // Validate everything before redeeming, so bad input never burns a token.
    let key = parse_public_key(&req.public_key)?;
    validate_hostname(&req.hostname)?;
    let settings = state
        .store
        .settings
        .get(SETTINGS_KEY)?
        .ok_or(ApiError::SetupRequired)?;
    let now = unix_now();
    let redeemed = match state
        .store
        .redeem_enrollment_token(&token_hash(&req.token), now)?
    {
        Redemption::Accepted(t) => t,
        Redemption::Rejected => {
            tracing::warn!(client = %ip, "registration with an invalid enrollment token");
            return Err(ApiError::Unauthorized);
        }
    };
    let agent_key = Sensitive::new(new_token());
    // The peer is live before we answer (SPEC §5).
    let added = super::add_device(
        &state,
        &settings,
        super::NewDevice {
            groups: redeemed.groups.clone(),
            name: req.hostname.clone(),
            public_key: key,
            expires_at: None,
            agent_key_hash: token_hash(agent_key.expose()),
            allow_commands: req.allow_commands,
        },
    )
    .await;
    // Redeeming and adding are one unit: a device that was not added gives its use back.
    let device = match added {
        Ok(d) => d,
        Err(e) => {
            state.store.return_enrollment_use(&redeemed)?;
            return Err(e);
        }
    };
    if !device.groups.is_empty() {
        state.firewall_changed().await;
    }
    audit(&state, "agent", "device.register", &device.id)?;
    Ok(Json(Registration {
        agent_key,
        config: super::agents::agent_config(&state, &device)?,
    }))
}

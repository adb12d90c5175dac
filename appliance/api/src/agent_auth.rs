//! Agent authentication (SPEC §6): `Authorization: Bearer <agent_key>` alone names the
//! device, never anything in a body, so one agent cannot speak for another. An unknown
//! key and a disabled, deleted or expired device get the same generic 401. Each device
//! has its own rate limit (`limits::AGENT_PER_MINUTE`).

use crate::error::ApiError;
use crate::secrets::token_hash;
use crate::state::{unix_now, AppState};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use watchgrid_store::Device;

/// The Watchtower agents' header; an alias of `Authorization: Bearer <agent key>`.
pub const AGENT_KEY_HEADER: &str = "x-login-alert-token";

/// The device whose agent key the request carries; active at the time of the request.
pub struct AgentDevice(pub Device);

impl FromRequestParts<AppState> for AgentDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let alias = || {
            parts
                .headers
                .get(AGENT_KEY_HEADER)
                .and_then(|v| v.to_str().ok())
        };
        let key = bearer
            .or_else(alias)
            .map(str::trim)
            .filter(|k| !k.is_empty());
        // Looked up by SHA-256 of a 256-bit key: timing reveals nothing usable.
        let device = match key {
            Some(key) => state
                .store
                .device_by_agent_key(&token_hash(key))?
                .filter(|d| d.is_active(unix_now())),
            None => None,
        };
        let Some(device) = device else {
            return Err(refuse(parts, state, key.is_some()).await);
        };
        state
            .limits
            .check_agent(&device.id)
            .inspect_err(|_| state.metrics.rate_limited(crate::limits::AGENT))?;
        Ok(AgentDevice(device))
    }
}

/// Counts and logs a refused agent credential (never the credential itself).
async fn refuse(parts: &mut Parts, state: &AppState, presented: bool) -> ApiError {
    let reason = if presented {
        "unknown_key"
    } else {
        "missing_key"
    };
    state.metrics.agent_auth_failure(reason);
    let client = crate::auth::ClientIp::from_request_parts(parts, state)
        .await
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    tracing::warn!(%client, reason, "agent request refused");
    ApiError::Unauthorized
}

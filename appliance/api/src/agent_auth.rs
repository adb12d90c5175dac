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

/// The device whose agent key the request carries; active at the time of the request.
pub struct AgentDevice(pub Device);

impl FromRequestParts<AppState> for AgentDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        // Looked up by SHA-256 of a 256-bit key: timing reveals nothing usable.
        let device = state
            .store
            .device_by_agent_key(&token_hash(key))?
            .filter(|d| d.is_active(unix_now()))
            .ok_or(ApiError::Unauthorized)?;
        state
            .limits
            .check_agent(&device.id)
            .inspect_err(|_| state.metrics.rate_limited(crate::limits::AGENT))?;
        Ok(AgentDevice(device))
    }
}

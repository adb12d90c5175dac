//! The appliance's settings after setup: what devices dial and the VPN's networks. The
//! endpoint can change (a new DNS name, a port forward); agents pick the change up at
//! their next heartbeat (their config's ETag changes) and plain devices need their
//! wg-quick file again. The subnets are fixed at setup: every device's address is in them.

use super::audit;
use super::setup::validate_endpoint;
use crate::auth::Admin;
use crate::dto::ErrorBody;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use watchgrid_store::{Settings, SETTINGS_KEY};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/settings", get(show).put(update))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApplianceSettingsView {
    /// `host:port` that devices dial.
    pub endpoint: String,
    /// The VPN's IPv4 subnet, e.g. `10.100.0.0/16` (fixed at setup).
    pub vpn_subnet: String,
    /// The VPN's IPv6 /64 (fixed at first start).
    pub vpn_subnet_v6: Option<String>,
    /// When setup completed (unix seconds).
    pub setup_completed_at: u64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndpointBody {
    /// `host:port` that devices dial, e.g. `vpn.example.com:51820`.
    endpoint: String,
}

pub(crate) fn view(state: &AppState) -> Result<ApplianceSettingsView, ApiError> {
    let s = stored(state)?;
    Ok(ApplianceSettingsView {
        endpoint: s.endpoint,
        vpn_subnet: format!("{}/{}", s.vpn_subnet_v4, s.vpn_prefix_v4),
        vpn_subnet_v6: state
            .store
            .network()?
            .map(|n| format!("{}/64", n.ula_prefix)),
        setup_completed_at: s.setup_completed_at,
    })
}

fn stored(state: &AppState) -> Result<Settings, ApiError> {
    state
        .store
        .settings
        .get(SETTINGS_KEY)?
        .ok_or(ApiError::SetupRequired)
}

/// The settings.
#[utoipa::path(get, path = "/api/settings", tag = "admin",
    responses((status = 200, body = ApplianceSettingsView), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<ApplianceSettingsView>, ApiError> {
    Ok(Json(view(&state)?))
}

/// Changes the endpoint devices dial.
#[utoipa::path(put, path = "/api/settings", tag = "admin", request_body = EndpointBody,
    responses((status = 200, body = ApplianceSettingsView), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn update(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(body): StrictJson<EndpointBody>,
) -> Result<Json<ApplianceSettingsView>, ApiError> {
    let endpoint = body.endpoint.trim().to_string();
    validate_endpoint(&endpoint)?;
    update_endpoint(&state, &admin, endpoint)?;
    Ok(Json(view(&state)?))
}

/// Stores a checked endpoint and audits the change.
pub(crate) fn update_endpoint(
    state: &AppState,
    admin: &Admin,
    endpoint: String,
) -> Result<(), ApiError> {
    let changed = state.store.settings.update(SETTINGS_KEY, |cur| match cur {
        Some(s) => Ok(Some(Settings {
            endpoint: endpoint.clone(),
            ..s
        })),
        None => Err(ApiError::SetupRequired),
    })?;
    changed?;
    audit(state, &admin.username, "settings.endpoint", &endpoint)
}

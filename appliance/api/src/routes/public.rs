//! Unauthenticated endpoints: health and downloads (the CA certificate, and what a
//! machine needs to become an agent: see `downloads`).

pub(crate) mod downloads;

use crate::dto::{ErrorBody, Health};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

/// `/healthz`, the one route that answers while the firewall is down.
pub fn health_router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

/// The downloads: the CA certificate and what a machine needs to become an agent.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/downloads/ca.crt", get(ca_cert))
        .route("/downloads/watchgrid", get(downloads::binary))
        .route("/downloads/watchgrid.sha256", get(downloads::binary_sha256))
        .route(
            "/downloads/install-agent.sh",
            get(downloads::install_script),
        )
        .route(
            "/downloads/watchgrid-agent.service",
            get(downloads::agent_unit),
        )
}

/// Liveness and setup state. It answers the WAN too, so it tells only whether the
/// firewall is applied, never nft's error or how many peers there are (the metrics and
/// the admin API have those).
#[utoipa::path(get, path = "/healthz", tag = "public",
    responses((status = 200, body = Health), (status = 503, body = Health),
        (status = 500, body = ErrorBody)))]
pub(crate) async fn healthz(
    State(state): State<AppState>,
) -> Result<(axum::http::StatusCode, Json<Health>), ApiError> {
    use crate::hub::FirewallStatus;
    let status = state.firewall_status();
    let firewall = match status {
        FirewallStatus::Off => "off",
        FirewallStatus::Pending => "pending",
        FirewallStatus::Applied { .. } => "applied",
        FirewallStatus::Failed { .. } => "failed",
    };
    let degraded = matches!(status, FirewallStatus::Failed { .. }) || !status.protects();
    // Degraded is 503 so that monitors alarm: the node runs, but unprotected.
    let code = if degraded {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        axum::http::StatusCode::OK
    };
    Ok((
        code,
        Json(Health {
            status: if degraded { "degraded" } else { "ok" }.into(),
            setup_complete: state.setup_done()?,
            firewall: firewall.into(),
            update: crate::update::last_summary(&state),
        }),
    ))
}

async fn ca_cert(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let pem = state.ca_cert_pem.clone().ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem))
}

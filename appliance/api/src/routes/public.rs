//! Unauthenticated endpoints: health and downloads.

use crate::dto::{ErrorBody, Health};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/downloads/ca.crt", get(ca_cert))
}

/// Liveness and setup state.
#[utoipa::path(get, path = "/healthz", tag = "public",
    responses((status = 200, body = Health), (status = 500, body = ErrorBody)))]
pub(crate) async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    Ok(Json(Health {
        status: "ok".into(),
        setup_complete: state.setup_done()?,
        wireguard_peers: state.hub.peer_count() as u64,
    }))
}

async fn ca_cert(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let pem = state.ca_cert_pem.clone().ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem))
}

//! Unauthenticated endpoints: health and downloads.

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

async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let setup_complete = state.setup_done()?;
    Ok(Json(serde_json::json!({
        "status": "ok",
        "setup_complete": setup_complete,
        "wireguard_peers": state.hub.peer_count(),
    })))
}

async fn ca_cert(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let pem = state.ca_cert_pem.clone().ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem))
}

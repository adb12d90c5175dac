//! The HTTPS certificate's state for the admin: the mode chosen at setup, what is
//! served now, and how an ACME order is going (its last error included).

use crate::auth::Admin;
use crate::dto::ErrorBody;
use crate::error::ApiError;
use crate::hub::TlsStatus;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use watchgrid_store::TlsChoice;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/tls", get(show))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TlsView {
    /// The mode chosen at setup: `internal`, `uploaded` or `acme`.
    pub mode: String,
    /// What the listener serves now; absent when this process cannot tell.
    pub status: Option<TlsStatus>,
}

/// The HTTPS certificate's mode and state.
#[utoipa::path(get, path = "/api/tls", tag = "admin",
    responses((status = 200, body = TlsView), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<TlsView>, ApiError> {
    Ok(Json(view(&state)?))
}

pub(crate) fn view(state: &AppState) -> Result<TlsView, ApiError> {
    let chosen = state
        .store
        .settings
        .get(watchgrid_store::SETTINGS_KEY)?
        .map(|s| s.tls)
        .unwrap_or_default();
    let mode = match chosen {
        TlsChoice::Internal => "internal",
        TlsChoice::Uploaded => "uploaded",
        TlsChoice::Acme { .. } => "acme",
    };
    Ok(TlsView {
        mode: mode.into(),
        status: state.tls.get().map(|t| t.status()),
    })
}

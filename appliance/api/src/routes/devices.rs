//! Devices: list, disable, enable, delete. Every change reaches the hub before the answer.

use super::audit;
use super::enrollment::parse_public_key;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use watchgrid_core::IpPrefix;
use watchgrid_store::Device;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/devices", get(list))
        .route("/api/devices/{id}", delete(remove))
        .route("/api/devices/{id}/disable", post(disable))
        .route("/api/devices/{id}/enable", post(enable))
}

fn view(d: &Device) -> serde_json::Value {
    serde_json::json!({
        "id": d.id, "name": d.name, "public_key": d.public_key,
        "address": d.address_v4, "enabled": d.enabled,
        "created_at": d.created_at, "expires_at": d.expires_at,
    })
}

async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<serde_json::Value>, ApiError> {
    let devices: Vec<_> = state.store.devices.list()?.iter().map(view).collect();
    Ok(Json(serde_json::json!({ "devices": devices })))
}

async fn set_enabled(state: &AppState, id: &str, enabled: bool) -> Result<Device, ApiError> {
    let updated = state.store.devices.update(id, |cur| match cur {
        Some(d) => Ok(Some(Device { enabled, ..d })),
        None => Err(()),
    })?;
    let device = updated
        .map_err(|()| ApiError::NotFound)?
        .ok_or(ApiError::NotFound)?;
    let key = parse_public_key(&device.public_key)?;
    let applied = if enabled {
        state
            .hub
            .set_peer(key, vec![IpPrefix::host(device.address_v4.into())])
            .await
    } else {
        state.hub.remove_peer(key).await
    };
    applied.map_err(|e| ApiError::internal(format!("updating the hub: {e}")))?;
    Ok(device)
}

async fn disable(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let d = set_enabled(&state, &id, false).await?;
    audit(&state, &admin.username, "device.disable", &id)?;
    Ok(Json(view(&d)))
}

async fn enable(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let d = set_enabled(&state, &id, true).await?;
    audit(&state, &admin.username, "device.enable", &id)?;
    Ok(Json(view(&d)))
}

async fn remove(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let d = state.store.delete_device(&id)?.ok_or(ApiError::NotFound)?;
    let key = parse_public_key(&d.public_key)?;
    state
        .hub
        .remove_peer(key)
        .await
        .map_err(|e| ApiError::internal(format!("updating the hub: {e}")))?;
    audit(&state, &admin.username, "device.delete", &id)?;
    Ok(Json(serde_json::json!({ "status": "deleted" })))
}

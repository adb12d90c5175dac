//! Devices: list, disable, enable, delete. Every change reaches the hub before the answer.

use super::audit;
use super::enrollment::parse_public_key;
use crate::auth::Admin;
use crate::dto::{DeviceList, DeviceView, ErrorBody, Status};
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

/// Every device.
#[utoipa::path(get, path = "/api/devices", tag = "devices",
    responses((status = 200, body = DeviceList), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<DeviceList>, ApiError> {
    let devices = state
        .store
        .devices
        .list()?
        .iter()
        .map(DeviceView::from)
        .collect();
    Ok(Json(DeviceList { devices }))
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
        let host = IpPrefix::host(device.address_v4.into());
        state.hub.set_peer(key, vec![host]).await
    } else {
        state.hub.remove_peer(key).await
    };
    applied.map_err(|e| ApiError::internal(format!("updating the hub: {e}")))?;
    Ok(device)
}

/// Disables a device: its peer leaves the hub before the answer.
#[utoipa::path(post, path = "/api/devices/{id}/disable", tag = "devices",
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn disable(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let d = set_enabled(&state, &id, false).await?;
    audit(&state, &admin.username, "device.disable", &id)?;
    Ok(Json(DeviceView::from(&d)))
}

/// Enables a device: its peer is back on the hub before the answer.
#[utoipa::path(post, path = "/api/devices/{id}/enable", tag = "devices",
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn enable(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let d = set_enabled(&state, &id, true).await?;
    audit(&state, &admin.username, "device.enable", &id)?;
    Ok(Json(DeviceView::from(&d)))
}

/// Deletes a device and frees its address.
#[utoipa::path(delete, path = "/api/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, body = Status), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Status>, ApiError> {
    let d = state.store.delete_device(&id)?.ok_or(ApiError::NotFound)?;
    let key = parse_public_key(&d.public_key)?;
    state
        .hub
        .remove_peer(key)
        .await
        .map_err(|e| ApiError::internal(format!("updating the hub: {e}")))?;
    audit(&state, &admin.username, "device.delete", &id)?;
    Ok(Json(Status::new("deleted")))
}

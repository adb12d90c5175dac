//! Devices: list, disable, enable, delete. Every change reaches the hub before the answer.

use super::audit;
use super::enrollment::parse_public_key;
use crate::auth::Admin;
use crate::dto::{AuditList, AuditView, DeviceCreated, DeviceList, DeviceView, ErrorBody, Status};
use crate::error::ApiError;
use crate::json::StrictQuery;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use watchgrid_store::Device;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/devices", get(list).post(create))
        .route("/api/audit", get(audit_log))
        .route("/api/devices/{id}", delete(remove))
        .route("/api/devices/{id}/disable", post(disable))
        .route("/api/devices/{id}/enable", post(enable))
        .route("/api/devices/{id}/expiry", put(set_expiry))
}

/// Every device.
#[utoipa::path(get, path = "/api/devices", tag = "devices",
    responses((status = 200, body = DeviceList), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<DeviceList>, ApiError> {
    let now = crate::state::unix_now();
    let devices = state
        .store
        .devices
        .list()?
        .iter()
        .map(|d| DeviceView {
            agent: super::agents::status(&state, &d.id, now),
            ..DeviceView::from(d)
        })
        .collect();
    Ok(Json(DeviceList { devices }))
}

/// Enables or disables a device as one unit: the hub first, then the store; if the
/// store write fails, the hub change is undone, so the two never disagree.
pub(crate) async fn set_enabled(
    state: &AppState,
    id: &str,
    enabled: bool,
) -> Result<Device, ApiError> {
    let _one_at_a_time = state.device_changes.lock().await;
    let device = state.store.devices.get(id)?.ok_or(ApiError::NotFound)?;
    if device.enabled == enabled {
        return Ok(device);
    }
    hub_apply(state, &device, enabled).await?;
    let stored = state.store.devices.update(id, |cur| match cur {
        Some(d) => Ok(Some(Device { enabled, ..d })),
        None => Err(()),
    });
    let device = match stored {
        Ok(Ok(Some(d))) => d,
        failed => {
            rollback(state, &device, !enabled).await;
            return Err(match failed {
                Err(e) => e.into(),
                _ => ApiError::NotFound,
            });
        }
    };
    if enabled && device.expires_at.is_some() {
        state.expiry_bell.notify_one();
    }
    if !device.groups.is_empty() {
        state.firewall_changed().await;
    }
    Ok(device)
}

/// Puts the device's peer on the hub (`present`) or takes it off.
async fn hub_apply(state: &AppState, device: &Device, present: bool) -> Result<(), ApiError> {
    let applied = if present {
        state
            .hub
            .set_peer(device.public_key, super::device_prefixes(device))
            .await
    } else {
        state.hub.remove_peer(device.public_key).await
    };
    applied.map_err(|e| {
        ApiError::Unavailable(format!(
            "the hub refused the change, so nothing changed: {e}"
        ))
    })
}

/// Undoes a hub change whose store write failed. If even that fails the hub and the
/// store disagree until the next start (which rebuilds the hub from the store), so it
/// is logged as an error.
async fn rollback(state: &AppState, device: &Device, present: bool) {
    if let Err(e) = hub_apply(state, device, present).await {
        tracing::error!(device = %device.id, error = %e, "undoing a hub change failed; the hub is rebuilt from the store at the next start");
    }
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
    crate::accounting::release_quota_hold(&state, &id)?;
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
    crate::accounting::release_quota_hold(&state, &id)?;
    audit(&state, &admin.username, "device.enable", &id)?;
    Ok(Json(DeviceView::from(&d)))
}

/// The unix second `secs` from now, for an expiry given as a lifetime.
fn expiry_from_now(secs: Option<u64>) -> Result<Option<u64>, ApiError> {
    match secs {
        Some(s) if !(60..=315_360_000).contains(&s) => Err(ApiError::Invalid(
            "expires_in_secs: 60 to 315360000 (one minute to ten years), or null for never".into(),
        )),
        Some(s) => Ok(Some(crate::state::unix_now() + s)),
        None => Ok(None),
    }
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpiryBody {
    /// Disabled automatically this many seconds from now; null: never.
    #[schema(minimum = 60, maximum = 315360000)]
    pub(crate) expires_in_secs: Option<u64>,
}

/// Sets or clears a device's expiry. It does not enable a device the old expiry
/// disabled: that stays the operator's explicit step (`/enable`).
#[utoipa::path(put, path = "/api/devices/{id}/expiry", tag = "devices", request_body = ExpiryBody,
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, body = DeviceView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn set_expiry(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    crate::json::StrictJson(req): crate::json::StrictJson<ExpiryBody>,
) -> Result<Json<DeviceView>, ApiError> {
    let expires_at = expiry_from_now(req.expires_in_secs)?;
    let updated = {
        let _one_at_a_time = state.device_changes.lock().await;
        state.store.devices.update(&id, |cur| match cur {
            Some(d) => Ok(Some(Device { expires_at, ..d })),
            None => Err(()),
        })?
    };
    let Ok(Some(device)) = updated else {
        return Err(ApiError::NotFound);
    };
    // The timer may be sleeping towards the old expiry, or have none ahead.
    state.expiry_bell.notify_one();
    let detail = match expires_at {
        Some(at) => format!("{id} until {at}"),
        None => format!("{id} never"),
    };
    audit(&state, &admin.username, "device.expiry", &detail)?;
    Ok(Json(DeviceView::from(&device)))
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
    let _one_at_a_time = state.device_changes.lock().await;
    let d = state.store.devices.get(&id)?.ok_or(ApiError::NotFound)?;
    // Off the hub first: a device the store no longer has must not stay a live peer.
    hub_apply(&state, &d, false).await?;
    match state.store.delete_device(&id) {
        Ok(Some(_)) => {}
        failed => {
            if d.enabled {
                rollback(&state, &d, true).await;
            }
            return Err(match failed {
                Err(e) => e.into(),
                _ => ApiError::NotFound,
            });
        }
    }
    state.presence.forget(&d.id);
    state.metrics.forget_peer(&d.id);
    if !d.groups.is_empty() {
        state.firewall_changed().await;
    }
    audit(&state, &admin.username, "device.delete", &id)?;
    Ok(Json(Status::new("deleted")))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateDevice {
    #[schema(min_length = 1, max_length = 63, pattern = "^[A-Za-z0-9.-]+$")]
    pub(crate) name: String,
    /// The device's own public key; omit it to have the server generate a key pair.
    #[schema(pattern = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")]
    pub(crate) public_key: Option<String>,
    /// Disabled automatically after this many seconds.
    #[schema(minimum = 60, maximum = 315360000)]
    pub(crate) expires_in_secs: Option<u64>,
    /// Groups the firewall's forward rules refer to.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub(crate) groups: Vec<String>,
}

/// Creates a plain WireGuard device (a laptop, a phone). Without a public key the server
/// generates the key pair and returns the private key once, inside a wg-quick config and
/// its QR code; it is never stored.
#[utoipa::path(post, path = "/api/devices", tag = "devices", request_body = CreateDevice,
    responses((status = 200, body = DeviceCreated), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    admin: Admin,
    crate::json::StrictJson(req): crate::json::StrictJson<CreateDevice>,
) -> Result<Json<DeviceCreated>, ApiError> {
    super::enrollment::validate_hostname(&req.name)?;
    let groups = super::firewall::normalize_groups(&req.groups)?;
    let (public_key, private_key) = match &req.public_key {
        Some(k) => (parse_public_key(k)?, None),
        None => {
            let secret = watchgrid_core::Secret::generate_private();
            let shown = watchgrid_store::Sensitive::new(secret.to_base64());
            (secret.public_key(), Some(shown))
        }
    };
    let expires_at = expiry_from_now(req.expires_in_secs)?;
    let settings = state
        .store
        .settings
        .get(watchgrid_store::SETTINGS_KEY)?
        .ok_or(ApiError::SetupRequired)?;
    let device = super::add_device(
        &state,
        &settings,
        super::NewDevice {
            name: req.name.clone(),
            public_key,
            expires_at,
            // Plain devices have no agent credential.
            agent_key_hash: String::new(),
            groups,
            allow_commands: false,
        },
    )
    .await?;
    if !device.groups.is_empty() {
        state.firewall_changed().await;
    }
    let net = super::client_network(&state, &settings, &device)?;
    let address = match &net.address_v6 {
        Some(v6) => format!("{}, {v6}", net.address_v4),
        None => net.address_v4.clone(),
    };
    let config = format!(
        "[Interface]\nPrivateKey = {}\nAddress = {address}\n\n[Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = {}\nPersistentKeepalive = {}\n",
        private_key
            .as_ref()
            .map_or("<this device's private key>", |k| k.expose().as_str()),
        state.hub.public_key(),
        settings.endpoint,
        // wg-quick's own list syntax; JSON answers carry the list as an array.
        net.allowed_ips.join(", "),
        state.config.device_keepalive,
    );
    let qr_svg = crate::totp::qr_svg(&config)?;
    audit(&state, &admin.username, "device.create", &device.id)?;
    Ok(Json(DeviceCreated {
        device: DeviceView::from(&device),
        private_key,
        config,
        qr_svg,
    }))
}

/// Disables every enabled device whose expiry has passed; returns how many.
pub async fn expire_devices(state: &AppState) -> Result<usize, ApiError> {
    let now = crate::state::unix_now();
    let mut n = 0;
    for d in state.store.devices.list()? {
        if d.enabled && d.is_expired(now) {
            set_enabled(state, &d.id, false).await?;
            audit(state, "system", "device.expire", &d.id)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The default and the largest page of the audit log.
const AUDIT_PAGE: usize = 100;
const AUDIT_PAGE_MAX: usize = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Entries per page (1 to 1000, default 100).
    limit: Option<usize>,
    /// `next_cursor` of the previous page: the entries older than it.
    cursor: Option<String>,
}

/// The audit log, newest first, one page at a time: only the page is read.
#[utoipa::path(get, path = "/api/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    _admin: Admin,
    StrictQuery(query): StrictQuery<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = query.limit.unwrap_or(AUDIT_PAGE);
    if limit == 0 || limit > AUDIT_PAGE_MAX {
        return Err(ApiError::Invalid(format!("limit: 1 to {AUDIT_PAGE_MAX}")));
    }
    // Ids are 20 zero-padded digits (`Store::audit`); anything else is no cursor of ours.
    if let Some(c) = &query.cursor {
        if c.len() != 20 || !c.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::Invalid(
                "cursor: the next_cursor of a previous page".into(),
            ));
        }
    }
    let page = state
        .store
        .audit
        .page_before(query.cursor.as_deref(), limit + 1)?;
    let more = page.len() > limit;
    let entries: Vec<AuditView> = page
        .into_iter()
        .take(limit)
        .map(|(id, e)| AuditView {
            id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
        })
        .collect();
    let next_cursor = more.then(|| entries.last().map(|e| e.id.clone())).flatten();
    Ok(Json(AuditList {
        entries,
        next_cursor,
    }))
}

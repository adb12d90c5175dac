//! The operator's side of alerts and log settings: the webhook (its secret shown once),
//! recent alerts with their delivery log, retention and the burst rule.

use super::audit;
use crate::auth::Admin;
use crate::dto::ErrorBody;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::json::StrictQuery;
use crate::secrets::new_token;
use crate::state::{unix_now, AppState};
use axum::extract::State;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use watchgrid_store::{LogSettings, Sensitive, Webhook, LOG_SETTINGS_KEY};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/alerts", get(list))
        .route(
            "/api/alerts/webhook",
            put(set_webhook).delete(remove_webhook),
        )
        .route(
            "/api/logs/settings",
            get(show_settings).put(update_settings),
        )
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AttemptView {
    at_us: u64,
    result: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AlertView {
    id: String,
    at_us: u64,
    kind: String,
    device_id: String,
    summary: String,
    /// pending, delivered, failed or no_webhook.
    delivery: String,
    attempts: Vec<AttemptView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AlertList {
    alerts: Vec<AlertView>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertQuery {
    /// At most 500 (default 100).
    limit: Option<usize>,
}

/// Recent alerts, newest first, with each delivery attempt.
#[utoipa::path(get, path = "/api/alerts", tag = "logs", params(AlertQuery),
    responses((status = 200, body = AlertList), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    StrictQuery(q): StrictQuery<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let mut all = state.store.alerts.list()?;
    all.reverse();
    all.truncate(q.limit.unwrap_or(100).clamp(1, 500));
    Ok(Json(AlertList {
        alerts: all.into_iter().map(view).collect(),
    }))
}

pub(crate) fn view(a: watchgrid_store::AlertRecord) -> AlertView {
    let delivery = serde_json::to_value(a.delivery)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    AlertView {
        id: a.id,
        at_us: a.at_us,
        kind: a.kind,
        device_id: a.device_id,
        summary: a.summary,
        delivery,
        attempts: a
            .attempts
            .into_iter()
            .map(|t| AttemptView {
                at_us: t.at_us,
                result: t.result,
            })
            .collect(),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookRequest {
    /// http:// or https://; not the hub's own loopback or metrics listener.
    #[schema(max_length = 2048, pattern = "^https?://")]
    url: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct WebhookCreated {
    url: String,
    /// Shown once: verify `X-Watchgrid-Signature: sha256=HMAC-SHA256(secret, body)`.
    secret: String,
}

/// Sets the alert webhook; a new signing secret each time, shown once.
#[utoipa::path(put, path = "/api/alerts/webhook", tag = "logs", request_body = WebhookRequest,
    responses((status = 200, body = WebhookCreated), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn set_webhook(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<WebhookRequest>,
) -> Result<Json<WebhookCreated>, ApiError> {
    crate::alerts::webhook::validate_url(&req.url, state.config.metrics_port)?;
    let secret = new_token();
    let hook = Webhook {
        url: req.url.clone(),
        secret: Sensitive::new(secret.clone()),
        created_at: unix_now(),
    };
    state
        .store
        .log_settings
        .update(LOG_SETTINGS_KEY, |cur| {
            Ok::<_, ()>(Some(LogSettings {
                webhook: Some(hook.clone()),
                ..cur.unwrap_or_default()
            }))
        })?
        .map_err(|_| ApiError::internal("settings update"))?;
    audit(&state, &admin.username, "alerts.webhook.set", &req.url)?;
    Ok(Json(WebhookCreated {
        url: req.url,
        secret,
    }))
}

/// Removes the webhook; alerts are still recorded.
#[utoipa::path(delete, path = "/api/alerts/webhook", tag = "logs",
    responses((status = 200, body = crate::dto::Status), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn remove_webhook(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<crate::dto::Status>, ApiError> {
    state
        .store
        .log_settings
        .update(LOG_SETTINGS_KEY, |cur| {
            Ok::<_, ()>(Some(LogSettings {
                webhook: None,
                ..cur.unwrap_or_default()
            }))
        })?
        .map_err(|_| ApiError::internal("settings update"))?;
    audit(&state, &admin.username, "alerts.webhook.remove", "")?;
    Ok(Json(crate::dto::Status::new("removed")))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsBody {
    /// Keep each login event's raw log line (off by default).
    keep_raw_login_lines: bool,
    /// Log lines and login events older than this are deleted (1 to 3650).
    #[schema(minimum = 1, maximum = 3650)]
    retention_days: u32,
    /// The log store is kept under this size, oldest lines first (16 MiB to 1 PiB).
    #[schema(minimum = 16777216, maximum = 1125899906842624.0)]
    retention_max_bytes: u64,
    /// A burst alert: this many failed sign-ins from one address (2 to 1000)…
    #[schema(minimum = 2, maximum = 1000)]
    burst_failures: u32,
    /// …within this many seconds (10 to 86400).
    #[schema(minimum = 10, maximum = 86400)]
    burst_window_s: u64,
    /// Read only: whether a webhook is set.
    #[serde(default)]
    webhook_url: Option<String>,
}

fn body(s: &LogSettings) -> SettingsBody {
    SettingsBody {
        keep_raw_login_lines: s.keep_raw_login_lines,
        retention_days: s.retention_days,
        retention_max_bytes: s.retention_max_bytes,
        burst_failures: s.burst_failures,
        burst_window_s: s.burst_window_s,
        webhook_url: s.webhook.as_ref().map(|w| w.url.clone()),
    }
}

/// Log retention, raw login lines and the burst rule.
#[utoipa::path(get, path = "/api/logs/settings", tag = "logs",
    responses((status = 200, body = SettingsBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn show_settings(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<SettingsBody>, ApiError> {
    Ok(Json(body(&crate::alerts::settings(&state)?)))
}

/// Changes log retention, raw login lines and the burst rule (the webhook has its own
/// endpoint).
#[utoipa::path(put, path = "/api/logs/settings", tag = "logs", request_body = SettingsBody,
    responses((status = 200, body = SettingsBody), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn update_settings(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<SettingsBody>,
) -> Result<Json<SettingsBody>, ApiError> {
    let checks = [
        (
            (1..=3650).contains(&req.retention_days),
            "retention_days: 1 to 3650",
        ),
        (
            (16 << 20..=1 << 50).contains(&req.retention_max_bytes),
            "retention_max_bytes: 16 MiB to 1 PiB",
        ),
        (
            (2..=1000).contains(&req.burst_failures),
            "burst_failures: 2 to 1000",
        ),
        (
            (10..=86400).contains(&req.burst_window_s),
            "burst_window_s: 10 to 86400",
        ),
    ];
    if let Some((_, why)) = checks.iter().find(|(ok, _)| !ok) {
        return Err(ApiError::Invalid((*why).into()));
    }
    let stored = state
        .store
        .log_settings
        .update(LOG_SETTINGS_KEY, |cur| {
            let cur = cur.unwrap_or_default();
            Ok::<_, ()>(Some(LogSettings {
                keep_raw_login_lines: req.keep_raw_login_lines,
                retention_days: req.retention_days,
                retention_max_bytes: req.retention_max_bytes,
                burst_failures: req.burst_failures,
                burst_window_s: req.burst_window_s,
                webhook: cur.webhook,
            }))
        })?
        .map_err(|_| ApiError::internal("settings update"))?
        .unwrap_or_default();
    audit(&state, &admin.username, "logs.settings", "")?;
    Ok(Json(body(&stored)))
}

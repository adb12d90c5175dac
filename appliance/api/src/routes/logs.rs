//! Logs and login events (SPEC §5): agents ship batches with sequence numbers and the
//! hub acknowledges the highest one stored (durably, once); admins search both.

use crate::agent_auth::AgentDevice;
use crate::auth::Admin;
use crate::dto::{Acked, ErrorBody, LogBatch, LoginBatch, LoginEvent};
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::json::StrictQuery;
use crate::state::{unix_now_us, AppState};
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use watchgrid_logstore::{LogQuery, LogStore, StoredLine, MAX_MESSAGE};
use watchgrid_store::{LoginQuery, LoginRecord};

const MAX_LINES: usize = 5000;
const MAX_EVENTS: usize = 1000;
/// A full batch of maximal lines, JSON-escaped, would be far larger: agents send
/// batches by bytes as well as by count (see the agent's shipper).
const LOG_BODY_LIMIT: usize = 8 << 20;
/// A timestamp further ahead than this is taken as the receiving time.
const MAX_CLOCK_AHEAD_US: u64 = 24 * 3600 * 1_000_000;

pub fn agent_router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/logs/",
            post(ingest_lines).layer(DefaultBodyLimit::max(LOG_BODY_LIMIT)),
        )
        .route("/api/logs/login", post(ingest_logins))
}

pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/api/logs", get(search_lines))
        .route("/api/login-events", get(search_logins))
}

/// A timestamp from an agent: 0 or far in the future becomes the receiving time.
pub(crate) fn normalize_ts(ts_us: u64, now_us: u64) -> u64 {
    if ts_us == 0 || ts_us > now_us.saturating_add(MAX_CLOCK_AHEAD_US) {
        now_us
    } else {
        ts_us
    }
}

fn text_ok(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::Invalid(format!("{field}: at most {max} bytes")));
    }
    Ok(())
}

pub(crate) fn log_store(state: &AppState) -> Result<std::sync::Arc<LogStore>, ApiError> {
    state
        .logs
        .get()
        .cloned()
        .ok_or_else(|| ApiError::Unavailable("the log store is not open".into()))
}

/// Stores a batch of log lines; answers the highest sequence stored.
#[utoipa::path(post, path = "/api/logs/", tag = "agents", request_body = LogBatch,
    responses((status = 200, body = Acked), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("agent_key" = [])))]
pub(crate) async fn ingest_lines(
    State(state): State<AppState>,
    AgentDevice(device): AgentDevice,
    StrictJson(batch): StrictJson<LogBatch>,
) -> Result<Json<Acked>, ApiError> {
    if batch.lines.is_empty() || batch.lines.len() > MAX_LINES {
        return Err(ApiError::Invalid(format!("lines: 1 to {MAX_LINES}")));
    }
    for l in &batch.lines {
        text_ok("message", &l.message, MAX_MESSAGE)?;
        text_ok("source", &l.source, 512)?;
        text_ok("unit", l.unit.as_deref().unwrap_or_default(), 256)?;
        if l.priority.is_some_and(|p| p > 7) {
            return Err(ApiError::Invalid("priority: 0 to 7".into()));
        }
    }
    let store = log_store(&state)?;
    let before = store.line_count();
    let device_id = device.id.clone();
    let acked_seq = tokio::task::spawn_blocking(move || {
        store
            .ingest(&device_id, &batch.lines, unix_now_us())
            .map(|acked| (acked, store.line_count()))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let (acked_seq, after) = acked_seq;
    state
        .metrics
        .log_lines_ingested
        .inc_by(after.saturating_sub(before));
    Ok(Json(Acked { acked_seq }))
}

fn validate_login(e: &LoginEvent) -> Result<(), ApiError> {
    text_ok("user", &e.user, 256)?;
    text_ok("service", &e.service, 64)?;
    text_ok("method", e.method.as_deref().unwrap_or_default(), 64)?;
    text_ok("raw", e.raw.as_deref().unwrap_or_default(), 4096)?;
    if e.user.is_empty() || e.service.is_empty() {
        return Err(ApiError::Invalid("user and service: not empty".into()));
    }
    Ok(())
}

/// Stores login events and raises the alerts they trigger; answers the highest
/// sequence stored.
#[utoipa::path(post, path = "/api/logs/login", tag = "agents", request_body = LoginBatch,
    responses((status = 200, body = Acked), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("agent_key" = [])))]
pub(crate) async fn ingest_logins(
    State(state): State<AppState>,
    AgentDevice(device): AgentDevice,
    StrictJson(batch): StrictJson<LoginBatch>,
) -> Result<Json<Acked>, ApiError> {
    if batch.events.is_empty() || batch.events.len() > MAX_EVENTS {
        return Err(ApiError::Invalid(format!("events: 1 to {MAX_EVENTS}")));
    }
    batch.events.iter().try_for_each(validate_login)?;
    let keep_raw = crate::alerts::settings(&state)?.keep_raw_login_lines;
    let now = unix_now_us();
    let records = batch
        .events
        .into_iter()
        .map(|e| LoginRecord {
            device_id: device.id.clone(),
            seq: e.seq,
            ts_us: normalize_ts(e.ts_us, now),
            received_at_us: now,
            outcome: e.outcome.as_str().to_string(),
            user: e.user,
            source_ip: e.source_ip.map(|ip| ip.to_canonical().to_string()),
            source_port: e.source_port,
            method: e.method,
            service: e.service,
            raw: e.raw.filter(|_| keep_raw),
        })
        .collect();
    let ingest = state.store.ingest_login_events(&device.id, records)?;
    for e in &ingest.stored {
        state.metrics.login_event(&e.outcome);
    }
    let alerts = crate::alerts::evaluate_logins(&state, &device.id, &ingest.stored)?;
    crate::alerts::raise(&state, alerts)?;
    Ok(Json(Acked {
        acked_seq: ingest.acked_seq,
    }))
}

/// A time bound in microseconds: the API's integers are signed 64-bit (the OpenAPI
/// `int64` clients generate), so larger values are refused rather than read.
fn micros(name: &str, v: Option<u64>) -> Result<Option<u64>, ApiError> {
    match v {
        Some(v) if v > i64::MAX as u64 => Err(ApiError::Invalid(format!(
            "{name}: at most {} (microseconds since the UNIX epoch)",
            i64::MAX
        ))),
        v => Ok(v),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogSearch {
    device: Option<String>,
    /// Microseconds since the UNIX epoch.
    since: Option<u64>,
    until: Option<u64>,
    /// Text to find in the message.
    q: Option<String>,
    unit: Option<String>,
    /// At most 1000 (default 100).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct LogPageView {
    lines: Vec<StoredLine>,
    next_cursor: Option<String>,
}

/// Searches agents' log lines, newest first.
#[utoipa::path(get, path = "/api/logs", tag = "logs", params(LogSearch),
    responses((status = 200, body = LogPageView), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn search_lines(
    State(state): State<AppState>,
    _admin: Admin,
    StrictQuery(s): StrictQuery<LogSearch>,
) -> Result<Json<LogPageView>, ApiError> {
    let query = LogQuery {
        device_id: s.device,
        since_us: micros("since", s.since)?,
        until_us: micros("until", s.until)?,
        text: s.q.filter(|q| !q.is_empty()),
        unit: s.unit,
        limit: s.limit.unwrap_or(100).clamp(1, 1000),
        cursor: s.cursor,
    };
    let store = log_store(&state)?;
    let page = tokio::task::spawn_blocking(move || store.search(&query))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    Ok(Json(LogPageView {
        lines: page.lines,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginSearch {
    device: Option<String>,
    /// accepted, failed, invalid_user, root_session or sudo_root.
    outcome: Option<String>,
    user: Option<String>,
    /// Microseconds since the UNIX epoch.
    since: Option<u64>,
    until: Option<u64>,
    /// At most 1000 (default 100).
    limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct LoginEventView {
    device_id: String,
    seq: u64,
    ts_us: u64,
    received_at_us: u64,
    outcome: String,
    user: String,
    source_ip: Option<String>,
    source_port: Option<u16>,
    method: Option<String>,
    service: String,
    raw: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct LoginEventList {
    events: Vec<LoginEventView>,
}

/// Login events across the fleet, newest first.
#[utoipa::path(get, path = "/api/login-events", tag = "logs", params(LoginSearch),
    responses((status = 200, body = LoginEventList), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn search_logins(
    State(state): State<AppState>,
    _admin: Admin,
    StrictQuery(s): StrictQuery<LoginSearch>,
) -> Result<Json<LoginEventList>, ApiError> {
    let events = state.store.login_events(&LoginQuery {
        device_id: s.device,
        outcome: s.outcome,
        user: s.user,
        since_us: micros("since", s.since)?,
        until_us: micros("until", s.until)?,
        limit: s.limit.unwrap_or(100).clamp(1, 1000),
    })?;
    Ok(Json(LoginEventList {
        events: events
            .into_iter()
            .map(|r| LoginEventView {
                device_id: r.device_id,
                seq: r.seq,
                ts_us: r.ts_us,
                received_at_us: r.received_at_us,
                outcome: r.outcome,
                user: r.user,
                source_ip: r.source_ip,
                source_port: r.source_port,
                method: r.method,
                service: r.service,
                raw: r.raw,
            })
            .collect(),
    }))
}

//! The dashboard's fleet pages (plain HTML under the same CSP, everything escaped): a
//! device's page with its agent state, recent log lines, login events and commands, and
//! the fleet's login events with filters.

use super::pages::{esc, page};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::{unix_now, AppState};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use watchgrid_logstore::LogQuery;
use watchgrid_store::{LoginQuery, LoginRecord};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/devices/{id}", get(device_page))
        .route("/logins", get(logins_page))
}

/// Log text for HTML: escaped, and control characters shown as `\xNN` (they would be
/// invisible or break the page).
pub fn esc_line(s: &str) -> String {
    let visible: String = s
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect();
    esc(&visible)
}

fn signed_in(admin: Result<Admin, ApiError>) -> Result<Option<Admin>, ApiError> {
    match admin {
        Ok(a) => Ok(Some(a)),
        Err(ApiError::Unauthorized) => Ok(None),
        Err(e) => Err(e),
    }
}

fn time(us: u64) -> String {
    let secs = (us / 1_000_000) as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|_| us.to_string())
}

fn login_rows(events: &[LoginRecord]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(e.ts_us),
                esc(&e.device_id),
                esc(&e.outcome),
                esc_line(&e.user),
                esc(e.source_ip.as_deref().unwrap_or("-")),
                esc(&e.service)
            )
        })
        .collect()
}

const LOGIN_HEAD: &str = "<tr><th>Time</th><th>Device</th><th>Outcome</th><th>User</th>\
    <th>Source</th><th>Service</th></tr>";

async fn device_page(
    State(state): State<AppState>,
    admin: Result<Admin, ApiError>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if signed_in(admin)?.is_none() {
        return Ok(Redirect::to("/login").into_response());
    }
    let device = state.store.devices.get(&id)?.ok_or(ApiError::NotFound)?;
    let agent = match super::agents::status(&state, &device.id, unix_now()) {
        Some(a) => format!(
            "<p>Agent {}: {}, last seen {}; {} log lines dropped.</p>",
            esc(&a.agent_version),
            if a.online { "online" } else { "offline" },
            time(a.last_seen * 1_000_000),
            a.log_lines_dropped.unwrap_or(0)
        ),
        None => "<p>No agent has reported for this device.</p>".into(),
    };
    let logins = state.store.login_events(&LoginQuery {
        device_id: Some(device.id.clone()),
        limit: 50,
        ..LoginQuery::default()
    })?;
    let body = format!(
        "<h1>{}</h1><p>{} · {}</p>{agent}<h2>Login events</h2><table>{LOGIN_HEAD}{}</table>\
         <h2>Recent log lines</h2>{}<h2>Commands</h2>{}<p><a href=\"/\">Dashboard</a></p>",
        esc(&device.name),
        esc(&device.id),
        device.address_v4,
        login_rows(&logins),
        recent_lines(&state, &device.id).await?,
        commands(&state, &device.id)?
    );
    Ok(page(&device.name, &body).into_response())
}

async fn recent_lines(state: &AppState, device_id: &str) -> Result<String, ApiError> {
    let Some(store) = state.logs.get().cloned() else {
        return Ok("<p>The log store is not open.</p>".into());
    };
    let query = LogQuery {
        device_id: Some(device_id.to_string()),
        limit: 100,
        ..LogQuery::default()
    };
    let page = tokio::task::spawn_blocking(move || store.search(&query))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let rows: String = page
        .lines
        .iter()
        .map(|l| {
            format!(
                "<tr><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                time(l.line.ts_us),
                esc(l.line.unit.as_deref().unwrap_or(&l.line.source)),
                esc_line(&l.line.message)
            )
        })
        .collect();
    Ok(format!(
        "<table><tr><th>Time</th><th>Unit</th><th>Message</th></tr>{rows}</table>"
    ))
}

fn commands(state: &AppState, device_id: &str) -> Result<String, ApiError> {
    let rows: String = state
        .store
        .commands_of(device_id)?
        .iter()
        .rev()
        .take(20)
        .map(|c| {
            format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&c.id),
                esc_line(&c.argv.join(" ")),
                c.state.as_str(),
                esc(&c.queued_by)
            )
        })
        .collect();
    Ok(format!(
        "<table><tr><th>Id</th><th>Command</th><th>State</th><th>Queued by</th></tr>{rows}</table>"
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginFilter {
    device: Option<String>,
    outcome: Option<String>,
    user: Option<String>,
}

async fn logins_page(
    State(state): State<AppState>,
    admin: Result<Admin, ApiError>,
    Query(f): Query<LoginFilter>,
) -> Result<Response, ApiError> {
    if signed_in(admin)?.is_none() {
        return Ok(Redirect::to("/login").into_response());
    }
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let (device, outcome, user) = (nonempty(f.device), nonempty(f.outcome), nonempty(f.user));
    let events = state.store.login_events(&LoginQuery {
        device_id: device.clone(),
        outcome: outcome.clone(),
        user: user.clone(),
        limit: 200,
        ..LoginQuery::default()
    })?;
    let field = |name: &str, value: &Option<String>| {
        format!(
            "<label>{name}<input name=\"{name}\" value=\"{}\"></label>",
            esc(value.as_deref().unwrap_or_default())
        )
    };
    let body = format!(
        "<h1>Login events</h1><form method=\"get\" action=\"/logins\">{}{}{}\
         <button type=\"submit\">Filter</button></form><table>{LOGIN_HEAD}{}</table>\
         <p><a href=\"/\">Dashboard</a></p>",
        field("device", &device),
        field("outcome", &outcome),
        field("user", &user),
        login_rows(&events)
    );
    Ok(page("Login events", &body).into_response())
}

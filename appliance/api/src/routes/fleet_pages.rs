//! The dashboard's fleet pages (plain HTML under the same CSP, everything escaped): a
//! device's page with its agent state, recent log lines, login events and commands, and
//! the fleet's login events with filters.

use super::pages::esc;
use super::ui::{Frame, Nav};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::{unix_now, AppState};
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use watchgrid_logstore::LogQuery;
use watchgrid_store::{LoginQuery, LoginRecord};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/devices/{id}", get(device_page))
        .route("/logins", get(logins_page))
}

/// The device page's forms, for the admin API's protection (session, CSRF token,
/// Origin, fence).
pub fn forms_router() -> Router<AppState> {
    Router::new()
        .route("/forms/devices/{id}/enable", post(enable))
        .route("/forms/devices/{id}/disable", post(disable))
        .route("/forms/devices/{id}/delete", post(delete))
        .route("/forms/devices/{id}/commands", post(queue_command))
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

/// Command output for a `<pre>`: lines kept, other control characters shown as
/// `\xNN` like log lines.
fn esc_output(s: &str) -> String {
    s.split('\n').map(esc_line).collect::<Vec<_>>().join("\n")
}

pub fn signed_in(admin: Result<Admin, ApiError>) -> Result<Option<Admin>, ApiError> {
    match admin {
        Ok(a) => Ok(Some(a)),
        Err(ApiError::Unauthorized) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A time in microseconds as UTC, to the second.
pub fn time(us: u64) -> String {
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

/// Login events as a table.
pub fn login_table(events: &[LoginRecord]) -> String {
    format!(
        "<div class=\"scroll\"><table class=\"logins\">{LOGIN_HEAD}{}</table></div>",
        login_rows(events)
    )
}

const LOGIN_HEAD: &str = "<tr><th>Time</th><th>Device</th><th>Outcome</th><th>User</th>\
    <th>Source</th><th>Service</th></tr>";

/// `?range=hour|day|week|month|year` for the chart, `done=` for the notice after an
/// action; anything else falls back to the defaults.
#[derive(Deserialize, Default)]
struct DeviceQuery {
    range: Option<String>,
    done: Option<String>,
}

async fn device_page(
    State(state): State<AppState>,
    admin: Result<Admin, ApiError>,
    Path(id): Path<String>,
    q: Result<Query<DeviceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Some(admin) = signed_in(admin)? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let done = match q.done.as_deref() {
        Some("enabled") => Some("The device is enabled."),
        Some("disabled") => Some("The device is disabled: it cannot connect until enabled."),
        Some("queued") => Some("The command is queued; the agent takes it at its next poll."),
        Some("groups") => Some("The groups are saved and the firewall applied."),
        Some("quota") => Some("The monthly quota is saved."),
        Some("quota-removed") => Some("The monthly quota is removed."),
        Some("expiry") => Some("The expiry is saved."),
        Some("expiry-cleared") => Some("The device no longer expires."),
        _ => None,
    };
    render_device(
        &state,
        &admin,
        &id,
        q.range.as_deref(),
        done,
        None,
        StatusCode::OK,
    )
    .await
}

pub(crate) async fn render_device(
    state: &AppState,
    admin: &Admin,
    id: &str,
    range: Option<&str>,
    ok: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    use super::traffic::{device_points, series};
    let frame = Frame::of(state, admin)?;
    let device = state.store.devices.get(id)?.ok_or(ApiError::NotFound)?;
    let now = unix_now();
    let range = chart_range(range);
    let chart = series(range, now, &device_points(state, &device.id, range, now)?);
    let body = format!(
        "<h1>{}</h1>{}{}<h2>Traffic</h2><p class=\"ranges\">{}</p>{}{}{}{}",
        esc(&device.name),
        super::ui::notice(ok, error),
        facts(state, &device, now),
        range_links(&device.id, range),
        super::ui::chart("device-chart", &chart),
        actions(&frame, &device),
        super::device_settings::settings_forms(state, &frame, &device)?,
        agent_sections(state, &frame, &device).await?,
    );
    Ok((status, frame.page(&device.name, Nav::Devices, &body)).into_response())
}

const RANGES: [(super::traffic::Range, &str, &str); 5] = {
    use super::traffic::Range;
    [
        (Range::Hour, "hour", "Hour"),
        (Range::Day, "day", "Day"),
        (Range::Week, "week", "Week"),
        (Range::Month, "month", "Month"),
        (Range::Year, "year", "Year"),
    ]
};

/// The chart's range from `?range=` (a day unless it names another).
fn chart_range(query: Option<&str>) -> super::traffic::Range {
    RANGES
        .iter()
        .find(|(_, v, _)| Some(*v) == query)
        .map_or(super::traffic::Range::Day, |(r, _, _)| *r)
}

fn range_links(id: &str, shown: super::traffic::Range) -> String {
    RANGES
        .iter()
        .map(|(r, v, label)| {
            let current = if *r == shown {
                " aria-current=\"true\""
            } else {
                ""
            };
            format!(
                "<a href=\"/devices/{}?range={v}\"{current}>{label}</a>",
                esc(id)
            )
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// An agent's commands, login events and log lines; nothing for a plain device.
async fn agent_sections(
    state: &AppState,
    frame: &Frame,
    device: &watchgrid_store::Device,
) -> Result<String, ApiError> {
    if device.agent_key_hash.is_empty() {
        return Ok(String::new());
    }
    let logins = state.store.login_events(&LoginQuery {
        device_id: Some(device.id.clone()),
        limit: 50,
        ..LoginQuery::default()
    })?;
    Ok(format!(
        "<h2 id=\"commands-heading\">Commands</h2>{}{}<h2>Login events</h2>{}<h2>Recent log lines</h2>{}",
        command_form(frame, device),
        commands(state, &device.id)?,
        login_table(&logins),
        recent_lines(state, &device.id).await?,
    ))
}

/// What the hub knows of the device (addresses, link, groups, expiry) and, for an
/// agent, what its heartbeats report.
fn facts(state: &AppState, d: &watchgrid_store::Device, now: u64) -> String {
    let mut items = link_facts(state, d, now);
    match super::agents::status(state, &d.id, now) {
        Some(a) => items.extend(heartbeat_facts(&a)),
        None if !d.agent_key_hash.is_empty() => items.push((
            "Agent",
            "enrolled, not heard from since the hub started".to_string(),
        )),
        None => {}
    }
    let rows: String = items
        .iter()
        .map(|(k, v)| format!("<tr><th scope=\"row\">{k}</th><td>{v}</td></tr>"))
        .collect();
    format!("<div class=\"scroll\"><table id=\"facts\">{rows}</table></div>")
}

type Facts = Vec<(&'static str, String)>;

fn link_facts(state: &AppState, d: &watchgrid_store::Device, now: u64) -> Facts {
    let live = state.peers_now.get(&d.public_key);
    let handshake = live
        .as_ref()
        .and_then(|p| p.last_handshake_at)
        .map_or("never".to_string(), |at| {
            format!("{} ago", super::pages::duration(now.saturating_sub(at)))
        });
    let endpoint = live
        .and_then(|p| p.endpoint)
        .map_or("-".to_string(), |e| e.to_string());
    let address = match d.address_v6 {
        Some(v6) => format!("{}, {v6}", d.address_v4),
        None => d.address_v4.to_string(),
    };
    let groups = if d.groups.is_empty() {
        "-".to_string()
    } else {
        d.groups.join(", ")
    };
    let state = if d.enabled { "enabled" } else { "disabled" };
    vec![
        ("Id", esc(&d.id)),
        ("State", state.to_string()),
        ("Address", address),
        (
            "Public key",
            format!("<code>{}</code>", esc(&d.public_key.to_string())),
        ),
        ("Endpoint", esc(&endpoint)),
        ("Latest handshake", handshake),
        ("Groups", esc(&groups)),
        (
            "Expires",
            d.expires_at
                .map_or("never".to_string(), |at| time(at * 1_000_000)),
        ),
    ]
}

fn heartbeat_facts(a: &crate::dto::AgentStatus) -> Facts {
    let seen = format!(
        "{} · {}, last seen {}",
        esc(&a.agent_version),
        if a.online { "online" } else { "offline" },
        time(a.last_seen * 1_000_000)
    );
    let host = format!(
        "{} · {} {}",
        esc(a.hostname.as_deref().unwrap_or("-")),
        esc(a.os.as_deref().unwrap_or("")),
        esc(a.kernel.as_deref().unwrap_or(""))
    );
    let load = a.load.as_ref().map_or("-".to_string(), |l| {
        l.iter()
            .map(|v| format!("{v:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    });
    vec![
        ("Agent", seen),
        ("Host", host),
        (
            "Uptime",
            a.uptime_s.map_or("-".to_string(), super::pages::duration),
        ),
        ("Load", load),
        (
            "Memory available",
            available(a.memory_available_bytes, a.memory_total_bytes),
        ),
        (
            "Disk available",
            available(a.disk_available_bytes, a.disk_total_bytes),
        ),
        (
            "Log lines dropped",
            a.log_lines_dropped.unwrap_or(0).to_string(),
        ),
    ]
}

/// "1.2 GiB of 3.8 GiB" from a heartbeat's pair of byte counts.
fn available(free: Option<u64>, total: Option<u64>) -> String {
    match (free, total) {
        (Some(f), Some(t)) => format!("{} of {}", super::pages::bytes(f), super::pages::bytes(t)),
        _ => "-".to_string(),
    }
}

fn actions(frame: &Frame, d: &watchgrid_store::Device) -> String {
    let id = esc(&d.id);
    let toggle = if d.enabled {
        frame.button(
            &format!("/forms/devices/{id}/disable"),
            "Disable",
            "device-disable",
        )
    } else {
        frame.button(
            &format!("/forms/devices/{id}/enable"),
            "Enable",
            "device-enable",
        )
    };
    format!(
        "<h2>Actions</h2>{toggle}<form method=\"post\" action=\"/forms/devices/{id}/delete\">{}\
         <label for=\"delete-confirm\">To delete, type the device&#39;s name, <code>{}</code></label>\
         <input id=\"delete-confirm\" name=\"confirm\" required autocomplete=\"off\">\
         <button type=\"submit\" class=\"danger\" id=\"device-delete\">Delete the device</button></form>",
        frame.field(),
        esc(&d.name)
    )
}

fn command_form(frame: &Frame, d: &watchgrid_store::Device) -> String {
    if !d.allow_commands {
        return "<p class=\"muted\">This agent was enrolled without <code>--allow-commands</code>: \
                it refuses remote commands.</p>"
            .into();
    }
    format!(
        "<form method=\"post\" action=\"/forms/devices/{}/commands\">{}\
         <label for=\"command-argv\">Command: the program, then each argument on a line of its own \
         (no shell unless the program is one)</label>\
         <textarea id=\"command-argv\" name=\"argv\" rows=\"3\" required></textarea>\
         <label for=\"command-timeout\">Timeout (seconds)</label>\
         <input id=\"command-timeout\" name=\"timeout_s\" type=\"number\" min=\"1\" max=\"86400\" value=\"60\">\
         <button type=\"submit\" id=\"command-queue\">Queue the command</button></form>",
        esc(&d.id),
        frame.field()
    )
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

/// The latest commands with their results: exit code or why none, output (as sent,
/// capped by the agent, control characters made visible), and when.
fn commands(state: &AppState, device_id: &str) -> Result<String, ApiError> {
    let rows: String = state
        .store
        .commands_of(device_id)?
        .iter()
        .rev()
        .take(20)
        .map(|c| {
            let outcome = match &c.result {
                None => String::new(),
                Some(r) => {
                    let exit = match (r.exit_code, &r.error) {
                        (Some(code), _) => format!("exit {code}"),
                        (None, Some(e)) => esc(e),
                        (None, None) => "-".into(),
                    };
                    let cut = |t: bool| if t { " (truncated)" } else { "" };
                    format!(
                        "{exit}, {} ms<details><summary>Output</summary><pre class=\"stdout\">{}</pre>{}\
                         <pre class=\"stderr\">{}</pre>{}</details>",
                        r.duration_ms,
                        esc_output(&r.stdout),
                        cut(r.stdout_truncated),
                        esc_output(&r.stderr),
                        cut(r.stderr_truncated)
                    )
                }
            };
            format!(
                "<tr data-command=\"{}\"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{outcome}</td><td>{}</td></tr>",
                esc(&c.id),
                time(c.queued_at * 1_000_000),
                esc_line(&c.argv.join(" ")),
                c.state.as_str(),
                esc(&c.queued_by)
            )
        })
        .collect();
    Ok(format!(
        "<div class=\"scroll\"><table id=\"commands\"><tr><th>Queued</th><th>Command</th><th>State</th>\
         <th>Result</th><th>By</th></tr>{rows}</table></div>"
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
    let Some(admin) = signed_in(admin)? else {
        return Ok(Redirect::to("/login").into_response());
    };
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
            "<label>{name} <input name=\"{name}\" value=\"{}\"></label>",
            esc(value.as_deref().unwrap_or_default())
        )
    };
    let body = format!(
        "<h1>Login events</h1><form method=\"get\" action=\"/logins\" class=\"filters\" role=\"search\">{}{}{}\
         <button type=\"submit\" id=\"logins-filter\">Filter</button></form>{}",
        field("device", &device),
        field("outcome", &outcome),
        field("user", &user),
        login_table(&events)
    );
    let frame = Frame::of(&state, &admin)?;
    Ok(frame
        .page("Login events", Nav::Logins, &body)
        .into_response())
}

/// Re-renders the device page with the refusal when it is about the admin's input.
pub(crate) async fn refused(
    state: &AppState,
    admin: &Admin,
    id: &str,
    e: ApiError,
) -> Result<Response, ApiError> {
    match e {
        ApiError::Invalid(_) | ApiError::TooLarge | ApiError::Conflict(_) => {
            let message = e.to_string();
            render_device(state, admin, id, None, None, Some(&message), e.status()).await
        }
        e => Err(e),
    }
}

async fn enable(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match super::devices::enable(State(state.clone()), admin.clone(), Path(id.clone())).await {
        Ok(_) => Ok(Redirect::to(&format!("/devices/{id}?done=enabled")).into_response()),
        Err(e) => refused(&state, &admin, &id, e).await,
    }
}

async fn disable(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match super::devices::disable(State(state.clone()), admin.clone(), Path(id.clone())).await {
        Ok(_) => Ok(Redirect::to(&format!("/devices/{id}?done=disabled")).into_response()),
        Err(e) => refused(&state, &admin, &id, e).await,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

/// Deletes only when the typed name matches: a slip of the mouse deletes nothing.
async fn delete(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    form: Result<Form<DeleteForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let device = state.store.devices.get(&id)?.ok_or(ApiError::NotFound)?;
    let typed = form.map(|Form(f)| f.confirm).unwrap_or_default();
    if typed.trim() != device.name {
        let e = ApiError::Invalid(format!(
            "not deleted: type the device's name, {}, to confirm",
            device.name
        ));
        return refused(&state, &admin, &id, e).await;
    }
    match super::devices::remove(State(state.clone()), admin.clone(), Path(id.clone())).await {
        Ok(_) => Ok(Redirect::to("/devices?done=deleted").into_response()),
        Err(e) => refused(&state, &admin, &id, e).await,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandForm {
    #[serde(default)]
    argv: String,
    #[serde(default)]
    timeout_s: String,
}

impl CommandForm {
    /// One argument per line (a trailing carriage return from the browser removed;
    /// blank lines dropped), as the API's request.
    fn request(&self) -> Result<crate::json::StrictJson<super::commands::QueueRequest>, ApiError> {
        let argv: Vec<&str> = self
            .argv
            .lines()
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.trim().is_empty())
            .collect();
        let timeout = match self.timeout_s.trim() {
            "" => serde_json::Value::Null,
            t => t
                .parse::<u32>()
                .map(serde_json::Value::from)
                .map_err(|_| ApiError::Invalid("timeout: 1 to 86400 seconds".into()))?,
        };
        serde_json::from_value(serde_json::json!({"argv": argv, "timeout_s": timeout}))
            .map(crate::json::StrictJson)
            .map_err(|e| ApiError::Invalid(e.to_string()))
    }
}

async fn queue_command(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    form: Result<Form<CommandForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let request = match form {
        Ok(Form(f)) => f.request(),
        Err(r) => Err(ApiError::Invalid(r.body_text())),
    };
    let queued = match request {
        Ok(req) => {
            super::commands::queue(State(state.clone()), admin.clone(), Path(id.clone()), req).await
        }
        Err(e) => Err(e),
    };
    match queued {
        Ok(_) => Ok(Redirect::to(&format!("/devices/{id}?done=queued#commands")).into_response()),
        Err(e) => refused(&state, &admin, &id, e).await,
    }
}

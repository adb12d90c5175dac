//! The dashboard's Devices page: the fleet's table with its state, link and traffic,
//! sorted and filtered by the query string; adding a plain WireGuard device (its
//! wg-quick file and QR code, shown once); enrollment tokens (create, list, revoke);
//! and the agent install one-liner.

use super::pages::{bytes, esc};
use super::ui::{notice, Frame, Nav};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::{unix_now, AppState};
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::Engine;
use serde::Deserialize;
use watchgrid_store::Device;

/// The page (it sends visitors without a session to sign in).
pub fn router() -> Router<AppState> {
    Router::new().route("/devices", get(devices_page))
}

/// Its forms, for the admin API's protection (session, CSRF token, Origin, fence).
pub fn forms_router() -> Router<AppState> {
    Router::new()
        .route("/forms/devices", post(add_device))
        .route("/forms/enrollment-tokens", post(create_token))
        .route("/forms/enrollment-tokens/{id}/revoke", post(revoke_token))
}

/// A peer counts as online while its latest handshake is fresh (WireGuard rekeys every
/// two minutes, so three without one means gone) or its agent heartbeats.
pub fn is_online(state: &AppState, d: &Device, now: u64) -> bool {
    if !d.enabled {
        return false;
    }
    let handshake = state
        .peers_now
        .get(&d.public_key)
        .and_then(|p| p.last_handshake_at)
        .is_some_and(|at| now.saturating_sub(at) < 180);
    handshake || super::agents::status(state, &d.id, now).is_some_and(|a| a.online)
}

/// `?q=` (name, address or group contains), `show=` (all, online, offline, disabled),
/// `sort=` (name, address, handshake, traffic, expiry), `done=` (the notice after an
/// action). Unknown values fall back to the defaults: this is a page, not the API.
#[derive(Deserialize, Default)]
pub(crate) struct DevicesQuery {
    q: Option<String>,
    show: Option<String>,
    sort: Option<String>,
    done: Option<String>,
}

/// One device's row, with what sorting and filtering look at.
struct Row {
    device: Device,
    online: bool,
    handshake_at: Option<u64>,
    endpoint: Option<String>,
    month: (u64, u64),
    agent: Option<crate::dto::AgentStatus>,
}

fn rows(state: &AppState, now: u64) -> Result<Vec<Row>, ApiError> {
    let (_, first) = crate::accounting::month_of(now);
    state
        .store
        .devices
        .list()?
        .into_iter()
        .map(|device| {
            let live = state.peers_now.get(&device.public_key);
            Ok(Row {
                online: is_online(state, &device, now),
                handshake_at: live.as_ref().and_then(|p| p.last_handshake_at),
                endpoint: live.and_then(|p| p.endpoint).map(|e| e.to_string()),
                month: state.store.traffic_total(&device.id, first, now + 1)?,
                agent: super::agents::status(state, &device.id, now),
                device,
            })
        })
        .collect()
}

fn select(mut rows: Vec<Row>, q: &DevicesQuery) -> Vec<Row> {
    let needle = q.q.as_deref().unwrap_or("").trim().to_lowercase();
    rows.retain(|r| {
        let d = &r.device;
        let text = needle.is_empty()
            || d.name.to_lowercase().contains(&needle)
            || d.address_v4.to_string().contains(&needle)
            || d.groups.iter().any(|g| g.to_lowercase().contains(&needle));
        let shown = match q.show.as_deref() {
            Some("online") => r.online,
            Some("offline") => d.enabled && !r.online,
            Some("disabled") => !d.enabled,
            _ => true,
        };
        text && shown
    });
    match q.sort.as_deref() {
        Some("address") => rows.sort_by_key(|r| r.device.address_v4),
        // Most recent first; never last.
        Some("handshake") => rows.sort_by_key(|r| std::cmp::Reverse(r.handshake_at)),
        Some("traffic") => rows.sort_by_key(|r| std::cmp::Reverse(r.month.0 + r.month.1)),
        Some("expiry") => rows.sort_by_key(|r| r.device.expires_at.unwrap_or(u64::MAX)),
        _ => rows.sort_by(|a, b| {
            a.device
                .name
                .to_lowercase()
                .cmp(&b.device.name.to_lowercase())
        }),
    }
    rows
}

fn row_html(r: &Row, now: u64) -> String {
    let d = &r.device;
    let state = match (d.enabled, r.online) {
        (false, _) => "<span class=\"offline\">disabled</span>".to_string(),
        (true, true) => "<span class=\"online\">online</span>".to_string(),
        (true, false) => "<span class=\"offline\">offline</span>".to_string(),
    };
    let agent = match &r.agent {
        Some(a) => format!("agent {}", esc(&a.agent_version)),
        None if d.agent_key_hash.is_empty() => "plain WireGuard".to_string(),
        None => "agent, not heard from".to_string(),
    };
    let handshake = r.handshake_at.map_or("never".to_string(), |at| {
        format!("{} ago", super::pages::duration(now.saturating_sub(at)))
    });
    let expiry = d.expires_at.map_or("-".to_string(), |at| {
        super::fleet_pages::time(at * 1_000_000)
    });
    format!(
        "<tr data-device=\"{id}\"><td><a href=\"/devices/{id}\">{}</a></td><td class=\"state\">{state}<br>\
         <span class=\"muted agent\">{agent}</span></td><td>{}</td><td class=\"endpoint\">{}</td><td>{handshake}</td>\
         <td class=\"traffic\">{} / {}</td><td>{}</td><td>{expiry}</td></tr>",
        esc(&d.name),
        d.address_v4,
        esc(r.endpoint.as_deref().unwrap_or("-")),
        bytes(r.month.0),
        bytes(r.month.1),
        esc(&d.groups.join(", ")),
        id = esc(&d.id),
    )
}

fn filters(q: &DevicesQuery) -> String {
    let option = |current: Option<&str>, value: &str, label: &str| {
        let selected = if current == Some(value) {
            " selected"
        } else {
            ""
        };
        format!("<option value=\"{value}\"{selected}>{label}</option>")
    };
    let show = q.show.as_deref();
    let sort = q.sort.as_deref();
    format!(
        "<form method=\"get\" action=\"/devices\" class=\"filters\" role=\"search\">\
         <label>Find <input name=\"q\" id=\"filter-q\" value=\"{}\" placeholder=\"name, address or group\"></label>\
         <label>Show <select name=\"show\" id=\"filter-show\">{}{}{}{}</select></label>\
         <label>Sort by <select name=\"sort\" id=\"filter-sort\">{}{}{}{}{}</select></label>\
         <button type=\"submit\" id=\"filter-apply\">Apply</button></form>",
        esc(q.q.as_deref().unwrap_or("")),
        option(show, "all", "all"),
        option(show, "online", "online"),
        option(show, "offline", "offline"),
        option(show, "disabled", "disabled"),
        option(sort, "name", "name"),
        option(sort, "address", "address"),
        option(sort, "handshake", "latest handshake"),
        option(sort, "traffic", "traffic this month"),
        option(sort, "expiry", "expiry"),
    )
}

/// What a render of the page carries besides the table: a notice, an error, a token
/// or a new device to show once, the install section's state.
#[derive(Default)]
struct View {
    error: Option<String>,
    created_token: Option<crate::dto::EnrollmentTokenCreated>,
    install: Install,
}

/// The notice a `done=` code stands for (fixed texts: a link cannot make the page say
/// anything else).
fn done_message(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "revoked" => Some("The enrollment token is revoked."),
        "deleted" => Some("The device is deleted."),
        _ => None,
    }
}

fn render(
    state: &AppState,
    admin: &Admin,
    headers: &HeaderMap,
    q: &DevicesQuery,
    view: View,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let frame = Frame::of(state, admin)?;
    let now = unix_now();
    let all = rows(state, now)?;
    let count = all.len();
    let shown = select(all, q);
    let table: String = shown.iter().map(|r| row_html(r, now)).collect();
    let body = format!(
        "<h1>Devices</h1>{}{}<p class=\"muted\" id=\"device-count\">{} of {count} shown</p>\
         <div class=\"scroll\"><table id=\"devices\"><tr><th>Name</th><th>State</th><th>Address</th>\
         <th>Endpoint</th><th>Handshake</th><th>This month (rx / tx)</th><th>Groups</th><th>Expires</th></tr>\
         {table}</table></div>{}{}{}",
        notice(done_message(q.done.as_deref()), view.error.as_deref()),
        filters(q),
        shown.len(),
        add_device_form(&frame),
        tokens_section(state, &frame, view.created_token.as_ref())?,
        install_section(state, &frame, headers, &view.install),
    );
    Ok((status, frame.page("Devices", Nav::Devices, &body)).into_response())
}

async fn devices_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    admin: Result<Admin, ApiError>,
    q: Result<Query<DevicesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let admin = match admin {
        Ok(a) => a,
        Err(ApiError::Unauthorized) => return Ok(Redirect::to("/login").into_response()),
        Err(e) => return Err(e),
    };
    let q = q.map(|Query(q)| q).unwrap_or_default();
    render(
        &state,
        &admin,
        &headers,
        &q,
        View::default(),
        StatusCode::OK,
    )
}

fn add_device_form(frame: &Frame) -> String {
    format!(
        "<h2 id=\"add-device\">Add a device</h2><p>For a phone or laptop with a WireGuard app: \
         the hub generates its key pair and shows its configuration once, as a file and a QR code.</p>\
         <form method=\"post\" action=\"/forms/devices\">{}\
         <label for=\"device-name\">Name</label>\
         <input id=\"device-name\" name=\"name\" required maxlength=\"63\" pattern=\"[A-Za-z0-9.\\-]+\" \
         autocomplete=\"off\" aria-describedby=\"device-name-help\">\
         <p class=\"note\" id=\"device-name-help\">Letters, digits, dots and dashes.</p>\
         <label for=\"device-groups\">Groups (comma separated, optional)</label>\
         <input id=\"device-groups\" name=\"groups\" maxlength=\"600\">\
         <label for=\"device-days\">Expires after (days; empty: never)</label>\
         <input id=\"device-days\" name=\"expires_days\" type=\"number\" min=\"1\" max=\"3650\">\
         <button type=\"submit\" id=\"device-add\">Add the device</button></form>",
        frame.field()
    )
}

/// The "Add a device" form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddDeviceForm {
    name: String,
    #[serde(default)]
    groups: String,
    #[serde(default)]
    expires_days: String,
}

/// Comma-separated names as a list (empty entries dropped).
pub(crate) fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}

fn days(s: &str) -> Result<Option<u64>, ApiError> {
    match s.trim() {
        "" => Ok(None),
        d => d
            .parse::<u64>()
            .ok()
            .filter(|d| (1..=3650).contains(d))
            .map(|d| Some(d * 86_400))
            .ok_or_else(|| ApiError::Invalid("expires after: 1 to 3650 days".into())),
    }
}

/// Form errors the page shows; anything else is the API's answer.
fn form_error(r: &FormRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge
    } else {
        ApiError::Invalid(r.body_text())
    }
}

/// Re-renders the page with the refusal when it is the admin's input; else the error.
fn refused(
    state: &AppState,
    admin: &Admin,
    headers: &HeaderMap,
    e: ApiError,
) -> Result<Response, ApiError> {
    match e {
        ApiError::Invalid(_) | ApiError::TooLarge | ApiError::Conflict(_) => {
            let status = e.status();
            let view = View {
                error: Some(e.to_string()),
                ..View::default()
            };
            render(
                state,
                admin,
                headers,
                &DevicesQuery::default(),
                view,
                status,
            )
        }
        e => Err(e),
    }
}

async fn add_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    admin: Admin,
    form: Result<Form<AddDeviceForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let request = form.map_err(|r| form_error(&r)).and_then(|Form(f)| {
        Ok(super::devices::CreateDevice {
            name: f.name.trim().to_string(),
            public_key: None,
            expires_in_secs: days(&f.expires_days)?,
            groups: list(&f.groups),
        })
    });
    let created = match request {
        Ok(req) => {
            super::devices::create(
                State(state.clone()),
                admin.clone(),
                crate::json::StrictJson(req),
            )
            .await
        }
        Err(e) => Err(e),
    };
    let created = match created {
        Ok(axum::Json(c)) => c,
        Err(e) => return refused(&state, &admin, &headers, e),
    };
    let frame = Frame::of(&state, &admin)?;
    Ok(frame
        .page("Device added", Nav::Devices, &device_added(&created))
        .into_response())
}

/// The new device's configuration, once: as text, as a file to save and as a QR code
/// for a phone's WireGuard app. Nothing of it is stored on the hub.
fn device_added(c: &crate::dto::DeviceCreated) -> String {
    let file = base64::engine::general_purpose::STANDARD.encode(c.config.as_bytes());
    let svg = c
        .qr_svg
        .find("<svg")
        .map(|i| &c.qr_svg[i..])
        .unwrap_or_default();
    format!(
        "<h1>{} is added</h1><p class=\"ok\" role=\"status\" id=\"notice\">Save its configuration now: \
         the private key is shown only on this page and is not kept on the hub.</p>\
         <p><a id=\"wg-download\" download=\"{name}.conf\" href=\"data:text/plain;base64,{file}\">\
         Download {name}.conf</a></p><h2>Scan with the WireGuard app</h2><div id=\"qr\">{svg}</div>\
         <h2>wg-quick configuration</h2><pre id=\"wg-config\">{}</pre>\
         <p><a href=\"/devices/{}\">The device&#39;s page</a> · <a href=\"/devices\">All devices</a></p>",
        esc(&c.device.name),
        esc(&c.config),
        esc(&c.device.id),
        name = esc(&c.device.name),
    )
}

/// What the "Install an agent" section shows besides the command: the token the admin
/// just created with its form, or why the form was refused.
#[derive(Default)]
struct Install {
    token: Option<String>,
    allow_commands: bool,
    error: Option<String>,
}

/// The hub's URL as the admin's browser reached it: `https://` and the request's Host,
/// when that is a plain `host[:port]` (the command is pasted into a root shell, so
/// nothing that a shell would read as syntax gets into it).
fn hub_url(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    plain.then(|| format!("https://{host}"))
}

/// The one-line install: fetch the CA without verification, check its fingerprint (the
/// SHA-256 of its DER), and only then fetch the installer over TLS verified against it.
/// The installer checks the CA again itself before it downloads the binary. The
/// placeholders and every value here are shell-safe: the URL is checked by `hub_url`,
/// the token is base64url and the fingerprint hex.
fn install_command(hub: &str, fingerprint: &str, token: &str, allow_commands: bool) -> String {
    let hex = fingerprint.replace(':', "").to_ascii_lowercase();
    let allow = if allow_commands {
        " --allow-commands"
    } else {
        ""
    };
    format!(
        "cd \"$(mktemp -d)\" && curl -fsSk {hub}/downloads/ca.crt -o watchgrid-ca.crt && \
         sed '/^-----/d' watchgrid-ca.crt | base64 -d > watchgrid-ca.der && \
         echo '{hex}  watchgrid-ca.der' | sha256sum -c && \
         curl -fsS --cacert watchgrid-ca.crt {hub}/downloads/install-agent.sh -o install-agent.sh && \
         sh install-agent.sh --server {hub} --token {token} --fingerprint SHA256:{fingerprint}{allow}"
    )
}

/// The install command with this hub's URL and CA fingerprint, and a form that creates
/// an enrollment token and shows the command again with it.
fn install_section(
    state: &AppState,
    frame: &Frame,
    headers: &HeaderMap,
    install: &Install,
) -> String {
    let head = "<h2 id=\"install-agent\">Install an agent</h2>";
    let Some(fingerprint) = state
        .ca_cert_pem
        .as_deref()
        .and_then(super::public::downloads::ca_fingerprint)
    else {
        return format!(
            "{head}<p id=\"install-unavailable\">The installer pins the hub&#39;s internal CA, \
             and this hub serves none at <code>/downloads/ca.crt</code>.</p>"
        );
    };
    let (hub, hub_note) = match hub_url(headers) {
        Some(u) => (u, ""),
        None => (
            "https://HUB".to_string(),
            "<p class=\"note\">Replace <code>HUB</code> with the hub&#39;s address.</p>",
        ),
    };
    let (token, token_note) = match &install.token {
        Some(t) => (
            t.as_str(),
            "<p id=\"install-token-note\">The enrollment token is in the command; it is \
             shown only now.</p>",
        ),
        None => (
            "ENROLLMENT_TOKEN",
            "<p class=\"note\">Create an enrollment token below to fill it in.</p>",
        ),
    };
    let command = install_command(&hub, &fingerprint, token, install.allow_commands);
    let error = install
        .error
        .as_deref()
        .map(|e| format!("<p class=\"error\" id=\"install-error\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "{head}<p>On a Linux machine with systemd, as root. The command checks the hub&#39;s \
         CA against its fingerprint before it runs anything; the installer checks it again, \
         downloads this hub&#39;s <code>watchgrid</code> binary over TLS verified against \
         it, installs the <code>watchgrid-agent</code> service and enrolls the machine.</p>\
         {hub_note}{token_note}<pre id=\"install-command\"><code>{}</code></pre>\
         <p>Internal CA SHA-256: <code id=\"ca-fingerprint\">{}</code></p>{error}\
         <form method=\"post\" action=\"/api/enrollment-tokens/agent-install\">{}\
         <label for=\"install-name\">Token name (optional)</label>\
         <input id=\"install-name\" name=\"name\" maxlength=\"100\">\
         <label for=\"install-uses\">Machines it may enroll</label>\
         <input id=\"install-uses\" name=\"uses\" type=\"number\" min=\"1\" max=\"100000\" value=\"1\">\
         <label for=\"install-hours\">Valid for (hours; empty: no expiry)</label>\
         <input id=\"install-hours\" name=\"expires_hours\" type=\"number\" min=\"1\" value=\"24\">\
         <label><input type=\"checkbox\" name=\"allow_commands\" value=\"on\">Allow remote \
         commands (run as the unprivileged <code>watchgrid-agent</code> user, in the service&#39;s \
         sandbox)</label>\
         <button type=\"submit\" id=\"install-create\">Create an enrollment token</button></form>",
        esc(&command),
        esc(&fingerprint),
        frame.field()
    )
}

/// The "Install an agent" form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstallForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    uses: String,
    #[serde(default)]
    expires_hours: String,
    /// A checkbox: present ("on") when ticked.
    allow_commands: Option<String>,
}

impl InstallForm {
    /// The enrollment-token request the form stands for; the limits are the API's.
    fn request(&self) -> Result<super::enrollment::CreateRequest, ApiError> {
        let uses = match self.uses.trim() {
            "" => None,
            u => Some(
                u.parse()
                    .map_err(|_| ApiError::Invalid("uses: a number from 1 to 100000".into()))?,
            ),
        };
        let expires_in_secs = match self.expires_hours.trim() {
            "" => None,
            h => Some(
                h.parse::<u64>()
                    .ok()
                    .and_then(|h| h.checked_mul(3600))
                    .ok_or_else(|| ApiError::Invalid("valid for: a number of hours".into()))?,
            ),
        };
        let name = self.name.trim();
        Ok(super::enrollment::CreateRequest {
            name: (!name.is_empty()).then(|| name.to_string()),
            uses,
            expires_in_secs,
            groups: Vec::new(),
        })
    }
}

/// `POST /api/enrollment-tokens/agent-install` (an HTML form): creates an enrollment
/// token and answers with the devices page, the install command filled in with it. The
/// token is in this answer only, never in a URL.
pub(crate) async fn agent_install(
    State(state): State<AppState>,
    headers: HeaderMap,
    admin: Admin,
    form: Result<Form<InstallForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let created = match &form {
        Ok(Form(f)) => f
            .request()
            .and_then(|req| super::enrollment::create_token(&state, &admin, req)),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge),
        Err(r) => Err(ApiError::Invalid(r.body_text())),
    };
    let allow_commands = form
        .as_ref()
        .is_ok_and(|Form(f)| f.allow_commands.is_some());
    let (status, install) = match created {
        Ok(t) => (
            StatusCode::OK,
            Install {
                token: Some(t.token),
                allow_commands,
                error: None,
            },
        ),
        Err(e @ (ApiError::Invalid(_) | ApiError::TooLarge)) => (
            e.status(),
            Install {
                error: Some(e.to_string()),
                allow_commands,
                ..Install::default()
            },
        ),
        Err(e) => return Err(e),
    };
    let view = View {
        install,
        ..View::default()
    };
    render(
        &state,
        &admin,
        &headers,
        &DevicesQuery::default(),
        view,
        status,
    )
}

/// Enrollment tokens: the one just created (shown once), the list, a revoke button
/// each, and the form that creates one.
fn tokens_section(
    state: &AppState,
    frame: &Frame,
    created: Option<&crate::dto::EnrollmentTokenCreated>,
) -> Result<String, ApiError> {
    let fresh = created.map_or(String::new(), |t| {
        format!(
            "<p class=\"ok\" role=\"status\" id=\"token-created\">Enrollment token <strong>{}</strong> \
             created; it is shown only now:</p><pre><code id=\"new-token\">{}</code></pre>",
            esc(&t.name),
            esc(&t.token)
        )
    });
    let rows: String = state
        .store
        .enrollment_tokens
        .list()?
        .iter()
        .map(|t| {
            let id = t.token_hash.get(..12).unwrap_or_default();
            let expiry = t
                .expires_at
                .map_or("never".to_string(), |at| super::fleet_pages::time(at * 1_000_000));
            format!(
                "<tr data-token=\"{id}\"><td>{}</td><td>{}</td><td>{expiry}</td><td>{}</td><td>{}</td></tr>",
                esc(if t.name.is_empty() { "(unnamed)" } else { &t.name }),
                t.uses_left,
                esc(&t.groups.join(", ")),
                frame.button(
                    &format!("/forms/enrollment-tokens/{id}/revoke"),
                    "Revoke",
                    &format!("revoke-{id}")
                )
            )
        })
        .collect();
    let list = if rows.is_empty() {
        "<p class=\"muted\" id=\"no-tokens\">No enrollment tokens.</p>".to_string()
    } else {
        format!(
            "<div class=\"scroll\"><table id=\"tokens\"><tr><th>Name</th><th>Uses left</th><th>Expires</th>\
             <th>Groups</th><th></th></tr>{rows}</table></div>"
        )
    };
    Ok(format!(
        "<h2 id=\"enrollment-tokens\">Enrollment tokens</h2><p>A device or agent registers itself \
         with one (<code>POST /api/register</code>, or <code>watchgrid agent enroll</code>).</p>\
         {fresh}{list}<form method=\"post\" action=\"/forms/enrollment-tokens\">{}\
         <label for=\"token-name\">Name</label><input id=\"token-name\" name=\"name\" maxlength=\"100\">\
         <label for=\"token-uses\">Uses</label>\
         <input id=\"token-uses\" name=\"uses\" type=\"number\" min=\"1\" max=\"100000\" value=\"1\">\
         <label for=\"token-hours\">Valid for (hours; empty: no expiry)</label>\
         <input id=\"token-hours\" name=\"expires_hours\" type=\"number\" min=\"1\" value=\"24\">\
         <label for=\"token-groups\">Groups its devices join (comma separated)</label>\
         <input id=\"token-groups\" name=\"groups\" maxlength=\"600\">\
         <button type=\"submit\" id=\"token-create\">Create the token</button></form>",
        frame.field()
    ))
}

/// The "Enrollment tokens" form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    uses: String,
    #[serde(default)]
    expires_hours: String,
    #[serde(default)]
    groups: String,
}

impl TokenForm {
    fn request(&self) -> Result<super::enrollment::CreateRequest, ApiError> {
        let base = InstallForm {
            name: self.name.clone(),
            uses: self.uses.clone(),
            expires_hours: self.expires_hours.clone(),
            allow_commands: None,
        };
        let mut req = base.request()?;
        req.groups = list(&self.groups);
        Ok(req)
    }
}

async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    admin: Admin,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let created = form
        .map_err(|r| form_error(&r))
        .and_then(|Form(f)| f.request())
        .and_then(|req| super::enrollment::create_token(&state, &admin, req));
    match created {
        Ok(t) => {
            let view = View {
                created_token: Some(t),
                ..View::default()
            };
            render(
                &state,
                &admin,
                &headers,
                &DevicesQuery::default(),
                view,
                StatusCode::OK,
            )
        }
        Err(e) => refused(&state, &admin, &headers, e),
    }
}

async fn revoke_token(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    super::enrollment::revoke_token(&state, &admin, &id)?;
    Ok(Redirect::to("/devices?done=revoked#enrollment-tokens").into_response())
}

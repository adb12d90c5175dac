//! The dashboard's Settings page (endpoint, subnets, TLS, API tokens, password, 2FA,
//! alert webhook, backups) and its Audit log page (paged, filtered by actor and
//! action). The forms go through the same handlers as the API, so a value the API
//! refuses is refused here with the API's message.

use super::pages::esc;
use super::ui::{notice, DoneQuery, Frame, Nav};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::{unix_now, AppState};
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/settings", get(settings_page))
        .route("/audit", get(audit_page))
}

/// The page's forms, for the admin API's protection (session, CSRF token, Origin, fence).
pub fn forms_router() -> Router<AppState> {
    Router::new()
        .route("/forms/settings/endpoint", post(set_endpoint))
        .route("/forms/tokens", post(create_api_token))
        .route("/forms/tokens/{id}/revoke", post(revoke_api_token))
        .route("/forms/password", post(change_password))
        .route("/forms/webhook", post(set_webhook))
        .route("/forms/webhook/remove", post(remove_webhook))
        .route("/forms/2fa/disable", post(disable_2fa))
}

type Fields = HashMap<String, String>;

/// A form field, trimmed; `None` when absent or empty.
fn field(f: &Fields, name: &str) -> Option<String> {
    f.get(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The API's request type from a JSON value built of form fields: the API's own
/// parsing (types, unknown fields) applies.
fn request<T: DeserializeOwned>(v: Value) -> Result<StrictJson<T>, ApiError> {
    serde_json::from_value(v)
        .map(StrictJson)
        .map_err(|e| ApiError::Invalid(e.to_string()))
}

fn fields(form: Result<Form<Fields>, FormRejection>) -> Result<Fields, ApiError> {
    match form {
        Ok(Form(f)) => Ok(f),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge),
        Err(r) => Err(ApiError::Invalid(r.body_text())),
    }
}

/// What one render shows besides the settings: a notice, an error, a secret once.
#[derive(Default)]
struct View {
    ok: Option<&'static str>,
    error: Option<String>,
    secret: Option<(&'static str, String)>,
}

/// The `done=` codes after a redirect, as fixed texts.
fn done_message(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "endpoint" => Some("The endpoint is saved; agents pick it up at their next heartbeat."),
        "token-revoked" => Some("The API token is revoked."),
        "password" => {
            Some("The password is changed; every other session and API token is signed out.")
        }
        "webhook-removed" => Some("The alert webhook is removed."),
        "2fa-off" => Some("Two-factor authentication is off."),
        _ => None,
    }
}

async fn settings_page(
    State(state): State<AppState>,
    admin: Result<Admin, ApiError>,
    q: Result<Query<DoneQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Some(admin) = super::fleet_pages::signed_in(admin)? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let done = q.ok().and_then(|Query(q)| q.done);
    let view = View {
        ok: done_message(done.as_deref()),
        ..View::default()
    };
    render(&state, &admin, view, StatusCode::OK)
}

fn render(
    state: &AppState,
    admin: &Admin,
    view: View,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let frame = Frame::of(state, admin)?;
    let secret = view.secret.map_or(String::new(), |(what, s)| {
        format!(
            "<p class=\"ok\" role=\"status\">{what}; it is shown only now:</p>\
             <pre><code id=\"new-secret\">{}</code></pre>",
            esc(&s)
        )
    });
    let body = format!(
        "<h1>Settings</h1>{}{secret}{}{}{}{}{}{}{}{}",
        notice(view.ok, view.error.as_deref()),
        network_section(state, &frame)?,
        super::pages::tls_section(state)?,
        api_tokens_section(state, &frame)?,
        password_section(&frame),
        two_factor_section(state, &frame, admin)?,
        webhook_section(state, &frame)?,
        super::update_page::section(state, &frame)?,
        "<h2 id=\"backup\">Backup and restore</h2><p id=\"backup-state\">Encrypted backups, \
         the daily schedule and verification are on the <a href=\"/backup\">Backup</a> page.</p>",
    );
    Ok((status, frame.page("Settings", Nav::Settings, &body)).into_response())
}

/// The page with a new secret shown this once.
fn show_once(
    state: &AppState,
    admin: &Admin,
    what: &'static str,
    secret: String,
) -> Result<Response, ApiError> {
    let view = View {
        secret: Some((what, secret)),
        ..View::default()
    };
    render(state, admin, view, StatusCode::OK)
}

/// Shows the page again with the refusal when it is about the admin's input.
fn refused(state: &AppState, admin: &Admin, e: ApiError) -> Result<Response, ApiError> {
    match e {
        ApiError::Invalid(_)
        | ApiError::TooLarge
        | ApiError::Conflict(_)
        | ApiError::Unauthorized
        | ApiError::TooManyRequests { .. } => {
            // A wrong current password or code is 401 for the API; here it is the
            // form's answer, not a signed-out session.
            let status = match e {
                ApiError::Unauthorized => StatusCode::UNPROCESSABLE_ENTITY,
                ref e => e.status(),
            };
            let message = match e {
                ApiError::Unauthorized => "the current password or code is not right".to_string(),
                e => e.to_string(),
            };
            let view = View {
                error: Some(message),
                ..View::default()
            };
            render(state, admin, view, status)
        }
        e => Err(e),
    }
}

fn network_section(state: &AppState, frame: &Frame) -> Result<String, ApiError> {
    let s = super::settings::view(state)?;
    Ok(format!(
        "<h2 id=\"network\">Network</h2><p>VPN subnet <code id=\"subnet-v4\">{}</code>{} (fixed at setup).</p>\
         <form method=\"post\" action=\"/forms/settings/endpoint\">{}\
         <label for=\"endpoint\">Endpoint devices dial (host:port)</label>\
         <input id=\"endpoint\" name=\"endpoint\" value=\"{}\" required maxlength=\"260\">\
         <button type=\"submit\" id=\"endpoint-save\">Save the endpoint</button></form>",
        esc(&s.vpn_subnet),
        s.vpn_subnet_v6
            .map_or(String::new(), |v6| format!(" and <code>{}</code>", esc(&v6))),
        frame.field(),
        esc(&s.endpoint)
    ))
}

async fn set_endpoint(
    State(state): State<AppState>,
    admin: Admin,
    form: Result<Form<Fields>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let f = fields(form)?;
        let body = request(json!({ "endpoint": field(&f, "endpoint").unwrap_or_default() }))?;
        super::settings::update(State(state.clone()), admin.clone(), body).await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to("/settings?done=endpoint").into_response()),
        Err(e) => refused(&state, &admin, e),
    }
}

fn api_tokens_section(state: &AppState, frame: &Frame) -> Result<String, ApiError> {
    let now = unix_now();
    let mut tokens = state.store.api_tokens.list()?;
    tokens.sort_by_key(|t| t.created_at);
    let when = |at: Option<u64>, none: &str| {
        at.map_or(none.to_string(), |s| {
            super::fleet_pages::time(s * 1_000_000)
        })
    };
    let rows: String = tokens
        .iter()
        .map(|t| {
            let expired = t.expires_at.is_some_and(|at| now >= at);
            format!(
                "<tr data-api-token=\"{id}\"><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
                esc(&t.name),
                when(Some(t.created_at), "-"),
                when(t.last_used_at, "never"),
                when(t.expires_at, "never"),
                if expired { " (expired)" } else { "" },
                frame.button(
                    &format!("/forms/tokens/{}/revoke", t.id()),
                    "Revoke",
                    &format!("revoke-api-{}", t.id())
                ),
                id = esc(t.id()),
            )
        })
        .collect();
    let list = if rows.is_empty() {
        "<p class=\"muted\">No API tokens.</p>".to_string()
    } else {
        format!(
            "<div class=\"scroll\"><table id=\"api-tokens\"><tr><th>Name</th><th>Created</th><th>Last used</th>\
             <th>Expires</th><th></th></tr>{rows}</table></div>"
        )
    };
    Ok(format!(
        "<h2 id=\"tokens\">API tokens</h2><p>For scripts: <code>Authorization: Bearer TOKEN</code>. \
         A password change revokes them all.</p>{list}\
         <form method=\"post\" action=\"/forms/tokens\">{}\
         <label for=\"api-token-name\">Name</label><input id=\"api-token-name\" name=\"name\" required maxlength=\"100\">\
         <label for=\"api-token-days\">Expires after (days; empty: never)</label>\
         <input id=\"api-token-days\" name=\"expires_in_days\" type=\"number\" min=\"1\" max=\"3650\">\
         <label for=\"api-token-code\">Two-factor code (when 2FA is on)</label>\
         <input id=\"api-token-code\" name=\"totp\" autocomplete=\"one-time-code\">\
         <button type=\"submit\" id=\"api-token-create\">Create an API token</button></form>",
        frame.field()
    ))
}

/// Optional numbers from a form: absent or empty is `null`, else the number the API
/// then checks (a non-number is refused here, with the field's name).
fn number(f: &Fields, name: &str) -> Result<Value, ApiError> {
    match field(f, name) {
        None => Ok(Value::Null),
        Some(v) => v
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| ApiError::Invalid(format!("{name}: a whole number"))),
    }
}

async fn create_api_token(
    State(state): State<AppState>,
    admin: Admin,
    form: Result<Form<Fields>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let f = fields(form)?;
        let body = request(json!({
            "name": field(&f, "name").unwrap_or_default(),
            "expires_in_days": number(&f, "expires_in_days")?,
            "totp": field(&f, "totp"),
        }))?;
        let Json(created) =
            super::tokens::create(State(state.clone()), admin.clone(), body).await?;
        Ok::<_, ApiError>(created.token)
    }
    .await;
    match result {
        Ok(token) => show_once(&state, &admin, "API token created", token),
        Err(e) => refused(&state, &admin, e),
    }
}

async fn revoke_api_token(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let _revoked = super::tokens::revoke(State(state), admin, Path(id)).await?;
    Ok(Redirect::to("/settings?done=token-revoked#tokens").into_response())
}

fn password_section(frame: &Frame) -> String {
    format!(
        "<h2 id=\"password\">Password</h2><form method=\"post\" action=\"/forms/password\">{}\
         <label for=\"current-password\">Current password</label>\
         <input id=\"current-password\" name=\"current_password\" type=\"password\" required autocomplete=\"current-password\">\
         <label for=\"new-password\">New password (at least 12 characters)</label>\
         <input id=\"new-password\" name=\"new_password\" type=\"password\" required minlength=\"12\" autocomplete=\"new-password\">\
         <label for=\"password-code\">Two-factor code (when 2FA is on)</label>\
         <input id=\"password-code\" name=\"totp\" autocomplete=\"one-time-code\">\
         <button type=\"submit\" id=\"password-change\">Change the password</button></form>",
        frame.field()
    )
}

/// The API answers with a fresh session cookie; the form passes it on with the
/// redirect, so this browser stays signed in and every other session is not.
async fn change_password(
    State(state): State<AppState>,
    ip: crate::auth::ClientIp,
    admin: Admin,
    form: Result<Form<Fields>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let f = fields(form)?;
        let body = request(json!({
            "current_password": f.get("current_password").cloned().unwrap_or_default(),
            "new_password": f.get("new_password").cloned().unwrap_or_default(),
            "totp": field(&f, "totp"),
        }))?;
        super::password::change(State(state.clone()), ip, admin.clone(), body).await
    }
    .await;
    match result {
        Ok(answer) => {
            let mut redirect = Redirect::to("/settings?done=password").into_response();
            if let Some(cookie) = answer.headers().get(header::SET_COOKIE) {
                redirect
                    .headers_mut()
                    .insert(header::SET_COOKIE, cookie.clone());
            }
            Ok(redirect)
        }
        Err(e) => refused(&state, &admin, e),
    }
}

fn two_factor_section(state: &AppState, frame: &Frame, admin: &Admin) -> Result<String, ApiError> {
    let on = state
        .store
        .admins
        .get(&admin.username)?
        .is_some_and(|a| a.totp_secret.is_some());
    let body = if on {
        format!(
            "<p id=\"twofactor\">Two-factor authentication is on.</p>\
             <form method=\"post\" action=\"/forms/2fa/disable\">{}\
             <label for=\"disable-code\">A current code or a recovery code</label>\
             <input id=\"disable-code\" name=\"code\" required autocomplete=\"one-time-code\">\
             <button type=\"submit\" class=\"danger\" id=\"disable2fa\">Turn off two-factor authentication</button></form>",
            frame.field()
        )
    } else {
        format!(
            "<p id=\"twofactor-off\">Two-factor authentication is off.</p>\
             <form method=\"post\" action=\"/api/auth/2fa/setup\">{}\
             <button type=\"submit\" id=\"setup2fa\">Set up two-factor authentication</button></form>",
            frame.field()
        )
    };
    Ok(format!(
        "<h2 id=\"2fa\">Two-factor authentication</h2>{body}"
    ))
}

async fn disable_2fa(
    State(state): State<AppState>,
    ip: crate::auth::ClientIp,
    admin: Admin,
    form: Result<Form<Fields>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let f = fields(form)?;
        let body = request(json!({ "code": field(&f, "code").unwrap_or_default() }))?;
        super::session::totp_disable(State(state.clone()), ip, admin.clone(), body).await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to("/settings?done=2fa-off").into_response()),
        Err(e) => refused(&state, &admin, e),
    }
}

fn webhook_section(state: &AppState, frame: &Frame) -> Result<String, ApiError> {
    let current = crate::alerts::settings(state)?.webhook;
    let now = match &current {
        Some(h) => format!(
            "<p id=\"webhook\">Alerts are posted to <code>{}</code>, signed with \
             <code>X-Watchgrid-Signature</code>.</p>{}",
            esc(&h.url),
            frame.button(
                "/forms/webhook/remove",
                "Remove the webhook",
                "webhook-remove"
            )
        ),
        None => {
            "<p id=\"webhook-none\">No alert webhook: alerts show on the overview only.</p>".into()
        }
    };
    Ok(format!(
        "<h2 id=\"alerts\">Alert webhook</h2>{now}<form method=\"post\" action=\"/forms/webhook\">{}\
         <label for=\"webhook-url\">URL (http:// or https://)</label>\
         <input id=\"webhook-url\" name=\"url\" type=\"url\" required maxlength=\"2048\">\
         <button type=\"submit\" id=\"webhook-save\">Save the webhook</button></form>",
        frame.field()
    ))
}

async fn set_webhook(
    State(state): State<AppState>,
    admin: Admin,
    form: Result<Form<Fields>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let f = fields(form)?;
        let body = request(json!({ "url": field(&f, "url").unwrap_or_default() }))?;
        let Json(created) =
            super::alerts::set_webhook(State(state.clone()), admin.clone(), body).await?;
        let v = serde_json::to_value(&created).map_err(ApiError::internal)?;
        Ok::<_, ApiError>(v["secret"].as_str().unwrap_or_default().to_string())
    }
    .await;
    match result {
        Ok(secret) => show_once(
            &state,
            &admin,
            "The webhook is saved. Its signing secret",
            secret,
        ),
        Err(e) => refused(&state, &admin, e),
    }
}

async fn remove_webhook(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    let _removed = super::alerts::remove_webhook(State(state), admin).await?;
    Ok(Redirect::to("/settings?done=webhook-removed#alerts").into_response())
}

/// `?actor=&action=` (exact or prefix, e.g. `device.`), `cursor=` (the next page).
#[derive(Deserialize, Default)]
pub(crate) struct AuditFilter {
    actor: Option<String>,
    action: Option<String>,
    cursor: Option<String>,
}

const AUDIT_PAGE: usize = 50;
/// Entries read for one filtered page at most, so a rare filter cannot make one
/// request scan the whole log.
const AUDIT_SCAN: usize = 5_000;

async fn audit_page(
    State(state): State<AppState>,
    admin: Result<Admin, ApiError>,
    q: Result<Query<AuditFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Some(admin) = super::fleet_pages::signed_in(admin)? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let actor = q.actor.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let action = q.action.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let cursor = q
        .cursor
        .filter(|c| c.len() == 20 && c.bytes().all(|b| b.is_ascii_digit()));
    let (entries, next) = audit_entries(&state, actor, action, cursor)?;
    let rows: String = entries
        .iter()
        .map(|(_, e)| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                super::fleet_pages::time(e.at * 1_000_000),
                esc(&e.actor),
                esc(&e.action),
                esc(&e.target)
            )
        })
        .collect();
    let keep =
        |k: &str, v: Option<&str>| v.map_or(String::new(), |v| format!("&{k}={}", query_escape(v)));
    let more = next.map_or(String::new(), |c| {
        format!(
            "<p><a id=\"audit-next\" href=\"/audit?cursor={c}{}{}\">Older entries</a></p>",
            keep("actor", actor),
            keep("action", action)
        )
    });
    let frame = Frame::of(&state, &admin)?;
    let body = format!(
        "<h1>Audit log</h1><form method=\"get\" action=\"/audit\" class=\"filters\" role=\"search\">\
         <label>Actor <input id=\"audit-actor\" name=\"actor\" value=\"{}\"></label>\
         <label>Action <input id=\"audit-action\" name=\"action\" value=\"{}\" placeholder=\"e.g. device.\"></label>\
         <button type=\"submit\" id=\"audit-filter\">Filter</button></form>\
         <div class=\"scroll\"><table id=\"audit\"><tr><th>Time</th><th>Actor</th><th>Action</th><th>Target</th></tr>{rows}</table></div>{more}",
        esc(actor.unwrap_or("")),
        esc(action.unwrap_or("")),
    );
    Ok(frame.page("Audit log", Nav::Audit, &body).into_response())
}

type AuditPage = (Vec<(String, watchgrid_store::AuditEntry)>, Option<String>);

/// One page of matching entries, newest first, and the cursor of the next page.
fn audit_entries(
    state: &AppState,
    actor: Option<&str>,
    action: Option<&str>,
    mut cursor: Option<String>,
) -> Result<AuditPage, ApiError> {
    let matches = |e: &watchgrid_store::AuditEntry| {
        actor.is_none_or(|a| e.actor == a) && action.is_none_or(|a| e.action.starts_with(a))
    };
    let mut found = Vec::new();
    let mut scanned = 0;
    while found.len() < AUDIT_PAGE && scanned < AUDIT_SCAN {
        let chunk = state.store.audit.page_before(cursor.as_deref(), 200)?;
        let Some((last, _)) = chunk.last() else {
            return Ok((found, None));
        };
        cursor = Some(last.clone());
        scanned += chunk.len();
        for (id, e) in chunk {
            if found.len() == AUDIT_PAGE {
                // The page is full before this chunk ends: the next page starts here.
                let next = found.last().map(|(i, _)| i.clone());
                return Ok((found, next));
            }
            if matches(&e) {
                found.push((id, e));
            }
        }
    }
    Ok((found, cursor))
}

/// Percent-encodes a query value (filters carried into the next page's link).
fn query_escape(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

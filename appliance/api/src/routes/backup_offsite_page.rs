//! The Backup page's "Copies off the box" section: the SFTP target, the appliance's
//! public key to authorize on the server, the last copy's outcome, and forms to save,
//! test and remove the target or replace the key. The forms go through the API's
//! handlers.

use super::backup_offsite::{OffsiteRequest, OffsiteView};
use super::backup_page::{refused, render};
use super::fleet_pages::time;
use super::pages::esc;
use super::ui::Frame;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::AppState;
use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::{Form, Router};
use serde::Deserialize;

pub(super) fn forms_router() -> Router<AppState> {
    Router::new()
        .route("/forms/backup/offsite", post(save))
        .route("/forms/backup/offsite/test", post(test))
        .route("/forms/backup/offsite/remove", post(remove))
        .route("/forms/backup/offsite/key", post(new_key))
}

pub(super) fn section(frame: &Frame, v: &OffsiteView) -> String {
    format!(
        "<h2>Copies off the box (SFTP)</h2>{}\
         <p>The appliance signs in with its own key. Add this line to the account's \
         <code>~/.ssh/authorized_keys</code> on the server:</p>\
         <pre id=\"offsite-public-key\">{}</pre><p class=\"muted\">Fingerprint <code>{}</code></p>{}{}",
        state_line(frame, v),
        esc(&v.public_key),
        esc(&v.public_key_fingerprint),
        target_form(frame, v),
        new_key_form(frame),
    )
}

fn state_line(frame: &Frame, v: &OffsiteView) -> String {
    if !v.enabled {
        return "<p id=\"offsite-state\">Off: backups stay on the appliance.</p>".into();
    }
    let at = |t: Option<u64>| t.map_or("never".to_string(), |s| time(s * 1_000_000));
    let error = v.last_error.as_ref().map_or(String::new(), |e| {
        format!(
            "<p class=\"error\" role=\"alert\" id=\"offsite-error\">The last copy failed: {}</p>",
            esc(e)
        )
    });
    format!(
        "<p id=\"offsite-state\">Each backup is copied to <code>{}@{}:{}</code> (port {}), \
         to a server presenting <code>{}</code>.</p>\
         <p>Last copy: <span id=\"offsite-last-success\">{}</span>{}; last attempt: {}.</p>{error}{}{}",
        esc(v.user.as_deref().unwrap_or("")),
        esc(v.host.as_deref().unwrap_or("")),
        esc(v.dir.as_deref().unwrap_or("")),
        v.port.unwrap_or(22),
        esc(&v.host_key_fingerprints.join(" or ")),
        at(v.last_success_at),
        v.last_copy
            .as_ref()
            .map_or(String::new(), |c| format!(" (<code>{}</code>)", esc(c))),
        at(v.last_attempt_at),
        frame.button("/forms/backup/offsite/test", "Test", "offsite-test"),
        frame.button("/forms/backup/offsite/remove", "Stop copying", "offsite-remove"),
    )
}

fn new_key_form(frame: &Frame) -> String {
    format!(
        "<form method=\"post\" action=\"/forms/backup/offsite/key\">{}\
         <label for=\"offsite-key-code\">Two-factor code (when 2FA is on)</label>\
         <input id=\"offsite-key-code\" name=\"totp\" autocomplete=\"one-time-code\">\
         <button type=\"submit\" id=\"offsite-new-key\">Replace the appliance's key</button></form>",
        frame.field()
    )
}

fn target_form(frame: &Frame, v: &OffsiteView) -> String {
    let value = |o: &Option<String>| esc(o.as_deref().unwrap_or(""));
    format!(
        "<form method=\"post\" action=\"/forms/backup/offsite\">{}\
         <label for=\"offsite-host\">Server</label>\
         <input id=\"offsite-host\" name=\"host\" value=\"{}\" required>\
         <label for=\"offsite-port\">Port</label>\
         <input id=\"offsite-port\" name=\"port\" type=\"number\" min=\"1\" max=\"65535\" value=\"{}\">\
         <label for=\"offsite-user\">User</label>\
         <input id=\"offsite-user\" name=\"user\" value=\"{}\" required>\
         <label for=\"offsite-dir\">Directory on the server (it must exist)</label>\
         <input id=\"offsite-dir\" name=\"dir\" value=\"{}\" required>\
         <label for=\"offsite-host-key\">The server's host key: its <code>/etc/ssh/ssh_host_ed25519_key.pub</code>, or <code>ssh-keyscan</code> output checked against it</label>\
         <textarea id=\"offsite-host-key\" name=\"host_key\" rows=\"3\" required></textarea>\
         <label for=\"offsite-code\">Two-factor code (when 2FA is on)</label>\
         <input id=\"offsite-code\" name=\"totp\" autocomplete=\"one-time-code\">\
         <button type=\"submit\" id=\"offsite-save\">Save the SFTP target</button></form>",
        frame.field(),
        value(&v.host),
        v.port.unwrap_or(22),
        value(&v.user),
        value(&v.dir),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetForm {
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    dir: String,
    #[serde(default)]
    host_key: String,
    #[serde(default)]
    totp: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeForm {
    #[serde(default)]
    totp: String,
}

fn code(totp: &str) -> Option<String> {
    Some(totp.trim().to_string()).filter(|t| !t.is_empty())
}

fn request(form: Result<Form<TargetForm>, FormRejection>) -> Result<OffsiteRequest, ApiError> {
    let Form(f) = form.map_err(|r| ApiError::Invalid(r.body_text()))?;
    let port = match f.port.trim() {
        "" => None,
        p => Some(
            p.parse()
                .map_err(|_| ApiError::Invalid("port: 1 to 65535".into()))?,
        ),
    };
    Ok(OffsiteRequest {
        host: f.host,
        port,
        user: f.user,
        dir: f.dir,
        host_key: f.host_key,
        totp: code(&f.totp),
    })
}

async fn save(
    State(state): State<AppState>,
    admin: Admin,
    form: Result<Form<TargetForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let body = request(form)?;
        super::backup_offsite::set(State(state.clone()), admin.clone(), StrictJson(body)).await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to("/backup?done=offsite").into_response()),
        Err(e) => refused(&state, &admin, e),
    }
}

async fn test(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    match super::backup_offsite::test(State(state.clone()), admin.clone()).await {
        Ok(t) if t.ok => render(&state, &admin, Some(&t.detail), None, StatusCode::OK),
        Ok(t) => render(
            &state,
            &admin,
            None,
            Some(&format!("The test failed: {}", t.detail)),
            StatusCode::BAD_GATEWAY,
        ),
        Err(e) => refused(&state, &admin, e),
    }
}

async fn remove(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    match super::backup_offsite::remove(State(state.clone()), admin.clone()).await {
        Ok(_) => Ok(Redirect::to("/backup?done=offsite-off").into_response()),
        Err(e) => refused(&state, &admin, e),
    }
}

async fn new_key(
    State(state): State<AppState>,
    admin: Admin,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let Form(f) = form.map_err(|r| ApiError::Invalid(r.body_text()))?;
        let body = super::backup_offsite::KeyRequest {
            totp: code(&f.totp),
        };
        super::backup_offsite::new_key(State(state.clone()), admin.clone(), StrictJson(body)).await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to("/backup?done=offsite-key").into_response()),
        Err(e) => refused(&state, &admin, e),
    }
}

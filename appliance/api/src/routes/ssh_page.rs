//! The dashboard's SSH page: the CA's keys with the `known_hosts` line (rotate, retire
//! an old key), a form to sign a user's public key, and every issued certificate with
//! its state and a revoke button. The forms go through the API's handlers, so the page
//! refuses exactly what the API refuses and audits the same.

use super::fleet_pages::{signed_in, time};
use super::pages::esc;
use super::ssh::{CertBody, CertIssued, CertView, RetireRequest};
use super::ui::{notice, DoneQuery, Frame, Nav};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::{unix_now, AppState};
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use watchgrid_sshca::CertKind;

pub fn router() -> Router<AppState> {
    Router::new().route("/ssh", get(ssh_page))
}

/// The page's forms, for the admin API's protection (session, CSRF token, Origin, fence).
pub fn forms_router() -> Router<AppState> {
    Router::new()
        .route("/forms/ssh/user-cert", post(sign_user))
        .route("/forms/ssh/certs/{serial}/revoke", post(revoke))
        .route("/forms/ssh/ca/rotate", post(rotate))
        .route("/forms/ssh/ca/retire", post(retire))
}

fn done_message(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "revoked" => {
            Some("The certificate is revoked; agents install the new KRL at their next heartbeat.")
        }
        "rotated" => {
            Some("A new CA key signs from now on; both are trusted until the old one is retired.")
        }
        "retired" => Some("The old CA key is no longer trusted."),
        _ => None,
    }
}

async fn ssh_page(
    State(state): State<AppState>,
    admin: Result<Admin, ApiError>,
    q: Result<Query<DoneQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Some(admin) = signed_in(admin)? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let done = q.ok().and_then(|Query(q)| q.done);
    let notice = Notice {
        ok: done_message(done.as_deref()),
        ..Notice::default()
    };
    render(&state, &admin, notice, StatusCode::OK)
}

/// What the page says above its content: an action's result, a refusal, or a new
/// certificate (shown once: the appliance keeps only its record).
#[derive(Default)]
struct Notice<'a> {
    ok: Option<&'a str>,
    error: Option<&'a str>,
    issued: Option<CertIssued>,
}

fn render(
    state: &AppState,
    admin: &Admin,
    n: Notice,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let frame = Frame::of(state, admin)?;
    let Some(ca) = state.ssh_ca.get() else {
        let body =
            "<h1>SSH</h1><p class=\"muted\" id=\"ssh-none\">This appliance has no SSH CA.</p>";
        return Ok((status, frame.page("SSH", Nav::Ssh, body)).into_response());
    };
    let certs = super::ssh::newest_first(state)?;
    let body = format!(
        "<h1>SSH</h1>{}{}{}{}{}",
        notice(n.ok, n.error),
        n.issued.as_ref().map(issued_section).unwrap_or_default(),
        ca_section(&frame, ca),
        sign_form(&frame),
        certs_table(&frame, &certs, unix_now()),
    );
    Ok((status, frame.page("SSH", Nav::Ssh, &body)).into_response())
}

fn issued_section(c: &CertIssued) -> String {
    format!(
        "<h2>New certificate</h2><p role=\"status\">Serial {} for {}, valid until {}. Save it as \
         <code>KEY-cert.pub</code> next to the key; it is shown only now.</p>\
         <pre id=\"issued-cert\" class=\"scroll\">{}</pre>",
        c.serial,
        esc(&c.principals.join(", ")),
        time(c.valid_before * 1_000_000),
        esc(&c.certificate)
    )
}

fn ca_section(frame: &Frame, ca: &watchgrid_sshca::SshCa) -> String {
    let keys = ca.keys();
    let rows: String = keys
        .iter()
        .map(|k| {
            let action = if k.signing {
                "signs".to_string()
            } else {
                format!(
                    "<form method=\"post\" action=\"/forms/ssh/ca/retire\" class=\"inline\">{}\
                     <input type=\"hidden\" name=\"fingerprint\" value=\"{}\">\
                     <button type=\"submit\" class=\"retire\">Retire</button></form>",
                    frame.field(),
                    esc(&k.fingerprint)
                )
            };
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{action}</td></tr>",
                esc(&k.fingerprint),
                time(k.created * 1_000_000)
            )
        })
        .collect();
    format!(
        "<h2>Certificate authority</h2><div class=\"scroll\"><table id=\"ssh-ca\"><thead><tr>\
         <th>Key</th><th>Created</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>\
         <p>Clients trust hosts the hub certified with this in <code>known_hosts</code> \
         (<a href=\"/downloads/ssh-known-hosts\">download</a>; sshd's <code>TrustedUserCAKeys</code>: \
         <a href=\"/downloads/ssh-ca.pub\">ssh-ca.pub</a>):</p><pre id=\"known-hosts\" class=\"scroll\">{}</pre>{}",
        esc(&ca.known_hosts_lines()),
        frame.button("/forms/ssh/ca/rotate", "Introduce a new CA key", "ssh-rotate"),
    )
}

fn sign_form(frame: &Frame) -> String {
    format!(
        "<h2>Sign a user's key</h2><form method=\"post\" action=\"/forms/ssh/user-cert\">{}\
         <label for=\"ssh-public-key\">Public key (one line of <code>~/.ssh/id_ed25519.pub</code>)</label>\
         <textarea id=\"ssh-public-key\" name=\"public_key\" rows=\"3\" maxlength=\"4096\" required></textarea>\
         <label for=\"ssh-principals\">Login names it may use (separated by spaces or commas)</label>\
         <input id=\"ssh-principals\" name=\"principals\" required>\
         <label for=\"ssh-hours\">Valid for (hours, up to a year)</label>\
         <input id=\"ssh-hours\" name=\"hours\" type=\"number\" min=\"1\" max=\"8760\" value=\"16\" required>\
         <button type=\"submit\" id=\"ssh-sign\">Sign</button></form>",
        frame.field()
    )
}

fn state_of(c: &CertView, now: u64) -> String {
    match c.revoked_at {
        Some(t) => format!("revoked {}", time(t * 1_000_000)),
        None if c.valid_before <= now => "expired".into(),
        None => format!("valid until {}", time(c.valid_before * 1_000_000)),
    }
}

fn certs_table(frame: &Frame, certs: &[CertView], now: u64) -> String {
    if certs.is_empty() {
        return "<h2>Issued</h2><p class=\"muted\" id=\"ssh-certs-none\">No certificate is issued yet.</p>".into();
    }
    let rows: String = certs
        .iter()
        .map(|c| {
            let revoke = if c.revoked_at.is_none() && c.valid_before > now {
                frame.button(
                    &format!("/forms/ssh/certs/{}/revoke", c.serial),
                    "Revoke",
                    &format!("revoke-{}", c.serial),
                )
            } else {
                String::new()
            };
            format!(
                "<tr id=\"cert-{}\"><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td>\
                 <td class=\"state\">{}</td><td>{revoke}</td></tr>",
                c.serial,
                c.serial,
                esc(&c.kind),
                esc(&c.principals.join(", ")),
                esc(&c.key_fingerprint),
                esc(&c.issued_by),
                state_of(c, now),
            )
        })
        .collect();
    format!(
        "<h2>Issued</h2><div class=\"scroll\"><table id=\"ssh-certs\"><thead><tr><th>Serial</th><th>Kind</th>\
         <th>Principals</th><th>Key</th><th>Issued by</th><th>State</th><th></th></tr></thead>\
         <tbody>{rows}</tbody></table></div>"
    )
}

/// A refusal the page shows (a bad key, a bad name) rather than an error page.
fn refused(state: &AppState, admin: &Admin, e: ApiError) -> Result<Response, ApiError> {
    match e {
        ApiError::Invalid(_)
        | ApiError::Conflict(_)
        | ApiError::NotFound
        | ApiError::Unavailable(_) => {
            let message = e.to_string();
            let n = Notice {
                error: Some(&message),
                ..Notice::default()
            };
            render(state, admin, n, StatusCode::UNPROCESSABLE_ENTITY)
        }
        e => Err(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignForm {
    #[serde(default)]
    public_key: String,
    #[serde(default)]
    principals: String,
    #[serde(default)]
    hours: String,
}

impl SignForm {
    fn body(self) -> Result<CertBody, ApiError> {
        let hours: u64 = self
            .hours
            .trim()
            .parse()
            .ok()
            .filter(|h| (1..=8760).contains(h))
            .ok_or_else(|| ApiError::Invalid("valid for: 1 to 8760 hours".into()))?;
        Ok(CertBody {
            public_key: self.public_key.trim().to_string(),
            principals: self
                .principals
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            validity_secs: Some(hours * 3600),
            valid_after: None,
            key_id: None,
        })
    }
}

fn form_of<T>(form: Result<Form<T>, FormRejection>) -> Result<T, ApiError> {
    form.map(|Form(f)| f)
        .map_err(|r| ApiError::Invalid(r.body_text()))
}

async fn sign_user(
    State(state): State<AppState>,
    admin: Admin,
    form: Result<Form<SignForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let issued = form_of(form)
        .and_then(SignForm::body)
        .and_then(|body| super::ssh::issue(&state, &admin.username, CertKind::User, body));
    match issued {
        Ok(c) => {
            let n = Notice {
                ok: Some("Signed."),
                issued: Some(c),
                ..Notice::default()
            };
            render(&state, &admin, n, StatusCode::OK)
        }
        Err(e) => refused(&state, &admin, e),
    }
}

async fn revoke(
    State(state): State<AppState>,
    admin: Admin,
    Path(serial): Path<String>,
) -> Result<Response, ApiError> {
    match super::ssh::revoke(State(state.clone()), admin.clone(), Path(serial)).await {
        Ok(_) => Ok(Redirect::to("/ssh?done=revoked").into_response()),
        Err(e) => refused(&state, &admin, e),
    }
}

async fn rotate(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    match super::ssh::rotate(State(state.clone()), admin.clone()).await {
        Ok(_) => Ok(Redirect::to("/ssh?done=rotated").into_response()),
        Err(e) => refused(&state, &admin, e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetireForm {
    #[serde(default)]
    fingerprint: String,
}

async fn retire(
    State(state): State<AppState>,
    admin: Admin,
    form: Result<Form<RetireForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let f = form_of(form)?;
        let req = RetireRequest {
            fingerprint: f.fingerprint,
        };
        super::ssh::retire(State(state.clone()), admin.clone(), StrictJson(req)).await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to("/ssh?done=retired").into_response()),
        Err(e) => refused(&state, &admin, e),
    }
}

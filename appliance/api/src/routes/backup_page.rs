//! The dashboard's Backup page: the daily schedule's state (last success, last error),
//! the backups kept on the appliance with their last verification, and forms to set
//! the schedule, back up now, verify one, and download a backup encrypted to a
//! passphrase typed here. The forms go through the API's handlers.

use super::fleet_pages::{signed_in, time};
use super::pages::{bytes, esc};
use super::ui::{notice, DoneQuery, Frame, Nav};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::AppState;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/backup", get(backup_page))
}

/// The page's forms, for the admin API's protection (session, CSRF token, Origin, fence).
pub fn forms_router() -> Router<AppState> {
    super::backup_offsite_page::forms_router()
        .route("/forms/backup/schedule", post(set_schedule))
        .route("/forms/backup/run", post(run_now))
        .route("/forms/backup/download", post(download))
        .route("/forms/backup/{name}/verify", post(verify))
}

fn done_message(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "schedule" => Some("The schedule is saved; the next daily backup uses it."),
        "run" => Some("A backup is taken and kept on the appliance."),
        "verified" => Some("The backup is checked; its result is in the table."),
        "run-copied" => Some("A backup is taken, kept on the appliance and copied off the box."),
        "offsite" => Some("The SFTP target is saved; use Test to try it."),
        "offsite-off" => Some("Backups are no longer copied off the box."),
        "offsite-key" => Some("The appliance has a new SSH key: authorize it on the server."),
        _ => None,
    }
}

async fn backup_page(
    State(state): State<AppState>,
    admin: Result<Admin, ApiError>,
    q: Result<Query<DoneQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Some(admin) = signed_in(admin)? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let done = q.ok().and_then(|Query(q)| q.done);
    render(
        &state,
        &admin,
        done_message(done.as_deref()),
        None,
        StatusCode::OK,
    )
}

pub(super) fn render(
    state: &AppState,
    admin: &Admin,
    ok: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let frame = Frame::of(state, admin)?;
    let v = super::backup::view(state)?;
    let body = format!(
        "<h1>Backup</h1>{}{}{}{}{}{}",
        notice(ok, error),
        status_section(&v),
        stored_table(&frame, &v),
        schedule_form(&frame, &v),
        super::backup_offsite_page::section(&frame, &super::backup_offsite::view(state)?),
        download_form(&frame),
    );
    Ok((status, frame.page("Backup", Nav::Backup, &body)).into_response())
}

fn at(t: Option<u64>) -> String {
    t.map_or("never".to_string(), |s| time(s * 1_000_000))
}

fn status_section(v: &super::backup::BackupsView) -> String {
    let error = v.last_error.as_ref().map_or(String::new(), |e| {
        format!(
            "<p class=\"error\" role=\"alert\" id=\"backup-error\">The last run failed: {}</p>",
            esc(e)
        )
    });
    let schedule = if v.scheduled {
        format!("Daily, keeping the newest {}.", v.keep)
    } else {
        "No passphrase is set, so the daily backups fail until one is.".to_string()
    };
    format!(
        "<p id=\"backup-schedule\">{schedule}</p>\
         <p>Last success: <span id=\"backup-last-success\">{}</span>; last attempt: {}.</p>{error}",
        at(v.last_success_at),
        at(v.last_attempt_at),
    )
}

fn stored_table(frame: &Frame, v: &super::backup::BackupsView) -> String {
    if v.stored.is_empty() {
        return "<h2>On the appliance</h2><p class=\"muted\" id=\"backups-none\">No backup is kept yet.</p>".into();
    }
    let rows: String = v
        .stored
        .iter()
        .map(|b| {
            let checked = b.verification.as_ref().map_or("never".to_string(), |c| {
                format!(
                    "{} {}: {}",
                    if c.ok { "good" } else { "FAILED" },
                    time(c.at * 1_000_000),
                    esc(&c.detail)
                )
            });
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"verification\">{checked}</td><td>{}</td></tr>",
                esc(&b.name),
                time(b.modified_at * 1_000_000),
                bytes(b.size),
                frame.button(
                    &format!("/forms/backup/{}/verify", b.name),
                    "Verify",
                    &format!("verify-{}", b.name.trim_end_matches(".wgbackup")),
                ),
            )
        })
        .collect();
    format!(
        "<h2>On the appliance</h2><div class=\"scroll\"><table id=\"backups\"><thead><tr><th>File</th><th>Taken</th>\
         <th>Size</th><th>Last verified</th><th>Check</th></tr></thead>\
         <tbody>{rows}</tbody></table></div>"
    )
}

fn schedule_form(frame: &Frame, v: &super::backup::BackupsView) -> String {
    format!(
        "<h2>Schedule</h2><form method=\"post\" action=\"/forms/backup/schedule\">{f}\
         <label for=\"schedule-passphrase\">Passphrase the daily backups are encrypted to (at least 12 characters; keep a copy off the appliance)</label>\
         <input id=\"schedule-passphrase\" name=\"passphrase\" type=\"password\" minlength=\"12\" maxlength=\"1024\" autocomplete=\"new-password\" required>\
         <label for=\"schedule-keep\">Backups kept</label>\
         <input id=\"schedule-keep\" name=\"keep\" type=\"number\" min=\"1\" max=\"365\" value=\"{}\" required>\
         <label for=\"schedule-code\">Two-factor code (when 2FA is on)</label>\
         <input id=\"schedule-code\" name=\"totp\" autocomplete=\"one-time-code\">\
         <button type=\"submit\" id=\"schedule-save\">Save the schedule</button></form>{}",
        v.keep,
        frame.button("/forms/backup/run", "Back up now", "backup-run"),
        f = frame.field(),
    )
}

fn download_form(frame: &Frame) -> String {
    format!(
        "<h2>Download a backup</h2><form method=\"post\" action=\"/forms/backup/download\">{}\
         <label for=\"download-passphrase\">Passphrase to encrypt it to (at least 12 characters)</label>\
         <input id=\"download-passphrase\" name=\"passphrase\" type=\"password\" minlength=\"12\" maxlength=\"1024\" autocomplete=\"new-password\" required>\
         <label for=\"download-code\">Two-factor code (when 2FA is on)</label>\
         <input id=\"download-code\" name=\"totp\" autocomplete=\"one-time-code\">\
         <button type=\"submit\" id=\"download\">Download</button></form>\
         <p class=\"muted\">Restore one with <code>watchgrid admin restore FILE</code> on a stopped appliance.</p>",
        frame.field()
    )
}

/// A refusal the page shows (a short passphrase, a wrong code) rather than an error page.
pub(super) fn refused(state: &AppState, admin: &Admin, e: ApiError) -> Result<Response, ApiError> {
    match e {
        ApiError::Invalid(_)
        | ApiError::Unavailable(_)
        | ApiError::Unauthorized
        | ApiError::TwoFactorRequired
        | ApiError::NotFound => {
            let message = match e {
                ApiError::Unauthorized => "the two-factor code is not right".to_string(),
                ApiError::TwoFactorRequired => "2FA is on: a current code is needed".to_string(),
                e => e.to_string(),
            };
            render(
                state,
                admin,
                None,
                Some(&message),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        e => Err(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PassphraseForm {
    #[serde(default)]
    passphrase: String,
    #[serde(default)]
    keep: Option<String>,
    #[serde(default)]
    totp: String,
}

impl PassphraseForm {
    fn totp(&self) -> Option<String> {
        Some(self.totp.trim().to_string()).filter(|t| !t.is_empty())
    }
}

fn form_of(form: Result<Form<PassphraseForm>, FormRejection>) -> Result<PassphraseForm, ApiError> {
    form.map(|Form(f)| f)
        .map_err(|r| ApiError::Invalid(r.body_text()))
}

async fn set_schedule(
    State(state): State<AppState>,
    admin: Admin,
    form: Result<Form<PassphraseForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let f = form_of(form)?;
        let keep = match f.keep.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(k) => Some(
                k.parse()
                    .map_err(|_| ApiError::Invalid("keep: a whole number, 1 to 365".into()))?,
            ),
        };
        let body = super::backup::ScheduleRequest {
            totp: f.totp(),
            passphrase: f.passphrase,
            keep,
        };
        super::backup::set_schedule(State(state.clone()), admin.clone(), StrictJson(body)).await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to("/backup?done=schedule").into_response()),
        Err(e) => refused(&state, &admin, e),
    }
}

async fn run_now(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    match super::backup::run_now(State(state.clone()), admin.clone()).await {
        Ok(run) => match &run.offsite {
            None => Ok(Redirect::to("/backup?done=run").into_response()),
            Some(c) if c.ok => Ok(Redirect::to("/backup?done=run-copied").into_response()),
            Some(c) => render(
                &state,
                &admin,
                None,
                Some(&format!(
                    "{} is kept on the appliance, but copying it off the box failed: {}",
                    run.name, c.detail
                )),
                StatusCode::BAD_GATEWAY,
            ),
        },
        Err(e) => refused(&state, &admin, e),
    }
}

async fn verify(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    match super::backup::verify(State(state.clone()), admin.clone(), Path(name)).await {
        Ok(_) => Ok(Redirect::to("/backup?done=verified").into_response()),
        Err(e) => refused(&state, &admin, e),
    }
}

async fn download(
    State(state): State<AppState>,
    admin: Admin,
    form: Result<Form<PassphraseForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let f = form_of(form)?;
        let body = super::backup::BackupRequest {
            totp: f.totp(),
            passphrase: f.passphrase,
        };
        super::backup::download(State(state.clone()), admin.clone(), StrictJson(body)).await
    }
    .await;
    match result {
        Ok(file) => Ok(file),
        Err(e) => refused(&state, &admin, e),
    }
}

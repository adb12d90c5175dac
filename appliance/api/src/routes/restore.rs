//! Restore at first boot: instead of a fresh setup, the wizard takes a backup file and
//! its passphrase (with the setup token, like setup). The backup is checked whole, staged,
//! and the daemon restarts into it: the hub key, addresses, CA, admins and devices of
//! the old appliance, so its peers and agents reconnect with no change on their side.

use super::limit;
use crate::auth::ClientIp;
use crate::error::ApiError;
use crate::hub::BackupRefused;
use crate::limits::SETUP;
use crate::routes::pages::page;
use crate::secrets::ct_eq;
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

/// The largest backup accepted (a fleet's is a few MiB).
const MAX_BACKUP: usize = 64 << 20;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/setup/restore",
        post(restore).layer(DefaultBodyLimit::max(MAX_BACKUP + 64 * 1024)),
    )
}

/// The form's fields.
#[derive(Default)]
struct Upload {
    setup_token: String,
    passphrase: String,
    backup: Vec<u8>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Restoring {
    /// `restoring`: the daemon restarts into the backup now.
    pub status: &'static str,
    /// What the backup holds.
    pub backup: String,
}

/// Restores a backup instead of a fresh setup (multipart form: `setup_token`,
/// `passphrase`, `backup` the file). Refused once setup is done.
#[utoipa::path(post, path = "/api/setup/restore", tag = "setup",
    request_body(content_type = "multipart/form-data", description = "setup_token, passphrase and the backup file"),
    responses((status = 200, body = Restoring), (status = 403, body = crate::dto::ErrorBody),
        (status = 409, body = crate::dto::ErrorBody), (status = 422, body = crate::dto::ErrorBody),
        (status = 429, body = crate::dto::ErrorBody)))]
pub(crate) async fn restore(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    // The wizard's form post (a browser asks for HTML) gets pages; API clients JSON.
    let wants_json = !headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    match run_restore(&state, ip, form).await {
        Ok(summary) if wants_json => Json(Restoring {
            status: "restoring",
            backup: summary,
        })
        .into_response(),
        Ok(summary) => page("Restoring", &restarting_page(&summary)).into_response(),
        Err(e) if wants_json => e.into_response(),
        Err(e) => (
            e.status(),
            page("Set up", &super::pages::setup_form(Some(&e.to_string()))),
        )
            .into_response(),
    }
}

fn restarting_page(summary: &str) -> String {
    format!(
        "<h1>Restoring</h1><p class=\"ok\" role=\"status\" id=\"restoring\">The backup checks out \
         and the appliance restarts into it now.</p><p>{}</p>\
         <p>In a few seconds, <a href=\"/login\" id=\"to-login\">sign in</a> with the backup's \
         admin account. Devices and agents reconnect by themselves.</p>",
        super::pages::esc(summary)
    )
}

async fn run_restore(
    state: &AppState,
    ip: std::net::IpAddr,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<String, ApiError> {
    limit(state, SETUP, ip)?;
    if state.setup_done()? {
        return Err(ApiError::Conflict(
            "setup has already been completed; restore with `watchgrid admin restore` on a stopped appliance".into(),
        ));
    }
    let upload = read_upload(form.map_err(|e| ApiError::Invalid(e.body_text()))?).await?;
    let token_ok = state
        .setup_token
        .lock()
        .map_err(|_| ApiError::internal("setup token lock poisoned"))?
        .as_deref()
        .is_some_and(|t| ct_eq(t, &upload.setup_token));
    if !token_ok {
        return Err(ApiError::Forbidden("invalid setup token"));
    }
    let source = state
        .backup
        .get()
        .cloned()
        .ok_or_else(|| ApiError::Unavailable("restoring is not available here".into()))?;
    let staging = source.clone();
    let summary = tokio::task::spawn_blocking(move || {
        staging.stage_restore(&upload.backup, &upload.passphrase)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the restore task: {e}")))?
    .map_err(|e| match e {
        BackupRefused::Invalid(m) => ApiError::Invalid(m),
        BackupRefused::Failed(m) => ApiError::Unavailable(m),
        BackupRefused::Busy => ApiError::Busy {
            retry_after_secs: 5,
        },
    })?;
    if let Ok(mut slot) = state.setup_token.lock() {
        slot.take();
    }
    tracing::warn!(from = %ip, backup = %summary, "restoring from a backup at first boot; restarting");
    source.restart();
    Ok(summary)
}

async fn read_upload(mut form: Multipart) -> Result<Upload, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::Invalid(e.body_text())
        }
    };
    let mut upload = Upload::default();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "setup_token" => {
                upload.setup_token = field.text().await.map_err(bad)?.trim().to_string()
            }
            "passphrase" => upload.passphrase = field.text().await.map_err(bad)?,
            "backup" => upload.backup = field.bytes().await.map_err(bad)?.to_vec(),
            other => return Err(ApiError::Invalid(format!("unknown field {other:?}"))),
        }
    }
    if upload.backup.is_empty() {
        return Err(ApiError::Invalid("backup: choose the backup file".into()));
    }
    Ok(upload)
}

//! `/api/update`: upload a signed update bundle of the appliance image, and see how the
//! install and the last update went.

use super::audit;
use crate::auth::Admin;
use crate::deadline::Deadline;
use crate::dto::ErrorBody;
use crate::error::ApiError;
use crate::state::AppState;
use crate::update::{self, MAX_BUNDLE};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use watchgrid_update::install::{DEFAULT_TRIES, MAX_TRIES};
use watchgrid_update::state::Request;

/// An upload of the largest bundle over a slow link.
const UPLOAD_TIME: std::time::Duration = std::time::Duration::from_secs(30 * 60);

pub fn router() -> Router<AppState> {
    Router::new().route("/api/update", get(show).post(upload))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct UpdateView {
    /// The running image's version.
    pub running_version: String,
    /// `a` or `b`; absent outside the appliance image.
    pub running_slot: Option<String>,
    /// An install is under way.
    pub busy: bool,
    /// The last install's progress: `verifying`, `writing`, `done` or `failed`.
    pub phase: Option<String>,
    pub percent: Option<u8>,
    pub detail: Option<String>,
    /// The version the last install wrote.
    pub installing: Option<String>,
    /// How the last update went: `pending` (reboot to finish), `good` or `rolled_back`.
    pub outcome: Option<String>,
    /// The same in a sentence.
    pub summary: Option<String>,
}

fn snake<T: Serialize>(v: &T) -> Option<String> {
    serde_json::to_value(v).ok()?.as_str().map(str::to_string)
}

pub(crate) fn view(state: &AppState) -> Result<UpdateView, ApiError> {
    let s = update::status(state)?;
    Ok(UpdateView {
        running_version: s.running_version,
        running_slot: s.running_slot.map(|slot| slot.letter().to_string()),
        busy: s.busy,
        phase: s.progress.as_ref().and_then(|p| snake(&p.phase)),
        percent: s.progress.as_ref().map(|p| p.percent),
        detail: s.progress.as_ref().map(|p| p.detail.clone()),
        installing: s.progress.as_ref().and_then(|p| p.version.clone()),
        outcome: s.last.as_ref().and_then(|r| snake(&r.outcome)),
        summary: s.last.as_ref().map(|r| r.summary()),
    })
}

/// The running version, the install under way and the last update's outcome.
#[utoipa::path(get, path = "/api/update", tag = "admin",
    responses((status = 200, body = UpdateView), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<UpdateView>, ApiError> {
    Ok(Json(view(&state)?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadOptions {
    /// Install a bundle older than the running version.
    #[serde(default)]
    pub allow_downgrade: bool,
    /// Reboot into the new version once it is written.
    #[serde(default)]
    pub reboot: bool,
    /// Boots the new version gets to pass its health check (1 to 9, default 3).
    pub tries: Option<u32>,
}

/// Takes a bundle (the request body, `application/octet-stream`), checks its signature
/// and hashes, and has it installed into the inactive root slot; nothing is written to a
/// slot unless every check passes. `GET /api/update` then shows the progress.
#[utoipa::path(post, path = "/api/update", tag = "admin", params(UploadOptions),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 202, body = UpdateView), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    admin: Admin,
    deadline: Option<Extension<Deadline>>,
    Query(options): Query<UploadOptions>,
    body: Body,
) -> Result<(StatusCode, Json<UpdateView>), ApiError> {
    let tries = options.tries.unwrap_or(DEFAULT_TRIES);
    if !(1..=MAX_TRIES).contains(&tries) {
        return Err(ApiError::Invalid(format!("tries: 1 to {MAX_TRIES}")));
    }
    let request = Request {
        allow_downgrade: options.allow_downgrade,
        reboot: options.reboot,
        tries,
    };
    let _one = state.update_uploads.try_lock().map_err(|_| busy())?;
    if update::status(&state)?.busy {
        return Err(busy());
    }
    if let Some(Extension(d)) = deadline {
        d.extend(UPLOAD_TIME);
    }
    let path = update::upload_path(&state)?;
    receive(body, &path).await?;
    let staged = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || update::stage(&state, &path, &request))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??
    };
    audit(
        &state,
        &admin.username,
        "update.staged",
        &format!("watchgrid {} (key {})", staged.version, staged.key_id),
    )?;
    Ok((StatusCode::ACCEPTED, Json(view(&state)?)))
}

fn busy() -> ApiError {
    ApiError::Conflict("an update is already being installed; wait for it to finish".into())
}

/// Streams the body into `path` (at most [`MAX_BUNDLE`] bytes) and syncs it.
async fn receive(body: Body, path: &std::path::Path) -> Result<(), ApiError> {
    let io = |e: std::io::Error| ApiError::Internal(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut body = body;
    let mut total = 0u64;
    let result = async {
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| ApiError::Invalid(format!("the upload was cut off: {e}")))?;
            if let Ok(data) = frame.into_data() {
                total += data.len() as u64;
                if total > MAX_BUNDLE {
                    return Err(ApiError::TooLarge);
                }
                file.write_all(&data).await.map_err(io)?;
            }
        }
        file.sync_all().await.map_err(io)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(path).await;
    }
    result
}

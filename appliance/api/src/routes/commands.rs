//! Remote commands (SPEC §5): the operator queues argv arrays for an agent enrolled
//! with `--allow-commands`; the agent long-polls for them and reports each result once.
//! Exactly once rests on two journals: the store re-delivers a command until its result
//! is stored, and the agent records an id durably before it starts it, so a
//! re-delivered id whose run was interrupted is reported, never run again.

use super::audit;
use crate::agent_auth::AgentDevice;
use crate::auth::Admin;
use crate::dto::{
    CommandErrorKind, CommandList, CommandOrder, CommandOrders, CommandQueued, CommandReport,
    CommandView, ErrorBody, Status,
};
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::json::StrictQuery;
use crate::state::{unix_now, AppState};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::time::Duration;
use watchgrid_store::{
    AgentCommand, Cancellation, CommandOutcome, CommandState, ResultRecorded, Store,
};

/// The longest long poll an agent may ask for.
pub const MAX_WAIT_S: u64 = 30;
/// A delivered command without a result is handed out again after this long (its
/// answer may have been lost on the way).
pub const REDELIVER_AFTER_S: u64 = 60;
/// A command not picked up within this long expires.
pub const QUEUED_LIFETIME_S: u64 = 3600;
/// The most output of each stream the hub stores.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// A result carries two capped streams, JSON-escaped (up to six bytes a byte).
const REPORT_BODY_LIMIT: usize = 2 * 6 * OUTPUT_CAP + 16 * 1024;
const MAX_TIMEOUT_S: u32 = 24 * 3600;
const MAX_ARGS: usize = 256;
const MAX_ARG_LEN: usize = 4096;

/// Queueing and reading commands, for signed-in admins.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/devices/{id}/commands",
            post(queue).get(list_for_device),
        )
        .route("/api/commands/{id}", get(show).delete(cancel))
}

/// The agent's side: long poll and results.
pub fn agent_router() -> Router<AppState> {
    Router::new().route("/api/commands/", get(poll)).route(
        "/api/commandresult",
        post(report).layer(DefaultBodyLimit::max(REPORT_BODY_LIMIT)),
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueRequest {
    /// Program and arguments; run without a shell unless argv[0] is one.
    #[schema(min_items = 1, max_items = 256)]
    pub(crate) argv: Vec<String>,
    /// Seconds before the agent kills the command and its children (default 60).
    #[schema(minimum = 1, maximum = 86400)]
    pub(crate) timeout_s: Option<u32>,
}

fn validate_argv(argv: &[String]) -> Result<(), ApiError> {
    if argv.is_empty() || argv.len() > MAX_ARGS {
        return Err(ApiError::Invalid(format!("argv: 1 to {MAX_ARGS} items")));
    }
    if argv[0].is_empty() {
        return Err(ApiError::Invalid("argv[0]: the program, not empty".into()));
    }
    if argv
        .iter()
        .any(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
    {
        return Err(ApiError::Invalid(format!(
            "argv: each item at most {MAX_ARG_LEN} bytes, no NUL"
        )));
    }
    Ok(())
}

/// Queues a command for an agent; 409 when the agent does not run commands.
#[utoipa::path(post, path = "/api/devices/{id}/commands", tag = "commands",
    request_body = QueueRequest, params(("id" = String, Path)),
    responses((status = 202, body = CommandQueued), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn queue(
    State(state): State<AppState>,
    admin: Admin,
    Path(device_id): Path<String>,
    StrictJson(req): StrictJson<QueueRequest>,
) -> Result<(StatusCode, Json<CommandQueued>), ApiError> {
    validate_argv(&req.argv)?;
    let timeout_s = req.timeout_s.unwrap_or(60);
    if timeout_s == 0 || timeout_s > MAX_TIMEOUT_S {
        return Err(ApiError::Invalid("timeout_s: 1 to 86400".into()));
    }
    let device = state
        .store
        .devices
        .get(&device_id)?
        .ok_or(ApiError::NotFound)?;
    if device.agent_key_hash.is_empty() || !device.allow_commands {
        return Err(ApiError::Conflict(format!(
            "{} does not run remote commands: enroll its agent with --allow-commands",
            device.id
        )));
    }
    let now = unix_now();
    let command = AgentCommand {
        id: format!("cmd-{}", state.store.next_id()?),
        device_id: device.id.clone(),
        argv: req.argv,
        timeout_s,
        queued_by: admin.username.clone(),
        queued_at: now,
        expires_at: now + QUEUED_LIFETIME_S,
        state: CommandState::Queued,
        delivered_at: None,
        deliveries: 0,
        last_delivered_at: None,
        result: None,
    };
    state.store.queue_command(&command)?;
    audit(&state, &admin.username, "command.queue", &command.id)?;
    state.metrics.command(CommandState::Queued);
    state.command_bell.ring(&device.id);
    Ok((
        StatusCode::ACCEPTED,
        Json(CommandQueued {
            id: command.id,
            state: CommandState::Queued.as_str().into(),
        }),
    ))
}

/// A device's commands, oldest first.
#[utoipa::path(get, path = "/api/devices/{id}/commands", tag = "commands",
    params(("id" = String, Path)),
    responses((status = 200, body = CommandList), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn list_for_device(
    State(state): State<AppState>,
    _admin: Admin,
    Path(device_id): Path<String>,
) -> Result<Json<CommandList>, ApiError> {
    state
        .store
        .devices
        .get(&device_id)?
        .ok_or(ApiError::NotFound)?;
    let commands = state.store.commands_of(&device_id)?;
    Ok(Json(CommandList {
        commands: commands.into_iter().map(CommandView::from).collect(),
    }))
}

/// One command with its result.
#[utoipa::path(get, path = "/api/commands/{id}", tag = "commands",
    params(("id" = String, Path)),
    responses((status = 200, body = CommandView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<CommandView>, ApiError> {
    let command = state.store.command(&id)?.ok_or(ApiError::NotFound)?;
    Ok(Json(command.into()))
}

/// Cancels a command the agent has not picked up; 409 once it has.
#[utoipa::path(delete, path = "/api/commands/{id}", tag = "commands",
    params(("id" = String, Path)),
    responses((status = 200, body = CommandView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<CommandView>, ApiError> {
    match state.store.cancel_command(&id)? {
        Cancellation::Cancelled(c) => {
            audit(&state, &admin.username, "command.cancel", &id)?;
            state.metrics.command(CommandState::Cancelled);
            Ok(Json(c.into()))
        }
        Cancellation::TooLate(c) => Err(ApiError::Conflict(format!(
            "{id} is {}: only a command not yet picked up can be cancelled",
            c.state.as_str()
        ))),
        Cancellation::Unknown => Err(ApiError::NotFound),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollQuery {
    /// Seconds to hold the request open while nothing is queued (0 to 30, default 0).
    wait: Option<u64>,
}

/// The agent's queued commands, held open up to `wait` seconds until one arrives.
#[utoipa::path(get, path = "/api/commands/", tag = "agents", params(PollQuery),
    responses((status = 200, body = CommandOrders), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("agent_key" = [])))]
pub(crate) async fn poll(
    State(state): State<AppState>,
    AgentDevice(device): AgentDevice,
    StrictQuery(query): StrictQuery<PollQuery>,
) -> Result<Json<CommandOrders>, ApiError> {
    let wait = query.wait.unwrap_or(0);
    if wait > MAX_WAIT_S {
        return Err(ApiError::Invalid(format!(
            "wait: 0 to {MAX_WAIT_S} seconds"
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let bell = state.command_bell.for_device(&device.id);
    let _open = state.command_bell.waiting();
    loop {
        let rung = bell.notified();
        tokio::pin!(rung);
        rung.as_mut().enable();
        let orders = deliver(&state, &device.id)?;
        if !orders.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(CommandOrders { commands: orders }));
        }
        if tokio::time::timeout_at(deadline, rung).await.is_err() {
            return Ok(Json(CommandOrders {
                commands: Vec::new(),
            }));
        }
    }
}

/// Marks what is due as delivered and counts the transitions.
fn deliver(state: &AppState, device_id: &str) -> Result<Vec<CommandOrder>, ApiError> {
    let store: &Store = &state.store;
    let (due, expired) = store.deliver_commands(device_id, unix_now(), REDELIVER_AFTER_S)?;
    for _ in &expired {
        state.metrics.command(CommandState::Expired);
    }
    Ok(due
        .into_iter()
        .inspect(|c| {
            if c.deliveries == 1 {
                state.metrics.command(CommandState::Delivered);
            }
        })
        .map(|c| CommandOrder {
            id: c.id,
            argv: c.argv,
            timeout_s: c.timeout_s,
        })
        .collect())
}

/// Stores a command's result; a repeated report of the same id is accepted and
/// changes nothing. Another device's command id is 404.
#[utoipa::path(post, path = "/api/commandresult", tag = "agents", request_body = CommandReport,
    responses((status = 200, body = Status), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("agent_key" = [])))]
pub(crate) async fn report(
    State(state): State<AppState>,
    AgentDevice(device): AgentDevice,
    StrictJson(r): StrictJson<CommandReport>,
) -> Result<Json<Status>, ApiError> {
    let final_state = final_state(&r)?;
    let outcome = CommandOutcome {
        exit_code: r.exit_code,
        error: r.error.map(|e| e.message),
        stdout: r.stdout,
        stderr: r.stderr,
        stdout_truncated: r.stdout_truncated,
        stderr_truncated: r.stderr_truncated,
        started_at: r.started_at,
        duration_ms: r.duration_ms,
        reported_at: unix_now(),
    };
    match state
        .store
        .record_command_result(&device.id, &r.id, final_state, outcome)?
    {
        ResultRecorded::Stored(c) => {
            state.metrics.command(c.state);
            Ok(Json(Status::new(c.state.as_str())))
        }
        ResultRecorded::AlreadyFinal(c) => Ok(Json(Status::new(c.state.as_str()))),
        ResultRecorded::Unknown => Err(ApiError::NotFound),
    }
}

/// The state a report puts its command in; exactly one of exit code and error.
fn final_state(r: &CommandReport) -> Result<CommandState, ApiError> {
    for (name, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        if text.len() > OUTPUT_CAP {
            return Err(ApiError::Invalid(format!(
                "{name}: at most {OUTPUT_CAP} bytes; cut it and set {name}_truncated"
            )));
        }
    }
    if r.error.as_ref().is_some_and(|e| e.message.len() > 1024) {
        return Err(ApiError::Invalid(
            "error.message: at most 1024 bytes".into(),
        ));
    }
    match (&r.exit_code, &r.error) {
        (Some(0), None) => Ok(CommandState::Succeeded),
        (Some(_), None) => Ok(CommandState::Failed),
        (None, Some(e)) => Ok(match e.kind {
            CommandErrorKind::Timeout => CommandState::TimedOut,
            CommandErrorKind::Interrupted => CommandState::Interrupted,
            CommandErrorKind::Refused | CommandErrorKind::Spawn => CommandState::Rejected,
        }),
        _ => Err(ApiError::Invalid(
            "exactly one of exit_code and error".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn argv_is_checked_before_anything_is_queued() {
        use super::validate_argv;
        assert!(validate_argv(&[]).is_err());
        assert!(validate_argv(&["".into()]).is_err());
        assert!(validate_argv(&["echo".into(), "a\0b".into()]).is_err());
        assert!(validate_argv(&vec!["x".to_string(); 257]).is_err());
        assert!(validate_argv(&["uname".into(), "-r".into()]).is_ok());
    }
}

//! The agent API (SPEC §5): heartbeats and the WireGuard config, authenticated by the
//! agent key ([`AgentDevice`]).

use crate::agent_auth::AgentDevice;
use crate::dto::{AgentConfig, AgentStatus, ErrorBody, Heartbeat, HeartbeatAnswer};
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::json::StrictQuery;
use crate::presence::Presence;
use crate::state::{unix_now, AppState};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use watchgrid_store::{Device, SETTINGS_KEY};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/heartbeat", post(heartbeat))
        .route("/api/wg/config", get(wg_config))
}

/// Records an agent's heartbeat; answers when to send the next and whether its config
/// changed.
#[utoipa::path(post, path = "/api/heartbeat", tag = "agents", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatAnswer), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("agent_key" = [])))]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    AgentDevice(device): AgentDevice,
    StrictJson(facts): StrictJson<Heartbeat>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    validate(&facts)?;
    let config = agent_config(&state, &device)?;
    if state.presence.record(&device.id, unix_now(), facts) {
        super::audit(&state, "agent", "agent.online", &device.id)?;
    }
    state.metrics.agent_heartbeats.inc();
    let commands_pending = state.store.pending_command_count(&device.id)? as u32;
    Ok(Json(HeartbeatAnswer {
        interval_s: state.config.heartbeat_interval_s,
        config_etag: etag(&config)?,
        commands_pending,
        ssh_etag: super::ssh_agent::ssh_etag(&state),
    }))
}

fn validate(h: &Heartbeat) -> Result<(), ApiError> {
    let texts = [
        ("agent_version", Some(&h.agent_version), 64),
        ("hostname", h.hostname.as_ref(), 253),
        ("os", h.os.as_ref(), 256),
        ("kernel", h.kernel.as_ref(), 256),
    ];
    for (field, value, max) in texts {
        if let Some(v) = value {
            if v.chars().count() > max || v.chars().any(char::is_control) {
                return Err(ApiError::Invalid(format!(
                    "{field}: at most {max} characters, no control characters"
                )));
            }
        }
    }
    if h.load.as_ref().is_some_and(|l| l.len() > 3) {
        return Err(ApiError::Invalid("load: at most 3 values".into()));
    }
    Ok(())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigQuery {
    /// `wg-quick` for a wg-quick file (without the private key, which only the agent has).
    format: Option<String>,
}

/// The agent's WireGuard configuration, JSON or wg-quick; `If-None-Match` with the
/// current ETag answers 304.
#[utoipa::path(get, path = "/api/wg/config", tag = "agents", params(ConfigQuery),
    responses((status = 200, body = AgentConfig), (status = 304),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("agent_key" = [])))]
pub(crate) async fn wg_config(
    State(state): State<AppState>,
    AgentDevice(device): AgentDevice,
    StrictQuery(query): StrictQuery<ConfigQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let config = agent_config(&state, &device)?;
    let tag = etag(&config)?;
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let etag_header = [(header::ETAG, tag)];
    if cached {
        return Ok((StatusCode::NOT_MODIFIED, etag_header).into_response());
    }
    match query.format.as_deref() {
        None | Some("json") => Ok((etag_header, Json(config)).into_response()),
        Some("wg-quick") => {
            let text = wg_quick(&config);
            let kind = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
            Ok((etag_header, kind, text).into_response())
        }
        Some(_) => Err(ApiError::Invalid("format: json or wg-quick".into())),
    }
}

pub(crate) fn agent_config(state: &AppState, device: &Device) -> Result<AgentConfig, ApiError> {
    let settings = state
        .store
        .settings
        .get(SETTINGS_KEY)?
        .ok_or(ApiError::SetupRequired)?;
    let net = super::client_network(state, &settings, device)?;
    Ok(AgentConfig {
        device_id: device.id.clone(),
        address: net.address_v4,
        address_v6: net.address_v6,
        hub_public_key: state.hub.public_key(),
        endpoint: settings.endpoint,
        allowed_ips: net.allowed_ips,
        persistent_keepalive: state.config.device_keepalive,
    })
}

/// A strong ETag: SHA-256 of the JSON answer, so it changes exactly when the config does.
fn etag(config: &AgentConfig) -> Result<String, ApiError> {
    let json = serde_json::to_vec(config).map_err(ApiError::internal)?;
    Ok(format!("\"{}\"", hex::encode(&Sha256::digest(json)[..16])))
}

fn wg_quick(c: &AgentConfig) -> String {
    let mut address = c.address.clone();
    if let Some(v6) = &c.address_v6 {
        address = format!("{address}, {v6}");
    }
    format!(
        "[Interface]\n# PrivateKey: the agent's own, generated on the machine\nAddress = {address}\n\n\
         [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = {}\nPersistentKeepalive = {}\n",
        c.hub_public_key,
        c.endpoint,
        c.allowed_ips.join(", "),
        c.persistent_keepalive
    )
}

/// Writes `agent.offline` to the audit log for each agent that has missed three
/// heartbeats since the last sweep (the daemon sweeps every interval).
pub fn sweep_offline(state: &AppState, now: u64) -> Result<Vec<String>, ApiError> {
    let gone = state
        .presence
        .newly_offline(now, state.config.heartbeat_interval_s);
    let mut alerts = Vec::new();
    for id in &gone {
        tracing::warn!(device = %id, "agent offline: three heartbeats missed");
        super::audit(state, "agent", "agent.offline", id)?;
        alerts.push(crate::alerts::NewAlert {
            kind: "agent_offline",
            device_id: id.clone(),
            summary: format!("agent {id} missed three heartbeats"),
            details: serde_json::json!({ "interval_s": state.config.heartbeat_interval_s }),
        });
    }
    crate::alerts::raise(state, alerts)?;
    Ok(gone)
}

/// The agent part of a device's view, when the hub has heard from it.
pub(crate) fn status(state: &AppState, device_id: &str, now: u64) -> Option<AgentStatus> {
    let seen = state.presence.last(device_id)?;
    Some(AgentStatus {
        online: Presence::is_online(&seen, now, state.config.heartbeat_interval_s),
        last_seen: seen.at,
        agent_version: seen.facts.agent_version,
        hostname: seen.facts.hostname,
        os: seen.facts.os,
        kernel: seen.facts.kernel,
        uptime_s: seen.facts.uptime_s,
        load: seen.facts.load,
        memory_total_bytes: seen.facts.memory_total_bytes,
        memory_available_bytes: seen.facts.memory_available_bytes,
        disk_total_bytes: seen.facts.disk_total_bytes,
        disk_available_bytes: seen.facts.disk_available_bytes,
        log_lines_dropped: seen.facts.log_lines_dropped,
    })
}

//! Watchgrid's HTTPS control plane (SPEC §4–§6): setup, admin sessions and API tokens,
//! enrollment and device registration, devices, health and metrics.
//!
//! [`router`] builds the whole application from an [`AppState`]; the binary serves it
//! over TLS, tests call it in-process. Handlers reach the WireGuard hub only through
//! the [`hub::Hub`] trait (the dataplane's command channel).

pub mod accounting;
pub mod agent_auth;
pub mod alerts;
mod audience;
pub mod auth;
pub mod backups;
pub mod command_bell;
pub mod csrf;
pub mod deadline;
pub mod dto;
pub mod error;
pub mod expiry;
pub mod hub;
pub mod json;
pub mod limits;
pub mod metrics;
mod middleware;
pub mod offsite;
pub mod openapi;
pub mod presence;
pub mod routes;
pub mod secrets;
pub mod state;
pub mod totp;
mod unread_body;
pub mod update;

pub use state::{ApiConfig, AppState};

use axum::extract::DefaultBodyLimit;
use axum::Router;

/// Request bodies larger than this are refused with 413 before any processing.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The application: one router per audience, each with its protection (see
/// `audience`), and the request-wide policies around all of them.
pub fn router(state: AppState) -> Router {
    let guarded = Router::new()
        .merge(audience::public())
        .merge(audience::agent(&state))
        .merge(audience::setup(&state))
        .merge(audience::admin(&state));
    Router::new()
        .merge(audience::health())
        .merge(audience::fail_closed(guarded, &state))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::record_metrics,
        ))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(unread_body::drain_unread_body))
        .with_state(state)
}

/// The metrics exposition, refreshed from the hub and the store at each scrape.
pub fn render_metrics(state: &AppState) -> String {
    state
        .metrics
        .wireguard_peers
        .set(state.hub.peer_count() as i64);
    match state.store.size_on_disk() {
        Ok(n) => {
            state.metrics.db_size_bytes.set(n as i64);
            state.metrics.db_up.set(1);
        }
        Err(_) => {
            state.metrics.db_up.set(0);
        }
    }
    let online = state
        .presence
        .online_count(state::unix_now(), state.config.heartbeat_interval_s);
    state.metrics.agents_online.set(online as i64);
    if let Some(logs) = state.logs.get() {
        state.metrics.log_store_bytes.set(logs.size_bytes() as i64);
    }
    let polls = state.command_bell.open_polls();
    state.metrics.agent_long_polls.set(polls as i64);
    let applied = matches!(
        state.firewall_status(),
        crate::hub::FirewallStatus::Applied { .. }
    );
    state.metrics.firewall_applied.set(i64::from(applied));
    state.metrics.render()
}

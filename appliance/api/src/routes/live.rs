//! Live counters for the dashboard: `GET /api/live` is a server-sent event stream (a
//! signed-in admin's; same origin, so the session cookie rides along) that sends the
//! peers-online count, the hub's peer count and each device's state every few seconds. `/static/app.js`
//! writes them into the page's `data-live` elements; without script the page simply
//! shows the values of its load.

use crate::auth::Admin;
use crate::state::{unix_now, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream, StreamExt};
use std::convert::Infallible;
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/live", get(live))
}

/// Seconds between updates: the traffic sampler's handshake ages move no faster.
const EVERY: Duration = Duration::from_secs(5);

/// Updates one stream sends before it ends (five minutes). The browser reconnects by
/// itself, and the reconnection is authenticated afresh: a stream outlives a sign-out or
/// a revoked session by at most this long.
const PER_STREAM: usize = 60;

const SCRIPT: &str = "'use strict';\n\
(function () {\n\
  if (!window.EventSource || !document.querySelector('[data-live], tr[data-device]')) { return; }\n\
  var source = new EventSource('/api/live');\n\
  source.addEventListener('counters', function (e) {\n\
    var data = JSON.parse(e.data);\n\
    document.querySelectorAll('[data-live]').forEach(function (el) {\n\
      var v = data[el.getAttribute('data-live')];\n\
      if (v !== undefined) { el.textContent = String(v); }\n\
    });\n\
    document.querySelectorAll('tr[data-device] .state > span:first-child').forEach(function (el) {\n\
      var state = data.states[el.closest('tr').getAttribute('data-device')];\n\
      if (state === 'online' || state === 'offline' || state === 'disabled') {\n\
        el.textContent = state;\n\
        el.className = state === 'online' ? 'online' : 'offline';\n\
      }\n\
    });\n\
    document.documentElement.dataset.live = 'on';\n\
  });\n\
  window.addEventListener('pagehide', function () { source.close(); });\n\
})();\n";

pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        [SCRIPT, super::update_page::SCRIPT].concat(),
    )
}

/// The counters the pages show live, as one JSON object.
pub fn counters(state: &AppState) -> serde_json::Value {
    let now = unix_now();
    let devices = state.store.devices.list().unwrap_or_default();
    let states: serde_json::Map<String, serde_json::Value> = devices
        .iter()
        .map(|d| {
            let s = match (d.enabled, super::device_pages::is_online(state, d, now)) {
                (false, _) => "disabled",
                (true, true) => "online",
                (true, false) => "offline",
            };
            (d.id.clone(), s.into())
        })
        .collect();
    let online = states.values().filter(|s| *s == "online").count();
    serde_json::json!({
        "online": online,
        "devices": devices.len(),
        "peers": state.hub.peer_count(),
        "states": states,
    })
}

async fn live(
    State(state): State<AppState>,
    _admin: Admin,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let updates = stream::unfold((state, true), |(state, first)| async move {
        if !first {
            tokio::time::sleep(EVERY).await;
        }
        let event = Event::default()
            .event("counters")
            .data(counters(&state).to_string());
        Some((Ok(event), (state, false)))
    })
    .take(PER_STREAM);
    Sse::new(updates).keep_alive(KeepAlive::default())
}

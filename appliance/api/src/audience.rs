//! The application by audience. Who may call a route decides which of these routers it
//! is registered in, and each router carries its audience's protection as layers: a new
//! route is protected by being added to the right router, and no middleware looks at
//! the path to decide.
//!
//! | audience | network     | before setup | browser Origin | credentials                |
//! |----------|-------------|--------------|----------------|----------------------------|
//! | health   | any         | answers      | not checked    | none                       |
//! | public   | any         | answers      | not checked    | none                       |
//! | agent    | any         | 503          | not checked    | their own, per handler     |
//! | setup    | admin fence | answers      | checked (API)  | the setup token            |
//! | admin    | admin fence | 503          | checked (API)  | session or API token, except signing in |
//!
//! Protection is attached with `Router::layer`, which wraps each route's answer to a
//! method it does not have as well (so a wrong method and a CORS preflight, which the
//! Origin check answers itself, get the route's protection) and the router's fallback.
//! Only the admin API has a fallback of its own; the others' default fallbacks give way
//! to it when the routers are merged. Layers run outermost first, in the order the
//! checks happen: the Origin check, the fence, the setup gate, then authentication.
//!
//! Everything but `health` also fails closed while no firewall ruleset is in force
//! ([`fail_closed`]), so a firewall that failed at start leaves only `/healthz` open.

use crate::middleware::{admin_fence, check_origin, firewall_gate, setup_gate};
use crate::routes::{
    self, agents, alerts, backup, backup_offsite, backup_page, commands, device_pages,
    device_settings, devices, enrollment, firewall, firewall_page, fleet_pages, live, logs, pages,
    password, session, settings, settings_pages, tls, tokens, traffic,
};
use crate::state::AppState;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::Router;

/// `/healthz`: every network, always, even with the firewall down.
pub(crate) fn health() -> Router<AppState> {
    routes::public::health_router()
}

/// Downloads (the CA certificate, the agent): every network.
pub(crate) fn public() -> Router<AppState> {
    routes::public::router().merge(routes::ssh::public_router())
}

/// Answers 503 while no firewall ruleset is in force.
pub(crate) fn fail_closed(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes.layer(from_fn_with_state(state.clone(), firewall_gate))
}

/// Devices and agents, from any network once setup is complete. They are not browsers,
/// so no Origin is checked; each handler checks the credential the agent presents.
/// Heartbeat, commands, command results, the WireGuard config and log shipping belong
/// here.
pub(crate) fn agent(state: &AppState) -> Router<AppState> {
    let routes = Router::new()
        .merge(enrollment::agent_router())
        .merge(agents::router())
        .merge(commands::agent_router())
        .merge(logs::agent_router())
        .merge(routes::ssh_agent::router());
    after_setup(routes, state)
}

/// The setup wizard: only the admin fence, and it answers before setup too (its
/// handlers say "already done" afterwards).
pub(crate) fn setup(state: &AppState) -> Router<AppState> {
    let pages = fenced(pages::wizard_router(), state);
    let api = routes::setup::router().merge(routes::restore::router());
    let api = origin_checked(fenced(api, state), state);
    pages.merge(api)
}

/// The admin surface: the admin fence, after setup. Its JSON API checks browsers'
/// Origin and, except for signing in and the API document, needs a session or an API
/// token; its pages are plain navigations (the dashboard sends visitors without a
/// session to the sign-in page).
///
/// Paths no router claims are answered here, like the admin API, so that a client
/// outside the fence, before setup or on a foreign page cannot tell which paths exist.
pub(crate) fn admin(state: &AppState) -> Router<AppState> {
    let signed_in = Router::new()
        .merge(session::router())
        .merge(tokens::router())
        .merge(backup::router())
        .merge(backup_offsite::router())
        .merge(routes::update::router())
        .merge(routes::ssh::router())
        .merge(password::router())
        .merge(tls::router())
        .merge(enrollment::admin_router())
        .merge(devices::router())
        .merge(commands::admin_router())
        .merge(logs::admin_router())
        .merge(alerts::router())
        .merge(firewall::router())
        .merge(traffic::router())
        .merge(settings::router())
        .merge(device_pages::forms_router())
        .merge(settings_pages::forms_router())
        .merge(fleet_pages::forms_router())
        .merge(device_settings::forms_router())
        .merge(backup_page::forms_router())
        .merge(routes::ssh_page::forms_router())
        .merge(live::router())
        .merge(firewall_page::forms_router())
        // `route_layer`: authentication guards these routes only, never the fallback
        // (an unknown path inside the fence is 404, not 401).
        .route_layer(from_fn_with_state(
            state.clone(),
            crate::auth::require_admin,
        ));
    let api = Router::new()
        .merge(session::sign_in_router())
        .merge(crate::openapi::router())
        .merge(signed_in)
        .fallback(unknown_path);
    let api = origin_checked(fenced(after_setup(api, state), state), state);
    let pages = pages::admin_router()
        .merge(device_pages::router())
        .merge(settings_pages::router())
        .merge(firewall_page::router())
        .merge(fleet_pages::router())
        .merge(backup_page::router())
        .merge(routes::ssh_page::router());
    let pages = fenced(after_setup(pages, state), state);
    pages.merge(api)
}

async fn unknown_path() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// Answers 503 until setup completes.
fn after_setup(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes.layer(from_fn_with_state(state.clone(), setup_gate))
}

/// Answers only clients inside the admin fence.
fn fenced(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes.layer(from_fn_with_state(state.clone(), admin_fence))
}

/// Refuses browser requests from foreign origins and answers preflights.
fn origin_checked(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes.layer(from_fn_with_state(state.clone(), check_origin))
}

//! Server-rendered pages: the setup wizard, sign-in and a minimal dashboard. Plain HTML
//! forms, no script at all (the CSP forbids inline script), so they work in any browser.

use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The wizard and the stylesheet every page uses (the wizard's needs before setup).
pub fn wizard_router() -> Router<AppState> {
    Router::new()
        .route("/setup", get(setup_page))
        .route("/static/app.css", get(css))
}

/// The sign-in page and the dashboard (which sends visitors without a session to it).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page))
        .route("/", get(dashboard))
}

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1b1f24}\
h1{font-size:1.6rem}label{display:block;margin-top:1rem;font-weight:600}\
input,select,textarea{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}fieldset{margin-top:1.5rem}\
button{margin-top:1.5rem;padding:.6rem 1.2rem;font-size:1rem}\
.note{color:#555}.error{color:#b00020;font-weight:600}table{border-collapse:collapse;width:100%}\
td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}";

async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS)
}

/// Escapes text for HTML element and attribute content.
pub fn esc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

pub fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · Watchgrid</title><link rel=\"stylesheet\" href=\"/static/app.css\"></head>\
         <body><main>{body}</main></body></html>",
        esc(title)
    ))
}

async fn setup_page(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.setup_done()? {
        return Ok(Redirect::to("/login").into_response());
    }
    Ok(page("Set up", &setup_form(None)).into_response())
}

/// The wizard form, with an error message when a submission was refused.
pub fn setup_form(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "<h1>Set up Watchgrid</h1>{error}\
         <p class=\"note\">The setup token is shown on the appliance console and in \
         <code>/run/watchgrid/setup-token</code>.</p>\
         <form method=\"post\" action=\"/api/setup\">\
         <label for=\"setup_token\">Setup token</label>\
         <input id=\"setup_token\" name=\"setup_token\" required autocomplete=\"off\">\
         <label for=\"admin_username\">Admin user</label>\
         <input id=\"admin_username\" name=\"admin_username\" value=\"admin\" required>\
         <label for=\"admin_password\">Admin password (at least 12 characters)</label>\
         <input id=\"admin_password\" name=\"admin_password\" type=\"password\" minlength=\"12\" required autocomplete=\"new-password\">\
         <label for=\"endpoint\">Public endpoint devices dial (host:port)</label>\
         <input id=\"endpoint\" name=\"endpoint\" placeholder=\"vpn.example.com:51820\" required>\
         <label for=\"vpn_subnet\">VPN subnet (IPv4; the hub takes the first address)</label>\
         <input id=\"vpn_subnet\" name=\"vpn_subnet\" value=\"10.100.0.0/16\">\
         <fieldset><legend>HTTPS certificate</legend>\
         <label for=\"tls_mode\">Source</label>\
         <select id=\"tls_mode\" name=\"tls_mode\">\
         <option value=\"internal\" selected>Internal CA (download its root at /downloads/ca.crt)</option>\
         <option value=\"acme\">ACME (Let&#39;s Encrypt) for a public domain</option>\
         <option value=\"uploaded\">Upload a certificate</option></select>\
         <label for=\"acme_domain\">ACME: domain that points here</label>\
         <input id=\"acme_domain\" name=\"acme_domain\" placeholder=\"vpn.example.com\">\
         <label for=\"acme_email\">ACME: contact email (optional)</label>\
         <input id=\"acme_email\" name=\"acme_email\" type=\"email\">\
         <label for=\"tls_cert_pem\">Upload: certificate chain (PEM)</label>\
         <textarea id=\"tls_cert_pem\" name=\"tls_cert_pem\" rows=\"4\"></textarea>\
         <label for=\"tls_key_pem\">Upload: private key (PEM)</label>\
         <textarea id=\"tls_key_pem\" name=\"tls_key_pem\" rows=\"4\"></textarea></fieldset>\
         <button type=\"submit\" id=\"submit\">Complete setup</button></form>"
    )
}

async fn login_page(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.setup_done()? {
        return Ok(Redirect::to("/setup").into_response());
    }
    Ok(page("Sign in", &login_form(None)).into_response())
}

pub fn login_form(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "<h1>Sign in</h1>{error}<form method=\"post\" action=\"/api/auth/login\">\
         <label for=\"username\">User</label><input id=\"username\" name=\"username\" required>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" required autocomplete=\"current-password\">\
         <label for=\"totp\">Two-factor code (if enabled)</label>\
         <input id=\"totp\" name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\">\
         <button type=\"submit\" id=\"submit\">Sign in</button></form>"
    )
}

async fn dashboard(
    State(state): State<AppState>,
    admin: Result<Admin, ApiError>,
) -> Result<Response, ApiError> {
    let admin = match admin {
        Ok(a) => a,
        Err(ApiError::Unauthorized) => return Ok(Redirect::to("/login").into_response()),
        Err(e) => return Err(e),
    };
    let rows: String = state
        .store
        .devices
        .list()?
        .iter()
        .map(|d| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.name),
                d.address_v4,
                esc(&d.groups.join(", ")),
                if d.enabled { "enabled" } else { "disabled" }
            )
        })
        .collect();
    let totp_on = state
        .store
        .admins
        .get(&admin.username)?
        .is_some_and(|a| a.totp_secret.is_some());
    let two_factor = if totp_on {
        "<p id=\"twofactor\">Two-factor authentication is on.</p>".to_string()
    } else {
        "<form method=\"post\" action=\"/api/auth/2fa/setup\">\
         <button type=\"submit\" id=\"setup2fa\">Set up two-factor authentication</button></form>"
            .to_string()
    };
    let firewall = firewall_section(&state)?;
    let body = format!(
        "<h1>Watchgrid</h1><p id=\"whoami\">Signed in as <strong>{}</strong>.</p>\
         <p>Hub public key: <code>{}</code> · peers on the hub: {}</p>\
         {two_factor}\
         <h2>Devices</h2><table><tr><th>Name</th><th>Address</th><th>Groups</th><th>State</th></tr>{rows}</table>\
         {firewall}\
         <form method=\"post\" action=\"/api/auth/logout\"><button type=\"submit\">Sign out</button></form>",
        esc(&admin.username),
        esc(&state.hub.public_key().to_string()),
        state.hub.peer_count()
    );
    Ok((StatusCode::OK, page("Dashboard", &body)).into_response())
}

/// The firewall's state and policy, read-only (edited through `PUT /api/firewall`).
fn firewall_section(state: &AppState) -> Result<String, ApiError> {
    use crate::hub::FirewallStatus;
    let status = match state.firewall_status() {
        FirewallStatus::Off => "off (--firewall off): the node manages no rules".to_string(),
        FirewallStatus::Pending => "being applied".to_string(),
        FirewallStatus::Applied { .. } => "applied".to_string(),
        FirewallStatus::Failed { error, .. } => format!("NOT applied: {}", esc(&error)),
    };
    let policy = state.store.firewall_policy()?;
    let fence = state.admin_fence_list();
    let rules: String = policy
        .rules
        .iter()
        .map(|r| {
            let to = match &r.to {
                watchgrid_firewall::Target::Group(g) => g.clone(),
                watchgrid_firewall::Target::Cidr(c) => c.to_string(),
            };
            let ports = if r.ports.is_empty() {
                "all".to_string()
            } else {
                let each: Vec<String> = r.ports.iter().map(|p| p.to_string()).collect();
                each.join(", ")
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.from_group),
                esc(&to),
                esc(&r.protocol.to_string()),
                esc(&ports)
            )
        })
        .collect();
    let rules = if rules.is_empty() {
        "<p>No forward rules: peers reach the hub only.</p>".to_string()
    } else {
        format!("<table><tr><th>From group</th><th>To</th><th>Protocol</th><th>Ports</th></tr>{rules}</table>")
    };
    Ok(format!(
        "<h2>Firewall</h2><p id=\"firewall-state\">State: {status}</p>\
         <p>Egress to networks behind the hub: {}</p>\
         <p>Admin access from: {}</p>{rules}",
        if policy.egress {
            "on (masqueraded)"
        } else {
            "off"
        },
        esc(&fence.join(", "))
    ))
}

/// Step 2 of 2FA enrolment: the QR code (inline SVG, no script) and the code form.
pub fn totp_setup_page(secret: &str, qr_svg: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    // The SVG comes from the QR encoder, not from user input; strip its XML prolog.
    let svg = qr_svg
        .find("<svg")
        .map(|i| &qr_svg[i..])
        .unwrap_or_default();
    format!(
        "<h1>Two-factor authentication</h1>{error}\
         <p>Scan this code with an authenticator app, or enter the key by hand.</p>\
         <div id=\"qr\">{svg}</div><p>Key: <code id=\"secret\">{}</code></p>\
         <form method=\"post\" action=\"/api/auth/2fa/enable\">\
         <label for=\"code\">Code from the app</label>\
         <input id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required>\
         <button type=\"submit\" id=\"submit\">Turn on</button></form>",
        esc(secret)
    )
}

/// Step 3: the recovery codes, shown once.
pub fn recovery_codes_page(codes: &[String]) -> String {
    let items: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>", esc(c)))
        .collect();
    format!(
        "<h1>Two-factor authentication is on</h1>\
         <p>Keep these recovery codes somewhere safe. Each works once, in place of a code, \
         and they are not shown again.</p><ul id=\"recovery\">{items}</ul><p><a href=\"/\">Done</a></p>"
    )
}

/// A heading, a message and a way back.
pub fn message_page(title: &str, message: &str) -> String {
    format!(
        "<h1>{}</h1><p class=\"error\" id=\"error\">{}</p><p><a href=\"/\">Back</a></p>",
        esc(title),
        esc(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<script>\"x\"&'y'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
    }
}

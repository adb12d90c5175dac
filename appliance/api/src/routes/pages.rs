//! Server-rendered pages: the setup wizard, sign-in and a minimal dashboard. Plain HTML
//! forms, no script at all (the CSP forbids inline script), so they work in any browser.

use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

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
td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}\
input[type=checkbox]{width:auto;margin-right:.5rem}\
pre{white-space:pre-wrap;word-break:break-all;background:#f4f4f4;padding:.6rem}";

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
    headers: HeaderMap,
    admin: Result<Admin, ApiError>,
) -> Result<Response, ApiError> {
    let admin = match admin {
        Ok(a) => a,
        Err(ApiError::Unauthorized) => return Ok(Redirect::to("/login").into_response()),
        Err(e) => return Err(e),
    };
    let body = dashboard_body(&state, &admin, &headers, &Install::default())?;
    Ok((StatusCode::OK, page("Dashboard", &body)).into_response())
}

fn dashboard_body(
    state: &AppState,
    admin: &Admin,
    headers: &HeaderMap,
    install: &Install,
) -> Result<String, ApiError> {
    let now = crate::state::unix_now();
    let rows: String = state
        .store
        .devices
        .list()?
        .iter()
        .map(|d| {
            let agent = match super::agents::status(state, &d.id, now) {
                Some(a) if a.online => format!("online ({})", esc(&a.agent_version)),
                Some(a) => format!("offline, last seen {} s ago", now.saturating_sub(a.last_seen)),
                None if d.agent_key_hash.is_empty() => "-".to_string(),
                None => "not heard from".to_string(),
            };
            format!(
                "<tr><td><a href=\"/devices/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td class=\"agent\">{agent}</td>{}</tr>",
                esc(&d.id),
                esc(&d.name),
                d.address_v4,
                esc(&d.groups.join(", ")),
                if d.enabled { "enabled" } else { "disabled" },
                link_cells(state, d, now)
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
    let firewall = firewall_section(state)?;
    let tls = tls_section(state)?;
    let install = install_section(state, headers, install);
    Ok(format!(
        "<h1>Watchgrid</h1><p id=\"whoami\">Signed in as <strong>{}</strong>.</p>\
         <p>Hub public key: <code>{}</code> · peers on the hub: {}</p>\
         {two_factor}\
         <h2>Devices</h2><p><a href=\"/logins\">Login events across the fleet</a></p><table><tr><th>Name</th><th>Address</th><th>Groups</th><th>State</th><th>Agent</th><th>Endpoint</th><th>Handshake</th><th>This month (rx / tx)</th></tr>{rows}</table>\
         {install}\
         {firewall}\
         {tls}\
         <form method=\"post\" action=\"/api/auth/logout\"><button type=\"submit\">Sign out</button></form>",
        esc(&admin.username),
        esc(&state.hub.public_key().to_string()),
        state.hub.peer_count()
    ))
}

/// A device's link as of the latest traffic sample: where it dials from, its latest
/// handshake and this month's bytes.
fn link_cells(state: &AppState, d: &watchgrid_store::Device, now: u64) -> String {
    let live = state.peers_now.get(&d.public_key);
    let endpoint = live
        .as_ref()
        .and_then(|p| p.endpoint)
        .map_or("-".to_string(), |e| e.to_string());
    let handshake = match live.and_then(|p| p.last_handshake_at) {
        Some(at) => format!("{} s ago", now.saturating_sub(at)),
        None => "never".to_string(),
    };
    let (_, first) = crate::accounting::month_of(now);
    let month = match state.store.traffic_total(&d.id, first, now + 1) {
        Ok((rx, tx)) => format!("{} / {}", bytes(rx), bytes(tx)),
        Err(_) => "-".to_string(),
    };
    format!(
        "<td class=\"endpoint\">{}</td><td>{handshake}</td><td class=\"traffic\">{month}</td>",
        esc(&endpoint)
    )
}

/// Bytes in binary units, one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// What the "Install an agent" section shows besides the command: the token the admin
/// just created with its form, or why the form was refused.
#[derive(Default)]
struct Install {
    token: Option<String>,
    allow_commands: bool,
    error: Option<String>,
}

/// The hub's URL as the admin's browser reached it: `https://` and the request's Host,
/// when that is a plain `host[:port]` (the command is pasted into a root shell, so
/// nothing that a shell would read as syntax gets into it).
fn hub_url(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    plain.then(|| format!("https://{host}"))
}

/// The one-line install: fetch the CA without verification, check its fingerprint (the
/// SHA-256 of its DER), and only then fetch the installer over TLS verified against it.
/// The installer checks the CA again itself before it downloads the binary. The
/// placeholders and every value here are shell-safe: the URL is checked by `hub_url`,
/// the token is base64url and the fingerprint hex.
fn install_command(hub: &str, fingerprint: &str, token: &str, allow_commands: bool) -> String {
    let hex = fingerprint.replace(':', "").to_ascii_lowercase();
    let allow = if allow_commands {
        " --allow-commands"
    } else {
        ""
    };
    format!(
        "cd \"$(mktemp -d)\" && curl -fsSk {hub}/downloads/ca.crt -o watchgrid-ca.crt && \
         sed '/^-----/d' watchgrid-ca.crt | base64 -d > watchgrid-ca.der && \
         echo '{hex}  watchgrid-ca.der' | sha256sum -c && \
         curl -fsS --cacert watchgrid-ca.crt {hub}/downloads/install-agent.sh -o install-agent.sh && \
         sh install-agent.sh --server {hub} --token {token} --fingerprint SHA256:{fingerprint}{allow}"
    )
}

/// The install command with this hub's URL and CA fingerprint, and a form that creates
/// an enrollment token and shows the command again with it.
fn install_section(state: &AppState, headers: &HeaderMap, install: &Install) -> String {
    let head = "<h2 id=\"install-agent\">Install an agent</h2>";
    let Some(fingerprint) = state
        .ca_cert_pem
        .as_deref()
        .and_then(super::public::downloads::ca_fingerprint)
    else {
        return format!(
            "{head}<p id=\"install-unavailable\">The installer pins the hub&#39;s internal CA, \
             and this hub serves none at <code>/downloads/ca.crt</code>.</p>"
        );
    };
    let (hub, hub_note) = match hub_url(headers) {
        Some(u) => (u, ""),
        None => (
            "https://HUB".to_string(),
            "<p class=\"note\">Replace <code>HUB</code> with the hub&#39;s address.</p>",
        ),
    };
    let (token, token_note) = match &install.token {
        Some(t) => (
            t.as_str(),
            "<p id=\"install-token-note\">The enrollment token is in the command; it is \
             shown only now.</p>",
        ),
        None => (
            "ENROLLMENT_TOKEN",
            "<p class=\"note\">Create an enrollment token below to fill it in.</p>",
        ),
    };
    let command = install_command(&hub, &fingerprint, token, install.allow_commands);
    let error = install
        .error
        .as_deref()
        .map(|e| format!("<p class=\"error\" id=\"install-error\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "{head}<p>On a Linux machine with systemd, as root. The command checks the hub&#39;s \
         CA against its fingerprint before it runs anything; the installer checks it again, \
         downloads this hub&#39;s <code>watchgrid</code> binary over TLS verified against \
         it, installs the <code>watchgrid-agent</code> service and enrolls the machine.</p>\
         {hub_note}{token_note}<pre id=\"install-command\"><code>{}</code></pre>\
         <p>Internal CA SHA-256: <code id=\"ca-fingerprint\">{}</code></p>{error}\
         <form method=\"post\" action=\"/api/enrollment-tokens/agent-install\">\
         <label for=\"install-name\">Token name (optional)</label>\
         <input id=\"install-name\" name=\"name\" maxlength=\"100\">\
         <label for=\"install-uses\">Machines it may enroll</label>\
         <input id=\"install-uses\" name=\"uses\" type=\"number\" min=\"1\" max=\"100000\" value=\"1\">\
         <label for=\"install-hours\">Valid for (hours; empty: no expiry)</label>\
         <input id=\"install-hours\" name=\"expires_hours\" type=\"number\" min=\"1\" value=\"24\">\
         <label><input type=\"checkbox\" name=\"allow_commands\" value=\"on\">Allow remote \
         commands (run as the unprivileged <code>watchgrid-agent</code> user, in the service&#39;s \
         sandbox)</label>\
         <button type=\"submit\" id=\"install-create\">Create an enrollment token</button></form>",
        esc(&command),
        esc(&fingerprint)
    )
}

/// The "Install an agent" form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstallForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    uses: String,
    #[serde(default)]
    expires_hours: String,
    /// A checkbox: present ("on") when ticked.
    allow_commands: Option<String>,
}

impl InstallForm {
    /// The enrollment-token request the form stands for; the limits are the API's.
    fn request(&self) -> Result<super::enrollment::CreateRequest, ApiError> {
        let uses = match self.uses.trim() {
            "" => None,
            u => Some(
                u.parse()
                    .map_err(|_| ApiError::Invalid("uses: a number from 1 to 100000".into()))?,
            ),
        };
        let expires_in_secs = match self.expires_hours.trim() {
            "" => None,
            h => Some(
                h.parse::<u64>()
                    .ok()
                    .and_then(|h| h.checked_mul(3600))
                    .ok_or_else(|| ApiError::Invalid("valid for: a number of hours".into()))?,
            ),
        };
        let name = self.name.trim();
        Ok(super::enrollment::CreateRequest {
            name: (!name.is_empty()).then(|| name.to_string()),
            uses,
            expires_in_secs,
            groups: Vec::new(),
        })
    }
}

/// `POST /api/enrollment-tokens/agent-install` (an HTML form): creates an enrollment
/// token and answers with the dashboard, the install command filled in with it. The
/// token is in this answer only, never in a URL.
pub(crate) async fn agent_install(
    State(state): State<AppState>,
    headers: HeaderMap,
    admin: Admin,
    form: Result<Form<InstallForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let created = match &form {
        Ok(Form(f)) => f
            .request()
            .and_then(|req| super::enrollment::create_token(&state, &admin, req)),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge),
        Err(r) => Err(ApiError::Invalid(r.body_text())),
    };
    let allow_commands = form
        .as_ref()
        .is_ok_and(|Form(f)| f.allow_commands.is_some());
    let (status, install) = match created {
        Ok(t) => (
            StatusCode::OK,
            Install {
                token: Some(t.token),
                allow_commands,
                error: None,
            },
        ),
        Err(e @ (ApiError::Invalid(_) | ApiError::TooLarge)) => (
            e.status(),
            Install {
                error: Some(e.to_string()),
                allow_commands,
                ..Install::default()
            },
        ),
        Err(e) => return Err(e),
    };
    let body = dashboard_body(&state, &admin, &headers, &install)?;
    Ok((status, page("Dashboard", &body)).into_response())
}

/// The firewall's state and policy, read-only (edited through `PUT /api/firewall`).
/// The HTTPS certificate: what is served, and an ACME order's state and last error.
fn tls_section(state: &AppState) -> Result<String, ApiError> {
    use crate::hub::TlsServing;
    let view = crate::routes::tls::view(state)?;
    let Some(status) = view.status else {
        return Ok(String::new());
    };
    let serving = match status.serving {
        TlsServing::Internal => "the internal CA's certificate",
        TlsServing::Uploaded => "the uploaded certificate",
        TlsServing::Acme => "the ACME certificate",
    };
    let acme = status.acme.map_or(String::new(), |a| {
        let state = match (a.certificate_since, &a.last_error) {
            (Some(_), _) => "certificate issued".to_string(),
            (None, None) => "waiting for the first certificate".to_string(),
            (None, Some(e)) => format!("not issued yet; last error: {}", esc(e)),
        };
        format!(" · ACME for <code>{}</code>: {state}", esc(&a.domain))
    });
    Ok(format!(
        "<h2>TLS</h2><p id=\"tls\">Serving {serving}{acme}</p>"
    ))
}

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
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<script>\"x\"&'y'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
    }
}

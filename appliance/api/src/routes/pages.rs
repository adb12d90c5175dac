//! Server-rendered pages: the setup wizard, sign-in and a minimal dashboard. Plain HTML
//! forms, no script at all (the CSP forbids inline script), so they work in any browser.

use super::ui::{Frame, Nav};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The wizard and the stylesheet every page uses (the wizard's needs before setup).
pub fn wizard_router() -> Router<AppState> {
    Router::new()
        .route("/setup", get(setup_page))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(super::live::script))
        .route("/favicon.ico", get(icon))
        .route("/static/icon.svg", get(icon))
}

/// The sign-in page and the dashboard (which sends visitors without a session to it).
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page))
        .route("/", get(dashboard))
}

/// Light and dark follow the system; below 40rem tables scroll sideways inside their
/// wrapper and the navigation wraps, so a phone (375 px) reads every page.
const CSS: &str = ":root{color-scheme:light dark;--fg:#1b1f24;--bg:#fff;--muted:#59636e;--line:#d0d7de;\
--panel:#f6f8fa;--accent:#0a58ca;--bad:#b00020;--good:#116329;--rx:#0a58ca;--tx:#bc4c00}\
@media(prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--muted:#9198a1;--line:#3d444d;\
--panel:#161b22;--accent:#6cb6ff;--bad:#ff7b72;--good:#56d364;--rx:#6cb6ff;--tx:#f0883e}}\
*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0;color:var(--fg);background:var(--bg);line-height:1.45}\
main{max-width:72rem;margin:0 auto;padding:1rem}main.narrow{max-width:40rem;margin-top:2rem}\
a{color:var(--accent)}a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,textarea:focus-visible\
{outline:3px solid var(--accent);outline-offset:2px}\
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;padding:.6rem 1rem;border-bottom:1px solid var(--line);background:var(--panel)}\
header .brand{font-weight:700;text-decoration:none;color:var(--fg)}header nav{display:flex;flex-wrap:wrap;gap:.25rem .9rem}\
header nav a{text-decoration:none;padding:.2rem 0}header nav a[aria-current=page]{font-weight:700;border-bottom:2px solid var(--accent)}\
header .signout{margin-left:auto}header .signout button{margin:0}\
h1{font-size:1.6rem;margin:.6rem 0}h2{font-size:1.2rem;margin-top:1.8rem}\
label{display:block;margin-top:.8rem;font-weight:600}\
input,select,textarea{width:100%;padding:.45rem;font-size:1rem;color:var(--fg);background:var(--bg);border:1px solid var(--line);border-radius:4px}\
fieldset{margin-top:1.2rem;border:1px solid var(--line);border-radius:6px}\
button{margin-top:1rem;padding:.5rem 1rem;font-size:1rem;cursor:pointer;border:1px solid var(--line);border-radius:4px;background:var(--panel);color:var(--fg)}\
button.danger{border-color:var(--bad);color:var(--bad)}form.inline{display:inline}form.inline button{margin:.1rem .2rem}\
.note,figcaption,.muted{color:var(--muted)}.error{color:var(--bad);font-weight:600;overflow-wrap:anywhere}.ok{color:var(--good);font-weight:600}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}\
td,th{border-bottom:1px solid var(--line);padding:.4rem;text-align:left;vertical-align:top}\
input[type=checkbox]{width:auto;margin-right:.5rem}\
pre{white-space:pre-wrap;word-break:break-all;background:var(--panel);padding:.6rem;border-radius:4px}\
code{overflow-wrap:anywhere}\
.skip{position:absolute;left:-9999px}.skip:focus{left:.5rem;top:.5rem;z-index:1;padding:.4rem;background:var(--bg)}\
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(11rem,1fr));gap:.8rem}\
.card{border:1px solid var(--line);border-radius:6px;padding:.7rem;background:var(--panel)}.card b{display:block;font-size:1.4rem}\
.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}.filters label{margin:0}.filters input,.filters select{width:auto}\
figure{margin:1rem 0}.chart svg{width:100%;height:auto;max-height:14rem}.chart .axis{stroke:var(--line)}.chart .scale{fill:var(--muted);font-size:11px}\
.chart polyline{fill:none;stroke-width:1.5}.chart polyline.rx{stroke:var(--rx)}.chart polyline.tx{stroke:var(--tx)}\
.key.rx{color:var(--rx)}.key.tx{color:var(--tx)}.map svg{width:100%;max-width:24rem;height:auto}\
.map .grid{stroke:var(--line);fill:none}.map .spot{fill:var(--bad)}\
.online{color:var(--good)}.offline{color:var(--bad)}#qr svg{width:16rem;height:auto;background:#fff;padding:.5rem}\
@media(max-width:40rem){main{padding:.6rem}h1{font-size:1.3rem}td,th{padding:.3rem;font-size:.92rem}}";

/// The tab icon: a grid in the accent colour. Browsers ask for `/favicon.ico` whatever
/// the page links, so both paths answer it.
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
<rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#0a58ca\"/><path d=\"M5 3v10M11 3v10M3 5h10M3 11h10\" \
stroke=\"#fff\" stroke-width=\"1.5\"/></svg>";

async fn icon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        ICON,
    )
}

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

/// A page without the signed-in frame (the wizard, sign-in, 2FA steps).
pub fn page(title: &str, body: &str) -> Html<String> {
    shell(title, "", body, false)
}

/// The document around a page's content. Signed-in pages load the script that keeps
/// their counters live; every page works without it.
pub fn shell(title: &str, header: &str, body: &str, live: bool) -> Html<String> {
    let (class, script) = if live {
        ("", "<script src=\"/static/app.js\" defer></script>")
    } else {
        (" class=\"narrow\"", "")
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · Watchgrid</title><link rel=\"icon\" href=\"/static/icon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/static/app.css\">{script}</head>\
         <body>{header}<main id=\"main\"{class}>{body}</main></body></html>",
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
         <button type=\"submit\" id=\"submit\">Complete setup</button></form>\
         <h2 id=\"restore\">Or restore from a backup</h2>\
         <p class=\"note\">Replacing an appliance: its backup brings back the hub key, \
         addresses, certificates, admins and devices, so devices and agents reconnect unchanged.</p>\
         <form method=\"post\" action=\"/api/setup/restore\" enctype=\"multipart/form-data\">\
         <label for=\"restore_token\">Setup token</label>\
         <input id=\"restore_token\" name=\"setup_token\" required autocomplete=\"off\">\
         <label for=\"restore_file\">Backup file (.wgbackup)</label>\
         <input id=\"restore_file\" name=\"backup\" type=\"file\" accept=\".wgbackup\" required>\
         <label for=\"restore_passphrase\">Its passphrase</label>\
         <input id=\"restore_passphrase\" name=\"passphrase\" type=\"password\" required autocomplete=\"off\">\
         <button type=\"submit\" id=\"restore_submit\">Restore</button></form>"
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
    let frame = Frame::of(&state, &admin)?;
    let body = overview(&state)?;
    Ok(frame.page("Overview", Nav::Overview, &body).into_response())
}

/// The hub at a glance: who is online, how much moved, what happened lately, whether
/// the firewall and TLS are healthy, and where the hub stands.
fn overview(state: &AppState) -> Result<String, ApiError> {
    use super::traffic::{hub_points, series, Range};
    let now = crate::state::unix_now();
    let devices = state.store.devices.list()?;
    let online = devices
        .iter()
        .filter(|d| super::device_pages::is_online(state, d, now))
        .count();
    let total = |range| -> Result<(u64, u64), ApiError> {
        let s = series(range, now, &hub_points(state, range, now)?);
        Ok((s.total_rx, s.total_tx))
    };
    let (hour, day) = (total(Range::Hour)?, total(Range::Day)?);
    let (_, first) = crate::accounting::month_of(now);
    let month = devices.iter().try_fold((0u64, 0u64), |acc, d| {
        let (rx, tx) = state.store.traffic_total(&d.id, first, now + 1)?;
        Ok::<_, ApiError>((acc.0.saturating_add(rx), acc.1.saturating_add(tx)))
    })?;
    let day_chart = series(Range::Day, now, &hub_points(state, Range::Day, now)?);
    let card = |id: &str, label: &str, value: String| {
        format!("<div class=\"card\" id=\"{id}\">{label}<b>{value}</b></div>")
    };
    let moved = |(rx, tx): (u64, u64)| format!("{} / {}", bytes(rx), bytes(tx));
    let cards = [
        card(
            "peers-online",
            "Peers online",
            format!(
                "<span data-live=\"online\">{online}</span> of {}",
                devices.len()
            ),
        ),
        card("traffic-hour", "Last hour (rx / tx)", moved(hour)),
        card("traffic-day", "Last 24 hours", moved(day)),
        card("traffic-month", "This month", moved(month)),
        card(
            "hub-version",
            "Hub",
            format!(
                "{} · up {}",
                env!("CARGO_PKG_VERSION"),
                duration(now.saturating_sub(state.started_at))
            ),
        ),
    ]
    .concat();
    Ok(format!(
        "<h1>Overview</h1><div class=\"cards\">{cards}</div>\
         <h2>Traffic, last 24 hours</h2>{}\
         {}{}{}{}<p>Hub public key: <code id=\"hub-key\">{}</code> · peers on the hub: {}</p>{}",
        super::ui::chart("traffic-chart", &day_chart),
        recent_logins(state)?,
        recent_alerts(state)?,
        firewall_section(state)?,
        tls_section(state)?,
        esc(&state.hub.public_key().to_string()),
        state.hub.peer_count(),
        location(state)
    ))
}

/// "3 d 4 h", "5 h 2 min", "12 min", "40 s".
pub fn duration(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn recent_logins(state: &AppState) -> Result<String, ApiError> {
    let events = state.store.login_events(&watchgrid_store::LoginQuery {
        limit: 5,
        ..Default::default()
    })?;
    let rows = if events.is_empty() {
        "<p class=\"muted\">No login events reported yet.</p>".to_string()
    } else {
        super::fleet_pages::login_table(&events)
    };
    Ok(format!(
        "<h2>Recent login events</h2>{rows}<p><a href=\"/logins\">All login events</a></p>"
    ))
}

fn recent_alerts(state: &AppState) -> Result<String, ApiError> {
    let mut all = state.store.alerts.list()?;
    all.reverse();
    all.truncate(5);
    if all.is_empty() {
        return Ok("<h2>Alerts</h2><p class=\"muted\">No alerts.</p>".into());
    }
    let rows: String = all
        .iter()
        .map(|a| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                super::fleet_pages::time(a.at_us),
                esc(&a.kind),
                esc(&a.summary)
            )
        })
        .collect();
    Ok(format!(
        "<h2>Alerts</h2><div class=\"scroll\"><table id=\"alerts\"><tr><th>Time</th><th>Kind</th>\
         <th>Summary</th></tr>{rows}</table></div>"
    ))
}

/// The hub's position (SERVER_LATITUDE/SERVER_LONGITUDE) on a plain longitude/latitude
/// grid: the appliance may be offline, so there are no map tiles to fetch.
fn location(state: &AppState) -> String {
    let Some((lat, lon)) = state.config.location else {
        return String::new();
    };
    let (x, y) = (lon + 180.0, 90.0 - lat);
    let grid: String = (1..12)
        .map(|i| format!("<line x1=\"{0}\" y1=\"0\" x2=\"{0}\" y2=\"180\"/>", i * 30))
        .chain((1..6).map(|i| format!("<line x1=\"0\" y1=\"{0}\" x2=\"360\" y2=\"{0}\"/>", i * 30)))
        .collect();
    format!(
        "<h2>Location</h2><figure class=\"map\"><svg viewBox=\"0 0 360 180\" role=\"img\" \
         aria-label=\"The hub at {lat:.4}, {lon:.4}\"><rect class=\"grid\" width=\"360\" height=\"180\"/>\
         <g class=\"grid\">{grid}</g><circle class=\"spot\" cx=\"{x:.2}\" cy=\"{y:.2}\" r=\"4\"/></svg>\
         <figcaption id=\"location\">{lat:.4}, {lon:.4}</figcaption></figure>"
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

/// The firewall's state and policy, read-only (the Firewall page edits it).
/// The HTTPS certificate: what is served, and an ACME order's state and last error.
pub fn tls_section(state: &AppState) -> Result<String, ApiError> {
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

pub fn firewall_section(state: &AppState) -> Result<String, ApiError> {
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
pub fn totp_setup_page(secret: &str, qr_svg: &str, csrf: &str, error: Option<&str>) -> String {
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
         <form method=\"post\" action=\"/api/auth/2fa/enable\">{}\
         <label for=\"code\">Code from the app</label>\
         <input id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required>\
         <button type=\"submit\" id=\"submit\">Turn on</button></form>",
        esc(secret),
        crate::csrf::hidden_field(csrf)
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

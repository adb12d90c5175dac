//! The policies routers are layered with: request-wide ones (security headers, request
//! metrics) and the per-audience ones `audience` attaches (the Origin check, the admin
//! fence, the setup gate). None of them looks at the path: which routes a policy covers
//! is decided by the router it is attached to.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Security headers on every response (SPEC §6). The referrer policy is `same-origin`,
/// not `no-referrer`: with the latter Chromium sends `Origin: null` on same-site form
/// posts, which the CORS check must refuse.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// WebSocket upgrades check Origin in their own handshake (SPEC §6).
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Same-origin by Host, plus WATCHGRID_ALLOWED_ORIGINS; anything else is 403. The API
/// is served only over HTTPS, so `http://` with our host is another origin (a page on
/// the port-80 listener, or one a network attacker injects there), never ours.
fn origin_allowed(origin: &str, host: Option<&str>, extra: &[String]) -> bool {
    let same_host = origin
        .strip_prefix("https://")
        .is_some_and(|rest| host.is_some_and(|h| rest.eq_ignore_ascii_case(h)));
    same_host || extra.iter().any(|o| o.eq_ignore_ascii_case(origin))
}

/// CORS for the browser-facing JSON APIs (SPEC §6, exactly as the seed): a request with
/// a foreign Origin is 403, preflights are answered here. Requests without an Origin are
/// not cross-site browser requests and pass.
pub async fn check_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_websocket_upgrade(req.headers()) {
        return next.run(req).await;
    }
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        // No Origin: not a cross-site browser request.
        return next.run(req).await;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if !origin_allowed(&origin, host, &state.config.allowed_origins) {
        return (StatusCode::FORBIDDEN, "Origin not allowed").into_response();
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, authorization"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

/// Answers 503 until setup completes (SPEC §4).
pub async fn setup_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.setup_done() {
        Ok(true) => next.run(req).await,
        Ok(false) => ApiError::SetupRequired.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Fails closed while no firewall ruleset is in force (it failed at start): every
/// route this wraps answers 503 until an apply succeeds.
pub async fn firewall_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.firewall_status().protects() {
        next.run(req).await
    } else {
        ApiError::Unprotected.into_response()
    }
}

/// What a client outside the admin fence is told.
pub const FENCED: &str = "Forbidden: the admin interface does not answer this network";

/// The admin fence (seed security model: credentials *and* network location): only
/// clients in the fence in force reach what this wraps.
pub async fn admin_fence(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let ip = match crate::auth::ClientIp::from_request_parts(&mut parts, &state).await {
        Ok(crate::auth::ClientIp(ip)) => ip,
        Err(e) => return e.into_response(),
    };
    if !state.admin_allowed(ip) {
        return ApiError::Forbidden(FENCED).into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The method as a label: the ones the API answers, anything else one value, so clients
/// sending made-up methods cannot grow the registry.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts requests by matched route template (never the raw path), a bounded method
/// label and the status the server chose: every label has a bounded set of values.
pub async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method()).to_string();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .http_duration
        .observe(start.elapsed().as_secs_f64());
    state
        .metrics
        .http_requests
        .get_or_create(&vec![
            ("route", route),
            ("method", method),
            ("status", resp.status().as_u16().to_string()),
        ])
        .inc();
    if resp.status() == StatusCode::TOO_MANY_REQUESTS {
        tracing::debug!("rate limited");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_is_by_host_and_extras_are_exact() {
        let extra = vec!["https://staging.example.com".to_string()];
        assert!(origin_allowed(
            "https://vpn.example.com",
            Some("vpn.example.com"),
            &[]
        ));
        assert!(origin_allowed(
            "https://vpn.example.com:8443",
            Some("vpn.example.com:8443"),
            &[]
        ));
        assert!(!origin_allowed(
            "https://evil.example",
            Some("vpn.example.com"),
            &[]
        ));
        assert!(!origin_allowed(
            "https://vpn.example.com.evil",
            Some("vpn.example.com"),
            &[]
        ));
        assert!(origin_allowed(
            "https://staging.example.com",
            Some("vpn.example.com"),
            &extra
        ));
        assert!(!origin_allowed("null", Some("vpn.example.com"), &extra));
    }

    #[test]
    fn finding_16_plain_http_is_never_our_origin() {
        assert!(!origin_allowed(
            "http://vpn.example.com",
            Some("vpn.example.com"),
            &[]
        ));
        assert!(!origin_allowed(
            "http://vpn.example.com:443",
            Some("vpn.example.com:443"),
            &[]
        ));
    }

    #[test]
    fn only_websocket_upgrades_skip_the_origin_check() {
        let mut h = HeaderMap::new();
        assert!(!is_websocket_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_websocket_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_websocket_upgrade(&h));
    }
}

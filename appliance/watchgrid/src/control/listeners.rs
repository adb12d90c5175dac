//! The control plane's listeners: HTTPS (API, wizard), HTTP (redirect to HTTPS) and
//! metrics (plain HTTP, loopback and VPN only).

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Serves `app` on one accepted connection, telling handlers who the peer is.
async fn serve_connection<S>(stream: S, peer: SocketAddr, app: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = app.map_request(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let result = Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc))
        .await;
    if let Err(e) = result {
        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
    }
}

pub async fn serve_https(
    listener: TcpListener,
    tls: crate::control::tls_switch::LiveTls,
    app: Router,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        // The certificate source may change at run time (setup): read it per connection.
        let acceptor = tokio_rustls::TlsAcceptor::from(crate::control::tls_switch::current(&tls));
        let app = app.clone();
        tokio::spawn(async move {
            // A client that never finishes its handshake must not hold a task forever.
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            match handshake.await {
                Ok(Ok(tls)) => {
                    // A TLS-ALPN-01 validation only needs the handshake (RFC 8737).
                    if tls.get_ref().1.alpn_protocol()
                        == Some(rustls_acme::acme::ACME_TLS_ALPN_NAME)
                    {
                        return;
                    }
                    serve_connection(tls, peer, app).await
                }
                Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Plain listener for routers that need no TLS (metrics, the redirect).
pub async fn serve_plain(listener: TcpListener, app: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(serve_connection(tcp, peer, app));
    }
}

/// Every plain-HTTP request is sent to the same path over HTTPS, on one of the names
/// the appliance answers to: the client's Host when it is one of them, else the first.
/// The Host header is the client's to choose, so it never picks an arbitrary target.
pub fn redirect_router(https_port: u16, names: Vec<String>) -> Router {
    let names = std::sync::Arc::new(names);
    Router::new().fallback(move |req: Request<Body>| {
        let names = names.clone();
        async move { redirect(&req, https_port, &names) }
    })
}

fn redirect(req: &Request<Body>, https_port: u16, names: &[String]) -> Response {
    let asked = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(strip_port)
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'));
    let known = |h: &str| names.iter().find(|n| n.eq_ignore_ascii_case(h));
    let Some(host) = asked.and_then(known).or(names.first()) else {
        return (StatusCode::BAD_REQUEST, "no name to redirect to").into_response();
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    match format!("https://{host}{port}{path}").parse::<Uri>() {
        Ok(uri) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, uri.to_string())],
        )
            .into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad request target").into_response(),
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest
            .split(']')
            .next()
            .map(|h| &host[..h.len() + 2])
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

pub fn metrics_router(state: watchgrid_api::AppState) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let state = state.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    watchgrid_api::render_metrics(&state),
                )
            }
        }),
    )
}

/// After a failed accept (out of file descriptors, most often), waits a moment before
/// the next: the pending connection stays queued, and retrying at once would spin a
/// core and flood the log.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["vpn.example.com", "192.168.1.50", "fd00::1"]
            .map(String::from)
            .to_vec()
    }

    fn location(host: &str, port: u16) -> String {
        let req = Request::get("/api/x?y=1")
            .header(header::HOST, host)
            .body(Body::empty())
            .expect("req");
        let resp = redirect(&req, port, &names());
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        resp.headers()[header::LOCATION]
            .to_str()
            .expect("ascii")
            .to_string()
    }

    #[test]
    fn redirect_keeps_path_and_drops_http_port() {
        assert_eq!(
            location("VPN.example.com:80", 443),
            "https://vpn.example.com/api/x?y=1"
        );
        assert_eq!(
            location("192.168.1.50", 8443),
            "https://192.168.1.50:8443/api/x?y=1"
        );
        assert_eq!(
            location("[fd00::1]:8080", 8443),
            "https://[fd00::1]:8443/api/x?y=1"
        );
    }

    #[test]
    fn finding_16_redirect_goes_only_to_configured_names() {
        for host in ["evil.example", "evil\"host", "vpn.example.com.evil", ""] {
            assert_eq!(
                location(host, 443),
                "https://vpn.example.com/api/x?y=1",
                "Host {host:?}"
            );
        }
        let req = Request::get("/").body(Body::empty()).expect("req");
        assert_eq!(
            redirect(&req, 443, &names()).headers()[header::LOCATION],
            "https://vpn.example.com/"
        );
    }
}

//! The control plane's listeners: HTTPS (API, wizard), HTTP (redirect to HTTPS) and
//! metrics (plain HTTP, loopback and VPN only). Every connection is admitted against
//! the listener's [`ConnectionLimits`] and served with hyper's timer: a client has
//! its header-read timeout for each request's head (which also ends idle keep-alive
//! connections), and each request its request timeout to be answered ([`Caps`]).

use crate::control::connections::{Admitted, Caps, ConnectionLimits};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// Time for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on one accepted connection, telling handlers who the peer is.
async fn serve_connection<S>(stream: S, peer: SocketAddr, app: Router, caps: Caps)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let deadline = watchgrid_api::deadline::Deadline::after(caps.request_timeout);
        req.extensions_mut().insert(deadline.clone());
        let app = app.clone();
        async move {
            let response = match deadline.run(app.oneshot(req)).await {
                Some(Ok(response)) => response,
                Some(Err(never)) => match never {},
                None => (StatusCode::REQUEST_TIMEOUT, "request took too long").into_response(),
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    // HTTP/1.1 only, as TLS's ALPN offers; no h2c on the plain listeners.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(caps.header_read_timeout);
    let result = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .await;
    if let Err(e) = result {
        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
    }
}

/// The next connection that the listener's limits admit; others are closed at once.
async fn accept(
    listener: &TcpListener,
    limits: &Arc<ConnectionLimits>,
) -> (TcpStream, SocketAddr, Admitted) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        match limits.admit(peer.ip()) {
            Ok(admitted) => return (tcp, peer, admitted),
            Err(refused) => tracing::debug!(client = %peer, %refused, "connection refused"),
        }
    }
}

pub async fn serve_https(
    listener: TcpListener,
    tls: crate::control::tls_switch::LiveTls,
    app: Router,
    limits: Arc<ConnectionLimits>,
) {
    loop {
        let (tcp, peer, admitted) = accept(&listener, &limits).await;
        let Some(handshaking) = limits.handshake() else {
            tracing::debug!(client = %peer, "too many TLS handshakes in progress; closed");
            continue;
        };
        // The certificate source may change at run time (setup): read it per connection.
        let acceptor = tokio_rustls::TlsAcceptor::from(crate::control::tls_switch::current(&tls));
        let (app, limits) = (app.clone(), limits.clone());
        tokio::spawn(async move {
            let _admitted = admitted;
            // A client that never finishes its handshake must not hold a task forever.
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(handshaking);
            match handshake {
                Ok(Ok(tls)) => {
                    // A TLS-ALPN-01 validation only needs the handshake (RFC 8737).
                    if tls.get_ref().1.alpn_protocol()
                        == Some(rustls_acme::acme::ACME_TLS_ALPN_NAME)
                    {
                        return;
                    }
                    serve_connection(tls, peer, app, limits.caps()).await
                }
                Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Plain listener for routers that need no TLS (metrics, the redirect).
pub async fn serve_plain(listener: TcpListener, app: Router, limits: Arc<ConnectionLimits>) {
    loop {
        let (tcp, peer, admitted) = accept(&listener, &limits).await;
        let (app, caps) = (app.clone(), limits.caps());
        tokio::spawn(async move {
            let _admitted = admitted;
            serve_connection(tcp, peer, app, caps).await
        });
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
mod limit_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Long enough that a test never waits on it by accident: only a bug hits it.
    const BOUND: Duration = Duration::from_secs(15);

    fn caps() -> Caps {
        Caps {
            per_client: 2,
            header_read_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(300),
            ..Caps::PLAIN
        }
    }

    async fn listening(caps: Caps) -> SocketAddr {
        let app = Router::new()
            .route("/", axum::routing::get(|| async { "hello" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            );
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(serve_plain(l, app, ConnectionLimits::new(caps)));
        addr
    }

    async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{source}:0").parse().expect("source"))
            .expect("bind source");
        socket.connect(to).await.expect("connect")
    }

    /// Everything the server sends until it closes the connection; `None` if it is
    /// still open after [`BOUND`].
    async fn until_closed(stream: &mut TcpStream) -> Option<String> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&all).into()),
                Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            }
        }
    }

    async fn get(stream: &mut TcpStream, path: &str) -> String {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        until_closed(stream).await.expect("an answer, then close")
    }

    #[tokio::test]
    async fn finding_05_a_slow_loris_head_and_an_idle_keep_alive_are_cut_off() {
        let addr = listening(caps()).await;
        let mut loris = connect_from("127.0.0.1", addr).await;
        loris
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
            .await
            .expect("write");
        assert!(
            until_closed(&mut loris).await.is_some(),
            "a half-sent head held its socket"
        );

        let mut idle = connect_from("127.0.0.1", addr).await;
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let seen = until_closed(&mut idle)
            .await
            .expect("idle keep-alive kept open");
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    }

    #[tokio::test]
    async fn finding_05_a_client_past_its_cap_is_closed_and_others_are_served() {
        let addr = listening(Caps {
            header_read_timeout: BOUND * 4,
            ..caps()
        })
        .await;
        let held = [
            connect_from("127.0.0.1", addr).await,
            connect_from("127.0.0.1", addr).await,
        ];
        let mut third = connect_from("127.0.0.1", addr).await;
        let refused = until_closed(&mut third).await;
        assert_eq!(refused.as_deref(), Some(""), "a third connection was kept");
        let mut other = connect_from("127.0.0.2", addr).await;
        assert!(get(&mut other, "/").await.starts_with("HTTP/1.1 200"));
        drop(held);
        // The slots come back when the server sees the close; a fresh connection is
        // then served (the first tries may still race the close).
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let mut again = connect_from("127.0.0.1", addr).await;
            let req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            let _ = again.write_all(req).await;
            if until_closed(&mut again)
                .await
                .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "slots never came back"
            );
            tokio::task::yield_now().await;
        }
    }

    /// An HTTPS listener with the internal CA's certificate for `localhost`; returns its
    /// address and a client config that trusts the CA.
    async fn listening_tls(
        caps: Caps,
        dir: &std::path::Path,
    ) -> (SocketAddr, rustls::ClientConfig) {
        use rustls::pki_types::pem::PemObject;
        let material =
            crate::control::tls::internal_ca(dir, &["localhost".into()]).expect("internal CA");
        let mut roots = rustls::RootCertStore::empty();
        let ca = material.ca_pem.as_deref().expect("CA PEM");
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).expect("pem"))
            .expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let app = Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let live = crate::control::tls_switch::live(material.config);
        tokio::spawn(serve_https(l, live, app, ConnectionLimits::new(caps)));
        (addr, client)
    }

    #[tokio::test]
    async fn finding_05_tls_handshakes_in_progress_are_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let caps = Caps {
            per_client: 10,
            handshakes: 1,
            ..caps()
        };
        let (addr, client) = listening_tls(caps, dir.path()).await;
        // A client that connects and never says hello holds the only handshake slot.
        let silent = connect_from("127.0.0.1", addr).await;
        let mut next = connect_from("127.0.0.1", addr).await;
        assert_eq!(until_closed(&mut next).await.as_deref(), Some(""));
        drop(silent);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let tcp = connect_from("127.0.0.1", addr).await;
            if let Ok(mut tls) = connector.connect(name.clone(), tcp).await {
                let req = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
                tls.write_all(req).await.expect("write");
                let mut answer = String::new();
                let _ = tls.read_to_string(&mut answer).await;
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                break;
            }
            // Until the server has seen the silent client go, its slot is still taken.
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slot never came back"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn finding_05_a_request_that_takes_too_long_is_answered_408() {
        let addr = listening(caps()).await;
        let mut client = connect_from("127.0.0.1", addr).await;
        let answer = get(&mut client, "/slow").await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
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

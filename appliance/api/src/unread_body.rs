//! A refused request's unread body is read (and discarded) before the answer goes out.
//!
//! Authentication and the fences answer from the headers, before the body is read. hyper
//! then closes the connection with the client still sending, and a client that writes
//! its whole body before reading (most HTTP libraries) sees a broken pipe or a TLS EOF
//! instead of the 401 or 413 that says what is wrong. So the body is shared between the
//! handler and this layer; what the handler left unread is drained, bounded in bytes
//! and in time, after the response is ready. Past either bound the connection is closed
//! as before. Nothing is buffered: the drained bytes are dropped as they arrive.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

/// The most of a refused body that is read: the largest body any route accepts.
const DRAIN_MAX_BYTES: u64 = 8 << 20;
/// How long a refused body may take to arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn drain_unread_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let shared = Shared(Arc::new(Mutex::new(body)));
    let resp = next
        .run(Request::from_parts(parts, Body::new(shared.clone())))
        .await;
    let rest = shared.take();
    if !rest.is_end_stream() && rest.size_hint().lower() <= DRAIN_MAX_BYTES {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain(rest)).await;
    }
    resp
}

/// Reads frames until the end, or until more than [`DRAIN_MAX_BYTES`] came.
async fn drain(mut body: Body) {
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
        if seen > DRAIN_MAX_BYTES {
            return;
        }
    }
}

/// The request body, readable by the handler and afterwards by this layer.
#[derive(Clone)]
struct Shared(Arc<Mutex<Body>>);

impl Shared {
    /// What is left of the body (the handler's copy then reads as ended).
    fn take(&self) -> Body {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl HttpBody for Shared {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut body = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Pin::new(&mut *body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;

    /// A body of `chunks` frames of 64 KiB that counts how many were read.
    fn counted(chunks: usize, read: Arc<AtomicUsize>) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tokio::spawn(async move {
            for _ in 0..chunks {
                if tx
                    .send(Ok(Bytes::from(vec![b'x'; 64 << 10])))
                    .await
                    .is_err()
                {
                    return;
                }
                read.fetch_add(1, Ordering::SeqCst);
            }
        });
        Body::from_stream(tokio_stream_of(rx))
    }

    fn tokio_stream_of(
        mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    fn app() -> Router {
        Router::new()
            .route("/refuse", post(|| async { StatusCode::UNAUTHORIZED }))
            .layer(axum::middleware::from_fn(drain_unread_body))
    }

    #[tokio::test]
    async fn a_refused_body_is_read_to_its_end() {
        let read = Arc::new(AtomicUsize::new(0));
        let req = Request::post("/refuse")
            .body(counted(16, read.clone()))
            .expect("request");
        let resp = app().oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        // The drain reads to the end of the stream, which comes only after the sender
        // counted its last chunk; without it the body is dropped after the first.
        assert_eq!(read.load(Ordering::SeqCst), 16);
    }

    #[tokio::test]
    async fn a_body_past_the_bound_is_left_alone() {
        let read = Arc::new(AtomicUsize::new(0));
        let chunks = (DRAIN_MAX_BYTES as usize >> 16) * 2;
        let req = Request::post("/refuse")
            .body(counted(chunks, read.clone()))
            .expect("request");
        let resp = app().oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let n = read.load(Ordering::SeqCst);
        assert!(n < chunks, "read all {n} chunks of an oversized body");
    }
}

//! The admin HTTP/1.1 listener: `GET /healthz` (200 while the process
//! runs), `GET /readyz` (200 once the QUIC listener is up with an SVID
//! loaded, 503 before and while draining), `GET /metrics` (Prometheus /
//! OpenMetrics text of the registry passed in), `GET /peers` (JSON
//! `[{"cluster","connected":bool,"rtt_ms":f64}]`, one row per configured
//! peer, sorted by cluster).
//!
//! Slowloris and garbage guards: request headers must arrive within the
//! header timeout and fit in [`MAX_HEADER_BYTES`]; otherwise hyper closes
//! the connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use crate::peers::PeerStatus;
use crate::state::Status;

/// Largest request head accepted, bytes (hyper's minimum buffer).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Ready/draining flags.
    pub status: Arc<Status>,
    /// The metrics registry.
    pub registry: Arc<Registry>,
    /// The peer rows of `GET /peers`.
    pub peers: Arc<dyn Fn() -> Vec<PeerStatus> + Send + Sync>,
}

/// Serves admin requests on `listener` until `shutdown` turns true.
/// `header_timeout` bounds how long a client may take to send a request head.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(64);
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let state = state.clone();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%remote, error = %e, "admin connection closed");
            }
        });
    }
}

fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.status.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if state.status.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let mut body = String::new();
            if prometheus_client::encoding::text::encode(&mut body, &state.registry).is_err() {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics encoding failed\n",
                );
            }
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        "/peers" => {
            let body = serde_json::to_vec(&(state.peers)()).unwrap_or_else(|_| b"[]".to_vec());
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

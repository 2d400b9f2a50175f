//! The admin listener (plain HTTP/1.1): `/healthz` (the process runs),
//! `/readyz` (every listener bound and the SVID loaded; 503 while
//! draining), `/metrics` (Prometheus text exposition), `/config_dump` (the
//! effective config as JSON; no key material).

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::http_util::{full, Body};
use crate::outbound::http::graceful;
use crate::runtime::{Shared, Snapshot};

/// Serves one admin connection.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, snapshot: Arc<Snapshot>) {
    let cfg = &snapshot.config;
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(route(&shared, &req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.timeouts.header_read)
        .max_buf_size(cfg.max_header_bytes)
        .serve_connection(TokioIo::new(stream), svc);
    let mut drain = shared.drain.watch();
    if let Err(e) = graceful(conn, &mut drain).await {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

/// Answers one admin request.
pub fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" | "/ready" => {
            if shared.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let snapshot = shared.snapshot();
            let status = shared
                .health
                .status(&snapshot.config, std::time::Instant::now());
            shared.metrics.set_priority_load(&status);
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &shared.registry) {
                Ok(()) => {
                    let mut r = Response::new(full(out));
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    r
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            }
        }
        "/config_dump" => {
            let mut r = Response::new(full(config_dump(shared)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The effective config with, under `failover_status`, each service's
/// priority load, ejected hosts and remote marks now.
fn config_dump(shared: &Shared) -> String {
    let snapshot = shared.snapshot();
    let config = &snapshot.config;
    let status = shared.health.status(config, std::time::Instant::now());
    let mut dump = serde_json::to_value(config).unwrap_or_default();
    if let (Some(map), Ok(status)) = (dump.as_object_mut(), serde_json::to_value(&status)) {
        map.insert("failover_status".to_owned(), status);
    }
    serde_json::to_string_pretty(&dump).unwrap_or_else(|_| config.to_json())
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

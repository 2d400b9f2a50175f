//! The outbound HTTP listener: HTTP/1.1 or HTTP/2 with prior knowledge
//! (gRPC) from the app, each request planned and carried on the pooled
//! HTTP/2 connection to the chosen peer sidecar. Bodies and trailers stream
//! through unbuffered.
//!
//! Slowloris guard: the first bytes (version sniffing) and every HTTP/1
//! request head must arrive within `timeouts.header_read_ms`; a head larger
//! than `max_header_bytes` gets 431.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpStream;

use crate::config::ServiceKey;
use crate::config::{Outbound, Protocol};
use crate::drain::draining;
use crate::errors::{error_chain, error_response, ProxyError};
use crate::health::Outcome;
use crate::http_util::{strip_hop_by_hop, to_h2_request, Body};
use crate::io::{sniff_http, PrefixedIo, Sniffed};
use crate::metrics::{Direction, RequestRecorder};
use crate::plan::{plan, Candidate, Target};
use crate::runtime::{Shared, Snapshot};

/// Serves one app connection on the outbound listener at `listen`.
pub async fn serve(
    shared: Arc<Shared>,
    listen: SocketAddr,
    mut stream: TcpStream,
    snapshot: Arc<Snapshot>,
) {
    let cfg = &snapshot.config;
    let sniffed = tokio::time::timeout(cfg.timeouts.header_read, sniff_http(&mut stream)).await;
    let (version, prefix) = match sniffed {
        Ok(Ok(Some(v))) => v,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%listen, error = %e, "read failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%listen, "no request bytes within header_read_ms; closing");
            return;
        }
    };
    let io = TokioIo::new(PrefixedIo::new(prefix, stream));
    let conn_snapshot = snapshot.clone();
    let svc_shared = shared.clone();
    let seen = Arc::new(AtomicBool::new(false));
    let svc_seen = seen.clone();
    // The listener's service, as of the connection's config; a request that
    // finds another service here after a reload records through a recorder
    // of its own.
    let recorder = cfg.outbound_at(listen).map(|o| {
        Arc::new(
            shared
                .metrics
                .recorder(Direction::Outbound, o.service.to_string()),
        )
    });
    let svc = service_fn(move |req| {
        svc_seen.store(true, Ordering::Relaxed);
        let shared = svc_shared.clone();
        let snapshot = conn_snapshot.clone();
        let recorder = recorder.clone();
        async move { Ok::<_, Infallible>(handle(shared, listen, snapshot, recorder, req).await) }
    });
    let mut drain = shared.drain.watch();
    let result = match version {
        Sniffed::Http1 => {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(cfg.timeouts.header_read)
                .max_buf_size(cfg.max_header_bytes)
                .serve_connection(io, svc);
            graceful(conn, &mut drain).await
        }
        Sniffed::Http2 => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
                .keep_alive_interval(Some(std::time::Duration::from_secs(20)))
                .serve_connection(io, svc);
            let served = graceful(conn, &mut drain);
            match first_request_within(served, &seen, cfg.timeouts.header_read).await {
                Some(r) => r,
                None => {
                    tracing::debug!(%listen, "no HTTP/2 request within header_read_ms; closing");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%listen, error = %error_chain(&e), "outbound connection ended with an error");
    }
}

/// The slowloris guard for HTTP/2, for which hyper's server has no header
/// read timeout: resolves to `None`, dropping (closing) the connection, when
/// no request has begun within `deadline` of the connection's start. `seen`
/// is set by the connection's service on every request.
pub(crate) async fn first_request_within<F: std::future::Future>(
    served: F,
    seen: &AtomicBool,
    deadline: std::time::Duration,
) -> Option<F::Output> {
    tokio::pin!(served);
    tokio::select! {
        r = served.as_mut() => Some(r),
        () = async {
            tokio::time::sleep(deadline).await;
            if seen.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        } => None,
    }
}

/// Drives `conn`, switching it to graceful shutdown when draining starts.
pub(crate) async fn graceful<C>(
    conn: C,
    drain: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        () = draining(drain) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    listen: SocketAddr,
    conn_snapshot: Arc<Snapshot>,
    recorder: Option<Arc<RequestRecorder>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let start = Instant::now();
    // Each request runs on the config in force when it started; a listener
    // that was removed keeps serving its open connections on their config.
    let now = shared.snapshot();
    let snapshot = match now.config.outbound_at(listen) {
        Some(o) if o.protocol == Protocol::Http => now,
        _ => conn_snapshot,
    };
    let Some(entry) = snapshot.config.outbound_at(listen) else {
        return error_response(&ProxyError::Unsupported("listener no longer configured"));
    };
    // For the log line only; cloning a standard method and a URI does not
    // allocate.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let work = forward(&shared, &snapshot, entry, req);
    let result = match snapshot.config.timeouts.request {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(ProxyError::RequestTimeout)),
        None => work.await,
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            let path = uri.path();
            let service = &entry.service;
            tracing::warn!(%service, %method, %path, error = %error_chain(&e), "outbound request failed");
            error_response(&e)
        }
    };
    let status = resp.status().as_u16();
    match recorder {
        Some(r) if is_label_of(r.service(), &entry.service) => r.record(status, start.elapsed()),
        _ => shared
            .metrics
            .recorder(Direction::Outbound, entry.service.to_string())
            .record(status, start.elapsed()),
    }
    resp
}

/// Whether `label` is `key`'s `namespace/name` (compared without
/// formatting it).
fn is_label_of(label: &str, key: &ServiceKey) -> bool {
    label.split_once('/') == Some((key.namespace.as_str(), key.name.as_str()))
}

async fn forward(
    shared: &Arc<Shared>,
    snapshot: &Arc<Snapshot>,
    entry: &Outbound,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    if req.method() == http::Method::CONNECT || req.headers().contains_key(http::header::UPGRADE) {
        return Err(ProxyError::Unsupported(
            "connect and upgrade are not proxied",
        ));
    }
    let target = Target {
        service: entry.service.clone(),
        port: entry.port,
        cluster: entry.cluster.clone(),
    };
    let rotation = shared.rotation.fetch_add(1, Ordering::Relaxed);
    let plan = plan(
        &snapshot.config,
        &target,
        &shared.health.at(Instant::now()),
        rotation,
    )?;
    let fallback = format!("{}.{}", entry.service.name, entry.service.namespace);
    let req = to_h2_request(req.map(|b| b.boxed()), &fallback)
        .map_err(|_| ProxyError::Unsupported("invalid host"))?;
    let mut last = None;
    for candidate in &plan.candidates {
        let report = |o| shared.health.report(&target, candidate, o, Instant::now());
        let report_error = |e: &ProxyError| {
            if let Some(o) = Outcome::of_error(candidate, e) {
                report(o);
            }
        };
        match shared.upstreams.sender(shared, snapshot, candidate).await {
            Ok(sender) => {
                let mut resp = send(shared, snapshot, candidate, sender, req)
                    .await
                    .inspect_err(report_error)?;
                report(Outcome::of_response(&resp));
                strip_hop_by_hop(resp.headers_mut());
                return Ok(resp.map(|b| b.boxed()));
            }
            Err(e) if e.try_next_candidate() => {
                report_error(&e);
                tracing::debug!(%candidate, error = %error_chain(&e), "candidate failed; trying the next");
                last = Some(e);
            }
            Err(e) => {
                report_error(&e);
                return Err(e);
            }
        }
    }
    Err(
        last.unwrap_or(ProxyError::Plan(crate::plan::PlanError::NoEndpoint {
            service: entry.service.clone(),
        })),
    )
}

/// Sends `req` on `sender`. If the pooled connection turned out closed and
/// the request was not sent, retries once on a fresh connection to the same
/// candidate (safe: nothing reached the peer).
async fn send(
    shared: &Arc<Shared>,
    snapshot: &Snapshot,
    candidate: &Candidate,
    mut sender: SendRequest<Body>,
    req: Request<Body>,
) -> Result<Response<Incoming>, ProxyError> {
    let unsent = match sender.try_send_request(req).await {
        Ok(resp) => return Ok(resp),
        Err(mut e) => match e.take_message() {
            Some(req) => req,
            None => return Err(ProxyError::Http(e.into_error())),
        },
    };
    tracing::debug!(%candidate, "pooled connection closed before sending; reconnecting");
    shared.upstreams.evict(candidate);
    let mut sender = shared.upstreams.sender(shared, snapshot, candidate).await?;
    sender.send_request(unsent).await.map_err(ProxyError::Http)
}

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
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpStream;

use crate::config::ServiceKey;
use crate::config::{Outbound, Protocol};
use crate::drain::draining;
use crate::errors::{error_chain, error_response, ProxyError, ERROR_HEADER};
use crate::health::Outcome;
use crate::http_util::{strip_hop_by_hop, to_h2_request, Body};
use crate::io::{sniff_http, PrefixedIo, Sniffed};
use crate::metrics::{Direction, RequestRecorder};
use crate::outbound::body::{Guarded, RequestBody};
use crate::outbound::pool::Pooled;
use crate::plan::{plan, Candidate, Target};
use crate::resilience::retry::{self, Decision, Failure, Replay, Tries};
use crate::resilience::{Resilience, ServiceState, ATTEMPTS_HEADER};
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
    let attempts = AtomicU32::new(0);
    let result = resilient(&shared, &snapshot, entry, req, &attempts).await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            let path = uri.path();
            let service = &entry.service;
            tracing::warn!(%service, %method, %path, error = %error_chain(&e), "outbound request failed");
            error_response(&e)
        }
    };
    let attempts = attempts.load(Ordering::Relaxed);
    if attempts > 1 {
        resp.headers_mut()
            .insert(ATTEMPTS_HEADER, http::HeaderValue::from(attempts));
    }
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

/// The request under its service's policy: the `max_requests` slot (held
/// until the response body ends), one budget deposit, and the request
/// timeout around every attempt. `attempts` counts the attempts made, also
/// when the deadline cuts them short.
async fn resilient(
    shared: &Arc<Shared>,
    snapshot: &Arc<Snapshot>,
    entry: &Outbound,
    req: Request<Incoming>,
    attempts: &AtomicU32,
) -> Result<Response<Body>, ProxyError> {
    let (policy, state) = shared.resilience.for_outbound(&snapshot.config, entry);
    let slot = state
        .circuit
        .request(&policy.circuit_breaker)
        .map_err(|limit| {
            shared.resilience.count_circuit_open(&state, limit);
            ProxyError::Overflow(limit)
        })?;
    state.budget.deposit();
    let work = forward(shared, snapshot, entry, &policy, &state, req, attempts);
    let resp = match policy.timeouts.request {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(ProxyError::RequestTimeout))?,
        None => work.await?,
    };
    Ok(resp.map(|b| Guarded::new(b, slot).boxed()))
}

/// Tries the plan's candidates in order (wrapping around for retries after
/// sending) until one answers or [`retry::decide`] says stop.
async fn forward(
    shared: &Arc<Shared>,
    snapshot: &Arc<Snapshot>,
    entry: &Outbound,
    policy: &Resilience,
    state: &ServiceState,
    req: Request<Incoming>,
    attempts: &AtomicU32,
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
    let (parts, body) = req.into_parts();
    let mut body = RequestBody::prepare(body).await?;
    let replay = Replay {
        idempotent: retry::is_idempotent(&parts.method),
        replayable: body.is_replayable(),
    };
    let n = plan.candidates.len();
    let mut unreachable = vec![false; n];
    let mut tries = Tries {
        retries: 0,
        not_sent: 0,
        candidates: u32::try_from(n).unwrap_or(u32::MAX),
    };
    let mut i = 0;
    loop {
        let candidate = &plan.candidates[i];
        attempts.fetch_add(1, Ordering::Relaxed);
        // The body is always there: a streamed one is only taken by an
        // attempt that sent it, after which `decide` never retries.
        let Some(b) = body.take() else {
            return Err(ProxyError::Unsupported("request body already sent"));
        };
        let req = rebuild(&parts, b);
        // Every attempt's outcome feeds passive health (outlier detection,
        // failfast and remote marks; H2's `HealthState::report`).
        let report = |o: &Outcome| shared.health.report(&target, candidate, *o, Instant::now());
        let (failure, outcome) =
            match attempt(shared, snapshot, candidate, policy, state, req).await {
                Attempt::Response(resp) if is_proxy_reject(&resp) => {
                    report(&Outcome::of_response(&resp));
                    (Failure::Reject503, Ok(resp))
                }
                Attempt::Response(resp) => {
                    report(&Outcome::of_response(&resp));
                    return Ok(resp);
                }
                Attempt::Failed { error, unsent } => {
                    if let Some(b) = unsent {
                        body.give_back(b);
                    }
                    if let Some(o) = Outcome::of_error(candidate, &error) {
                        report(&o);
                    }
                    let Some(failure) = error.failure() else {
                        return Err(error);
                    };
                    tracing::debug!(%candidate, error = %error_chain(&error), "attempt failed");
                    (failure, Err(error))
                }
            };
        if failure == Failure::NotSent {
            unreachable[i] = true;
            tries.not_sent += 1;
        }
        let reason = match retry::decide(&policy.retries, failure, replay, tries) {
            Decision::Retry { reason, budgeted } => {
                if budgeted && !state.budget.withdraw() {
                    shared.resilience.count_budget_exhausted(state);
                    tracing::debug!(service = %entry.service, "retry budget exhausted");
                    return outcome;
                }
                if budgeted {
                    tries.retries += 1;
                }
                reason
            }
            Decision::Stop(why) => {
                tracing::debug!(service = %entry.service, ?why, "not retrying");
                return outcome;
            }
        };
        // The next candidate not known unreachable, wrapping around.
        let Some(next) = (1..=n).map(|k| (i + k) % n).find(|j| !unreachable[*j]) else {
            return outcome;
        };
        shared.resilience.count_retry(state, reason);
        i = next;
    }
}

/// What one attempt produced.
enum Attempt {
    /// A response head (maybe a proxy 503 to retry).
    Response(Response<Body>),
    /// No response; `unsent` is the body if it never left.
    Failed {
        error: ProxyError,
        unsent: Option<Body>,
    },
}

/// One attempt on `candidate`: a pooled connection (connecting if needed),
/// then the request under the per-try timeout. A per-try timeout or a
/// broken connection evicts that connection, so the retry opens a fresh
/// one (a dead gateway must not swallow the retry too).
async fn attempt(
    shared: &Arc<Shared>,
    snapshot: &Snapshot,
    candidate: &Candidate,
    policy: &Resilience,
    state: &ServiceState,
    req: Request<Body>,
) -> Attempt {
    let pooled = match shared
        .upstreams
        .sender(shared, snapshot, candidate, policy, state)
        .await
    {
        Ok(p) => p,
        Err(error) => {
            return Attempt::Failed {
                error,
                unsent: Some(req.into_body()),
            }
        }
    };
    let id = pooled.id.clone();
    let watch = pooled.sender.clone();
    let sent = send(shared, snapshot, candidate, policy, state, pooled, req);
    let result = match policy.retries.per_try_timeout {
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(r) => r,
            Err(_) => {
                shared.upstreams.evict(candidate, &id);
                return Attempt::Failed {
                    error: ProxyError::PerTryTimeout,
                    unsent: None,
                };
            }
        },
        None => sent.await,
    };
    match result {
        Ok(mut resp) => {
            strip_hop_by_hop(resp.headers_mut());
            Attempt::Response(resp.map(|b| b.boxed()))
        }
        Err(Sent::Unsent(error, body)) => Attempt::Failed {
            error,
            unsent: Some(body),
        },
        Err(Sent::Failed(error)) => {
            // A connection-level failure (closed, GOAWAY, I/O) takes the
            // connection out; a stream reset leaves it to other requests.
            if watch.is_closed() || is_connection_error(&error) {
                shared.upstreams.evict(candidate, &id);
            }
            Attempt::Failed {
                error,
                unsent: None,
            }
        }
    }
}

/// Whether a send failure broke the whole connection (closed, I/O error,
/// GOAWAY) rather than one stream.
fn is_connection_error(e: &ProxyError) -> bool {
    let ProxyError::Http(e) = e else {
        return false;
    };
    if e.is_closed() || e.is_canceled() || e.is_incomplete_message() {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_io() || h2.is_go_away();
        }
        if err.is::<std::io::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Why [`send`] produced no response.
enum Sent {
    /// Nothing was sent; the body is given back.
    Unsent(ProxyError, Body),
    /// The request was (maybe partly) sent.
    Failed(ProxyError),
}

/// Sends `req` on the pooled sender. If the pooled connection turned out
/// closed and the request was not sent, retries once on a fresh
/// connection to the same candidate (safe: nothing reached the peer).
async fn send(
    shared: &Arc<Shared>,
    snapshot: &Snapshot,
    candidate: &Candidate,
    policy: &Resilience,
    state: &ServiceState,
    mut pooled: Pooled,
    req: Request<Body>,
) -> Result<Response<Incoming>, Sent> {
    let unsent = match pooled.sender.try_send_request(req).await {
        Ok(resp) => return Ok(resp),
        Err(mut e) => match e.take_message() {
            Some(req) => req,
            None => return Err(Sent::Failed(ProxyError::Http(e.into_error()))),
        },
    };
    tracing::debug!(%candidate, "pooled connection closed before sending; reconnecting");
    shared.upstreams.evict(candidate, &pooled.id);
    let mut fresh = match shared
        .upstreams
        .sender(shared, snapshot, candidate, policy, state)
        .await
    {
        Ok(p) => p,
        Err(error) => return Err(Sent::Unsent(error, unsent.into_body())),
    };
    match fresh.sender.try_send_request(unsent).await {
        Ok(resp) => Ok(resp),
        Err(mut e) => match e.take_message() {
            Some(req) => Err(Sent::Unsent(
                ProxyError::Http(e.into_error()),
                req.into_body(),
            )),
            None => Err(Sent::Failed(ProxyError::Http(e.into_error()))),
        },
    }
}

/// A request from the kept head and `body`.
fn rebuild(parts: &http::request::Parts, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// A reject the peer proxy generated, as opposed to an answer of the
/// application: a 503 naming why in `x-isthmus-error`, or the destination
/// sidecar's 502 `app unavailable` (its connect to the app failed, so
/// nothing reached the app; a backend that died behind a live sidecar
/// answers this way).
fn is_proxy_reject(resp: &Response<Body>) -> bool {
    let reason = resp.headers().get(ERROR_HEADER);
    match resp.status() {
        http::StatusCode::SERVICE_UNAVAILABLE => reason.is_some(),
        http::StatusCode::BAD_GATEWAY => reason.is_some_and(|r| r == APP_UNAVAILABLE),
        _ => false,
    }
}

/// The destination sidecar's `x-isthmus-error` when its app refused the
/// connection (`inbound::http`).
const APP_UNAVAILABLE: &str = "app unavailable";

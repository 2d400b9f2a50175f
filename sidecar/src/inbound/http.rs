//! Inbound HTTP: HTTP/2 (ALPN `h2`) from peer sidecars, forwarded to the app
//! over pooled HTTP/1.1 or h2c connections. Any caller-supplied
//! `x-forwarded-client-cert` is replaced with
//! `By=<our SPIFFE ID>;URI=<caller SPIFFE ID>` (Envoy's XFCC format).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::uri::Authority;
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use trust_bundle::SpiffeId;

use crate::config::{AppProtocol, Inbound};
use crate::errors::{error_chain, ERROR_HEADER};
use crate::http_util::{full, http_uri, strip_hop_by_hop, Body};
use crate::io::{sniff_http, PrefixedIo, Sniffed};
use crate::metrics::{CallerLabels, Direction, RequestRecorder};
use crate::outbound::http::{first_request_within, graceful};
use crate::runtime::{Shared, Snapshot};
use crate::tls::ALPN_H2;

/// The header carrying the authenticated caller to the app.
pub const XFCC: &str = "x-forwarded-client-cert";

/// Pooled clients to the local app.
#[derive(Debug, Clone)]
pub struct AppClients {
    http1: Client<HttpConnector, Body>,
    h2c: Client<HttpConnector, Body>,
}

impl AppClients {
    /// Clients whose TCP connects time out after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(connector);
        AppClients { http1, h2c }
    }
}

/// Serves one authenticated connection.
pub async fn serve(
    shared: Arc<Shared>,
    entry: Inbound,
    snapshot: Arc<Snapshot>,
    mut tls: TlsStream<TcpStream>,
    caller: SpiffeId,
) {
    let cfg = &snapshot.config;
    let h2_by_alpn = tls.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    let (version, prefix) = if h2_by_alpn {
        (Sniffed::Http2, Bytes::new())
    } else {
        match tokio::time::timeout(cfg.timeouts.header_read, sniff_http(&mut tls)).await {
            Ok(Ok(Some(v))) => v,
            _ => return,
        }
    };
    let io = TokioIo::new(PrefixedIo::new(prefix, tls));
    let entry = Arc::new(entry);
    let caller = Arc::new(caller);
    let svc_shared = shared.clone();
    let seen = Arc::new(AtomicBool::new(false));
    let svc_seen = seen.clone();
    // The caller is fixed for the connection: look its counter up once, not
    // per request.
    let by_caller = shared
        .metrics
        .requests_by_caller
        .get_or_create(&CallerLabels {
            caller: caller.to_string(),
        })
        .clone();
    let recorder = Arc::new(
        shared
            .metrics
            .recorder(Direction::Inbound, entry.app.to_string()),
    );
    let svc = service_fn(move |req| {
        svc_seen.store(true, Ordering::Relaxed);
        by_caller.inc();
        let shared = svc_shared.clone();
        let entry = entry.clone();
        let caller = caller.clone();
        let recorder = recorder.clone();
        async move { Ok::<_, Infallible>(handle(shared, &entry, &caller, &recorder, req).await) }
    });
    let mut drain = shared.drain.watch();
    let result = match version {
        Sniffed::Http2 => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(1024)
                .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
                .keep_alive_interval(Some(Duration::from_secs(20)))
                .serve_connection(io, svc);
            let served = graceful(conn, &mut drain);
            match first_request_within(served, &seen, cfg.timeouts.header_read).await {
                Some(r) => r,
                None => {
                    tracing::debug!("no HTTP/2 request within header_read_ms; closing");
                    return;
                }
            }
        }
        Sniffed::Http1 => {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(cfg.timeouts.header_read)
                .max_buf_size(cfg.max_header_bytes)
                .serve_connection(io, svc);
            graceful(conn, &mut drain).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %error_chain(&e), "inbound connection ended with an error");
    }
}

async fn handle(
    shared: Arc<Shared>,
    entry: &Inbound,
    caller: &SpiffeId,
    recorder: &RequestRecorder,
    req: Request<Incoming>,
) -> Response<Body> {
    let start = Instant::now();
    // For the log lines only; cloning a standard method and a URI does not
    // allocate.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let resp = match forward(&shared, entry, caller, req).await {
        Ok(r) => r,
        Err((reason, e)) => {
            let path = uri.path();
            tracing::warn!(app = %entry.app, %caller, %method, %path, error = %e, "app request failed");
            let mut r = Response::new(full(format!("{reason}: {e}\n")));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r.headers_mut()
                .insert(ERROR_HEADER, HeaderValue::from_static(reason));
            r
        }
    };
    tracing::debug!(app = %entry.app, %caller, %method, path = %uri.path(), status = resp.status().as_u16(), "inbound request");
    recorder.record(resp.status().as_u16(), start.elapsed());
    resp
}

async fn forward(
    shared: &Shared,
    entry: &Inbound,
    caller: &SpiffeId,
    req: Request<Incoming>,
) -> Result<Response<Body>, (&'static str, String)> {
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(XFCC);
    let xfcc = format!("By={};URI={}", shared.id, caller);
    let xfcc = HeaderValue::from_str(&xfcc).map_err(|e| ("invalid caller id", e.to_string()))?;
    parts.headers.insert(XFCC, xfcc);
    let app: Authority = entry
        .app
        .to_string()
        .parse()
        .map_err(|e: http::uri::InvalidUri| ("invalid request", e.to_string()))?;
    parts.uri = http_uri(&parts.uri, app).map_err(|e| ("invalid request", e.to_string()))?;
    let client = match entry.app_protocol {
        AppProtocol::Http1 => {
            parts.version = Version::HTTP_11;
            if let Some(a) = authority.and_then(|a| HeaderValue::from_str(&a).ok()) {
                parts.headers.insert(HOST, a);
            }
            &shared.apps.http1
        }
        AppProtocol::H2c => {
            parts.version = Version::HTTP_2;
            parts.headers.remove(HOST);
            &shared.apps.h2c
        }
    };
    let req = Request::from_parts(parts, body.boxed());
    match client.request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(e) if e.is_connect() => Err(("app unavailable", error_chain(&e))),
        Err(e) => Err(("app protocol error", error_chain(&e))),
    }
}

//! The demo workloads of `dev up`: small HTTP/1.1 servers.
//!
//! - `backend` answers `GET /` with `backend in <cluster> says hello`, plus
//!   the caller's SPIFFE ID when its sidecar passed an
//!   `x-forwarded-client-cert` header.
//! - `frontend` answers `GET /` by calling its first upstream (through its
//!   sidecar's outbound listener) and returning both lines; `GET /<name>`
//!   calls the upstream of that name. It also keeps a steady background
//!   load on every upstream ([`load`]) so there is live traffic to watch,
//!   and counts its calls per upstream: `GET /stats` gives
//!   `{"<upstream>":{"requests":N,"ok":M}}` (ok = a 2xx answer).
//!
//! Both answer `GET /healthz` with `ok`.

mod load;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// Deadline of a frontend's call to its upstream.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Slowloris guard on the demo servers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What a demo app is.
#[derive(Debug, Clone)]
pub(crate) struct App {
    /// `frontend` or `backend` behaviour.
    pub(crate) frontend: bool,
    /// Workload name, e.g. `backend`.
    pub(crate) workload: String,
    /// Cluster name, e.g. `cluster-b`.
    pub(crate) cluster: String,
    /// Named upstreams (the sidecar's outbound listeners); the first is the
    /// default of `GET /`.
    pub(crate) upstreams: Vec<(String, SocketAddr)>,
}

/// Calls of the frontend to one upstream, as served on `/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UpstreamStats {
    /// Calls made (answered or not).
    pub(crate) requests: u64,
    /// Calls answered with a 2xx status.
    pub(crate) ok: u64,
}

/// Live counters behind [`UpstreamStats`].
#[derive(Debug, Default)]
pub(crate) struct Counter {
    requests: AtomicU64,
    ok: AtomicU64,
}

impl Counter {
    /// Records one call; `ok` when it got a 2xx answer.
    pub(crate) fn record(&self, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> UpstreamStats {
        UpstreamStats {
            requests: self.requests.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
        }
    }
}

struct State {
    app: App,
    counters: BTreeMap<String, Arc<Counter>>,
}

/// Serves `app` on `listen` and, for a frontend, sends `rate` requests per
/// second to each upstream, until `shutdown` completes.
///
/// # Errors
/// The listener cannot be bound.
pub(crate) async fn serve(
    app: App,
    listen: SocketAddr,
    rate: f64,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    tracing::info!(%listen, workload = %app.workload, cluster = %app.cluster, "demo app listening");
    let counters: BTreeMap<String, Arc<Counter>> = app
        .upstreams
        .iter()
        .map(|(name, _)| (name.clone(), Arc::default()))
        .collect();
    let mut load = Vec::new();
    if app.frontend && rate > 0.0 && rate.is_finite() {
        for (name, addr) in &app.upstreams {
            let counter = counters.get(name).cloned().unwrap_or_default();
            load.push(tokio::spawn(load::run(name.clone(), *addr, rate, counter)));
        }
    }
    let state = Arc::new(State { app, counters });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    for task in load {
        task.abort();
    }
    Ok(())
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let app = &state.app;
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return Ok(text(StatusCode::OK, "ok\n".into()));
    }
    if !app.frontend {
        return Ok(match path.as_str() {
            "/" => text(StatusCode::OK, backend_line(app, &req)),
            _ => text(StatusCode::NOT_FOUND, format!("no {path} here\n")),
        });
    }
    if path == "/stats" {
        let stats: BTreeMap<&String, UpstreamStats> = state
            .counters
            .iter()
            .map(|(name, c)| (name, c.snapshot()))
            .collect();
        let body = serde_json::to_string(&stats).unwrap_or_default();
        return Ok(text(StatusCode::OK, body));
    }
    let upstream = match path.trim_start_matches('/') {
        "" => app.upstreams.first(),
        name => app.upstreams.iter().find(|(n, _)| n == name),
    };
    let Some((name, addr)) = upstream else {
        return Ok(text(StatusCode::NOT_FOUND, format!("no upstream {path}\n")));
    };
    let me = format!("{} in {} says hello\n", app.workload, app.cluster);
    let answer = crate::http::get(*addr, "/", UPSTREAM_TIMEOUT).await;
    if let Some(counter) = state.counters.get(name) {
        counter.record(answer.as_ref().is_ok_and(|r| r.status.is_success()));
    }
    Ok(match answer {
        Ok(r) if r.status.is_success() => text(StatusCode::OK, format!("{me}{}", r.text())),
        Ok(r) => text(
            StatusCode::BAD_GATEWAY,
            format!("{me}upstream {name} answered {}: {}", r.status, r.text()),
        ),
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            format!("{me}upstream {name} failed: {e:#}\n"),
        ),
    })
}

fn backend_line<B>(app: &App, req: &Request<B>) -> String {
    let caller = req
        .headers()
        .get("x-forwarded-client-cert")
        .and_then(|v| v.to_str().ok())
        .and_then(xfcc_uri);
    match caller {
        Some(id) => format!("{} in {} says hello to {id}\n", app.workload, app.cluster),
        None => format!("{} in {} says hello\n", app.workload, app.cluster),
    }
}

/// The `URI=` element of an Envoy-style `x-forwarded-client-cert` value
/// (the last hop's, if several).
fn xfcc_uri(value: &str) -> Option<String> {
    value
        .rsplit(',')
        .next()?
        .split(';')
        .find_map(|kv| kv.trim().strip_prefix("URI="))
        .map(|v| v.trim_matches('"').to_owned())
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_gives_the_caller() {
        assert_eq!(
            xfcc_uri("By=spiffe://b.mesh/ns/default/sa/backend;URI=spiffe://a.mesh/ns/default/sa/frontend").as_deref(),
            Some("spiffe://a.mesh/ns/default/sa/frontend")
        );
        assert_eq!(xfcc_uri("By=x;Hash=y"), None);
    }

    fn app(frontend: bool, upstreams: Vec<(String, SocketAddr)>) -> App {
        App {
            frontend,
            workload: if frontend { "frontend" } else { "backend" }.into(),
            cluster: "cluster-b".into(),
            upstreams,
        }
    }

    async fn start(
        app: App,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        // Find a free port, then serve on it (bind races are harmless here:
        // only this test uses the port).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(app, addr, 0.0, async {
            let _ = rx.await;
        }));
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return (addr, tx, task);
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("demo app never listened on {addr}");
    }

    #[tokio::test]
    async fn backend_and_frontend_answer() {
        let (backend, stop_b, task_b) = start(app(false, vec![])).await;
        let r = crate::http::get(backend, "/", UPSTREAM_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.text(), "backend in cluster-b says hello\n");
        let r = crate::http::get(backend, "/healthz", UPSTREAM_TIMEOUT)
            .await
            .unwrap();
        assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok\n"));

        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (frontend, stop_f, task_f) = start(app(
            true,
            vec![("backend".into(), backend), ("gone".into(), dead)],
        ))
        .await;
        let r = crate::http::get(frontend, "/", UPSTREAM_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.text(),
            "frontend in cluster-b says hello\nbackend in cluster-b says hello\n"
        );
        let r = crate::http::get(frontend, "/gone", UPSTREAM_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(r.text().contains("upstream gone failed"), "{}", r.text());
        let r = crate::http::get(frontend, "/nope", UPSTREAM_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = crate::http::get(frontend, "/stats", UPSTREAM_TIMEOUT)
            .await
            .unwrap();
        let stats: BTreeMap<String, UpstreamStats> = serde_json::from_str(&r.text()).unwrap();
        assert_eq!(stats["backend"], UpstreamStats { requests: 1, ok: 1 });
        assert_eq!(stats["gone"], UpstreamStats { requests: 1, ok: 0 });

        stop_b.send(()).unwrap();
        stop_f.send(()).unwrap();
        task_b.await.unwrap().unwrap();
        task_f.await.unwrap().unwrap();
    }
}

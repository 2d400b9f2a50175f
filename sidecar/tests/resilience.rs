//! Resilience of the outbound HTTP path against fake peer sidecars on
//! loopback (mTLS with a backend SVID, HTTP/2): retries of resets and proxy
//! 503s, no retry of a sent POST, per-try timeout to the next endpoint,
//! circuit-breaker overflow, retry budget exhaustion.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_sidecar::Sidecar;
use tokio::net::TcpListener;
use trust_bundle::{Authorizer, BundleMap, BundleStore, SpiffeId, SvidRequest, SvidSource};

/// What a fake peer does with its n-th request (0-based).
#[derive(Debug, Clone, Copy)]
enum Act {
    /// 200 with the body `ok`.
    Ok,
    /// RST_STREAM (INTERNAL_ERROR) instead of a response.
    Reset,
    /// 503 with `x-isthmus-error`, as a peer proxy answers.
    ProxyReject,
    /// 503 from the application (no `x-isthmus-error`).
    App503,
    /// 502 `app unavailable`, as a peer sidecar answers when its app is
    /// down.
    AppUnavailable,
    /// Never answers.
    Hang,
}

/// A fake peer sidecar: presents the backend SVID, speaks HTTP/2 and acts
/// per request as `script` says; counts requests.
struct Peer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

async fn peer(pki: &Pki, script: fn(usize) -> Act) -> Peer {
    peer_by_connection(pki, script, |_| false).await
}

/// As [`peer`], but every request on a connection for which `stuck`
/// (0-based connection number) is true hangs.
async fn peer_by_connection(pki: &Pki, script: fn(usize) -> Act, stuck: fn(usize) -> bool) -> Peer {
    let id = SpiffeId::parse(&id("backend")).unwrap();
    let svid = pki
        .ca_a
        .issue(&SvidRequest::new(id), SystemTime::now())
        .unwrap();
    let source = SvidSource::new(svid, trust_bundle::crypto_provider()).unwrap();
    let map =
        BundleMap::from_json(&std::fs::read(pki.path().join("bundles.json")).unwrap()).unwrap();
    let config = trust_bundle::tls::server_config(
        source,
        BundleStore::from_map(&map),
        Authorizer::Any,
        &[b"h2"],
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let connections = Arc::new(AtomicUsize::new(0));
    let conns = connections.clone();
    let closed = Arc::new(AtomicUsize::new(0));
    let ends = closed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            let conn_no = conns.fetch_add(1, Ordering::SeqCst);
            let ends = ends.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<Incoming>| {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let _ = req.into_body().collect().await;
                        let act = if stuck(conn_no) { Act::Hang } else { script(n) };
                        match act {
                            Act::Ok => Ok(Response::new(Full::new(Bytes::from_static(b"ok")))),
                            Act::Reset => Err(std::io::Error::other("reset by the fake")),
                            Act::ProxyReject => Ok(Response::builder()
                                .status(503)
                                .header("x-isthmus-error", "no healthy endpoint")
                                .body(Full::new(Bytes::new()))
                                .unwrap()),
                            Act::AppUnavailable => Ok(Response::builder()
                                .status(502)
                                .header("x-isthmus-error", "app unavailable")
                                .body(Full::new(Bytes::new()))
                                .unwrap()),
                            Act::App503 => Ok(Response::builder()
                                .status(503)
                                .body(Full::new(Bytes::new()))
                                .unwrap()),
                            Act::Hang => {
                                std::future::pending::<()>().await;
                                unreachable!()
                            }
                        }
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
                ends.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Peer {
        addr,
        requests,
        connections,
        closed,
    }
}

struct Front {
    _sidecar: Sidecar,
    out: SocketAddr,
    admin: SocketAddr,
}

/// A front sidecar whose `default/backend:8080` has `endpoints` and the
/// `resilience` section `resilience` (YAML flow mapping).
async fn front(pki: &Pki, endpoints: &[SocketAddr], resilience: &str) -> Front {
    let [admin, out] = std::array::from_fn(|_| free_addr());
    let eps: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address: \"{a}\", spiffe_id: \"{}\" }}", id("backend")))
        .collect();
    let yaml = format!(
        "cluster: cluster-a\n{identity}admin: {admin}\noutbound:\n\
  - {{ listen: \"{out}\", service: default/backend, port: 8080, protocol: http }}\n\
services:\n\
  - {{ service: default/backend, port: 8080, endpoints: [{eps}], resilience: {resilience} }}\n",
        identity = pki.identity_yaml("frontend"),
        eps = eps.join(", "),
    );
    let (sidecar, _) = start_sidecar(pki, "front", &yaml).await;
    Front {
        _sidecar: sidecar,
        out,
        admin,
    }
}

async fn request(addr: SocketAddr, method: &str, payload: &'static [u8]) -> (u16, http::HeaderMap) {
    let mut c = h1_client(addr).await;
    let req = Request::builder()
        .method(method)
        .uri("/x")
        .header("host", "backend.default")
        .body(body(payload))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let _ = resp.into_body().collect().await;
    (status, headers)
}

fn attempts(h: &http::HeaderMap) -> Option<&str> {
    h.get("x-isthmus-attempts").map(|v| v.to_str().unwrap())
}

const SVC: &str = "service=\"default/backend\"";

#[tokio::test]
async fn a_reset_first_attempt_is_retried_and_the_client_sees_200_with_two_attempts() {
    let pki = Pki::new();
    let p = peer(&pki, |n| if n == 0 { Act::Reset } else { Act::Ok }).await;
    let f = front(&pki, &[p.addr], "{}").await;
    let (status, h) = request(f.out, "GET", b"").await;
    assert_eq!(status, 200);
    assert_eq!(attempts(&h), Some("2"));
    assert_eq!(p.requests.load(Ordering::SeqCst), 2);
    let m = metrics(f.admin).await;
    assert_eq!(
        metric_value(
            &m,
            &format!("isthmus_retries_total{{{SVC},reason=\"reset\"}}")
        ),
        1.0,
        "{m}"
    );
    // A small PUT body is kept and sent again too.
    let p = peer(&pki, |n| if n == 0 { Act::Reset } else { Act::Ok }).await;
    let f = front(&pki, &[p.addr], "{}").await;
    let (status, h) = request(f.out, "PUT", b"replayed").await;
    assert_eq!((status, attempts(&h)), (200, Some("2")));
}

#[tokio::test]
async fn a_post_with_a_body_is_not_retried_once_sent() {
    let pki = Pki::new();
    let p = peer(&pki, |_| Act::Reset).await;
    let f = front(&pki, &[p.addr], "{}").await;
    let (status, h) = request(f.out, "POST", b"charge the card").await;
    assert_eq!(status, 502);
    assert_eq!(attempts(&h), None);
    assert_eq!(p.requests.load(Ordering::SeqCst), 1, "sent once only");
}

#[tokio::test]
async fn a_proxy_503_is_retried_and_an_app_503_or_a_post_is_not() {
    let pki = Pki::new();
    let p = peer(&pki, |n| if n == 0 { Act::ProxyReject } else { Act::Ok }).await;
    let f = front(&pki, &[p.addr], "{}").await;
    let (status, h) = request(f.out, "GET", b"").await;
    assert_eq!((status, attempts(&h)), (200, Some("2")));
    let m = metrics(f.admin).await;
    assert_eq!(
        metric_value(
            &m,
            &format!("isthmus_retries_total{{{SVC},reason=\"reject-503\"}}")
        ),
        1.0
    );

    let p = peer(&pki, |_| Act::ProxyReject).await;
    let f = front(&pki, &[p.addr], "{}").await;
    let (status, h) = request(f.out, "POST", b"x").await;
    assert_eq!((status, attempts(&h)), (503, None));
    assert_eq!(p.requests.load(Ordering::SeqCst), 1);
    // GET: the first try and `attempts` (2) retries, then the 503 passes.
    let (status, h) = request(f.out, "GET", b"").await;
    assert_eq!((status, attempts(&h)), (503, Some("3")));
    assert_eq!(p.requests.load(Ordering::SeqCst), 4);

    // A backend that died behind a live sidecar: the next endpoint serves.
    let dead = peer(&pki, |_| Act::AppUnavailable).await;
    let live = peer(&pki, |_| Act::Ok).await;
    let f = front(&pki, &[dead.addr, live.addr], "{}").await;
    let (status, h) = request(f.out, "GET", b"").await;
    assert_eq!((status, attempts(&h)), (200, Some("2")));
    assert_eq!(live.requests.load(Ordering::SeqCst), 1);

    let p = peer(&pki, |_| Act::App503).await;
    let f = front(&pki, &[p.addr], "{}").await;
    let (status, h) = request(f.out, "GET", b"").await;
    assert_eq!(
        (status, attempts(&h)),
        (503, None),
        "the app's own 503 passes"
    );
    assert_eq!(p.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_per_try_timeout_moves_to_the_next_endpoint() {
    let pki = Pki::new();
    let slow = peer(&pki, |_| Act::Hang).await;
    let fast = peer(&pki, |_| Act::Ok).await;
    let f = front(
        &pki,
        &[slow.addr, fast.addr],
        "{ retries: { per_try_timeout_ms: 300 } }",
    )
    .await;
    // The first request of a fresh sidecar starts its round robin at the
    // first endpoint.
    let start = Instant::now();
    let (status, h) = request(f.out, "GET", b"").await;
    let took = start.elapsed();
    assert_eq!((status, attempts(&h)), (200, Some("2")));
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(slow.requests.load(Ordering::SeqCst), 1);
    assert_eq!(fast.requests.load(Ordering::SeqCst), 1);
    let m = metrics(f.admin).await;
    assert_eq!(
        metric_value(
            &m,
            &format!("isthmus_retries_total{{{SVC},reason=\"per-try-timeout\"}}")
        ),
        1.0
    );
}

#[tokio::test]
async fn over_max_requests_the_answer_is_503_overflow_at_once() {
    let pki = Pki::new();
    let p = peer(&pki, |n| if n == 0 { Act::Hang } else { Act::Ok }).await;
    let f = front(&pki, &[p.addr], "{ circuit_breaker: { max_requests: 1 } }").await;
    let out = f.out;
    let hung = tokio::spawn(async move { request(out, "GET", b"").await });
    let requests = p.requests.clone();
    assert!(
        eventually(|| {
            let r = requests.clone();
            async move { r.load(Ordering::SeqCst) == 1 }
        })
        .await
    );
    let start = Instant::now();
    let (status, h) = request(f.out, "GET", b"").await;
    assert_eq!(status, 503);
    assert_eq!(h["x-isthmus-error"], "overflow");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(
        p.requests.load(Ordering::SeqCst),
        1,
        "refused before sending"
    );
    let m = metrics(f.admin).await;
    assert_eq!(
        metric_value(
            &m,
            &format!("isthmus_circuit_open_total{{{SVC},limit=\"max_requests\"}}")
        ),
        1.0
    );
    hung.abort();
}

#[tokio::test]
async fn an_exhausted_budget_stops_retries() {
    let pki = Pki::new();
    let p = peer(&pki, |_| Act::Reset).await;
    let f = front(
        &pki,
        &[p.addr],
        "{ retries: { budget: { percent: 0, min_retries_per_second: 0 } } }",
    )
    .await;
    let (status, h) = request(f.out, "GET", b"").await;
    assert_eq!((status, attempts(&h)), (502, None));
    assert_eq!(p.requests.load(Ordering::SeqCst), 1);
    let m = metrics(f.admin).await;
    assert_eq!(
        metric_value(
            &m,
            &format!("isthmus_retry_budget_exhausted_total{{{SVC}}}")
        ),
        1.0
    );
}

#[tokio::test]
async fn an_idle_tcp_connection_is_closed_after_idle_ms() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let echo = start_tcp_echo().await;
    let [back_admin, front_admin, in_tcp, out_tcp] = std::array::from_fn(|_| free_addr());
    let back_yaml = format!(
        "cluster: cluster-a\n{identity}admin: {back_admin}\ninbound:\n\
  - {{ listen: \"{in_tcp}\", protocol: tcp, app: \"{echo}\", allow: [\"{front}\"] }}\n",
        identity = pki.identity_yaml("backend"),
        front = id("frontend"),
    );
    let front_yaml = format!(
        "cluster: cluster-a\n{identity}admin: {front_admin}\noutbound:\n\
  - {{ listen: \"{out_tcp}\", service: default/echo, port: 9000, protocol: tcp }}\n\
services:\n\
  - {{ service: default/echo, port: 9000, endpoints: [{{ address: \"{in_tcp}\", spiffe_id: \"{back}\" }}], resilience: {{ timeouts: {{ idle_ms: 300 }} }} }}\n",
        identity = pki.identity_yaml("frontend"),
        back = id("backend"),
    );
    let (_back, _) = start_sidecar(&pki, "back", &back_yaml).await;
    let (_front, _) = start_sidecar(&pki, "front", &front_yaml).await;
    let mut s = tokio::net::TcpStream::connect(out_tcp).await.unwrap();
    s.write_all(b"hi").await.unwrap();
    let mut two = [0u8; 2];
    s.read_exact(&mut two).await.unwrap();
    assert_eq!(&two, b"hi");
    let quiet = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    let took = quiet.elapsed();
    assert!(read.is_ok(), "still open after 5 s");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(
        rest.is_empty(),
        "closed without the app's goodbye: {rest:?}"
    );
}

#[tokio::test]
async fn a_per_try_timeout_evicts_the_connection_so_the_retry_opens_a_fresh_one() {
    let pki = Pki::new();
    // Everything on the first connection hangs (a dead path behind a live
    // socket); later connections answer.
    let p = peer_by_connection(&pki, |_| Act::Ok, |conn| conn == 0).await;
    let f = front(&pki, &[p.addr], "{ retries: { per_try_timeout_ms: 300 } }").await;
    let (status, h) = request(f.out, "GET", b"").await;
    assert_eq!((status, attempts(&h)), (200, Some("2")));
    assert_eq!(
        p.connections.load(Ordering::SeqCst),
        2,
        "the retry used a new connection"
    );
    // And the next request uses the fresh connection, not the stuck one.
    let (status, h) = request(f.out, "GET", b"").await;
    assert_eq!((status, attempts(&h)), (200, None));
    assert_eq!(p.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn over_max_connections_a_tcp_connection_is_closed_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let echo = start_tcp_echo().await;
    let [back_admin, front_admin, in_tcp, out_tcp] = std::array::from_fn(|_| free_addr());
    let back_yaml = format!(
        "cluster: cluster-a\n{identity}admin: {back_admin}\ninbound:\n\
  - {{ listen: \"{in_tcp}\", protocol: tcp, app: \"{echo}\", allow: [\"{front}\"] }}\n",
        identity = pki.identity_yaml("backend"),
        front = id("frontend"),
    );
    let front_yaml = format!(
        "cluster: cluster-a\n{identity}admin: {front_admin}\noutbound:\n\
  - {{ listen: \"{out_tcp}\", service: default/echo, port: 9000, protocol: tcp }}\n\
services:\n\
  - {{ service: default/echo, port: 9000, endpoints: [{{ address: \"{in_tcp}\", spiffe_id: \"{back}\" }}], resilience: {{ circuit_breaker: {{ max_connections: 1 }} }} }}\n",
        identity = pki.identity_yaml("frontend"),
        back = id("backend"),
    );
    let (_back, _) = start_sidecar(&pki, "back", &back_yaml).await;
    let (_front, _) = start_sidecar(&pki, "front", &front_yaml).await;
    let mut first = tokio::net::TcpStream::connect(out_tcp).await.unwrap();
    first.write_all(b"hi").await.unwrap();
    let mut two = [0u8; 2];
    first.read_exact(&mut two).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(out_tcp).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), second.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed at once: {read:?}"
    );
    let m = metrics(front_admin).await;
    assert_eq!(
        metric_value(
            &m,
            "isthmus_circuit_open_total{service=\"default/echo\",limit=\"max_connections\"}"
        ),
        1.0
    );
    // The first connection still works.
    first.write_all(b"yo").await.unwrap();
    first.read_exact(&mut two).await.unwrap();
    assert_eq!(&two, b"yo");
}

#[tokio::test]
async fn a_pooled_connection_idle_for_idle_ms_is_closed() {
    let pki = Pki::new();
    let p = peer(&pki, |_| Act::Ok).await;
    let f = front(&pki, &[p.addr], "{ timeouts: { idle_ms: 200 } }").await;
    let (status, _) = request(f.out, "GET", b"").await;
    assert_eq!(status, 200);
    let closed = p.closed.clone();
    assert!(
        eventually(|| {
            let c = closed.clone();
            async move { c.load(Ordering::SeqCst) == 1 }
        })
        .await,
        "the idle connection was not closed"
    );
    let (status, _) = request(f.out, "GET", b"").await;
    assert_eq!(status, 200);
    assert_eq!(
        p.connections.load(Ordering::SeqCst),
        2,
        "a fresh connection"
    );
}

//! Shared pieces of the in-process sidecar tests: a CA and bundle map in a
//! tempdir, free loopback ports, tiny HTTP and TCP apps, YAML config
//! builders and raw HTTP clients.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_sidecar::io::{sniff_http, PrefixedIo, Sniffed};
use mesh_sidecar::{Config, Sidecar};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use trust_bundle::{Bundle, BundleMap, CertificateAuthority, TrustDomain};

pub const TD: &str = "cluster-a.mesh";

pub fn id(sa: &str) -> String {
    format!("spiffe://{TD}/ns/default/sa/{sa}")
}

/// CAs for cluster-a (files `ca.pem`, `ca-key.pem`) and cluster-b
/// (`ca-b.pem`, `ca-key-b.pem`), and a bundle map trusting both, in a tempdir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_a: CertificateAuthority,
    pub ca_b: CertificateAuthority,
}

pub const TD_B: &str = "cluster-b.mesh";

pub fn id_b(sa: &str) -> String {
    format!("spiffe://{TD_B}/ns/default/sa/{sa}")
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let make = |td: &str, suffix: &str| {
            let td = TrustDomain::parse(td).unwrap();
            let ca =
                CertificateAuthority::self_signed(td, Duration::from_secs(3600), SystemTime::now())
                    .unwrap();
            let (cert, key) = ca.to_pem();
            std::fs::write(dir.path().join(format!("ca{suffix}.pem")), cert).unwrap();
            std::fs::write(dir.path().join(format!("ca-key{suffix}.pem")), key).unwrap();
            ca
        };
        let ca_a = make(TD, "");
        let ca_b = make(TD_B, "-b");
        let mut map = BundleMap::default();
        for ca in [&ca_a, &ca_b] {
            map.insert(Bundle::with_x509_authorities(
                ca.trust_domain().clone(),
                [ca.trust_anchor().clone()],
            ));
        }
        std::fs::write(dir.path().join("bundles.json"), map.to_json()).unwrap();
        Pki { dir, ca_a, ca_b }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The identity section of a cluster-a workload.
    pub fn identity_yaml(&self, sa: &str) -> String {
        format!(
            "identity:\n  spiffe_id: {}\n  ca: {{ cert: ca.pem, key: ca-key.pem }}\n  bundles: bundles.json\n",
            id(sa)
        )
    }

    /// The identity section of a cluster-b workload.
    pub fn identity_yaml_b(&self, sa: &str) -> String {
        format!(
            "identity:\n  spiffe_id: {}\n  ca: {{ cert: ca-b.pem, key: ca-key-b.pem }}\n  bundles: bundles.json\n",
            id_b(sa)
        )
    }
}

/// A loopback address that was free a moment ago: a random 127.x.y.z and a
/// port below the kernel's ephemeral range, so neither the kernel (for
/// outgoing connections) nor a parallel test picks it again.
pub fn free_addr() -> SocketAddr {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(7);
        let r = h.finish();
        let ip = std::net::Ipv4Addr::new(
            127,
            (r >> 8) as u8,
            (r >> 16) as u8,
            ((r >> 24) as u8).max(1),
        );
        let port = 20_000 + (r >> 32) as u16 % 12_000;
        let addr = SocketAddr::from((ip, port));
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// Writes `yaml` to `<pki>/<name>.yaml` and starts a sidecar from it.
pub async fn start_sidecar(pki: &Pki, name: &str, yaml: &str) -> (Sidecar, PathBuf) {
    let path = pki.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let sidecar = Sidecar::start(config, Some(path.clone()), Registry::default())
        .await
        .unwrap();
    (sidecar, path)
}

/// A response body from frames, including trailers.
pub struct Frames(pub VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

pub fn frames_with_trailers(
    data: &'static [u8],
    trailers: &[(&'static str, &'static str)],
) -> Frames {
    let mut t = HeaderMap::new();
    for (k, v) in trailers {
        t.insert(*k, v.parse().unwrap());
    }
    Frames(VecDeque::from([
        Frame::data(Bytes::from_static(data)),
        Frame::trailers(t),
    ]))
}

/// A tiny HTTP app (HTTP/1.1 and h2c by sniffing). Echoes the request body
/// (and its trailers) back; reports its name, the XFCC header and the
/// version in response headers. `/slow` waits for `release`.
pub struct App {
    pub addr: SocketAddr,
    pub name: &'static str,
    pub release: Arc<Notify>,
    pub requests: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
}

pub async fn start_app(name: &'static str) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let release = Arc::new(Notify::new());
    let requests = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let app = App {
        addr,
        name,
        release: release.clone(),
        requests: requests.clone(),
        connections: connections.clone(),
    };
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            connections.fetch_add(1, Ordering::SeqCst);
            let release = release.clone();
            let requests = requests.clone();
            tokio::spawn(async move {
                let Ok(Some((v, prefix))) = sniff_http(&mut s).await else {
                    return;
                };
                let io = TokioIo::new(PrefixedIo::new(prefix, s));
                let svc = service_fn(move |req: Request<Incoming>| {
                    let release = release.clone();
                    let requests = requests.clone();
                    async move {
                        requests.fetch_add(1, Ordering::SeqCst);
                        if req.uri().path() == "/slow" {
                            release.notified().await;
                        }
                        let xfcc = req
                            .headers()
                            .get("x-forwarded-client-cert")
                            .cloned()
                            .unwrap_or_else(|| "none".parse().unwrap());
                        let host = req
                            .headers()
                            .get("host")
                            .cloned()
                            .unwrap_or_else(|| "none".parse().unwrap());
                        let version = format!("{:?}", req.version());
                        let resp = Response::builder()
                            .header("x-app", name)
                            .header("x-xfcc", xfcc)
                            .header("x-host", host)
                            .header("x-app-version", version)
                            .body(req.into_body())
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = match v {
                    Sniffed::Http1 => {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await
                    }
                    Sniffed::Http2 => {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await
                    }
                };
            });
        }
    });
    app
}

/// A TCP echo app: echoes until EOF, then writes "bye" and closes its side.
pub async fn start_tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.write_all(b"bye").await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

pub type ClientBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub fn body(b: &'static [u8]) -> ClientBody {
    http_body_util::Full::new(Bytes::from_static(b)).boxed()
}

/// An HTTP/1.1 client connection.
pub async fn h1_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<ClientBody> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/2 prior-knowledge client connection.
pub async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<ClientBody> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// One HTTP/1.1 GET on a fresh connection: status, headers, body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, HeaderMap, Bytes) {
    let mut c = h1_client(addr).await;
    let req = Request::builder()
        .uri(path)
        .header("host", "backend.default")
        .body(body(b""))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, b)
}

/// The admin `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    let (status, _, b) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    String::from_utf8(b.to_vec()).unwrap()
}

/// The value of the metric line starting with `prefix` (labels included),
/// or 0 when absent.
pub fn metric_value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Polls `f` until it returns true, at most ~5 s.
pub async fn eventually<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

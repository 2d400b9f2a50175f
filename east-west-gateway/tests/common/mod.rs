//! Shared fixtures for the in-process gateway tests: CAs and bundle maps in a
//! tempdir, gateway configs from YAML, a sidecar-like QUIC client and a TCP
//! echo server, all on 127.0.0.1 with port 0.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use mesh_gateway::{Config, Gateway};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use trust_bundle::{
    Authorizer, Bundle, BundleMap, BundleStore, CertificateAuthority, SpiffeId, SvidRequest,
    SvidSource, TrustDomain,
};
use tunnel_proto::{OpenHeader, OpenerEvent, RejectReason};

/// A cluster's CA, written as `<dir>/<name>/ca.pem` and `ca-key.pem`.
pub struct Cluster {
    pub name: String,
    pub ca: CertificateAuthority,
    pub dir: PathBuf,
}

impl Cluster {
    pub fn new(root: &Path, name: &str) -> Cluster {
        let td = TrustDomain::parse(&format!("{name}.mesh")).unwrap();
        let ca =
            CertificateAuthority::self_signed(td, Duration::from_secs(3600), SystemTime::now())
                .unwrap();
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = ca.to_pem();
        std::fs::write(dir.join("ca.pem"), cert).unwrap();
        std::fs::write(dir.join("ca-key.pem"), key).unwrap();
        Cluster {
            name: name.to_owned(),
            ca,
            dir,
        }
    }

    pub fn td(&self) -> String {
        format!("{}.mesh", self.name)
    }

    pub fn gateway_id(&self) -> String {
        format!(
            "spiffe://{}/ns/isthmus-system/sa/east-west-gateway",
            self.td()
        )
    }

    pub fn workload_id(&self, sa: &str) -> String {
        format!("spiffe://{}/ns/default/sa/{sa}", self.td())
    }

    /// Writes `bundles.json` in this cluster's dir with the given clusters.
    pub fn write_bundles(&self, trusted: &[&Cluster]) {
        let mut map = BundleMap::default();
        for c in trusted {
            map.insert(Bundle::with_x509_authorities(
                c.ca.trust_domain().clone(),
                [c.ca.trust_anchor().clone()],
            ));
        }
        std::fs::write(self.dir.join("bundles.json"), map.to_json()).unwrap();
    }

    /// An SVID source for `id`, issued by this cluster's CA.
    pub fn svid(&self, id: &str) -> Arc<SvidSource> {
        let svid = self
            .ca
            .issue(
                &SvidRequest::new(SpiffeId::parse(id).unwrap()),
                SystemTime::now(),
            )
            .unwrap();
        SvidSource::new(svid, trust_bundle::crypto_provider()).unwrap()
    }

    /// The identity section of a gateway config.
    pub fn identity_yaml(&self) -> String {
        format!(
            "identity:\n  spiffe_id: {}\n  ca: {{ cert: ca.pem, key: ca-key.pem }}\n  bundles: bundles.json\n",
            self.gateway_id()
        )
    }

    /// Parses `yaml` with this cluster's dir as base.
    pub fn config(&self, yaml: &str) -> Config {
        std::fs::write(self.dir.join("gateway.yaml"), yaml).unwrap();
        Config::load(&self.dir.join("gateway.yaml")).unwrap()
    }
}

/// A bundle store holding the given clusters' CAs.
pub fn store(trusted: &[&Cluster]) -> BundleStore {
    let mut map = BundleMap::default();
    for c in trusted {
        map.insert(Bundle::with_x509_authorities(
            c.ca.trust_domain().clone(),
            [c.ca.trust_anchor().clone()],
        ));
    }
    BundleStore::from_map(&map)
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub async fn start(config: Config) -> Gateway {
    Gateway::start(config, Registry::default()).await.unwrap()
}

/// A sidecar-like client of `cluster` connected to a local gateway.
pub struct Sidecar {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
}

impl Sidecar {
    pub async fn connect(
        cluster: &Cluster,
        trusted: &[&Cluster],
        gateway: SocketAddr,
    ) -> Result<Sidecar> {
        Self::connect_as(
            cluster,
            &cluster.workload_id("frontend"),
            trusted,
            gateway,
            Authorizer::Any,
        )
        .await
    }

    pub async fn connect_as(
        cluster: &Cluster,
        id: &str,
        trusted: &[&Cluster],
        gateway: SocketAddr,
        authorizer: Authorizer,
    ) -> Result<Sidecar> {
        let mut map = BundleMap::default();
        for c in trusted {
            map.insert(Bundle::with_x509_authorities(
                c.ca.trust_domain().clone(),
                [c.ca.trust_anchor().clone()],
            ));
        }
        let tls = trust_bundle::tls::client_config(
            Some(cluster.svid(id)),
            BundleStore::from_map(&map),
            authorizer,
            &[tunnel_proto::ALPN],
        )?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint
            .connect(gateway, mesh_gateway::endpoint::SERVER_NAME)?
            .await
            .context("handshake with the gateway")?;
        Ok(Sidecar { endpoint, conn })
    }

    /// Opens a tunnel stream and returns the handshake outcome and streams.
    pub async fn open(
        &self,
        header: &OpenHeader,
    ) -> Result<(OpenerEvent, quinn::SendStream, quinn::RecvStream)> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        let ev =
            mesh_gateway::handshake::open(&mut send, &mut recv, header, Duration::from_secs(10))
                .await;
        Ok((ev, send, recv))
    }
}

/// The reason of a rejected open, `None` for any other outcome.
pub fn rejected(ev: &OpenerEvent) -> Option<RejectReason> {
    match ev {
        OpenerEvent::Rejected { reason, .. } => Some(*reason),
        _ => None,
    }
}

/// Opens a stream to `service:port` in `cluster` expecting `expected` at
/// the far end, and checks the gateway rejects it with `want`.
pub async fn assert_rejected(
    sc: &Sidecar,
    cluster: &str,
    service: &str,
    port: u16,
    expected: &str,
    want: RejectReason,
) -> Result<()> {
    let (ev, ..) = sc.open(&header(cluster, service, port, expected)).await?;
    anyhow::ensure!(
        rejected(&ev) == Some(want),
        "{service}:{port}: want {want:?}, got {ev:?}"
    );
    Ok(())
}

pub fn header(cluster: &str, service: &str, port: u16, expected: &str) -> OpenHeader {
    let (ns, svc) = service.split_once('/').unwrap();
    OpenHeader {
        target_cluster: cluster.into(),
        namespace: ns.into(),
        service: svc.into(),
        port,
        expected_identity: SpiffeId::parse(expected).unwrap(),
        traceparent: None,
        tracestate: None,
    }
}

/// A TCP echo server: echoes until the client's FIN, then half-closes.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
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
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A loopback port with nothing listening (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Reads a stream to its end (FIN), within 10 s.
pub async fn read_to_end(recv: &mut quinn::RecvStream) -> Result<Vec<u8>> {
    Ok(tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 24)).await??)
}

/// GET `path` from the admin listener; returns (status, body).
pub async fn http_get(admin: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(admin).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await??;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}

/// Polls `f` every 20 ms until it returns true, for at most 10 s.
pub async fn eventually<F, Fut>(what: &str, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("timed out waiting for: {what}")
}

/// Two linked clusters: A (with a sidecar-facing gateway) and B (serving an
/// echo service). Also a third linked-but-absent cluster C for exports that
/// are not exported to A.
pub struct Pair {
    pub _dir: tempfile::TempDir,
    pub a: Cluster,
    pub b: Cluster,
    pub c: Cluster,
    pub gw_a: Gateway,
    pub gw_b: Gateway,
    pub echo: SocketAddr,
    pub dead: SocketAddr,
}

/// B's config: exports `default/echo:8080` to A, `default/private:8080` to
/// C only, `default/down:8080` to A on a closed port.
pub fn b_yaml(
    b: &Cluster,
    a: &Cluster,
    c: &Cluster,
    echo: SocketAddr,
    dead: SocketAddr,
    extra_exports: &str,
) -> String {
    let echo_id = b.workload_id("echo");
    let export = |svc: &str, to: &str, addr: SocketAddr| {
        format!(
            "  - service: default/{svc}\n    port: 8080\n    exported_to: [{to}]\n    endpoints:\n      - {{ address: '{addr}', spiffe_id: '{echo_id}' }}\n"
        )
    };
    let mut y = format!(
        "cluster: {}\n{}listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n",
        b.name,
        b.identity_yaml()
    );
    y += "peers:\n";
    y += &format!(
        "  - {{ cluster: {}, trust_domain: {}, address: '127.0.0.1:9' }}\n",
        a.name,
        a.td()
    );
    y += &format!(
        "  - {{ cluster: {}, trust_domain: {}, address: '127.0.0.1:9' }}\n",
        c.name,
        c.td()
    );
    y += "exports:\n";
    y += &export("echo", &a.name, echo);
    y += &export("private", &c.name, echo);
    y += &export("down", &a.name, dead);
    y += extra_exports;
    y += "timeouts: { header_ms: 500, connect_ms: 2000, drain_ms: 5000 }\n";
    y
}

pub fn a_yaml(a: &Cluster, b: &Cluster, b_addr: SocketAddr, drain_ms: u64) -> String {
    format!(
        "cluster: {a}\n{identity}listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\npeers:
  - cluster: {b}
    trust_domain: {b_td}
    address: '{b_addr}'
    spiffe_id: {b_id}
quic: {{ keep_alive_ms: 500, idle_timeout_ms: 5000 }}
timeouts: {{ header_ms: 500, connect_ms: 2000, drain_ms: {drain_ms} }}
reconnect: {{ initial_backoff_ms: 50, max_backoff_ms: 500 }}
",
        a = a.name,
        identity = a.identity_yaml(),
        b = b.name,
        b_td = b.td(),
        b_id = b.gateway_id(),
    )
}

impl Pair {
    pub async fn new() -> Pair {
        Self::with_drain(5000).await
    }

    pub async fn with_drain(drain_ms: u64) -> Pair {
        Self::build(drain_ms, false).await
    }

    /// A and B linked over the TCP+TLS transport: B has a `tcp_listen`, A
    /// reaches B over `tcp-tls`, and A's QUIC `address` for B is a dead
    /// port, so only the TCP+TLS path can carry streams.
    pub async fn tcp_tls() -> Pair {
        Self::build(5000, true).await
    }

    async fn build(drain_ms: u64, tcp_tls: bool) -> Pair {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let a = Cluster::new(dir.path(), "cluster-a");
        let b = Cluster::new(dir.path(), "cluster-b");
        let c = Cluster::new(dir.path(), "cluster-c");
        a.write_bundles(&[&a, &b]);
        b.write_bundles(&[&a, &b, &c]);
        let echo = echo_server().await;
        let dead = closed_port().await;
        let mut yaml_b = b_yaml(&b, &a, &c, echo, dead, "");
        if tcp_tls {
            yaml_b = with_tcp_listen(&yaml_b);
        }
        let gw_b = start(b.config(&yaml_b)).await;
        let yaml_a = match gw_b.tcp_addr() {
            Some(tcp) => over_tcp_tls(
                &a_yaml(&a, &b, "127.0.0.1:9".parse().unwrap(), drain_ms),
                tcp,
            ),
            None => a_yaml(&a, &b, gw_b.quic_addr(), drain_ms),
        };
        let gw_a = start(a.config(&yaml_a)).await;
        Pair {
            _dir: dir,
            a,
            b,
            c,
            gw_a,
            gw_b,
            echo,
            dead,
        }
    }

    pub async fn sidecar(&self) -> Sidecar {
        Sidecar::connect(&self.a, &[&self.a], self.gw_a.quic_addr())
            .await
            .unwrap()
    }

    pub fn echo_header(&self) -> OpenHeader {
        header(
            "cluster-b",
            "default/echo",
            8080,
            &self.b.workload_id("echo"),
        )
    }
}

/// A TCP server that reads once, reports what it read, then aborts (RST).
pub async fn rst_server() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut b = [0u8; 16];
            let _ = s.read(&mut b).await;
            let _ = s.set_zero_linger();
            drop(s);
        }
    });
    addr
}

/// A TCP server that reports how each connection's read side ended.
pub async fn watching_server() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<std::io::ErrorKind>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 1024];
                loop {
                    match s.read(&mut b).await {
                        Ok(0) => {
                            let _ = tx.send(std::io::ErrorKind::UnexpectedEof);
                            return;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.send(e.kind());
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

pub fn extra_export(svc: &str, addr: std::net::SocketAddr, id: &str) -> String {
    format!(
        "  - service: default/{svc}\n    port: 8080\n    exported_to: [cluster-a]\n    endpoints:\n      - {{ address: '{addr}', spiffe_id: '{id}' }}\n"
    )
}

/// A TCP server that reads until EOF, then answers `<n> bytes` and closes:
/// it answers only if the client's half-close arrived.
pub async fn counting_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut n = 0usize;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(format!("{n} bytes").as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// `yaml` (an [`a_yaml`]) with its peer reached over `tcp-tls` at `tcp`.
pub fn over_tcp_tls(yaml: &str, tcp: SocketAddr) -> String {
    let (head, tail) = yaml.split_once("    spiffe_id: ").unwrap();
    let (id, rest) = tail.split_once('\n').unwrap();
    format!("{head}    spiffe_id: {id}\n    transport: tcp-tls\n    tcp_address: '{tcp}'\n{rest}")
}

/// [`b_yaml`] with a `tcp_listen` on an ephemeral loopback port.
pub fn with_tcp_listen(yaml: &str) -> String {
    yaml.replacen(
        "admin: 127.0.0.1:0\n",
        "admin: 127.0.0.1:0\ntcp_listen: 127.0.0.1:0\n",
        1,
    )
}

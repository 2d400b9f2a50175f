//! The `mesh-controller` binary: a bad config exits 2; a good one serves
//! `/readyz` and stops with exit 0 on SIGTERM. Also: the gRPC listener
//! refuses a client certificate of a trust domain it holds no bundle for.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{call, eventually, start};
use trust_bundle::{CertificateAuthority, SvidRequest, SvidSource, TrustDomain};

const BIN: &str = env!("CARGO_BIN_EXE_mesh-controller");

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.yaml");
    std::fs::write(&path, "cluster: a\nnode_id: 0\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node_id: must be at least 1"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = format!(
        "cluster: cluster-a\nnode_id: 1\ndata_dir: data\n\
         raft_listen: 127.0.0.1:{}\ngrpc_listen: 127.0.0.1:{}\n\
         admin_listen: {admin}\nbundle_listen: 127.0.0.1:{}\n",
        free_port(),
        free_port(),
        free_port()
    );
    let path = dir.path().join("controller.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "/readyz", || async move {
        match tokio::net::TcpStream::connect(admin).await {
            Ok(_) => call(admin, "GET", "/readyz", None, None).await.0 == 200,
            Err(_) => false,
        }
    })
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_of_unknown_trust_domains_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "").await;
    let other = TrustDomain::parse("intruder.mesh").unwrap();
    let ca = CertificateAuthority::self_signed(
        other.clone(),
        Duration::from_secs(3600),
        SystemTime::now(),
    )
    .unwrap();
    let svid = ca
        .issue(
            &SvidRequest::new(other.service_account("default", "web").unwrap()),
            SystemTime::now(),
        )
        .unwrap();
    let source: Arc<SvidSource> = SvidSource::new(svid, trust_bundle::crypto_provider()).unwrap();
    // An accepted HTTP/2 connection starts with the server's SETTINGS frame;
    // a refused client certificate ends in an alert or a closed stream.
    assert!(
        server_speaks_h2(&c, None).await,
        "anonymous clients are accepted"
    );
    assert!(
        !server_speaks_h2(&c, Some(source)).await,
        "a client certificate of an unknown trust domain was accepted"
    );
    c.stop().await;
}

/// Whether the gRPC listener, after the TLS handshake, sends HTTP/2 bytes.
async fn server_speaks_h2(
    c: &mesh_controller::run::Controller,
    client: Option<Arc<SvidSource>>,
) -> bool {
    use tokio::io::AsyncReadExt as _;
    let bundles = trust_bundle::BundleStore::from_map(&c.bundles().to_map());
    let config =
        trust_bundle::tls::client_config(client, bundles, trust_bundle::Authorizer::Any, &[b"h2"])
            .unwrap();
    let tcp = tokio::net::TcpStream::connect(c.grpc_addr()).await.unwrap();
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(trust_bundle::tls::spiffe_server_name(), tcp)
        .await
    else {
        return false;
    };
    let mut buf = [0u8; 9];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

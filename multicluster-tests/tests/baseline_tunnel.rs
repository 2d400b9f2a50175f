//! The TCP+TLS baseline tunnel between gateways (`transport: tcp-tls`):
//! curl in cluster-a against nginx in cluster-b, as in `http.rs` and
//! `bulk.rs`, with the gateway-to-gateway hop carried by HTTP/2 CONNECT
//! streams over TLS/TCP instead of QUIC.

use std::time::Duration;

use anyhow::{ensure, Result};
use multicluster_tests::config::PeerTransport;
use multicluster_tests::process::logs_on_error;
use multicluster_tests::standard::{Parts, Standard, StandardBuilder, A, B, WEB};
use multicluster_tests::tools::curl;

const BODY: &str = "hello from nginx in cluster-b, over tcp+tls\n";

/// Generous for debug builds on 2 cores.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// The standard topology with every peer reached over `tcp-tls`.
fn start(test: &str) -> Result<Standard> {
    let mut b = StandardBuilder::new(test, Parts::WEB)?;
    b.topology.tuning.peer_transport = Some(PeerTransport::TcpTls);
    b.start()
}

/// Fails unless A's gateway connected to B's gateway at B's `tcp_listen`:
/// the peer's QUIC address is in the config too, so this tells the
/// transports apart.
fn assert_peer_over_tcp(s: &Standard) -> Result<()> {
    let t = s.mesh.topology();
    let tcp = t.gateway_tcp_listen(B)?;
    let config = std::fs::read_to_string(t.config_path(A, "gateway"))?;
    ensure!(config.contains("transport: tcp-tls"), "{config}");
    let log = std::fs::read_to_string(t.log_path(A, "gateway"))?;
    ensure!(
        log.lines()
            .any(|l| l.contains("connected to peer gateway") && l.contains(&tcp.to_string())),
        "A's gateway never connected to {tcp}; log:\n{log}"
    );
    Ok(())
}

#[test]
fn curl_in_a_gets_nginx_in_b_with_the_exact_body_over_tcp_tls() -> Result<()> {
    logs_on_error(|| {
        let mut s = start("baseline-curl")?;
        std::fs::write(s.nginx()?.root().join("hello.txt"), BODY)?;
        for i in 0..3 {
            let r = curl(&[&s.url(WEB, "/hello.txt")?], Duration::from_secs(10))?;
            ensure!(
                r.out.success(),
                "request {i}: curl failed: {}",
                r.out.stderr
            );
            ensure!(
                r.status == 200,
                "request {i}: status {} (headers {:?})",
                r.status,
                r.headers
            );
            ensure!(
                r.body_text() == BODY,
                "request {i}: body {:?}",
                r.body_text()
            );
        }
        // A missing file is nginx's 404, carried back unchanged.
        let r = curl(&[&s.url(WEB, "/nope.txt")?], Duration::from_secs(10))?;
        ensure!(r.status == 404, "status {} for a missing file", r.status);
        assert_peer_over_tcp(&s)?;
        s.mesh.assert_all_running()
    })
}

#[test]
fn a_64_mib_download_and_upload_cross_the_tcp_tls_tunnel_intact() -> Result<()> {
    logs_on_error(|| {
        let mut s = start("baseline-bulk")?;
        let t = s.bulk_round_trip(64 << 20, TRANSFER_TIMEOUT)?;
        eprintln!("{}", t.summary("tcp+tls"));
        assert_peer_over_tcp(&s)?;
        s.mesh.assert_all_running()
    })
}

//! The TCP+TLS baseline transport between gateways: sidecar → gateway A
//! ══TLS/TCP, HTTP/2 CONNECT══ gateway B → TCP server. A's QUIC address
//! for B is a dead port in these pairs, so only the TCP+TLS path can carry
//! a stream.

mod common;

use std::time::Duration;

use common::*;
use mesh_gateway::metrics::Metrics;
use mesh_gateway::route::HopIdentity;
use mesh_gateway::tcp_tls::client::H2Connection;
use mesh_gateway::tcp_tls::{self, H2Settings};
use tokio::sync::watch;
use tunnel_proto::{code, OpenerEvent, RejectReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_crosses_both_ways_and_half_closes_are_honoured() -> anyhow::Result<()> {
    let p = Pair::tcp_tls().await;
    assert!(p.gw_b.tcp_addr().is_some());
    let sc = p.sidecar().await;
    let (ev, mut send, mut recv) = sc.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");

    // Bytes flow both ways before any FIN.
    send.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    recv.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");

    // 1 MiB, then FIN: the echo server half-closes back only after the FIN
    // crossed both gateways (END_STREAM on the CONNECT stream).
    let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    send.write_all(&payload).await?;
    send.finish()?;
    let back = read_to_end(&mut recv).await?;
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");

    // One direction closed while the other still flows: the server answers
    // only after it read our FIN, and its answer then ends with its FIN.
    let counter = counting_server().await;
    let id = p.b.workload_id("echo");
    let extra = extra_export("count", counter, &id);
    // Same `tcp_listen` as at start (restart-only), new export.
    let yaml = with_tcp_listen(&b_yaml(&p.b, &p.a, &p.c, p.echo, p.dead, &extra));
    p.gw_b.reload(p.b.config(&yaml))?;
    let (ev, mut send, mut recv) = sc
        .open(&header("cluster-b", "default/count", 8080, &id))
        .await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(&payload[..300_000]).await?;
    send.finish()?;
    assert_eq!(read_to_end(&mut recv).await?, b"300000 bytes");

    let a = http_get(p.gw_a.admin_addr(), "/metrics").await?.1;
    assert!(
        a.contains(r#"isthmus_gateway_streams_total{direction="outbound",result="accepted"} 2"#),
        "{a}"
    );
    assert!(
        a.contains(r#"isthmus_gateway_peer_connections{peer="cluster-b"} 1"#),
        "{a}"
    );
    let b = http_get(p.gw_b.admin_addr(), "/metrics").await?.1;
    assert!(
        b.contains(r#"isthmus_gateway_streams_total{direction="inbound",result="accepted"} 2"#),
        "{b}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_come_back_through_the_connect_stream() -> anyhow::Result<()> {
    let p = Pair::tcp_tls().await;
    let sc = p.sidecar().await;
    let echo_id = p.b.workload_id("echo");
    assert_rejected(
        &sc,
        "cluster-b",
        "default/nope",
        8080,
        &echo_id,
        RejectReason::UnknownService,
    )
    .await?;
    assert_rejected(
        &sc,
        "cluster-b",
        "default/private",
        8080,
        &echo_id,
        RejectReason::NotExported,
    )
    .await?;
    assert_rejected(
        &sc,
        "cluster-b",
        "default/down",
        8080,
        &echo_id,
        RejectReason::NoHealthyEndpoint,
    )
    .await?;
    // The connection survives rejects: the next stream is accepted.
    let (ev, mut send, mut recv) = sc.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"after rejects").await?;
    send.finish()?;
    assert_eq!(read_to_end(&mut recv).await?, b"after rejects");

    let b = http_get(p.gw_b.admin_addr(), "/metrics").await?.1;
    assert!(
        b.contains(r#"isthmus_gateway_stream_rejects_total{reason="unknown_service"} 1"#),
        "{b}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_propagate_as_rst_stream() -> anyhow::Result<()> {
    let p = Pair::tcp_tls().await;
    let id = p.b.workload_id("echo");
    let rst = rst_server().await;
    let (watch_addr, mut ends) = watching_server().await;
    let extra = extra_export("rst", rst, &id) + &extra_export("watch", watch_addr, &id);
    let yaml = with_tcp_listen(&b_yaml(&p.b, &p.a, &p.c, p.echo, p.dead, &extra));
    p.gw_b.reload(p.b.config(&yaml))?;
    let sc = p.sidecar().await;

    // The endpoint aborts: the sidecar sees a reset with the peer-reset
    // code, carried over the TCP hop as RST_STREAM(CONNECT_ERROR).
    let (ev, mut send, mut recv) = sc
        .open(&header("cluster-b", "default/rst", 8080, &id))
        .await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"x").await?;
    let mut b = [0u8; 8];
    match tokio::time::timeout(Duration::from_secs(10), recv.read(&mut b)).await? {
        Err(quinn::ReadError::Reset(c)) => assert_eq!(c.into_inner(), u64::from(code::PEER_RESET)),
        other => panic!("expected a reset, got {other:?}"),
    }

    // The sidecar aborts: the endpoint sees a TCP reset, not EOF.
    let (ev, mut send, _recv) = sc
        .open(&header("cluster-b", "default/watch", 8080, &id))
        .await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"hello").await?;
    send.reset(quinn::VarInt::from_u32(code::CANCELLED))?;
    let end = tokio::time::timeout(Duration::from_secs(10), ends.recv()).await?;
    assert_eq!(end, Some(std::io::ErrorKind::ConnectionReset));

    // And a FIN stays a FIN.
    let (ev, mut send, _recv) = sc
        .open(&header("cluster-b", "default/watch", 8080, &id))
        .await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"hello").await?;
    send.finish()?;
    let end = tokio::time::timeout(Duration::from_secs(10), ends.recv()).await?;
    assert_eq!(end, Some(std::io::ErrorKind::UnexpectedEof));
    Ok(())
}

/// Dials `gw`'s `tcp_listen` as `id` of `cluster`, trusting `trusted`, and
/// asserts that no tunnel stream can be had on it.
async fn assert_refused(
    p: &Pair,
    cluster: &Cluster,
    id: &str,
    trusted: &[&Cluster],
) -> anyhow::Result<()> {
    let gw = &p.gw_b;
    let before = gw.metrics().handshake_failures();
    let tls = tcp_tls::tls::client_config(
        cluster.svid(id),
        store(trusted),
        &HopIdentity::MemberOf(trust_bundle::TrustDomain::parse(&p.b.td())?),
    )?;
    let settings = H2Settings::new(&gw.config().quic);
    let (_stop, shutdown) = watch::channel(false);
    let timeout = Duration::from_secs(5);
    let tcp = gw.tcp_addr().unwrap();
    let dialled = H2Connection::dial(
        tcp,
        tls,
        settings,
        None,
        timeout,
        &Metrics::default(),
        shutdown,
    )
    .await;
    if let Ok(conn) = dialled {
        // TLS 1.3: the client may finish before the server refuses its
        // certificate; the connection must then end without a stream.
        if let Ok((mut w, mut r)) = conn.open_stream(timeout).await {
            let ev = mesh_gateway::handshake::open(&mut w, &mut r, &p.echo_header(), timeout).await;
            assert!(matches!(ev, OpenerEvent::Failed(_)), "{ev:?}");
        }
        tokio::time::timeout(Duration::from_secs(10), conn.closed()).await?;
    }
    eventually("the refused handshake is counted", || async {
        gw.metrics().handshake_failures() > before
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinked_trust_domains_and_sidecars_fail_the_tls_handshake() -> anyhow::Result<()> {
    let p = Pair::tcp_tls().await;
    let dir = tempfile::tempdir()?;
    let x = Cluster::new(dir.path(), "cluster-x");
    // A gateway of an unlinked cluster, trusting B: B must refuse it.
    assert_refused(&p, &x, &x.gateway_id(), &[&x, &p.b]).await?;
    // A workload of B's own cluster: sidecars use QUIC, not this listener.
    assert_refused(&p, &p.b, &p.b.workload_id("frontend"), &[&p.b]).await?;
    // The linked peer still gets through.
    let sc = p.sidecar().await;
    let (ev, mut send, mut recv) = sc.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"linked").await?;
    send.finish()?;
    assert_eq!(read_to_end(&mut recv).await?, b"linked");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_switches_a_peer_between_transports() -> anyhow::Result<()> {
    let p = Pair::tcp_tls().await;
    let sc = p.sidecar().await;
    let hdr = p.echo_header();
    let accepted =
        || async { matches!(sc.open(&hdr).await, Ok((OpenerEvent::Accepted { .. }, ..))) };
    let peer_unavailable = || async {
        matches!(
            sc.open(&hdr).await,
            Ok((
                OpenerEvent::Rejected {
                    reason: RejectReason::PeerUnavailable,
                    ..
                },
                ..
            ))
        )
    };
    assert!(accepted().await);
    let tcp = p.gw_b.tcp_addr().unwrap();
    let quic_dead = "127.0.0.1:9".parse()?;

    // A dead tcp_address: the peer is unavailable (so streams did use it).
    let dead = closed_port().await;
    p.gw_a
        .reload(p.a.config(&over_tcp_tls(&a_yaml(&p.a, &p.b, quic_dead, 5000), dead)))?;
    eventually(
        "tcp-tls to a dead port is peer unavailable",
        peer_unavailable,
    )
    .await?;

    // Back to QUIC, at B's real UDP address.
    p.gw_a
        .reload(p.a.config(&a_yaml(&p.a, &p.b, p.gw_b.quic_addr(), 5000)))?;
    eventually("quic carries the stream", accepted).await?;

    // And to tcp-tls again, at the live listener.
    p.gw_a
        .reload(p.a.config(&over_tcp_tls(&a_yaml(&p.a, &p.b, quic_dead, 5000), tcp)))?;
    eventually("tcp-tls carries the stream", accepted).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listen_is_restart_only() -> anyhow::Result<()> {
    let p = Pair::tcp_tls().await;
    let yaml = with_tcp_listen(&b_yaml(&p.b, &p.a, &p.c, p.echo, p.dead, ""))
        .replace("tcp_listen: 127.0.0.1:0", "tcp_listen: 127.0.0.1:1");
    let err = p.gw_b.reload(p.b.config(&yaml)).unwrap_err();
    assert!(
        matches!(
            err,
            mesh_gateway::ReloadError::RestartRequired { key: "tcp_listen" }
        ),
        "{err}"
    );
    Ok(())
}

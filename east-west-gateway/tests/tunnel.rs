//! Tunnel streams end to end: sidecar → gateway A ══QUIC══ gateway B → TCP
//! echo server, and every reject reason on the way.

mod common;

use common::*;
use tunnel_proto::code;
use tunnel_proto::{OpenerEvent, RejectReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_round_trip_and_fin_propagates() -> anyhow::Result<()> {
    let p = Pair::new().await;
    let sc = p.sidecar().await;
    let (ev, mut send, mut recv) = sc.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");

    // A first exchange proves bytes flow both ways before any FIN.
    send.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    recv.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"ping");

    // 1 MiB, then FIN: the echo server sees the FIN only if it propagates
    // through both gateways, and only then half-closes back.
    let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    send.write_all(&payload).await?;
    send.finish()?;
    let back = read_to_end(&mut recv).await?;
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");

    let metrics = http_get(p.gw_a.admin_addr(), "/metrics").await?.1;
    assert!(
        metrics
            .contains(r#"isthmus_gateway_streams_total{direction="outbound",result="accepted"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"isthmus_gateway_peer_connections{peer="cluster-b"} 1"#),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_exported_unknown_service_and_no_healthy_endpoint_are_rejected() -> anyhow::Result<()> {
    let p = Pair::new().await;
    let sc = p.sidecar().await;
    let echo_id = p.b.workload_id("echo");

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
        "default/nope",
        8080,
        &echo_id,
        RejectReason::UnknownService,
    )
    .await?;

    // Same service, other port: no such export either.
    assert_rejected(
        &sc,
        "cluster-b",
        "default/echo",
        9090,
        &echo_id,
        RejectReason::UnknownService,
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

    // An expected identity no endpoint has.
    let other = p.b.workload_id("other");
    assert_rejected(
        &sc,
        "cluster-b",
        "default/echo",
        8080,
        &other,
        RejectReason::NoHealthyEndpoint,
    )
    .await?;

    let (ev, ..) = sc
        .open(&header(
            "cluster-z",
            "default/echo",
            8080,
            "spiffe://cluster-z.mesh/x",
        ))
        .await?;
    assert_eq!(rejected(&ev), Some(RejectReason::UnknownCluster), "{ev:?}");

    let metrics = http_get(p.gw_b.admin_addr(), "/metrics").await?.1;
    assert!(
        metrics.contains(r#"isthmus_gateway_stream_rejects_total{reason="not_exported"} 1"#),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peer_is_peer_unavailable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let a = Cluster::new(dir.path(), "cluster-a");
    let b = Cluster::new(dir.path(), "cluster-b");
    a.write_bundles(&[&a, &b]);
    // B's gateway address has nothing listening.
    let gw_a = start(a.config(&a_yaml(&a, &b, "127.0.0.1:9".parse()?, 1000))).await;
    let sc = Sidecar::connect(&a, &[&a], gw_a.quic_addr()).await?;
    let (ev, ..) = sc
        .open(&header(
            "cluster-b",
            "default/echo",
            8080,
            &b.workload_id("echo"),
        ))
        .await?;
    assert_eq!(rejected(&ev), Some(RejectReason::PeerUnavailable), "{ev:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinked_trust_domain_is_refused_at_the_handshake() -> anyhow::Result<()> {
    let p = Pair::new().await;
    let dir = tempfile::tempdir()?;
    let x = Cluster::new(dir.path(), "cluster-x");
    let before = p.gw_a.metrics().handshake_failures();
    // A gateway of an unlinked cluster, trusting A: A must still refuse it.
    let attempt = Sidecar::connect_as(
        &x,
        &x.gateway_id(),
        &[&p.a, &x],
        p.gw_a.quic_addr(),
        trust_bundle::Authorizer::Any,
    )
    .await;
    if let Ok(sc) = attempt {
        // TLS 1.3: the client may finish before the server rejects its
        // certificate; the connection must then be closed.
        let err = sc.conn.closed().await;
        assert!(
            !matches!(err, quinn::ConnectionError::LocallyClosed),
            "{err:?}"
        );
        assert!(sc.open(&p.echo_header()).await.is_err());
    }
    let gw = &p.gw_a;
    eventually("handshake failure counted", || async {
        gw.metrics().handshake_failures() > before
    })
    .await?;
    // A keeps serving its own sidecars.
    let sc = p.sidecar().await;
    let (ev, ..) = sc.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_use_us_as_a_transit() -> anyhow::Result<()> {
    // A's sidecar asks B's gateway directly (as if it were B's peer) for a
    // cluster other than B: B refuses UnknownCluster. Here the "peer" is a
    // client with A's gateway identity.
    let p = Pair::new().await;
    let peer = Sidecar::connect_as(
        &p.a,
        &p.a.gateway_id(),
        &[&p.b],
        p.gw_b.quic_addr(),
        trust_bundle::Authorizer::Any,
    )
    .await?;
    let (ev, ..) = peer
        .open(&header(
            "cluster-c",
            "default/echo",
            8080,
            &p.c.workload_id("echo"),
        ))
        .await?;
    assert_eq!(rejected(&ev), Some(RejectReason::UnknownCluster), "{ev:?}");
    // And the same client reaches B's echo as a peer.
    let (ev, mut send, mut recv) = peer.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"direct").await?;
    send.finish()?;
    assert_eq!(read_to_end(&mut recv).await?, b"direct");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_named_by_dns_is_resolved() -> anyhow::Result<()> {
    let p = Pair::new().await;
    // A second gateway for cluster A whose peer B is `localhost:<port>`
    // (resolved by hickory from the hosts file).
    let port = p.gw_b.quic_addr().port();
    let yaml = a_yaml(&p.a, &p.b, p.gw_b.quic_addr(), 1000).replace(
        &format!("'{}'", p.gw_b.quic_addr()),
        &format!("'localhost:{port}'"),
    );
    assert!(yaml.contains("localhost:"), "{yaml}");
    let config = p.a.config(&yaml);
    assert!(matches!(
        config.peers["cluster-b"].addresses[..],
        [mesh_gateway::config::PeerAddress::Dns { .. }]
    ));
    let gw = start(config).await;
    let sc = Sidecar::connect(&p.a, &[&p.a], gw.quic_addr()).await?;
    let (ev, mut send, mut recv) = sc.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"by name").await?;
    send.finish()?;
    assert_eq!(read_to_end(&mut recv).await?, b"by name");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_propagate_both_ways() -> anyhow::Result<()> {
    let p = Pair::new().await;
    let id = p.b.workload_id("echo");
    let rst = rst_server().await;
    let (watch, mut ends) = watching_server().await;
    let extra = extra_export("rst", rst, &id) + &extra_export("watch", watch, &id);
    p.gw_b
        .reload(p.b.config(&b_yaml(&p.b, &p.a, &p.c, p.echo, p.dead, &extra)))?;
    let sc = p.sidecar().await;

    // The local endpoint aborts: the sidecar sees a reset, not a FIN.
    let (ev, mut send, mut recv) = sc
        .open(&header("cluster-b", "default/rst", 8080, &id))
        .await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"x").await?;
    let mut b = [0u8; 8];
    match tokio::time::timeout(std::time::Duration::from_secs(10), recv.read(&mut b)).await? {
        Err(quinn::ReadError::Reset(c)) => assert_eq!(c.into_inner(), u64::from(code::PEER_RESET)),
        other => panic!("expected a reset, got {other:?}"),
    }

    // The sidecar aborts: the local endpoint sees a TCP reset, not EOF.
    let (ev, mut send, _recv) = sc
        .open(&header("cluster-b", "default/watch", 8080, &id))
        .await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"hello").await?;
    send.reset(quinn::VarInt::from_u32(code::CANCELLED))?;
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), ends.recv()).await?;
    assert_eq!(end, Some(std::io::ErrorKind::ConnectionReset));

    // And a FIN stays a FIN.
    let (ev, mut send, _recv) = sc
        .open(&header("cluster-b", "default/watch", 8080, &id))
        .await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"hello").await?;
    send.finish()?;
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), ends.recv()).await?;
    assert_eq!(end, Some(std::io::ErrorKind::UnexpectedEof));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_reconnects_when_the_peer_comes_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let a = Cluster::new(dir.path(), "cluster-a");
    let b = Cluster::new(dir.path(), "cluster-b");
    let c = Cluster::new(dir.path(), "cluster-c");
    a.write_bundles(&[&a, &b]);
    b.write_bundles(&[&a, &b]);
    // Reserve a UDP port for B, then free it: A dials it before B exists.
    let b_addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let gw_a = start(a.config(&a_yaml(&a, &b, b_addr, 1000))).await;
    let sc = Sidecar::connect(&a, &[&a], gw_a.quic_addr()).await?;
    let echo = echo_server().await;
    let hdr = header("cluster-b", "default/echo", 8080, &b.workload_id("echo"));
    let (ev, ..) = sc.open(&hdr).await?;
    assert!(
        matches!(
            ev,
            OpenerEvent::Rejected {
                reason: RejectReason::PeerUnavailable,
                ..
            }
        ),
        "{ev:?}"
    );

    let yaml = b_yaml(&b, &a, &c, echo, closed_port().await, "")
        .replace("listen: 127.0.0.1:0", &format!("listen: {b_addr}"));
    let _gw_b = start(b.config(&yaml)).await;
    // Backoff is capped at 500 ms in A's config: it reconnects by itself.
    eventually("A reconnects to B and routes the stream", || async {
        matches!(sc.open(&hdr).await, Ok((OpenerEvent::Accepted { .. }, ..)))
    })
    .await?;
    let m = http_get(gw_a.admin_addr(), "/metrics").await?.1;
    assert!(
        m.contains(r#"isthmus_gateway_peer_connections{peer="cluster-b"} 1"#),
        "{m}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_limit_are_rejected_as_overloaded() -> anyhow::Result<()> {
    let p = Pair::new().await;
    let limited = a_yaml(&p.a, &p.b, p.gw_b.quic_addr(), 5000).replace(
        "idle_timeout_ms: 5000 }",
        "idle_timeout_ms: 5000, max_streams_in_flight: 1 }",
    );
    p.gw_a.reload(p.a.config(&limited))?;
    let sc = p.sidecar().await;

    // The first stream is accepted and stays open: the gateway is full.
    let (ev, mut send, mut recv) = sc.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    let (ev, ..) = sc.open(&p.echo_header()).await?;
    assert_eq!(rejected(&ev), Some(RejectReason::Overloaded), "{ev:?}");

    // Once it ends, streams are admitted again.
    send.finish()?;
    read_to_end(&mut recv).await?;
    eventually("the first stream leaves the in-flight count", || async {
        p.gw_a.streams_in_flight() == 0
    })
    .await?;
    let (ev, ..) = sc.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    Ok(())
}

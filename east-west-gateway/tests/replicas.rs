//! Gateway replicas: cluster B runs two gateways, A's gateway lists both
//! (`peers[].addresses`). Each replica sits behind a UDP relay that can be
//! cut, which is what a SIGKILLed replica looks like from A: not one packet
//! more. Streams spread over both; when one goes silent new streams still
//! succeed (the OPEN goes to the other replica after `peer_open_ms`), the
//! streams relayed over the dead one are reset at once (not after the idle
//! timeout), and with every replica down streams are rejected at once.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tunnel_proto::{OpenerEvent, RejectReason};

/// `peer_open_ms` in A's config.
const PEER_OPEN_MS: u64 = 300;

/// A UDP relay in front of one replica; `cut` drops every datagram both
/// ways.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relay {
    async fn to(target: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(target).await.unwrap();
        let addr = front.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let up = {
            let (front, back, cut, client) =
                (front.clone(), back.clone(), cut.clone(), client.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().unwrap() = Some(from);
                    if !cut.load(Ordering::SeqCst) {
                        let _ = back.send(&buf[..n]).await;
                    }
                }
            })
        };
        let down = {
            let cut = cut.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                loop {
                    // An ICMP error on the connected socket is not fatal.
                    let Ok(n) = back.recv(&mut buf).await else {
                        continue;
                    };
                    let to = *client.lock().unwrap();
                    if let (Some(to), false) = (to, cut.load(Ordering::SeqCst)) {
                        let _ = front.send_to(&buf[..n], to).await;
                    }
                }
            })
        };
        Relay {
            addr,
            cut,
            tasks: vec![up, down],
        }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn metric(admin: SocketAddr, line: &str) -> bool {
    http_get(admin, "/metrics")
        .await
        .is_ok_and(|(_, m)| m.contains(line))
}

async fn inbound_accepted(admin: SocketAddr) -> u64 {
    let m = http_get(admin, "/metrics").await.unwrap().1;
    m.lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"isthmus_gateway_streams_total{direction="inbound",result="accepted"} "#,
            )
        })
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Sends `msg` and reads it back within 2 s; `Err` if the stream failed.
async fn echo(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    msg: &[u8],
) -> anyhow::Result<()> {
    send.write_all(msg).await?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(2), recv.read_exact(&mut back)).await??;
    anyhow::ensure!(back == msg, "echoed bytes differ");
    Ok(())
}

/// B's two replicas behind relays, A's gateway listing both, a sidecar.
struct Fixture {
    _dir: tempfile::TempDir,
    b1: mesh_gateway::Gateway,
    b2: mesh_gateway::Gateway,
    r1: Relay,
    r2: Relay,
    gw_a: mesh_gateway::Gateway,
    sc: Sidecar,
    header: tunnel_proto::OpenHeader,
}

async fn fixture() -> anyhow::Result<Fixture> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let a = Cluster::new(dir.path(), "cluster-a");
    let b = Cluster::new(dir.path(), "cluster-b");
    let c = Cluster::new(dir.path(), "cluster-c");
    a.write_bundles(&[&a, &b]);
    b.write_bundles(&[&a, &b, &c]);
    let echo_addr = echo_server().await;
    let dead = closed_port().await;
    let yaml_b = b_yaml(&b, &a, &c, echo_addr, dead, "");
    let b1 = start(b.config(&yaml_b)).await;
    let b2 = start(b.config(&yaml_b)).await;
    let r1 = Relay::to(b1.quic_addr()).await;
    let r2 = Relay::to(b2.quic_addr()).await;
    let yaml_a = a_yaml(&a, &b, r1.addr, 5000)
        .replace(
            &format!("    address: '{}'\n", r1.addr),
            &format!("    addresses: ['{}', '{}']\n", r1.addr, r2.addr),
        )
        .replace(
            "drain_ms: 5000 }",
            &format!("drain_ms: 5000, peer_open_ms: {PEER_OPEN_MS} }}"),
        );
    assert!(yaml_a.contains("addresses:"), "{yaml_a}");
    let gw_a = start(a.config(&yaml_a)).await;
    eventually("both replicas connected", || {
        metric(
            gw_a.admin_addr(),
            r#"isthmus_gateway_peer_connections{peer="cluster-b"} 2"#,
        )
    })
    .await?;
    let sc = Sidecar::connect(&a, &[&a], gw_a.quic_addr()).await?;
    let header = header("cluster-b", "default/echo", 8080, &b.workload_id("echo"));
    Ok(Fixture {
        _dir: dir,
        b1,
        b2,
        r1,
        r2,
        gw_a,
        sc,
        header,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_survive_a_dead_replica_and_its_streams_are_reset_at_once() -> anyhow::Result<()> {
    let Fixture {
        _dir,
        b1,
        b2,
        r1,
        r2,
        gw_a,
        sc,
        header,
    } = fixture().await?;
    // Four streams, spread round robin: two on each replica.
    let mut old = Vec::new();
    for i in 0..4u8 {
        let (ev, mut send, mut recv) = sc.open(&header).await?;
        assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
        echo(&mut send, &mut recv, &[i; 8]).await?;
        old.push((send, recv));
    }
    assert_eq!(inbound_accepted(b1.admin_addr()).await, 2);
    assert_eq!(inbound_accepted(b2.admin_addr()).await, 2);

    // Replica 1 goes silent (a SIGKILL as seen from A).
    r1.set_cut(true);
    let cut_at = tokio::time::Instant::now();
    for i in 0..4u8 {
        let started = tokio::time::Instant::now();
        let (ev, mut send, mut recv) = sc.open(&header).await?;
        assert!(
            matches!(ev, OpenerEvent::Accepted { .. }),
            "new stream {i} after the kill: {ev:?}"
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(PEER_OPEN_MS + 700),
            "new stream {i} took {took:?}"
        );
        echo(&mut send, &mut recv, b"after the kill").await?;
    }
    assert_eq!(
        inbound_accepted(b2.admin_addr()).await,
        6,
        "every new stream went to the live replica"
    );

    // The old streams on replica 1 were reset when it was declared lost
    // (A's idle timeout is 5 s; this is well before); those on replica 2
    // still work.
    let mut reset = 0;
    for (send, recv) in &mut old {
        if echo(send, recv, &[b'x'; 4]).await.is_err() {
            reset += 1;
        }
    }
    let since_cut = cut_at.elapsed();
    assert_eq!(reset, 2, "the two streams relayed over the dead replica");
    assert!(
        since_cut < Duration::from_secs(4),
        "resets took {since_cut:?}, as long as an idle timeout"
    );

    // Every replica down: the first stream finds replica 2 silent too, the
    // next is rejected at once.
    r2.set_cut(true);
    let (ev, ..) = sc.open(&header).await?;
    assert_eq!(rejected(&ev), Some(RejectReason::PeerUnavailable), "{ev:?}");
    let started = tokio::time::Instant::now();
    let (ev, ..) = sc.open(&header).await?;
    assert_eq!(rejected(&ev), Some(RejectReason::PeerUnavailable), "{ev:?}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(PEER_OPEN_MS / 2),
        "all replicas down must reject at once, took {took:?}"
    );

    // Replica 1 comes back: the re-probe (backoff at most 500 ms here)
    // reconnects and streams flow again.
    r1.set_cut(false);
    eventually("replica 1 reconnected", || {
        metric(
            gw_a.admin_addr(),
            r#"isthmus_gateway_peer_connections{peer="cluster-b"} 1"#,
        )
    })
    .await?;
    let (ev, mut send, mut recv) = sc.open(&header).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    echo(&mut send, &mut recv, b"back").await?;
    let peers = http_get(gw_a.admin_addr(), "/peers").await?.1;
    assert!(peers.contains("\"replicas\""), "{peers}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_replica_is_declared_lost_without_new_streams() -> anyhow::Result<()> {
    let f = fixture().await?;
    let mut old = Vec::new();
    for i in 0..4u8 {
        let (ev, mut send, mut recv) = f.sc.open(&f.header).await?;
        assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
        echo(&mut send, &mut recv, &[i; 8]).await?;
        old.push((send, recv));
    }
    f.r1.set_cut(true);
    let cut = tokio::time::Instant::now();
    // Keep-alive 500 ms, peer_open 300 ms: silent for max(300, 2 × 500)
    // ms is lost; A's idle timeout (5 s) is far off.
    eventually("the silent replica's connection declared lost", || {
        metric(
            f.gw_a.admin_addr(),
            r#"isthmus_gateway_peer_connections{peer="cluster-b"} 1"#,
        )
    })
    .await?;
    let took = cut.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "declared lost after {took:?}"
    );
    let mut reset = 0;
    for (send, recv) in &mut old {
        if echo(send, recv, b"x").await.is_err() {
            reset += 1;
        }
    }
    assert_eq!(reset, 2, "the streams relayed over the silent replica");
    let _ = (&f.b1, &f.b2, &f.r2);
    Ok(())
}

//! Reload and drain: exports swap atomically while streams in flight keep
//! their config; drain lets an in-flight stream finish, refuses new work and
//! flips `/readyz`.

mod common;

use common::*;
use mesh_gateway::ReloadError;
use tunnel_proto::{code, OpenerEvent, RejectReason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_exports_atomically() -> anyhow::Result<()> {
    let p = Pair::new().await;
    let sc = p.sidecar().await;
    let new_id = p.b.workload_id("echo");
    let fresh = header("cluster-b", "default/fresh", 8080, &new_id);

    let (ev, ..) = sc.open(&fresh).await?;
    assert!(
        matches!(
            ev,
            OpenerEvent::Rejected {
                reason: RejectReason::UnknownService,
                ..
            }
        ),
        "{ev:?}"
    );

    // A stream in flight across the reload.
    let (ev, mut send, mut recv) = sc.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");

    // A bad file changes nothing.
    let old = p.gw_b.config();
    let bad = b_yaml(
        &p.b,
        &p.a,
        &p.c,
        p.echo,
        p.dead,
        "  - service: default/fresh\n    port: 8080\n    exported_to: [cluster-q]\n",
    );
    std::fs::write(p.b.dir.join("gateway.yaml"), &bad)?;
    assert!(mesh_gateway::Config::load(&p.b.dir.join("gateway.yaml")).is_err());
    assert_eq!(p.gw_b.config(), old);

    // A changed listen address is refused with a restart hint.
    let moved = b_yaml(&p.b, &p.a, &p.c, p.echo, p.dead, "")
        .replace("listen: 127.0.0.1:0", "listen: 127.0.0.1:1");
    let err = p.gw_b.reload(p.b.config(&moved)).unwrap_err();
    assert!(
        matches!(err, ReloadError::RestartRequired { key: "listen" }),
        "{err}"
    );
    assert!(err.to_string().contains("restart"), "{err}");

    // Good reload: `fresh` appears, `echo` is no longer exported to A.
    let extra = format!(
        "  - service: default/fresh\n    port: 8080\n    exported_to: [cluster-a]\n    endpoints:\n      - {{ address: '{}', spiffe_id: '{}' }}\n",
        p.echo, new_id
    );
    let next = b_yaml(&p.b, &p.a, &p.c, p.echo, p.dead, &extra).replacen(
        "exported_to: [cluster-a]",
        "exported_to: [cluster-c]",
        1,
    );
    p.gw_b.reload(p.b.config(&next))?;

    let (ev, mut s2, mut r2) = sc.open(&fresh).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    s2.write_all(b"new").await?;
    s2.finish()?;
    assert_eq!(read_to_end(&mut r2).await?, b"new");
    let (ev, ..) = sc.open(&p.echo_header()).await?;
    assert!(
        matches!(
            ev,
            OpenerEvent::Rejected {
                reason: RejectReason::NotExported,
                ..
            }
        ),
        "{ev:?}"
    );

    // The old stream still works on the config it started with.
    send.write_all(b"old").await?;
    send.finish()?;
    assert_eq!(read_to_end(&mut recv).await?, b"old");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_in_flight_streams_finish() -> anyhow::Result<()> {
    let p = Pair::with_drain(10_000).await;
    let sc = p.sidecar().await;
    let (ev, mut send, mut recv) = sc.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"before").await?;
    let mut buf = [0u8; 6];
    recv.read_exact(&mut buf).await?;

    let admin = p.gw_a.admin_addr();
    let Pair { gw_a, .. } = p;
    let in_flight = gw_a.streams_in_flight();
    assert_eq!(in_flight, 1);
    let drain = tokio::spawn(gw_a.drain());

    eventually("readyz turns 503", || async {
        http_get(admin, "/readyz")
            .await
            .map(|r| r.0 == 503)
            .unwrap_or(false)
    })
    .await?;

    // New streams on the existing connection are refused with DRAINING.
    let (mut s2, mut r2) = sc.conn.open_bi().await?;
    s2.write_all(&[1]).await?;
    let mut b = [0u8; 1];
    match r2.read(&mut b).await {
        Err(quinn::ReadError::Reset(c)) => assert_eq!(c.into_inner(), u64::from(code::DRAINING)),
        other => panic!("expected a DRAINING reset, got {other:?}"),
    }
    assert!(
        !drain.is_finished(),
        "drain must wait for the stream in flight"
    );

    // The in-flight stream still carries bytes, then finishes.
    send.write_all(b"during").await?;
    send.finish()?;
    assert_eq!(read_to_end(&mut recv).await?, b"during");

    let report = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await??;
    assert_eq!(report.abandoned, 0);
    let closed = sc.conn.closed().await;
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), u64::from(code::CLOSE_DRAINING))
        }
        other => panic!("expected CLOSE_DRAINING, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_gives_up_after_drain_ms() -> anyhow::Result<()> {
    let p = Pair::with_drain(300).await;
    let sc = p.sidecar().await;
    let (ev, _send, _recv) = sc.open(&p.echo_header()).await?;
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    let Pair { gw_a, .. } = p;
    let report = tokio::time::timeout(std::time::Duration::from_secs(10), gw_a.drain()).await?;
    assert_eq!(report.abandoned, 1);
    Ok(())
}

//! The tunnel client against a minimal in-test gateway: a quinn server
//! driving `tunnel_proto::Acceptor`.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trust_bundle::{Bundle, BundleMap, CertificateAuthority, SpiffeId, SvidRequest, TrustDomain};
use tunnel_proto::{Acceptor, AcceptorEvent};

use super::*;

const GW_ID: &str = "spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway";

struct Pki {
    ca: CertificateAuthority,
    store: BundleStore,
}

impl Pki {
    fn new() -> Pki {
        let td = TrustDomain::parse("cluster-a.mesh").unwrap();
        let ca =
            CertificateAuthority::self_signed(td, Duration::from_secs(3600), SystemTime::now())
                .unwrap();
        let mut map = BundleMap::default();
        map.insert(Bundle::with_x509_authorities(
            ca.trust_domain().clone(),
            [ca.trust_anchor().clone()],
        ));
        let store = BundleStore::from_map(&map);
        Pki { ca, store }
    }

    fn source(&self, id: &str) -> Arc<SvidSource> {
        let svid = self
            .ca
            .issue(
                &SvidRequest::new(SpiffeId::parse(id).unwrap()),
                SystemTime::now(),
            )
            .unwrap();
        SvidSource::new(svid, trust_bundle::crypto_provider()).unwrap()
    }
}

/// How the fake gateway answers.
#[derive(Clone, Copy)]
enum Mode {
    /// Accept `backend`, reject anything else with NotExported; echo.
    Normal,
    /// Never answer.
    Silent,
}

struct FakeGateway {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

fn fake_gateway(pki: &Pki, mode: Mode) -> FakeGateway {
    let tls = trust_bundle::tls::server_config(
        pki.source(GW_ID),
        pki.store.clone(),
        Authorizer::MemberOf(TrustDomain::parse("cluster-a.mesh").unwrap()),
        &[tunnel_proto::ALPN],
    )
    .unwrap();
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls)).unwrap();
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(quic)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(conn) = incoming.await else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                while let Ok((send, recv)) = conn.accept_bi().await {
                    tokio::spawn(serve_stream(send, recv, mode));
                }
            });
        }
    });
    FakeGateway { addr, connections }
}

async fn serve_stream(mut send: SendStream, mut recv: RecvStream, mode: Mode) {
    let mut acceptor = Acceptor::new(std::time::Instant::now(), Duration::from_secs(5));
    let mut buf = vec![0u8; 4096];
    let (header, early) = loop {
        if let Some(ev) = acceptor.poll_event() {
            match ev {
                AcceptorEvent::Header { header, early_data } => break (header, early_data),
                AcceptorEvent::Failed(_) => return,
            }
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => acceptor.handle_recv(&buf[..n], std::time::Instant::now()),
            _ => return,
        }
    };
    if let Mode::Silent = mode {
        std::future::pending::<()>().await;
    }
    if header.service != "backend" {
        acceptor.reject(RejectReason::NotExported, "not for you");
        if let Some(b) = acceptor.poll_transmit() {
            let _ = send.write_all(&b).await;
        }
        let _ = send.finish();
        return;
    }
    acceptor.accept();
    if let Some(b) = acceptor.poll_transmit() {
        send.write_all(&b).await.unwrap();
    }
    send.write_all(&early).await.unwrap();
    // Echo until FIN, then finish.
    while let Ok(Some(n)) = recv.read(&mut buf).await {
        if send.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

fn gateway(addr: SocketAddr, id: &str) -> Gateway {
    Gateway {
        address: addr,
        replicas: vec![addr],
        spiffe_id: SpiffeId::parse(id).unwrap(),
        keep_alive: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
    }
}

fn header(service: &str) -> OpenHeader {
    OpenHeader {
        target_cluster: "cluster-b".into(),
        namespace: "default".into(),
        service: service.into(),
        port: 8080,
        expected_identity: SpiffeId::parse("spiffe://cluster-b.mesh/ns/default/sa/backend")
            .unwrap(),
        traceparent: None,
        tracestate: None,
    }
}

fn client(pki: &Pki) -> TunnelClient {
    TunnelClient::new(
        pki.source("spiffe://cluster-a.mesh/ns/default/sa/frontend"),
        pki.store.clone(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )
}

#[tokio::test]
async fn accepted_streams_carry_bytes_and_half_close_on_one_connection() {
    let pki = Pki::new();
    let gw = fake_gateway(&pki, Mode::Normal);
    let c = client(&pki);
    let g = gateway(gw.addr, GW_ID);
    for round in 0..3 {
        let mut s = c
            .open(&g, &header("backend"), Duration::from_secs(5))
            .await
            .unwrap();
        let msg = format!("hello {round}");
        s.write_all(msg.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = String::new();
        s.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, msg, "echo, then EOF after our FIN");
    }
    assert_eq!(
        gw.connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );
}

#[tokio::test]
async fn a_reject_carries_the_reason_and_detail() {
    let pki = Pki::new();
    let gw = fake_gateway(&pki, Mode::Normal);
    let c = client(&pki);
    let err = c
        .open(
            &gateway(gw.addr, GW_ID),
            &header("secret"),
            Duration::from_secs(5),
        )
        .await
        .err()
        .unwrap();
    match err {
        OpenError::Rejected { reason, detail } => {
            assert_eq!(reason, RejectReason::NotExported);
            assert_eq!(detail, "not for you");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_silent_gateway_times_out() {
    let pki = Pki::new();
    let gw = fake_gateway(&pki, Mode::Silent);
    let c = client(&pki);
    let started = std::time::Instant::now();
    let err = c
        .open(
            &gateway(gw.addr, GW_ID),
            &header("backend"),
            Duration::from_millis(300),
        )
        .await
        .err()
        .unwrap();
    assert!(matches!(err, OpenError::TimedOut), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_gateway_with_another_identity_is_refused() {
    let pki = Pki::new();
    let gw = fake_gateway(&pki, Mode::Normal);
    let c = client(&pki);
    let err = c
        .open(
            &gateway(
                gw.addr,
                "spiffe://cluster-a.mesh/ns/isthmus-system/sa/impostor",
            ),
            &header("backend"),
            Duration::from_secs(5),
        )
        .await
        .err()
        .unwrap();
    assert!(matches!(err, OpenError::Connection(_)), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_gateway_fails_within_the_deadline() {
    let pki = Pki::new();
    let c = client(&pki);
    // A UDP port nobody listens on: the QUIC handshake never completes.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let err = c
        .open(
            &gateway(addr, GW_ID),
            &header("backend"),
            Duration::from_millis(300),
        )
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, OpenError::TimedOut | OpenError::Connection(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn streams_fail_over_between_gateway_replicas_and_skip_dead_ones() {
    let pki = Pki::new();
    let live = fake_gateway(&pki, Mode::Normal);
    // Bound but never answering: a dead replica.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let mut gw = gateway(live.addr, GW_ID);
    gw.replicas = vec![dead_addr, live.addr];
    let c = client(&pki);
    let started = std::time::Instant::now();
    for i in 0..4 {
        let s = c
            .open(&gw, &header("backend"), Duration::from_millis(300))
            .await;
        assert!(s.is_ok(), "open {i}: {:?}", s.err());
    }
    // At most one attempt paid the dead replica's connect deadline.
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(live.connections.load(Ordering::SeqCst), 1);

    // Every replica dead: the first open tries both, the next fails at
    // once while they cool down.
    let dead2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut all_dead = gateway(dead_addr, GW_ID);
    all_dead.replicas = vec![dead_addr, dead2.local_addr().unwrap()];
    let err = c
        .open(&all_dead, &header("backend"), Duration::from_millis(200))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, OpenError::TimedOut), "{err:?}");
    let started = std::time::Instant::now();
    let err = c
        .open(&all_dead, &header("backend"), Duration::from_millis(200))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, OpenError::Unavailable), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(50));
}

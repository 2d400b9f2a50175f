//! Hostile input: a dribbled header, a garbage header, random UDP datagrams
//! and slowloris on the admin port. The gateway resets or closes the
//! offender and keeps serving everyone else.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_proto::{code, OpenerEvent};

async fn expect_reset(recv: &mut quinn::RecvStream, want: u32) {
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(10), recv.read(&mut buf))
        .await
        .expect("the gateway answered within 10 s");
    match r {
        Err(quinn::ReadError::Reset(c)) => assert_eq!(c.into_inner(), u64::from(want)),
        other => panic!("expected a reset with code {want}, got {other:?}"),
    }
}

async fn still_serves(p: &Pair, sc: &Sidecar) {
    let (ev, mut send, mut recv) = sc.open(&p.echo_header()).await.unwrap();
    assert!(matches!(ev, OpenerEvent::Accepted { .. }), "{ev:?}");
    send.write_all(b"alive").await.unwrap();
    send.finish().unwrap();
    assert_eq!(read_to_end(&mut recv).await.unwrap(), b"alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbled_header_is_reset_at_the_header_deadline() {
    let p = Pair::new().await;
    let sc = p.sidecar().await;
    let (mut send, mut recv) = sc.conn.open_bi().await.unwrap();
    // Version and half a length, then nothing: the 500 ms header deadline.
    send.write_all(&[1, 0]).await.unwrap();
    expect_reset(&mut recv, code::HEADER_TIMEOUT).await;
    // Same connection, next stream: unaffected.
    still_serves(&p, &sc).await;
    let m = http_get(p.gw_a.admin_addr(), "/metrics").await.unwrap().1;
    assert!(
        m.contains(r#"isthmus_gateway_streams_total{direction="outbound",result="failed"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_header_is_reset_as_a_protocol_error() {
    let p = Pair::new().await;
    let sc = p.sidecar().await;
    let (mut send, mut recv) = sc.conn.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    expect_reset(&mut recv, code::PROTOCOL).await;

    // A FIN before a whole header: also a protocol error.
    let (mut send, mut recv) = sc.conn.open_bi().await.unwrap();
    send.write_all(&[1, 0, 10, 3]).await.unwrap();
    send.finish().unwrap();
    expect_reset(&mut recv, code::PROTOCOL).await;
    still_serves(&p, &sc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_udp_datagrams_change_nothing() {
    let p = Pair::new().await;
    let sc = p.sidecar().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [1usize, 20, 1200, 1350, 65_000] {
        let datagram: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        // Also one that looks like a QUIC long header (first bit set).
        let mut long = datagram.clone();
        long[0] |= 0xc0;
        let _ = sock.send_to(&datagram, p.gw_a.quic_addr()).await;
        let _ = sock.send_to(&long, p.gw_a.quic_addr()).await;
    }
    still_serves(&p, &sc).await;
    let (status, _) = http_get(p.gw_a.admin_addr(), "/healthz").await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_closes_slowloris_and_oversized_requests() {
    let p = Pair::new().await;
    let admin = p.gw_a.admin_addr();

    // Half a request head, then silence: closed at the header deadline
    // (the gateway's timeouts.header_ms, 500 ms here).
    let mut slow = tokio::net::TcpStream::connect(admin).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The read ends (EOF or reset) only if the server closes the
    // connection; the client never would.
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf))
        .await
        .expect("the admin server closed the slow connection within 5 s");
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "a partial head got an answer"
    );

    // A 64 KiB header: refused or closed, never served.
    let mut big = tokio::net::TcpStream::connect(admin).await.unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-junk: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = big.write_all(head.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), big.read_to_end(&mut out))
        .await
        .expect("closed within 10 s");
    let out = String::from_utf8_lossy(&out);
    assert!(!out.contains("200 OK"), "{out}");

    // Other clients are served throughout.
    assert_eq!(http_get(admin, "/healthz").await.unwrap().0, 200);
    assert_eq!(http_get(admin, "/readyz").await.unwrap().0, 200);
    assert_eq!(http_get(admin, "/nope").await.unwrap().0, 404);
}

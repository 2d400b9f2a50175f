//! Hostile clients: slowloris, oversized heads, random bytes and truncated
//! TLS on every listener. Each is closed (or answered with an error) within
//! its timeout, and other connections keep working.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use mesh_sidecar::Sidecar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT_MS: u64 = 300;

struct Pair {
    _pki: Pki,
    _front: Sidecar,
    _back: Sidecar,
    front_admin: SocketAddr,
    back_admin: SocketAddr,
    out: SocketAddr,
    inbound: SocketAddr,
}

async fn pair() -> Pair {
    let pki = Pki::new();
    let app = start_app("one").await;
    let [front_admin, back_admin, out, inbound] = std::array::from_fn(|_| free_addr());
    let timeouts = format!(
        "timeouts: {{ header_read_ms: {LIMIT_MS}, tls_handshake_ms: {LIMIT_MS} }}\nmax_header_bytes: 16384\n"
    );
    let back_yaml = format!(
        "cluster: cluster-a\n{}admin: \"{back_admin}\"\ninbound:\n\
  - {{ listen: \"{inbound}\", protocol: http, app: \"{}\", allow: [\"{}\"] }}\n{timeouts}",
        pki.identity_yaml("backend"),
        app.addr,
        id("frontend"),
    );
    let front_yaml = format!(
        "cluster: cluster-a\n{}admin: \"{front_admin}\"\noutbound:\n\
  - {{ listen: \"{out}\", service: default/backend, port: 8080, protocol: http }}\n\
services:\n  - {{ service: default/backend, port: 8080, endpoints: [{{ address: \"{inbound}\", spiffe_id: \"{}\" }}] }}\n{timeouts}",
        pki.identity_yaml("frontend"),
        id("backend"),
    );
    let (back, _) = start_sidecar(&pki, "backend", &back_yaml).await;
    let (front, _) = start_sidecar(&pki, "frontend", &front_yaml).await;
    Pair {
        _pki: pki,
        _front: front,
        _back: back,
        front_admin,
        back_admin,
        out,
        inbound,
    }
}

/// Writes `bytes`, then reads until the server closes; returns what was
/// read and how long the close took. Fails if the server keeps the
/// connection open for 5 s.
async fn until_closed(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{addr} kept a hostile connection open");
    (out, start.elapsed())
}

/// The pair still serves a normal request.
async fn still_serves(p: &Pair) {
    let (status, headers, _) = get(p.out, "/ok").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-app"], "one");
}

#[tokio::test]
async fn slowloris_on_http_listeners_is_closed_after_header_read_ms() {
    let p = pair().await;
    let limit = Duration::from_millis(LIMIT_MS);
    for addr in [p.out, p.front_admin] {
        // A partial head, then silence.
        let (_, took) = until_closed(addr, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
        assert!(
            took >= limit - Duration::from_millis(50),
            "{addr}: {took:?}"
        );
        // Nothing at all.
        let (out, took) = until_closed(addr, b"").await;
        assert!(
            took >= limit - Duration::from_millis(50),
            "{addr}: {took:?}"
        );
        assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 408"), "{addr}");
    }
    // Half an HTTP/2 preface on the outbound listener (which speaks h2 with
    // prior knowledge; the admin listener refuses it at once).
    let (_, took) = until_closed(p.out, b"PRI * HTTP/2.0\r\n").await;
    assert!(took >= limit - Duration::from_millis(50), "{took:?}");
    until_closed(p.front_admin, b"PRI * HTTP/2.0\r\n").await;
    still_serves(&p).await;
}

#[tokio::test]
async fn a_truncated_or_silent_tls_handshake_is_closed_after_tls_handshake_ms() {
    let p = pair().await;
    let limit = Duration::from_millis(LIMIT_MS);
    // A TLS record header promising a large ClientHello that never comes.
    let (_, took) = until_closed(p.inbound, &[0x16, 0x03, 0x01, 0x40, 0x00, 0x01]).await;
    assert!(took >= limit - Duration::from_millis(50), "{took:?}");
    let (_, took) = until_closed(p.inbound, b"").await;
    assert!(took >= limit - Duration::from_millis(50), "{took:?}");
    let text = metrics(p.back_admin).await;
    assert_eq!(
        metric_value(
            &text,
            "isthmus_sidecar_inbound_tls_handshakes_total{result=\"timeout\"}"
        ),
        2.0,
        "{text}"
    );
    still_serves(&p).await;
}

#[tokio::test]
async fn random_bytes_on_every_listener_are_refused_without_harm() {
    let p = pair().await;
    let mut junk = Vec::with_capacity(4096);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..4096 {
        // xorshift: deterministic noise.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk.push(x as u8);
    }
    for addr in [p.out, p.front_admin, p.inbound, p.back_admin] {
        let (out, _) = until_closed(addr, &junk).await;
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 4") || out.starts_with(&[0x15]),
            "{addr}: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(64)])
        );
    }
    let text = metrics(p.back_admin).await;
    assert!(
        metric_value(
            &text,
            "isthmus_sidecar_inbound_tls_handshakes_total{result=\"failed\"}"
        ) >= 1.0,
        "{text}"
    );
    still_serves(&p).await;
}

#[tokio::test]
async fn an_oversized_request_head_gets_431_or_a_close() {
    let p = pair().await;
    let big = "a".repeat(64 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    for addr in [p.out, p.front_admin] {
        let (out, _) = until_closed(addr, req.as_bytes()).await;
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 431"),
            "{addr}: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(64)])
        );
    }
    still_serves(&p).await;
}

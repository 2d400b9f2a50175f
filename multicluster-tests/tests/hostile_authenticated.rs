//! Hostile clients that hold a valid SVID: they get past TLS (inbound
//! sidecar listeners) or the QUIC handshake (gateway) and misbehave inside.
//! Complements `hostile.rs`, whose clients never finish a handshake.
//!
//! - inbound http (ALPN h2) as the allowed A frontend: an HTTP/2 preface
//!   sent one byte per 500 ms, and a 1 MiB header block in HEADERS +
//!   CONTINUATION frames: closed, reset or refused (never a 2xx) within 6 s;
//! - the gateway's QUIC port: a client whose SVID comes from a CA no one
//!   trusts, and a trusted client with a wrong ALPN, fail the handshake; a
//!   trusted sidecar identity that opens a stream and sends garbage, or
//!   drips its header one byte per 500 ms (gateway `header_ms` 2000), has
//!   the stream ended within 6 s.
//!
//! Meanwhile and afterwards, normal requests succeed and every process is
//! alive.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use multicluster_tests::config::{GatewayTimeouts, SidecarTimeouts};
use multicluster_tests::pki::ClusterPki;
use multicluster_tests::process::logs_on_error;
use multicluster_tests::standard::{Parts, Standard, StandardBuilder, A, B, FRONTEND_ID, WEB};
use multicluster_tests::tools::curl;
use rustls::{ClientConnection, StreamOwned};
use trust_bundle::tls::spiffe_server_name;

const BOUND: Duration = Duration::from_millis(6000);
const DRIP: Duration = Duration::from_millis(500);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn standard(test: &str) -> Result<Standard> {
    let mut b = StandardBuilder::new(test, Parts::WEB)?;
    b.topology.tuning.sidecar_timeouts = Some(SidecarTimeouts {
        header_read_ms: Some(2000),
        tls_handshake_ms: Some(2000),
        ..SidecarTimeouts::default()
    });
    b.topology.tuning.gateway_timeouts = Some(GatewayTimeouts {
        header_ms: Some(2000),
        ..GatewayTimeouts::default()
    });
    let s = b.start()?;
    std::fs::write(s.nginx()?.root().join("ok.txt"), "ok\n")?;
    Ok(s)
}

fn normal_request(s: &Standard) -> Result<()> {
    let r = curl(&[&s.url(WEB, "/ok.txt")?], Duration::from_secs(10))?;
    ensure!(
        r.status == 200 && r.body_text() == "ok\n",
        "normal request: {} {}",
        r.status,
        r.out.stderr
    );
    Ok(())
}

/// What the server did with a hostile HTTP/2 connection.
#[derive(Debug)]
enum H2Outcome {
    /// EOF or a TCP/TLS error.
    Closed,
    /// A GOAWAY frame.
    GoAway,
    /// RST_STREAM on our stream.
    Reset,
    /// A response HEADERS frame whose first HPACK byte is not a 2xx.
    Refused,
}

/// Opens mTLS to `addr` as the A frontend with ALPN h2.
fn h2_tls(s: &Standard, addr: SocketAddr) -> Result<StreamOwned<ClientConnection, TcpStream>> {
    let mesh = &s.mesh;
    let cfg = mesh.pki(A)?.client_tls(
        FRONTEND_ID,
        [mesh.pki(A)?.bundle(), mesh.pki(B)?.bundle()],
        &[b"h2"],
    )?;
    let conn = ClientConnection::new(Arc::new(cfg), spiffe_server_name())?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_nodelay(true)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .context("mTLS handshake as the A frontend")?;
    }
    ensure!(tls.conn.alpn_protocol() == Some(b"h2"), "no h2 ALPN");
    Ok(tls)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads frames until the server shows it refused us, or `BOUND` passes.
fn h2_outcome(
    tls: &mut StreamOwned<ClientConnection, TcpStream>,
    start: Instant,
) -> Result<H2Outcome> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, stream) = (
                buf[3],
                u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
            );
            let first = buf.get(9).copied();
            buf.drain(..9 + len);
            match (kind, stream) {
                (0x7, _) => return Ok(H2Outcome::GoAway),
                (0x3, 1) => return Ok(H2Outcome::Reset),
                (0x1, 1) => {
                    // HPACK static table 8..=10 are :status 200, 204, 206.
                    ensure!(
                        !matches!(first, Some(0x88..=0x8a)),
                        "the hostile request got a 2xx"
                    );
                    return Ok(H2Outcome::Refused);
                }
                _ => {}
            }
        }
        let left = BOUND.saturating_sub(start.elapsed());
        if left.is_zero() {
            bail!(
                "connection still open and unanswered after {:?}",
                start.elapsed()
            );
        }
        tls.sock.set_read_timeout(Some(left))?;
        match tls.read(&mut chunk) {
            Ok(0) => return Ok(H2Outcome::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ok(H2Outcome::Closed),
        }
    }
}

#[test]
fn authenticated_h2_slowloris_on_the_inbound_listener_is_closed() -> Result<()> {
    logs_on_error(|| {
        let mut s = standard("hostile-mtls-slow")?;
        let inbound = s.mesh.topology().inbound_addr(B, "web", WEB)?;
        // The connection preface, one byte per 500 ms (header_read_ms is 2000).
        let mut tls = h2_tls(&s, inbound)?;
        let start = Instant::now();
        tls.sock.set_read_timeout(Some(DRIP))?;
        let mut closed_after = None;
        let mut scratch = [0u8; 4096];
        for b in H2_PREFACE.iter().cycle() {
            if start.elapsed() > BOUND {
                break;
            }
            if tls.write_all(&[*b]).and_then(|()| tls.flush()).is_err() {
                closed_after = Some(start.elapsed());
                break;
            }
            match tls.read(&mut scratch) {
                Ok(0) => {
                    closed_after = Some(start.elapsed());
                    break;
                }
                Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    closed_after = Some(start.elapsed());
                    break;
                }
                _ => {}
            }
        }
        let took = closed_after
            .ok_or_else(|| anyhow!("authenticated h2 slowloris still open after {BOUND:?}"))?;
        eprintln!("authenticated h2 slowloris closed after {took:?}");
        normal_request(&s)?;
        s.mesh.assert_all_running()
    })
}

#[test]
fn authenticated_oversized_h2_header_block_on_the_inbound_listener_is_refused() -> Result<()> {
    logs_on_error(|| {
        let mut s = standard("hostile-mtls-big")?;
        let inbound = s.mesh.topology().inbound_addr(B, "web", WEB)?;
        // A 1 MiB header block: HEADERS without END_HEADERS, then CONTINUATIONs.
        let mut tls = h2_tls(&s, inbound)?;
        let start = Instant::now();
        let mut block = vec![0x00, 0x05];
        block.extend_from_slice(b"x-big");
        block.extend_from_slice(&[0x7f, 0x81, 0x80, 0x40]); // value length 2^20 (HPACK integer)
        block.resize(block.len() + (1 << 20), b'a');
        let mut wire = H2_PREFACE.to_vec();
        wire.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        let mut chunks = block.chunks(16_384).peekable();
        let first = chunks.next().unwrap_or_default();
        wire.extend(frame(0x1, 0x1, 1, first)); // HEADERS, END_STREAM
        while let Some(c) = chunks.next() {
            let end_headers = if chunks.peek().is_none() { 0x4 } else { 0 };
            wire.extend(frame(0x9, end_headers, 1, c)); // CONTINUATION
        }
        // The server may stop reading early: a write error is a fine outcome.
        let outcome = match tls.write_all(&wire).and_then(|()| tls.flush()) {
            Ok(()) => h2_outcome(&mut tls, start)?,
            Err(_) => H2Outcome::Closed,
        };
        eprintln!(
            "authenticated 1 MiB h2 header block: {outcome:?} after {:?}",
            start.elapsed()
        );
        ensure!(start.elapsed() <= BOUND, "took {:?}", start.elapsed());
        normal_request(&s)?;
        s.mesh.assert_all_running()
    })
}

/// A quinn client endpoint presenting `id` issued by `pki`, trusting `bundles`.
fn quic_client(
    pki: &ClusterPki,
    id: &str,
    bundles: Vec<trust_bundle::Bundle>,
    alpn: &[u8],
) -> Result<(quinn::Endpoint, quinn::ClientConfig)> {
    let tls = pki.client_tls(id, bundles, &[alpn])?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let cfg = quinn::ClientConfig::new(Arc::new(quic));
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    Ok((ep, cfg))
}

async fn connect(
    ep: &quinn::Endpoint,
    cfg: quinn::ClientConfig,
    addr: SocketAddr,
) -> Result<quinn::Connection> {
    let connecting = ep.connect_with(cfg, addr, "spiffe.invalid")?;
    Ok(tokio::time::timeout(BOUND, connecting)
        .await
        .context("QUIC handshake timed out")??)
}

/// Reads from `recv` until it ends (finish, reset, connection loss).
async fn stream_ends(mut recv: quinn::RecvStream) -> Result<String> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(BOUND, recv.read(&mut buf)).await {
            Err(_) => bail!("stream still open after {BOUND:?}"),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Ok("finished".into()),
            Ok(Err(e)) => return Ok(format!("{e}")),
        }
    }
}

#[test]
fn gateway_refuses_untrusted_and_misbehaving_quic_clients() -> Result<()> {
    logs_on_error(|| {
        let mut s = standard("hostile-quic")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let gw = s.mesh.topology().gateway_listen(A)?;
        let trusted = vec![s.mesh.pki(A)?.bundle(), s.mesh.pki(B)?.bundle()];
        let alpn = b"isthmus-tunnel/1";
        let dir = s.mesh.dir().join("rogue");
        let rogue = ClusterPki::create("cluster-a.mesh", &dir)?;

        rt.block_on(async {
            // An SVID for a real-looking ID from a CA nobody trusts.
            let (ep, cfg) = quic_client(
                &rogue,
                "spiffe://cluster-a.mesh/ns/default/sa/frontend",
                trusted.clone(),
                alpn,
            )?;
            let r = connect(&ep, cfg, gw).await;
            let refused = match r {
                Err(_) => true,
                // TLS 1.3: the server may reject the client certificate after
                // the client considers the handshake done; then the first use
                // fails.
                Ok(conn) => {
                    tokio::time::timeout(BOUND, async {
                        match conn.open_bi().await {
                            Ok((mut send, recv)) => {
                                let _ = send.write_all(b"x").await;
                                let _ = send.finish();
                                stream_ends(recv).await.is_ok()
                            }
                            Err(_) => true,
                        }
                    })
                    .await
                    .unwrap_or(false)
                        && conn.close_reason().is_some()
                }
            };
            ensure!(
                refused,
                "the gateway accepted a client certificate from an untrusted CA"
            );

            // A trusted identity with the wrong ALPN.
            let (ep, cfg) = quic_client(s.mesh.pki(A)?, FRONTEND_ID, trusted.clone(), b"h3")?;
            ensure!(
                connect(&ep, cfg, gw).await.is_err(),
                "the gateway accepted ALPN h3"
            );

            // A trusted sidecar identity: garbage instead of an OPEN header.
            let (ep, cfg) = quic_client(s.mesh.pki(A)?, FRONTEND_ID, trusted.clone(), alpn)?;
            let conn = connect(&ep, cfg, gw).await?;
            let (mut send, recv) = conn.open_bi().await?;
            let mut junk = vec![0x01, 0xff, 0xff];
            junk.resize(8192, 0xee);
            let start = Instant::now();
            let _ = send.write_all(&junk).await;
            let how = stream_ends(recv).await?;
            eprintln!(
                "garbage OPEN header: stream ended ({how}) after {:?}",
                start.elapsed()
            );

            // Slowloris header: one byte per 500 ms; header_ms is 2000.
            let (mut send, recv) = conn.open_bi().await?;
            let start = Instant::now();
            let drip = async {
                for b in [1u8, 0, 40, 9].iter().chain(std::iter::repeat(&b'c')) {
                    if send.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(DRIP).await;
                }
            };
            let how = tokio::select! {
                how = stream_ends(recv) => how?,
                () = drip => "send side stopped".to_owned(),
            };
            ensure!(
                start.elapsed() <= BOUND,
                "slow header stream lived {:?}",
                start.elapsed()
            );
            eprintln!(
                "slow OPEN header: stream ended ({how}) after {:?}",
                start.elapsed()
            );
            Ok(())
        })?;
        normal_request(&s)?;
        s.mesh.assert_all_running()
    })
}

//! Hostile clients on every listener: random bytes, a truncated TLS
//! ClientHello, an oversized (1 MiB) header and a slowloris (one header byte
//! per 500 ms). Each such connection must be closed within a bound while
//! normal requests through the same processes keep succeeding, and every
//! process is still alive afterwards. The gateways' QUIC ports get random
//! datagrams.
//!
//! Sidecars run with `header_read_ms` and `tls_handshake_ms` of 2000 ms,
//! gateways with `header_ms` 2000, PostgreSQL with `authentication_timeout`
//! 2 s. The opaque TCP outbound forwards bytes as they are, so there
//! "closed" means PostgreSQL (the far end) closed it and the close came back
//! through the mesh.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use multicluster_tests::config::{GatewayTimeouts, SidecarTimeouts};
use multicluster_tests::process::logs_on_error;
use multicluster_tests::ready::http_get;
use multicluster_tests::servers::psql_args;
use multicluster_tests::standard::{Parts, StandardBuilder, A, B, DB, WEB};
use multicluster_tests::tools::{curl, require, run, Tool};
use ring::rand::{SecureRandom, SystemRandom};

/// Guards are 2000 ms; the rest is slack for a loaded 2-core machine.
const CLOSE_BOUND: Duration = Duration::from_millis(6000);
/// Slowloris pace.
const DRIP: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
enum Attack {
    RandomBytes,
    TruncatedClientHello,
    OversizedHeader,
    Slowloris,
}

const ATTACKS: [Attack; 4] = [
    Attack::RandomBytes,
    Attack::TruncatedClientHello,
    Attack::OversizedHeader,
    Attack::Slowloris,
];

#[test]
fn hostile_clients_on_every_listener_are_closed_and_nothing_else_suffers() -> Result<()> {
    logs_on_error(|| {
        let psql = require(Tool::Psql)?;
        let mut builder = StandardBuilder::new(
            "hostile",
            Parts {
                web: true,
                db: true,
                secret: false,
            },
        )?;
        builder.topology.tuning.sidecar_timeouts = Some(SidecarTimeouts {
            header_read_ms: Some(2000),
            tls_handshake_ms: Some(2000),
            ..SidecarTimeouts::default()
        });
        builder.topology.tuning.gateway_timeouts = Some(GatewayTimeouts {
            header_ms: Some(2000),
            ..GatewayTimeouts::default()
        });
        let mut s = builder.start()?;
        std::fs::write(s.nginx()?.root().join("ok.txt"), "ok\n")?;
        let t = s.mesh.topology();
        let listeners: Vec<(&str, SocketAddr)> = vec![
            (
                "sidecar outbound http",
                t.outbound_addr(A, "frontend", WEB)?,
            ),
            (
                "sidecar outbound tcp (to PostgreSQL)",
                t.outbound_addr(A, "frontend", DB)?,
            ),
            ("sidecar inbound http", t.inbound_addr(B, "web", WEB)?),
            ("sidecar inbound tcp", t.inbound_addr(B, "db", DB)?),
            ("sidecar admin (frontend)", t.sidecar_admin(A, "frontend")?),
            ("sidecar admin (web)", t.sidecar_admin(B, "web")?),
            ("gateway admin (a)", t.gateway_admin(A)?),
            ("gateway admin (b)", t.gateway_admin(B)?),
        ];
        let quic = [t.gateway_listen(A)?, t.gateway_listen(B)?];
        let web_url = format!("http://{}/ok.txt", t.outbound_addr(A, "frontend", WEB)?);
        let db = t.outbound_addr(A, "frontend", DB)?;
        let admins = [
            t.sidecar_admin(A, "frontend")?,
            t.gateway_admin(A)?,
            t.gateway_admin(B)?,
        ];

        let probes: Vec<(String, JoinHandle<Result<Duration>>)> = listeners
            .iter()
            .flat_map(|(name, addr)| {
                ATTACKS.iter().map(move |attack| {
                    let addr = *addr;
                    let attack = *attack;
                    (
                        format!("{attack:?} on {name} {addr}"),
                        std::thread::spawn(move || probe(addr, attack)),
                    )
                })
            })
            .collect();
        for addr in quic {
            flood_udp(addr)?;
        }

        // Normal traffic through the same processes while the probes run.
        let normal = |round: &str| -> Result<()> {
            let r = curl(&[&web_url], Duration::from_secs(10))?;
            ensure!(
                r.status == 200 && r.body_text() == "ok\n",
                "{round}: web request: {} {}",
                r.status,
                r.out.stderr
            );
            let out = run(
                Command::new(&psql)
                    .args(psql_args(db))
                    .args(["-c", "select 7 * 6"]),
                None,
                Duration::from_secs(10),
            )?;
            ensure!(
                out.stdout_text().trim() == "42",
                "{round}: psql: {:?} {}",
                out.stdout_text(),
                out.stderr
            );
            for a in admins {
                let (status, _) = http_get(a, "/readyz", Duration::from_secs(5))?;
                ensure!(status == 200, "{round}: admin {a} /readyz: {status}");
            }
            Ok(())
        };
        normal("during the attacks")?;

        let mut failures = Vec::new();
        for (what, handle) in probes {
            match handle
                .join()
                .map_err(|_| anyhow!("probe thread panicked"))
                .and_then(|r| r)
            {
                Ok(took) => eprintln!("closed after {took:?}: {what}"),
                Err(e) => failures.push(format!("{what}: {e:#}")),
            }
        }
        normal("after the attacks")?;
        s.mesh.assert_all_running()?;
        if let Some(pg) = s.postgres.as_mut() {
            pg.process().assert_running()?;
        }
        ensure!(
            failures.is_empty(),
            "connections not closed in time:\n{}",
            failures.join("\n")
        );
        Ok(())
    })
}

/// Runs one attack; returns how long until the server closed the connection.
fn probe(addr: SocketAddr, attack: Attack) -> Result<Duration> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).context("connect")?;
    s.set_nodelay(true)?;
    let start = Instant::now();
    match attack {
        Attack::RandomBytes => {
            let mut junk = vec![0u8; 64 << 10];
            SystemRandom::new()
                .fill(&mut junk)
                .map_err(|_| anyhow!("rng"))?;
            // The server may close before reading it all.
            let _ = s.write_all(&junk);
        }
        Attack::TruncatedClientHello => {
            // A TLS 1.2 record header announcing a 512-byte handshake, a
            // ClientHello header, and then nothing more.
            let mut hello = vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ];
            hello.extend_from_slice(&[0x42; 32]);
            s.write_all(&hello)?;
        }
        Attack::OversizedHeader => {
            let mut req = b"GET /ok.txt HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
            req.resize(req.len() + (1 << 20), b'a');
            req.extend_from_slice(b"\r\n\r\n");
            let mut w = s.try_clone()?;
            std::thread::spawn(move || {
                let _ = w.write_all(&req);
            });
        }
        Attack::Slowloris => {
            let req = b"GET /ok.txt HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            s.set_read_timeout(Some(DRIP))?;
            let mut buf = [0u8; 4096];
            for byte in req.iter().chain(std::iter::repeat(&b'a')) {
                if start.elapsed() > CLOSE_BOUND {
                    bail!("still open after {:?} of slowloris", start.elapsed());
                }
                if s.write_all(&[*byte]).is_err() {
                    return Ok(start.elapsed());
                }
                match s.read(&mut buf) {
                    Ok(0) => return Ok(start.elapsed()),
                    Ok(_) => {} // e.g. a 408 before the close
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return Ok(start.elapsed()),
                }
            }
        }
    }
    wait_closed(&mut s, start)
}

/// Reads (and discards, e.g. an error response) until EOF or a reset.
fn wait_closed(s: &mut TcpStream, start: Instant) -> Result<Duration> {
    let mut buf = [0u8; 16 << 10];
    loop {
        let left = CLOSE_BOUND.saturating_sub(start.elapsed());
        if left.is_zero() {
            bail!("still open after {:?}", start.elapsed());
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ok(start.elapsed()),
        }
    }
}

/// 2000 random datagrams (1–1400 bytes), a fifth of them shaped like QUIC
/// v1 long-header Initial packets.
fn flood_udp(addr: SocketAddr) -> Result<()> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let rng = SystemRandom::new();
    let mut buf = [0u8; 1400];
    for i in 0..2000usize {
        rng.fill(&mut buf).map_err(|_| anyhow!("rng"))?;
        let len = 1 + usize::from(u16::from_be_bytes([buf[0], buf[1]])) % buf.len();
        if i % 5 == 0 {
            buf[0] = 0xc0;
            buf[1..5].copy_from_slice(&1u32.to_be_bytes());
            buf[5] = 8;
        }
        let _ = sock.send_to(&buf[..len.max(6)], addr);
    }
    Ok(())
}

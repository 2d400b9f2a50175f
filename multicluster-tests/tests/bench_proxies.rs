//! The benchmark's Envoy and HAProxy pairs (`bench::proxies`) carry each
//! path end to end, over mTLS between the two proxies: curl through the
//! client-side entries reaches nginx (HTTP/1.1 and h2c), an h2c-only nginx
//! (the gRPC path) and nginx again over the opaque TCP path; the server
//! side refuses a caller without a client certificate; with the server
//! side killed, requests fail.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use multicluster_tests::bench::proxies::{loopback_ips, Backends, ProxyKind, ProxyPair};
use multicluster_tests::net;
use multicluster_tests::process::{logs_on_error, Process};
use multicluster_tests::ready::{http_get, wait_tcp};
use multicluster_tests::servers::{nginx_conf_head, spawn_nginx, Nginx};
use multicluster_tests::tools::{curl, random_file};

/// Body of the h2c backend, so a response proves which backend answered.
const H2C_BODY: &str = "h2c backend\n";
const T: Duration = Duration::from_secs(10);

#[test]
fn envoy_pair_carries_http1_h2c_grpc_and_tcp_over_mtls() -> Result<()> {
    logs_on_error(|| pair_carries_every_path(ProxyKind::Envoy))
}

#[test]
fn haproxy_pair_carries_http1_h2c_grpc_and_tcp_over_mtls() -> Result<()> {
    logs_on_error(|| pair_carries_every_path(ProxyKind::Haproxy))
}

fn pair_carries_every_path(kind: ProxyKind) -> Result<()> {
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("isthmus-bench-proxies-{}-", kind.name()))
        .tempdir()?;
    if std::env::var("ISTHMUS_TEST_KEEP").is_ok_and(|v| v == "1") {
        dir.disable_cleanup(true);
    }
    let (client_ip, server_ip) = loopback_ips();
    let nginx = Nginx::start(dir.path(), net::tcp_addr(server_ip, 8080)?)?;
    let one_k = nginx.root().join("1k");
    random_file(&one_k, 1024)?;
    let want = fs::read(&one_k)?;
    let h2c = H2cNginx::start(
        dir.path(),
        net::tcp_addr(server_ip, 8081)?,
        net::tcp_addr(server_ip, 8082)?,
    )?;
    let backends = Backends {
        http: nginx.addr,
        grpc: h2c.addr,
        tcp: nginx.addr,
    };
    let mut pair = ProxyPair::start(
        kind,
        &dir.path().join(kind.name()),
        client_ip,
        server_ip,
        &backends,
        Some("0"),
    )?;
    let prefix = match kind {
        ProxyKind::Envoy => "envoy ",
        ProxyKind::Haproxy => "HAProxy ",
    };
    ensure!(pair.version().starts_with(prefix), "{:?}", pair.version());
    let pids = pair.pids();
    ensure!(
        pids[0] != 0 && pids[1] != 0 && pids[0] != pids[1],
        "{pids:?}"
    );
    for pid in pids {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        ensure!(
            status.contains("Cpus_allowed_list:\t0\n"),
            "pid {pid} is not pinned to CPU 0"
        );
    }
    let entry = *pair.entry();
    let out = dir.path().join("body");

    let r = get(&["--http1.1"], &format!("http://{}/1k", entry.http), &out)?;
    ensure!(r == (200, "1.1".into(), want.clone()), "HTTP/1.1: {r:?}");

    let r = get(
        &["--http2-prior-knowledge"],
        &format!("http://{}/1k", entry.http),
        &out,
    )?;
    ensure!(r == (200, "2".into(), want.clone()), "h2c: {r:?}");

    let grpc = [
        "--http2-prior-knowledge",
        "-X",
        "POST",
        "-H",
        "content-type: application/grpc",
        "--data-binary",
        "x",
    ];
    let r = get(&grpc, &format!("http://{}/svc/Method", entry.grpc), &out)?;
    ensure!(
        r == (200, "2".into(), H2C_BODY.as_bytes().to_vec()),
        "gRPC path: {r:?}"
    );

    let r = get(&["--http1.1"], &format!("http://{}/1k", entry.tcp), &out)?;
    ensure!(r == (200, "1.1".into(), want.clone()), "TCP path: {r:?}");

    // The server side speaks TLS and demands a client certificate.
    let peer = format!("https://{}/1k", pair.server_side().http);
    let r = curl(&["-k", "-o", "/dev/null", &peer], T)?;
    ensure!(
        r.status == 0 && !r.out.success(),
        "no client cert accepted: {r:?}"
    );
    let pair_dir = pair.dir().to_owned();
    let cert = pair_dir.join("client-cert.pem");
    let key = pair_dir.join("client-key.pem");
    let r = get(
        &[
            "-k",
            "--tlsv1.3",
            "--cert",
            path(&cert),
            "--key",
            path(&key),
        ],
        &peer,
        &out,
    )?;
    ensure!(r.0 == 200 && r.2 == want, "with the client SVID: {r:?}");
    if kind == ProxyKind::Envoy {
        envoy_checks_san_and_keeps_h2(&pair, &peer)?;
    }

    // Without the server side, the client side cannot answer.
    pair.server_mut().kill9()?;
    let r = curl(
        &[
            "--http1.1",
            "-o",
            "/dev/null",
            &format!("http://{}/1k", entry.http),
        ],
        T,
    )?;
    ensure!(
        r.status >= 500 || (r.status == 0 && !r.out.success()),
        "with the server side dead: {r:?}"
    );
    pair.client_mut().assert_running()?;
    Ok(())
}

/// Envoy refuses a CA-signed certificate with the wrong SPIFFE ID (the
/// server's own) and carried the h2c request as HTTP/2 between the
/// proxies (`use_downstream_protocol_config`).
fn envoy_checks_san_and_keeps_h2(pair: &ProxyPair, peer: &str) -> Result<()> {
    let cert = pair.dir().join("server-cert.pem");
    let key = pair.dir().join("server-key.pem");
    let r = curl(
        &[
            "-k",
            "--cert",
            path(&cert),
            "--key",
            path(&key),
            "-o",
            "/dev/null",
            peer,
        ],
        T,
    )?;
    ensure!(
        r.status == 0 && !r.out.success(),
        "the wrong SPIFFE ID was accepted: {r:?}"
    );
    let admin = pair.admin().context("Envoy has admin listeners")?;
    let (status, stats) = http_get(
        admin[0],
        "/stats?filter=^cluster\\.peer_http\\.upstream_cx_http[12]_total$",
        T,
    )?;
    ensure!(status == 200, "admin /stats: {status}");
    let count = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cluster.peer_http.{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    ensure!(
        count("upstream_cx_http1_total") >= 1 && count("upstream_cx_http2_total") >= 1,
        "want HTTP/1.1 and HTTP/2 connections to the peer: {stats}"
    );
    Ok(())
}

/// curl `args url` → (status, HTTP version, body bytes), the body through
/// the file `out`.
fn get(args: &[&str], url: &str, out: &Path) -> Result<(u16, String, Vec<u8>)> {
    let _ = fs::remove_file(out);
    let mut all = args.to_vec();
    all.extend(["-o", path(out), "-w", "%{http_version}", url]);
    let r = curl(&all, T)?;
    ensure!(r.out.success(), "curl {all:?}: {}", r.out.stderr);
    let body = fs::read(out).unwrap_or_default();
    Ok((r.status, r.out.stdout_text(), body))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// nginx speaking only h2c (prior knowledge) on `addr`, answering every
/// request 200 with [`H2C_BODY`]: the gRPC path's backend. It reads the
/// whole request body before answering (by proxying to a `return 200`
/// server of its own on `inner`): an h2 `return` before the body has
/// arrived resets the stream, which curl 7.88 reports as an error.
struct H2cNginx {
    addr: SocketAddr,
    _process: Process,
}

impl H2cNginx {
    fn start(dir: &Path, addr: SocketAddr, inner: SocketAddr) -> Result<Self> {
        let base: PathBuf = dir.join(format!("nginx-h2c-{}", addr.port()));
        fs::create_dir_all(base.join("tmp"))?;
        let head = nginx_conf_head(&base, 4096);
        let conf = format!(
            r#"{head}    access_log off;
    server {{
        listen {addr} http2;
        location / {{ proxy_pass http://{inner}; }}
    }}
    server {{
        listen {inner};
        location / {{ return 200 "{body}"; }}
    }}
}}
"#,
            body = H2C_BODY.escape_default()
        );
        let mut process =
            spawn_nginx("nginx-h2c", &base, &conf, None).context("starting the h2c nginx")?;
        wait_tcp(&mut process, addr)?;
        Ok(H2cNginx {
            addr,
            _process: process,
        })
    }
}

//! Smoke benchmark: requests/s and p50/p99 latency of small HTTP/1.1 GETs
//! against nginx on three paths, with release binaries:
//!
//! - `direct`: client → nginx;
//! - `same-cluster`: client → sidecar → sidecar → nginx (mTLS TCP);
//! - `cross-cluster`: client → sidecar → gateway ══QUIC══ gateway → sidecar
//!   → nginx.
//!
//! The load generator is in this file: `ISTHMUS_BENCH_CONNS` keep-alive
//! connections (default 32), each sending one request at a time, for
//! `ISTHMUS_BENCH_SECS` seconds (default 10) after a 2 s warm-up.
//! `ISTHMUS_BENCH_H2LOAD=1` also prints h2load's HTTP/1.1 summary per path
//! when h2load is installed. Run: `cargo bench -p multicluster-tests`.

#![allow(clippy::print_stdout)] // the table is this program's output

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use multicluster_tests::config::Protocol;
use multicluster_tests::servers::Nginx;
use multicluster_tests::standard::http_workload;
use multicluster_tests::tools::{require, run, Tool};
use multicluster_tests::{net, Topology, Tuning, Workload};

const WARM_UP: Duration = Duration::from_secs(2);

struct Measured {
    requests: u64,
    errors: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too, and
    // must not run a 40 s benchmark.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return Ok(());
    }
    let secs = env_u64("ISTHMUS_BENCH_SECS", 10);
    let conns = env_u64("ISTHMUS_BENCH_CONNS", 32) as usize;

    let (a, b) = ("cluster-a", "cluster-b");
    let mut t = Topology::new("bench")?;
    t.tuning = Tuning::defaults();
    t.add_cluster(a)?;
    t.add_cluster(b)?;
    t.link(a, b);
    let ip = t.host(b)?;
    let nginx = Nginx::start(t.dir(), net::tcp_addr(ip, 8080)?)?;
    std::fs::write(nginx.root().join("small.txt"), "x".repeat(128))?;
    t.add_workload(b, http_workload("web", "default/web", nginx.addr))?;
    t.export(b, "default/web", &[a]);
    t.add_workload(
        a,
        http_workload("web-local", "default/web-local", nginx.addr),
    )?;
    t.add_workload(
        a,
        Workload::new("default", "frontend")
            .calls("default/web-local", 80, Protocol::Http)
            .calls("default/web", 80, Protocol::Http),
    )?;
    let mesh = t.start().context("starting the mesh (release binaries)")?;
    let paths: [(&str, SocketAddr); 3] = [
        ("direct", nginx.addr),
        (
            "same-cluster",
            mesh.outbound(a, "frontend", "default/web-local")?,
        ),
        (
            "cross-cluster",
            mesh.outbound(a, "frontend", "default/web")?,
        ),
    ];

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("smoke benchmark: GET /small.txt (128 bytes), {conns} keep-alive connections, {secs} s after {WARM_UP:?} warm-up\n");
    println!(
        "{:<14} {:>10} {:>9} {:>9} {:>8} {:>10} {:>10}",
        "path", "req/s", "p50 ms", "p99 ms", "errors", "rps/direct", "p50/direct"
    );
    let mut direct: Option<(f64, f64)> = None;
    for (name, addr) in paths {
        let m = rt.block_on(load(addr, conns, Duration::from_secs(secs)))?;
        let (rps0, p500) = *direct.get_or_insert((m.rps, m.p50_ms));
        println!(
            "{:<14} {:>10.0} {:>9.3} {:>9.3} {:>8} {:>10.2} {:>10.2}",
            name,
            m.rps,
            m.p50_ms,
            m.p99_ms,
            m.errors,
            m.rps / rps0,
            m.p50_ms / p500
        );
        if m.requests == 0 {
            println!("  (no successful request on {name})");
        }
    }
    if std::env::var("ISTHMUS_BENCH_H2LOAD").is_ok_and(|v| v == "1") {
        if let Ok(h2load) = require(Tool::H2load) {
            println!("\nh2load --h1 -c {conns} -D {secs}:");
            for (name, addr) in paths {
                let out = run(
                    std::process::Command::new(&h2load)
                        .arg("--h1")
                        .args(["-c", &conns.to_string(), "-D", &secs.to_string()])
                        .arg(format!("http://{addr}/small.txt")),
                    None,
                    Duration::from_secs(secs + 30),
                )?;
                let text = out.stdout_text();
                let summary: Vec<&str> = text
                    .lines()
                    .filter(|l| l.starts_with("finished in") || l.starts_with("requests:"))
                    .collect();
                println!("{name:<14} {}", summary.join(" | "));
            }
        }
    }
    drop(mesh);
    drop(nginx);
    Ok(())
}

/// `conns` connections sending GETs back to back for warm-up + `dur`.
async fn load(addr: SocketAddr, conns: usize, dur: Duration) -> Result<Measured> {
    let start = Instant::now();
    let measure_from = start + WARM_UP;
    let end = measure_from + dur;
    let uri: Arc<str> = "/small.txt".into();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            worker(addr, uri, measure_from, end).await
        }));
    }
    let mut lat: Vec<u32> = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        f64::from(lat[i]) / 1000.0
    };
    Ok(Measured {
        requests: lat.len() as u64,
        errors,
        rps: lat.len() as f64 / dur.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// One keep-alive connection; reconnects after an error. Returns latencies
/// (µs) of successful requests completed in the measuring window, and the
/// error count.
async fn worker(
    addr: SocketAddr,
    uri: Arc<str>,
    measure_from: Instant,
    end: Instant,
) -> (Vec<u32>, u64) {
    let mut lat = Vec::new();
    let mut errors = 0;
    while Instant::now() < end {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut send, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < end {
            let req = hyper::Request::get(&*uri)
                .header("host", addr.to_string())
                .body(Empty::<Bytes>::new());
            let Ok(req) = req else { break };
            let t0 = Instant::now();
            let ok = match send.send_request(req).await {
                Ok(resp) => resp.status().is_success() && resp.into_body().collect().await.is_ok(),
                Err(_) => false,
            };
            let t1 = Instant::now();
            if !ok {
                if t1 >= measure_from {
                    errors += 1;
                }
                break;
            }
            if t0 >= measure_from && t1 <= end {
                lat.push(u32::try_from((t1 - t0).as_micros()).unwrap_or(u32::MAX));
            }
        }
    }
    (lat, errors)
}

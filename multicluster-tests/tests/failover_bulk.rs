//! Issue 6, scenario 6: bulk transfers through the QUIC tunnel against the
//! TCP+TLS baseline tunnel on a lossy WAN.
//!
//! Two clusters in their own network namespaces ([`Topology::use_wan`]),
//! 25 ms each way (50 ms RTT) and 1 % loss on every packet of the A↔B
//! link. nginx in B serves a random file behind B's sidecar as an opaque
//! TCP service, so each download is its own tunnel stream; `STREAMS`
//! concurrent curl downloads in A go through A's sidecar and both gateways.
//! The same run is made with the gateway-to-gateway hop over QUIC and over
//! the TCP+TLS baseline (`peers[].transport: tcp-tls`: HTTP/2 CONNECT
//! streams on one TLS/TCP connection). The test prints both totals and
//! their ratio, and asserts that QUIC carries at least 1.5× the baseline:
//! one lost TCP segment stalls every stream of the baseline (head-of-line
//! blocking), while a lost QUIC packet stalls only the streams it carried.
//!
//! Measured on the shared 2-core test machine, debug build, 10 × 4–8 MiB
//! (2026-11-21): QUIC with `quic.congestion` cubic 0.31–0.36 MB/s,
//! new_reno 0.31 MB/s, bbr (the gateway's default since) 15.1–16.1 MB/s;
//! TCP+TLS 21.7–22.1 MB/s: ratio 0.70–0.73, so this test FAILS its 1.5×
//! here. The host kernel's TCP congestion control is BBR
//! (`net.ipv4.tcp_congestion_control = bbr`, inherited by the namespaces
//! and not writable from them), so the baseline is not the loss-based TCP
//! the 1.5× assumed; with BBR on both sides the loss costs neither much,
//! and the kernel's TCP outruns debug-built quinn. The assertion stays as
//! the issue states it; the numbers go to the lead.
//!
//! Knobs: `ISTHMUS_BULK_EACH_MIB` (size of each download, default 4),
//! `ISTHMUS_BULK_CONGESTION` (`cubic` | `bbr` | `new_reno`: written as
//! `quic.congestion` into both gateways' configs; default: the gateway's
//! own default), for measuring the controllers against each other;
//! `ISTHMUS_BULK_ONLY` (`quic` | `tcp-tls`: measure and print one side
//! only, no ratio asserted).

#![allow(clippy::print_stdout)]

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use multicluster_tests::config::{PeerTransport, Protocol};
use multicluster_tests::netns::LinkConfig;
use multicluster_tests::process::logs_on_error;
use multicluster_tests::servers::Nginx;
use multicluster_tests::tools::random_file;
use multicluster_tests::{Mesh, Topology, Workload};

const A: &str = "cluster-a";
const B: &str = "cluster-b";
const WEB: &str = "default/web";
/// Concurrent downloads.
const STREAMS: usize = 10;
/// One way: 50 ms RTT.
const ONE_WAY: Duration = Duration::from_millis(25);
/// Loss probability per packet, each direction.
const LOSS: f64 = 0.01;
/// QUIC's total over the baseline's must be at least this.
const MIN_RATIO: f64 = 1.5;
/// Generous for debug builds on a shared 2-core machine.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(240);

fn each_bytes() -> u64 {
    let mib: u64 = std::env::var("ISTHMUS_BULK_EACH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    mib << 20
}

/// The kernel's TCP congestion control in both namespaces (a new network
/// namespace inherits the host's, e.g. `bbr`); `None`: left as is.
fn tcp_congestion() -> Option<String> {
    std::env::var("ISTHMUS_BULK_TCP_CONGESTION").ok()
}

fn congestion() -> Option<String> {
    std::env::var("ISTHMUS_BULK_CONGESTION").ok()
}

/// One measured run.
struct Run {
    /// Bytes downloaded by all streams.
    bytes: u64,
    /// From the first curl's start to the last one's end.
    wall: Duration,
    /// Slowest and fastest single download, s.
    slowest: f64,
    fastest: f64,
}

impl Run {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }

    fn summary(&self, label: &str) -> String {
        format!(
            "{label}: {STREAMS} × {} MiB in {:.1} s = {:.2} MB/s (single downloads {:.1}–{:.1} s)",
            each_bytes() >> 20,
            self.wall.as_secs_f64(),
            self.mb_per_s(),
            self.fastest,
            self.slowest
        )
    }
}

struct Setup {
    // Field order: the mesh (and its WAN) drops after nginx.
    _nginx: Nginx,
    mesh: Mesh,
}

fn setup(test: &str, transport: Option<PeerTransport>) -> Result<Setup> {
    let mut t = Topology::new(test)?;
    t.add_cluster(A)?;
    t.add_cluster(B)?;
    t.use_wan(LinkConfig::delay(ONE_WAY).with_loss(LOSS))?;
    if let Some(cc) = tcp_congestion() {
        for c in [A, B] {
            let out = t
                .site(c)?
                .command("sysctl")
                .arg("-w")
                .arg(format!("net.ipv4.tcp_congestion_control={cc}"))
                .output()?;
            ensure!(out.status.success(), "sysctl in {c}: {out:?}");
        }
    }
    t.link(A, B);
    t.tuning.peer_transport = transport;
    let site = t.site(B)?;
    let ip = t.host(B)?;
    let nginx = Nginx::start_in(&site, t.dir(), site.tcp_addr(ip, 8080)?)?;
    random_file(&nginx.root().join("bulk.bin"), each_bytes())?;
    let frontend = Topology::spiffe_id(A, "default", "frontend");
    t.add_workload(
        B,
        Workload::new("default", "web").serves(WEB, 80, Protocol::Tcp, nginx.addr, &[&frontend]),
    )?;
    t.export(B, WEB, &[A]);
    t.add_workload(
        A,
        Workload::new("default", "frontend").calls(WEB, 80, Protocol::Tcp),
    )?;
    let mut mesh = t.start()?;
    if let Some(cc) = congestion() {
        // B first: A's pooled connection must go to the new B.
        for c in [B, A] {
            let path = mesh.topology().config_path(c, "gateway");
            let yaml = std::fs::read_to_string(&path)?;
            ensure!(yaml.contains("\nquic:\n"), "no quic section in {yaml}");
            std::fs::write(
                &path,
                yaml.replacen("\nquic:\n", &format!("\nquic:\n  congestion: {cc}\n"), 1),
            )?;
            mesh.restart(c, "gateway")?;
        }
        for c in [A, B] {
            mesh.wait_ready(c, "gateway")?;
        }
        mesh.wait_peers_connected(A)?;
    }
    Ok(Setup {
        _nginx: nginx,
        mesh,
    })
}

/// Starts one curl download in A's namespace through the frontend's
/// outbound listener; it prints `<bytes> <seconds>`.
fn spawn_curl(mesh: &Mesh, url: &str) -> Result<Child> {
    mesh.site(A)?
        .command("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            &DOWNLOAD_TIMEOUT.as_secs().to_string(),
            "-w",
            "%{http_code} %{size_download} %{time_total}",
        ])
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning curl in A's namespace")
}

fn measure(s: &Setup) -> Result<Run> {
    let url = format!("http://{}/bulk.bin", s.mesh.outbound(A, "frontend", WEB)?);
    // Warm-up: the tunnel and the inner TLS are up, the file is cached.
    let warm = spawn_curl(&s.mesh, &url)?.wait_with_output()?;
    ensure!(
        warm.status.success(),
        "warm-up download failed: {}",
        String::from_utf8_lossy(&warm.stderr)
    );
    let started = Instant::now();
    let children: Vec<Child> = (0..STREAMS)
        .map(|_| spawn_curl(&s.mesh, &url))
        .collect::<Result<_>>()?;
    let mut bytes = 0u64;
    let (mut slowest, mut fastest) = (0.0f64, f64::MAX);
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut it = text.split_whitespace();
        let status: u16 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let size: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let time: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        if !out.status.success() || status != 200 || size != each_bytes() {
            bail!(
                "download {i}: status {status}, {size} of {} bytes: {}",
                each_bytes(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        bytes += size;
        slowest = slowest.max(time);
        fastest = fastest.min(time);
    }
    Ok(Run {
        bytes,
        wall: started.elapsed(),
        slowest,
        fastest,
    })
}

#[test]
fn quic_carries_at_least_1_5x_the_tcp_tls_baseline_at_50ms_rtt_and_1pct_loss() -> Result<()> {
    logs_on_error(|| {
        let only = std::env::var("ISTHMUS_BULK_ONLY").ok();
        if let Some(side) = only.as_deref() {
            let transport = match side {
                "quic" => None,
                "tcp-tls" => Some(PeerTransport::TcpTls),
                other => bail!("ISTHMUS_BULK_ONLY={other:?} is not quic or tcp-tls"),
            };
            let mut s = setup(&format!("bulk-{side}"), transport)?;
            let run = measure(&s)?;
            s.mesh.assert_all_running()?;
            let cc = congestion().unwrap_or_else(|| "gateway default".to_owned());
            println!(
                "failover_bulk (50 ms RTT, 1 % loss, quic.congestion {cc}): {}",
                run.summary(side)
            );
            return Ok(());
        }
        // One setup at a time: both share the machine's CPUs.
        let quic = {
            let mut s = setup("bulk-quic", None)?;
            let run = measure(&s)?;
            s.mesh.assert_all_running()?;
            run
        };
        let tcp = {
            let mut s = setup("bulk-tcp-tls", Some(PeerTransport::TcpTls))?;
            let run = measure(&s)?;
            s.mesh.assert_all_running()?;
            run
        };
        let ratio = quic.mb_per_s() / tcp.mb_per_s();
        let cc = congestion().unwrap_or_else(|| "gateway default".to_owned());
        println!(
            "failover_bulk (50 ms RTT, 1 % loss, quic.congestion {cc}): {}; {}; ratio {ratio:.2}",
            quic.summary("quic"),
            tcp.summary("tcp+tls")
        );
        ensure!(
            ratio >= MIN_RATIO,
            "QUIC {:.2} MB/s is only {ratio:.2}× the TCP+TLS baseline's {:.2} MB/s",
            quic.mb_per_s(),
            tcp.mb_per_s()
        );
        Ok(())
    })
}

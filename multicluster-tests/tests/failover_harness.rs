//! The network-namespace placement of a [`Topology`] ([`Topology::use_wan`])
//! that the failover scenarios run on: every cluster in its own namespace,
//! every process spawned there, requests crossing the emulated WAN.
//!
//! - static and dynamic configs: curl in cluster-a's namespace through the
//!   frontend sidecar gets nginx in cluster-b (its body names the cluster),
//!   and the request takes at least one 30 ms RTT;
//! - a partition of A↔B makes the same request fail, healing restores it.

// The helper shared by both tests prints their figures line.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use multicluster_tests::config::Protocol;
use multicluster_tests::controlplane::ControlPlaneOptions;
use multicluster_tests::netns::LinkConfig;
use multicluster_tests::process::logs_on_error;
use multicluster_tests::ready::{eventually, patience};
use multicluster_tests::servers::Nginx;
use multicluster_tests::{Mesh, Topology, Workload};

const A: &str = "cluster-a";
const B: &str = "cluster-b";
const WEB: &str = "default/web";

struct Setup {
    _nginx: Nginx,
    mesh: Mesh,
}

fn setup(test: &str, dynamic: bool) -> Result<Setup> {
    let mut t = Topology::new(test)?;
    t.add_cluster(A)?;
    t.add_cluster(B)?;
    t.use_wan(LinkConfig::delay(Duration::from_millis(15)))?;
    t.link(A, B);
    if dynamic {
        t.use_control_plane(ControlPlaneOptions::default());
    }
    let site = t.site(B)?;
    let ip = t.host(B)?;
    let nginx = Nginx::start_in(&site, t.dir(), site.tcp_addr(ip, 8080)?)?;
    std::fs::write(nginx.root().join("ok.txt"), "cluster-b\n")?;
    let frontend = Topology::spiffe_id(A, "default", "frontend");
    t.add_workload(
        B,
        Workload::new("default", "web").serves(WEB, 80, Protocol::Http, nginx.addr, &[&frontend]),
    )?;
    t.export(B, WEB, &[A]);
    t.add_workload(
        A,
        Workload::new("default", "frontend").calls(WEB, 80, Protocol::Http),
    )?;
    let mesh = t.start()?;
    Ok(Setup {
        _nginx: nginx,
        mesh,
    })
}

/// `curl` in A's namespace to the frontend's outbound: (status, body,
/// time_total s).
fn curl_in_a(mesh: &Mesh) -> Result<(u16, String, f64)> {
    let url = format!("http://{}/ok.txt", mesh.outbound(A, "frontend", WEB)?);
    let out = mesh
        .site(A)?
        .command("curl")
        .args([
            "-sS",
            "--max-time",
            "3",
            "-w",
            "\n%{http_code} %{time_total}",
        ])
        .arg(&url)
        .output()
        .context("running curl in A's namespace")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut it = tail.split_whitespace();
    let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let time = it.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    Ok((status, body.to_owned(), time))
}

fn crosses_the_wan(test: &str, dynamic: bool) -> Result<()> {
    logs_on_error(|| {
        let s = setup(test, dynamic)?;
        let (status, body, first) = curl_in_a(&s.mesh)?;
        ensure!(
            status == 200 && body == "cluster-b\n",
            "A -> B: status {status} body {body:?}"
        );
        // A fresh curl connection on an established tunnel: at least one RTT.
        let mut best = f64::MAX;
        for _ in 0..5 {
            let (status, _, t) = curl_in_a(&s.mesh)?;
            ensure!(status == 200, "status {status}");
            best = best.min(t);
        }
        ensure!(
            best >= 0.030,
            "a request across a 30 ms RTT WAN took {best:.3} s"
        );

        let wan = s.mesh.wan()?;
        wan.partition(A, B);
        let (status, _, _) = curl_in_a(&s.mesh)?;
        ensure!(status != 200, "a request crossed a partitioned WAN");
        wan.heal(A, B);
        eventually("A -> B after the heal", patience(), || {
            let (status, _, _) = curl_in_a(&s.mesh)?;
            ensure!(status == 200, "status {status}");
            Ok(())
        })?;
        println!(
            "wan topology ({}): first request {:.0} ms, best of 5 {:.0} ms over a 30 ms RTT",
            if dynamic { "dynamic" } else { "static" },
            first * 1000.0,
            best * 1000.0
        );
        Ok(())
    })
}

#[test]
fn static_topology_in_namespaces_crosses_the_wan() -> Result<()> {
    crosses_the_wan("wan-static", false)
}

#[test]
fn dynamic_topology_in_namespaces_crosses_the_wan() -> Result<()> {
    crosses_the_wan("wan-dynamic", true)
}

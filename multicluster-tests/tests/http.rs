//! HTTP across the mesh with real clients and servers: curl and h2load in
//! cluster-a against nginx in cluster-b; curl against python3 `http.server`
//! behind a sidecar in the same cluster.

use std::time::Duration;

use anyhow::{ensure, Result};
use multicluster_tests::config::Protocol;
use multicluster_tests::process::logs_on_error;
use multicluster_tests::servers::PythonHttp;
use multicluster_tests::standard::{Parts, Standard, WEB};
use multicluster_tests::tools::{curl, parse_h2load, require, run, Tool};
use multicluster_tests::{net, Topology, Workload};

const BODY: &str = "hello from nginx in cluster-b\n";

#[test]
fn curl_in_a_gets_nginx_in_b_with_the_exact_body() -> Result<()> {
    logs_on_error(|| {
        let mut s = Standard::start("http-curl", Parts::WEB)?;
        std::fs::write(s.nginx()?.root().join("hello.txt"), BODY)?;
        let r = curl(&[&s.url(WEB, "/hello.txt")?], Duration::from_secs(10))?;
        ensure!(r.out.success(), "curl failed: {}", r.out.stderr);
        ensure!(
            r.status == 200,
            "status {} (headers {:?})",
            r.status,
            r.headers
        );
        ensure!(r.body_text() == BODY, "body {:?}", r.body_text());
        // A missing file is nginx's 404, carried back unchanged.
        let r = curl(&[&s.url(WEB, "/nope.txt")?], Duration::from_secs(10))?;
        ensure!(r.status == 404, "status {} for a missing file", r.status);
        s.mesh.assert_all_running()
    })
}

#[test]
fn http2_prior_knowledge_works() -> Result<()> {
    logs_on_error(|| {
        let mut s = Standard::start("http-h2", Parts::WEB)?;
        std::fs::write(s.nginx()?.root().join("hello.txt"), BODY)?;
        let out = s.mesh.dir().join("h2-body");
        let r = curl(
            &[
                "--http2-prior-knowledge",
                "-o",
                out.to_str().unwrap(),
                "-w",
                "%{http_version}",
                &s.url(WEB, "/hello.txt")?,
            ],
            Duration::from_secs(10),
        )?;
        ensure!(r.out.success(), "curl failed: {}", r.out.stderr);
        ensure!(r.status == 200, "status {}", r.status);
        ensure!(
            r.body_text() == "2",
            "curl spoke HTTP/{} to the sidecar",
            r.body_text()
        );
        ensure!(std::fs::read_to_string(&out)? == BODY, "wrong body over h2");
        s.mesh.assert_all_running()
    })
}

#[test]
fn h2load_10000_requests_over_100_concurrent_streams_all_2xx() -> Result<()> {
    logs_on_error(|| {
        let h2load = require(Tool::H2load)?;
        let mut s = Standard::start("http-h2load", Parts::WEB)?;
        std::fs::write(s.nginx()?.root().join("hello.txt"), BODY)?;
        let url = s.url(WEB, "/hello.txt")?;
        // One connection, 100 concurrent streams on it.
        let out = run(
            std::process::Command::new(h2load).args(["-n", "10000", "-c", "1", "-m", "100", &url]),
            None,
            Duration::from_secs(180),
        )?;
        let text = out.stdout_text();
        ensure!(!out.timed_out(), "h2load hung; output so far:\n{text}");
        let summary = parse_h2load(&text)?;
        eprintln!(
            "h2load through two sidecars and two gateways: {summary:?} in {:?}",
            out.elapsed
        );
        ensure!(summary.total == 10_000, "{summary:?}");
        ensure!(
            summary.succeeded == 10_000 && summary.failed == 0,
            "{summary:?}\n{text}"
        );
        ensure!(summary.status_2xx == 10_000, "{summary:?}\n{text}");
        s.mesh.assert_all_running()
    })
}

#[test]
fn python_http_server_behind_a_sidecar_in_the_same_cluster() -> Result<()> {
    logs_on_error(|| {
        let mut t = Topology::new("http-python")?;
        t.add_cluster("cluster-a")?;
        let files = t.dir().join("files");
        std::fs::create_dir_all(&files)?;
        std::fs::write(
            files.join("greeting.txt"),
            "served by python3 http.server\n",
        )?;
        let ip = t.host("cluster-a")?;
        let mut py = PythonHttp::start(
            &files,
            net::tcp_addr(ip, 8000)?,
            &t.dir().join("python.log"),
        )?;
        t.add_workload(
            "cluster-a",
            Workload::new("default", "files").serves(
                "default/files",
                80,
                Protocol::Http,
                py.addr,
                &["spiffe://cluster-a.mesh/ns/default/sa/frontend"],
            ),
        )?;
        t.add_workload(
            "cluster-a",
            Workload::new("default", "frontend").calls("default/files", 80, Protocol::Http),
        )?;
        let mut mesh = t.start()?;
        let url = format!(
            "http://{}/greeting.txt",
            mesh.outbound("cluster-a", "frontend", "default/files")?
        );
        // Several requests: python closes every connection (HTTP/1.0), the
        // sidecars must not reuse a dead one.
        for i in 0..5 {
            let r = curl(&[&url], Duration::from_secs(10))?;
            ensure!(
                r.out.success(),
                "request {i}: curl failed: {}",
                r.out.stderr
            );
            ensure!(r.status == 200, "request {i}: status {}", r.status);
            ensure!(
                r.body_text() == "served by python3 http.server\n",
                "request {i}: body {:?}",
                r.body_text()
            );
        }
        py.process().assert_running()?;
        mesh.assert_all_running()
    })
}

//! A gateway of a third cluster that is not linked cannot open a tunnel.
//!
//! cluster-c has its own CA and trust domain and is configured as if linked
//! to cluster-b (it peers with B's gateway and trusts B's bundle), but B
//! knows nothing of C. A's link to B is real, as the control.

use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use multicluster_tests::config::Protocol;
use multicluster_tests::process::logs_on_error;
use multicluster_tests::ready::http_get;
use multicluster_tests::servers::Nginx;
use multicluster_tests::standard::{http_workload, FRONTEND_ID};
use multicluster_tests::tools::curl;
use multicluster_tests::{net, Topology, Workload};

#[test]
fn a_gateway_of_an_unlinked_cluster_cannot_open_a_tunnel() -> Result<()> {
    logs_on_error(|| {
        let mut t = Topology::new("unlinked")?;
        for c in ["cluster-a", "cluster-b", "cluster-c"] {
            t.add_cluster(c)?;
        }
        t.link("cluster-a", "cluster-b");
        t.trust_one_way("cluster-c", "cluster-b");
        let ip = t.host("cluster-b")?;
        let nginx = Nginx::start(t.dir(), net::tcp_addr(ip, 8080)?)?;
        std::fs::write(nginx.root().join("page.txt"), "page\n")?;
        // B's web lets in A's frontend and C's intruder alike: only the
        // gateway-level link keeps C out.
        let intruder = "spiffe://cluster-c.mesh/ns/default/sa/intruder";
        let mut web = http_workload("web", "default/web", nginx.addr);
        web.inbound[0].allow.push(intruder.to_owned());
        t.add_workload("cluster-b", web)?;
        t.export("cluster-b", "default/web", &["cluster-a"]);
        t.add_workload(
            "cluster-a",
            Workload::new("default", "frontend").calls("default/web", 80, Protocol::Http),
        )?;
        t.add_workload(
            "cluster-c",
            Workload::new("default", "intruder").calls("default/web", 80, Protocol::Http),
        )?;
        let mut mesh = t.start()?;
        assert!(FRONTEND_ID.contains("cluster-a"));

        let from_a = format!(
            "http://{}/page.txt?from=a",
            mesh.outbound("cluster-a", "frontend", "default/web")?
        );
        let r = curl(&[&from_a], Duration::from_secs(10))?;
        ensure!(
            r.status == 200,
            "linked A: status {} {}",
            r.status,
            r.out.stderr
        );

        let from_c = format!(
            "http://{}/page.txt?from=c",
            mesh.outbound("cluster-c", "intruder", "default/web")?
        );
        for attempt in 0..3 {
            let r = curl(&[&from_c], Duration::from_secs(15))?;
            ensure!(
                r.status != 200 && !r.body_text().contains("page"),
                "attempt {attempt}: unlinked C got through: status {} body {:?}",
                r.status,
                r.body_text()
            );
            ensure!(
                r.status == 0 || (500..600).contains(&r.status),
                "attempt {attempt}: status {} (want a 5xx or a closed connection)",
                r.status
            );
        }
        ensure!(
            !nginx.access_log().contains("from=c"),
            "a request from C reached nginx in B"
        );
        // The refusal happened at B's gateway, in the QUIC handshake: B counts
        // the failed handshakes and has no connection to C.
        let admin = mesh.topology().gateway_admin("cluster-b")?;
        let (status, metrics) = http_get(admin, "/metrics", Duration::from_secs(5))?;
        ensure!(status == 200, "gateway B /metrics: status {status}");
        let failures = metric_value(&metrics, "isthmus_gateway_handshake_failures_total")
            .ok_or_else(|| anyhow!("no handshake failure counter in B's metrics:\n{metrics}"))?;
        ensure!(
            failures >= 1.0,
            "B counted {failures} failed handshakes, want >= 1"
        );
        ensure!(
            !metrics.contains("peer=\"cluster-c\""),
            "B lists a connection to cluster-c:\n{metrics}"
        );
        mesh.assert_all_running()
    })
}

/// The value of an unlabelled counter in Prometheus/OpenMetrics text
/// (`name` or `name_total` line).
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

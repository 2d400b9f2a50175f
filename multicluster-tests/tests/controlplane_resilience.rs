//! The data plane does not depend on the controllers being up, and a root
//! rotation needs no operator step:
//!
//! - both clusters' controllers are killed (SIGKILL) while curl in A calls
//!   nginx in B in a loop: the loop sees no failure; the controllers come
//!   back, and a change made afterwards (exporting a second service) takes
//!   effect in A's sidecar (the proxies resynced), still with no failure;
//! - `POST /v1/ca/rotate` in B while A calls B in a loop: the new root is
//!   published in B's bundle, B's sidecar starts presenting an SVID from
//!   the new root, and the loop sees no failure.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use multicluster_tests::config::Protocol;
use multicluster_tests::controlplane::{
    bundle_roots_pem, chain_verifies, presented_chain, service_export_yaml, ControlPlaneOptions,
    Traffic,
};
use multicluster_tests::process::logs_on_error;
use multicluster_tests::ready::{eventually, patience};
use multicluster_tests::servers::{Nginx, PythonHttp};
use multicluster_tests::standard::{http_workload, A, B, WEB};
use multicluster_tests::tools::curl;
use multicluster_tests::{net, Mesh, Topology, Workload};
use serde_json::json;

const FILES: &str = "default/files";
const BODY: &str = "ok from b\n";

/// A linked A/B pair: nginx behind `web` in B (exported), python3
/// `http.server` behind `files` in B (not exported), A's frontend calling
/// both.
struct Setup {
    mesh: Mesh,
    _nginx: Nginx,
    _python: PythonHttp,
}

fn setup(test: &str, options: ControlPlaneOptions) -> Result<Setup> {
    let mut t = Topology::new(test)?;
    t.use_control_plane(options);
    t.add_cluster(A)?;
    t.add_cluster(B)?;
    t.link(A, B);
    let ip = t.host(B)?;
    let nginx = Nginx::start(t.dir(), net::tcp_addr(ip, 8080)?)?;
    std::fs::write(nginx.root().join("ok.txt"), BODY)?;
    let py_root = t.dir().join("py");
    std::fs::create_dir_all(&py_root)?;
    std::fs::write(py_root.join("hello.txt"), "from python\n")?;
    let python = PythonHttp::start(
        &py_root,
        net::tcp_addr(ip, 8000)?,
        &t.dir().join("python.log"),
    )?;
    t.add_workload(B, http_workload("web", WEB, nginx.addr))?;
    t.add_workload(B, http_workload("files", FILES, python.addr))?;
    t.export(B, WEB, &[A]);
    t.add_workload(
        A,
        Workload::new("default", "frontend")
            .calls(WEB, 80, Protocol::Http)
            .calls(FILES, 80, Protocol::Http),
    )?;
    Ok(Setup {
        mesh: t.start()?,
        _nginx: nginx,
        _python: python,
    })
}

#[test]
fn controllers_killed_traffic_continues_and_restarted_controllers_resync_the_proxies() -> Result<()>
{
    logs_on_error(|| {
        // A short workload lease, and an outage longer than it: the
        // controllers must not expire, when they come back, the leases the
        // sidecars could not renew while they were down.
        let lease = Duration::from_secs(5);
        let options = ControlPlaneOptions {
            lease_seconds: Some(lease.as_secs()),
            ..ControlPlaneOptions::default()
        };
        let mut s = setup("cp-kill", options)?;
        let web = format!("http://{}/ok.txt", s.mesh.outbound(A, "frontend", WEB)?);
        let files = format!(
            "http://{}/hello.txt",
            s.mesh.outbound(A, "frontend", FILES)?
        );
        let r = curl(&[&files], Duration::from_secs(5))?;
        ensure!(
            r.status == 503,
            "files is not exported yet but answered {}",
            r.status
        );

        let traffic = Traffic::start(web, BODY.into());
        traffic.wait_requests(50)?;
        for c in [A, B] {
            s.mesh.control_plane(c)?.nodes[0].kill9()?;
        }
        let killed = Instant::now();
        traffic.wait_requests(100)?;
        // The outage lasts at least two leases (a chosen duration, not a
        // readiness wait).
        eventually(
            "an outage of two workload leases",
            3 * lease + patience(),
            || {
                ensure!(
                    killed.elapsed() > 2 * lease,
                    "{:?} so far",
                    killed.elapsed()
                );
                Ok(())
            },
        )?;
        let (during_ok, during_failed) = traffic.counts();
        let outage = killed.elapsed();

        for c in [A, B] {
            let n = &mut s.mesh.control_plane(c)?.nodes[0];
            n.restart()?;
            n.wait_ready()?;
        }
        let back = Instant::now();
        s.mesh
            .admin(B)?
            .apply_yaml(&service_export_yaml("default", "files"))?;
        eventually(
            "the export made after the restart to reach A's sidecar",
            patience(),
            || {
                let r = curl(&[&files], Duration::from_secs(2))?;
                ensure!(
                    r.status == 200 && r.body_text() == "from python\n",
                    "status {} x-isthmus-error {:?}",
                    r.status,
                    r.header("x-isthmus-error")
                );
                Ok(())
            },
        )?;
        let resync = back.elapsed();
        traffic.wait_requests(100)?;
        let report = traffic.stop()?;
        println!(
            "controllers of A and B killed for {:.1} s (workload lease 5 s): {during_ok} ok / {during_failed} failed requests by then; after the restart a new export reached A in {:.0} ms; total {} ok, {} failed",
            outage.as_secs_f64(),
            resync.as_secs_f64() * 1e3,
            report.ok,
            report.failed
        );
        ensure!(
            report.failed == 0,
            "{} failed requests (of {}): {:#?}\n(`unknown service` right after the restart, likely: the restarted \
             controller expired the workload leases (lease_seconds {}) its sidecars could not renew while it \
             was down, withdrawing the export until they re-registered; mesh-controller needs a grace period \
             of one lease after a leader starts before ExpireLeases)",
            report.failed,
            report.ok + report.failed,
            report.failures,
            lease.as_secs()
        );
        s.mesh.assert_all_running()
    })
}

#[test]
fn root_rotation_in_b_while_a_calls_b_fails_no_request() -> Result<()> {
    logs_on_error(|| {
        // The shortest SVID lifetime the controller accepts, so the
        // sidecars renew (and switch roots) soon after the switch time.
        let options = ControlPlaneOptions {
            svid_ttl_seconds: Some(60),
            ..ControlPlaneOptions::default()
        };
        let mut s = setup("cp-rotate", options)?;
        let web = format!("http://{}/ok.txt", s.mesh.outbound(A, "frontend", WEB)?);
        let inbound = s.mesh.topology().inbound_addr(B, "web", WEB)?;
        let scratch = s.mesh.dir().join("rotation");

        let before = s.mesh.control_plane(B)?.bundle()?;
        let old_roots = bundle_roots_pem(&before)?;
        ensure!(
            chain_verifies(&presented_chain(inbound)?, &old_roots, &scratch)?,
            "B's web sidecar does not present an SVID from B's current root"
        );
        // Peers fetch B's bundle every refresh hint; the SVIDs switch only
        // after every peer has had one refresh with the new root in it.
        let hint = before.refresh_hint().unwrap_or(Duration::from_secs(300));
        let switch_after = hint + Duration::from_secs(15);
        println!(
            "B's bundle refresh hint {} s: rotating with switchAfterSeconds {} (the SVID TTL is 60 s)",
            hint.as_secs(),
            switch_after.as_secs()
        );

        let traffic = Traffic::start(web, BODY.into());
        traffic.wait_requests(20)?;
        let admin = s.mesh.admin(B)?;
        let r = admin.rotate_ca(&json!({ "switchAfterSeconds": switch_after.as_secs() }))?;
        ensure!(
            r.status == 202,
            "POST /v1/ca/rotate: {} {}",
            r.status,
            r.body
        );
        let started = Instant::now();

        let cp = s.mesh.control_plane(B)?;
        let new_roots = eventually("the new root in B's bundle", patience(), || {
            let b = cp.bundle()?;
            let roots = bundle_roots_pem(&b)?;
            let new: Vec<String> = roots
                .into_iter()
                .filter(|r| !old_roots.contains(r))
                .collect();
            ensure!(
                !new.is_empty(),
                "{} roots, none new",
                b.x509_authorities().len()
            );
            Ok(new)
        })?;
        let published = started.elapsed();

        let bound = switch_after + Duration::from_secs(2 * 60) + patience();
        let mut checks = 0u32;
        eventually(
            "B's web sidecar to present an SVID of the new root",
            bound,
            || {
                checks += 1;
                let chain = presented_chain(inbound)?;
                ensure!(
                    chain_verifies(&chain, &new_roots, &scratch)?,
                    "still an SVID of the old root"
                );
                Ok(())
            },
        )
        .context("the SVIDs never switched roots")?;
        let switched = started.elapsed();
        ensure!(
            !chain_verifies(&presented_chain(inbound)?, &old_roots, &scratch)?,
            "the new SVID also verifies against the old root alone"
        );

        // A few hundred requests on the new SVIDs.
        traffic.wait_requests(200)?;
        let report = traffic.stop()?;
        println!(
            "root rotation in B: new root published after {:.1} s; B's sidecar on the new root after {:.1} s ({checks} checks); {} ok, {} failed requests from A",
            published.as_secs_f64(),
            switched.as_secs_f64(),
            report.ok,
            report.failed
        );
        if report.failed > 0 {
            bail!(
                "{} failed requests during the rotation: {:#?}",
                report.failed,
                report.failures
            );
        }
        s.mesh.assert_all_running()
    })
}

//! SIGHUP of a sidecar with a changed config while a transfer is in flight:
//! the transfer completes on the config it started with; new requests
//! follow the new config.
//!
//! The frontend's first outbound listener starts pointing at `default/web`
//! (nginx in cluster-b) and is re-pointed at `default/files` (python3
//! `http.server` in cluster-b); both serve `hello.txt` with different
//! bodies.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use multicluster_tests::config::Protocol;
use multicluster_tests::process::logs_on_error;
use multicluster_tests::ready::{eventually, patience};
use multicluster_tests::servers::{Nginx, PythonHttp};
use multicluster_tests::standard::http_workload;
use multicluster_tests::tools::{curl, random_file, sha256_file};
use multicluster_tests::{net, Topology, Workload};

#[test]
fn sighup_with_a_new_config_keeps_the_transfer_and_reroutes_new_requests() -> Result<()> {
    logs_on_error(|| {
        let (a, b) = ("cluster-a", "cluster-b");
        let mut t = Topology::new("reload")?;
        t.add_cluster(a)?;
        t.add_cluster(b)?;
        t.link(a, b);
        let ip = t.host(b)?;
        let nginx = Nginx::start(t.dir(), net::tcp_addr(ip, 8080)?)?;
        std::fs::write(nginx.root().join("hello.txt"), "from nginx\n")?;
        random_file(&nginx.root().join("big.bin"), 48 << 20)?;
        let py_root = t.dir().join("py");
        std::fs::create_dir_all(&py_root)?;
        std::fs::write(py_root.join("hello.txt"), "from python\n")?;
        let mut py = PythonHttp::start(
            &py_root,
            net::tcp_addr(ip, 8000)?,
            &t.dir().join("python.log"),
        )?;
        t.add_workload(b, http_workload("web", "default/web", nginx.addr))?;
        t.add_workload(b, http_workload("files", "default/files", py.addr))?;
        t.export(b, "default/web", &[a]);
        t.export(b, "default/files", &[a]);
        t.add_workload(
            a,
            Workload::new("default", "frontend")
                .calls("default/web", 80, Protocol::Http)
                .calls("default/files", 80, Protocol::Http),
        )?;
        let mut mesh = t.start()?;
        let listener = mesh.outbound(a, "frontend", "default/web")?;
        let hello = format!("http://{listener}/hello.txt");
        let r = curl(&[&hello], Duration::from_secs(10))?;
        ensure!(
            r.body_text() == "from nginx\n",
            "before reload: {} {:?}",
            r.status,
            r.body_text()
        );

        // 48 MiB at 8 MiB/s: ~6 s in flight across the reload.
        let out = mesh.dir().join("big.bin");
        let (out_arg, big) = (
            out.to_str().unwrap().to_owned(),
            format!("http://{listener}/big.bin"),
        );
        let transfer = std::thread::spawn(move || {
            curl(
                &["--limit-rate", "8M", "-o", &out_arg, &big],
                Duration::from_secs(120),
            )
        });
        eventually("the download to start", patience(), || {
            let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            ensure!(len >= 1 << 20, "{len} bytes so far");
            Ok(())
        })?;

        let mut cfg = mesh.topology().sidecar_config(a, "frontend")?;
        ensure!(cfg.outbound[0].listen == listener, "outbound order");
        cfg.outbound[0].service = "default/files".into();
        mesh.write_sidecar_config(a, "frontend", &cfg)?;
        mesh.process(a, "frontend")?.sighup()?;

        eventually("new requests to follow the new config", patience(), || {
            let r = curl(&[&hello], Duration::from_secs(5))?;
            if r.status == 200 && r.body_text() == "from python\n" {
                Ok(())
            } else {
                bail!("status {} body {:?}", r.status, r.body_text())
            }
        })?;
        let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        ensure!(
            len < 48 << 20,
            "the transfer was over before the new config took effect; the test proved nothing"
        );

        let r = match transfer.join() {
            Ok(r) => r?,
            Err(_) => bail!("the curl thread panicked"),
        };
        ensure!(
            r.out.success() && r.status == 200,
            "in-flight transfer broke: {} {}",
            r.status,
            r.out.stderr
        );
        ensure!(
            sha256_file(&out)? == sha256_file(&nginx.root().join("big.bin"))?,
            "in-flight transfer corrupted"
        );
        py.process().assert_running()?;
        mesh.assert_all_running()
    })
}

//! The harness's own pieces against the real servers, without the mesh: if
//! these fail, the other tests' failures say nothing about Isthmus.

use std::time::Duration;

use anyhow::{ensure, Result};
use multicluster_tests::process::logs_on_error;
use multicluster_tests::servers::{psql_args, Nginx, Postgres, PythonHttp};
use multicluster_tests::tools::{curl, random_file, require, run, sha256_file, Tool};
use multicluster_tests::{net, Topology};

#[test]
fn nginx_serves_whoami_and_accepts_put_uploads() -> Result<()> {
    logs_on_error(|| {
        let mut t = Topology::new("harness-nginx")?;
        t.add_cluster("cluster-a")?;
        let ip = t.host("cluster-a")?;
        let mut nginx = Nginx::start(t.dir(), net::tcp_addr(ip, 8080)?)?;
        std::fs::write(nginx.root().join("x.txt"), "x\n")?;
        let base = format!("http://{}", nginx.addr);
        let r = curl(&[&format!("{base}/x.txt")], Duration::from_secs(5))?;
        ensure!(r.status == 200 && r.body_text() == "x\n", "{r:?}");
        let r = curl(
            &[
                "-H",
                "x-forwarded-client-cert: By=a;URI=b",
                &format!("{base}/whoami"),
            ],
            Duration::from_secs(5),
        )?;
        ensure!(r.body_text() == "By=a;URI=b", "{r:?}");
        let src = t.dir().join("up.bin");
        random_file(&src, 3 << 20)?;
        let r = curl(
            &[
                "-T",
                src.to_str().unwrap(),
                &format!("{base}/upload/up.bin"),
            ],
            Duration::from_secs(10),
        )?;
        ensure!(
            r.status == 201 || r.status == 204,
            "PUT status {}",
            r.status
        );
        ensure!(sha256_file(&nginx.upload_dir().join("up.bin"))? == sha256_file(&src)?);
        nginx.process().assert_running()
    })
}

#[test]
fn postgres_and_python_start_on_loopback_addresses() -> Result<()> {
    logs_on_error(|| {
        let mut t = Topology::new("harness-pg")?;
        t.add_cluster("cluster-a")?;
        let ip = t.host("cluster-a")?;
        let mut pg = Postgres::start(t.dir(), net::tcp_addr(ip, 5432)?)?;
        let out = run(
            std::process::Command::new(require(Tool::Psql)?)
                .args(psql_args(pg.addr))
                .args(["-c", "select 40 + 2"]),
            None,
            Duration::from_secs(10),
        )?;
        ensure!(out.stdout_text().trim() == "42", "{out:?}");
        let root = t.dir().join("www");
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("p.txt"), "p")?;
        let mut py = PythonHttp::start(&root, net::tcp_addr(ip, 8000)?, &t.dir().join("py.log"))?;
        let r = curl(
            &[&format!("http://{}/p.txt", py.addr)],
            Duration::from_secs(5),
        )?;
        ensure!(r.status == 200 && r.body_text() == "p", "{r:?}");
        py.process().assert_running()?;
        pg.process().assert_running()
    })
}

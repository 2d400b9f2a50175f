//! The standard two-cluster topology most tests use.
//!
//! ```text
//! cluster-a                                   cluster-b
//!   frontend sidecar ── gateway ══QUIC══ gateway ──┬─ web sidecar    → nginx
//!   outbound: default/web    (http)                ├─ db sidecar     → PostgreSQL
//!             default/db     (tcp)                 └─ secret sidecar → nginx
//!             default/secret (http)
//! ```
//!
//! B exports `default/web` and `default/db` to cluster-a, not
//! `default/secret`. Every B inbound allows A's frontend
//! (`spiffe://cluster-a.mesh/ns/default/sa/frontend`).
//!
//! With `ISTHMUS_TEST_CONFIG=dynamic` in the environment the same topology
//! runs in dynamic mode ([`Topology::use_control_plane`]): a controller per
//! cluster, linked and exported through its admin API, so the data-path
//! tests built on it run against the configuration the controllers push.

use std::net::SocketAddr;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::config::Protocol;
use crate::controlplane::ControlPlaneOptions;
use crate::mesh::Mesh;
use crate::net;
use crate::servers::{Nginx, Postgres};
use crate::tools::{curl, random_file, sha256_file};
use crate::topology::{Topology, Workload};

/// Cluster names.
pub const A: &str = "cluster-a";
/// Cluster names.
pub const B: &str = "cluster-b";
/// The caller's SPIFFE ID.
pub const FRONTEND_ID: &str = "spiffe://cluster-a.mesh/ns/default/sa/frontend";
/// `default/web`, port 80, nginx in B, exported to A.
pub const WEB: &str = "default/web";
/// `default/db`, port 5432, PostgreSQL in B, exported to A.
pub const DB: &str = "default/db";
/// `default/secret`, port 80, nginx in B, not exported.
pub const SECRET: &str = "default/secret";

/// Which parts of the standard topology to run.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    /// nginx, the `web` workload and the frontend's `default/web` outbound.
    pub web: bool,
    /// PostgreSQL, `db` and `default/db`.
    pub db: bool,
    /// `secret` (needs `web`'s nginx) and `default/secret`.
    pub secret: bool,
}

impl Parts {
    /// Only `web`.
    pub const WEB: Parts = Parts {
        web: true,
        db: false,
        secret: false,
    };
    /// Everything.
    pub const ALL: Parts = Parts {
        web: true,
        db: true,
        secret: true,
    };
}

/// The standard topology with its apps running, not yet started: adjust
/// `topology` (tuning, extra workloads) then [`StandardBuilder::start`].
pub struct StandardBuilder {
    /// The topology.
    pub topology: Topology,
    /// nginx in B (with `web` or `secret`).
    pub nginx: Option<Nginx>,
    /// PostgreSQL in B (with `db`).
    pub postgres: Option<Postgres>,
}

/// The standard topology, running.
pub struct Standard {
    /// nginx in B.
    pub nginx: Option<Nginx>,
    /// PostgreSQL in B.
    pub postgres: Option<Postgres>,
    /// Gateways and sidecars (dropped after the apps; removes the temp dir).
    pub mesh: Mesh,
}

impl StandardBuilder {
    /// Builds the topology for `parts` and starts its apps.
    ///
    /// # Errors
    /// An app failed to start, or a tool is missing.
    pub fn new(test: &str, parts: Parts) -> Result<Self> {
        let mut t = Topology::new(test)?;
        t.add_cluster(A)?;
        t.add_cluster(B)?;
        t.link(A, B);
        if dynamic_from_env() {
            t.use_control_plane(ControlPlaneOptions::default());
        }
        let mut nginx = None;
        let mut postgres = None;
        let mut frontend = Workload::new("default", "frontend");
        if parts.web || parts.secret {
            let ip = t.host(B)?;
            nginx = Some(Nginx::start(t.dir(), net::tcp_addr(ip, 8080)?)?);
        }
        let nginx_addr = nginx.as_ref().map(|n| n.addr);
        if let (true, Some(app)) = (parts.web, nginx_addr) {
            t.add_workload(B, http_workload("web", WEB, app))?;
            t.export(B, WEB, &[A]);
            frontend = frontend.calls(WEB, 80, Protocol::Http);
        }
        if parts.db {
            let ip = t.host(B)?;
            let pg = Postgres::start(t.dir(), net::tcp_addr(ip, 5432)?)?;
            t.add_workload(
                B,
                Workload::new("default", "db").serves(
                    DB,
                    5432,
                    Protocol::Tcp,
                    pg.addr,
                    &[FRONTEND_ID],
                ),
            )?;
            t.export(B, DB, &[A]);
            frontend = frontend.calls(DB, 5432, Protocol::Tcp);
            postgres = Some(pg);
        }
        if let (true, Some(app)) = (parts.secret, nginx_addr) {
            t.add_workload(B, http_workload("secret", SECRET, app))?;
            frontend = frontend.calls(SECRET, 80, Protocol::Http);
        }
        t.add_workload(A, frontend)?;
        Ok(StandardBuilder {
            topology: t,
            nginx,
            postgres,
        })
    }

    /// Starts gateways and sidecars.
    ///
    /// # Errors
    /// As [`Topology::start`].
    pub fn start(self) -> Result<Standard> {
        Ok(Standard {
            mesh: self.topology.start()?,
            nginx: self.nginx,
            postgres: self.postgres,
        })
    }
}

impl Standard {
    /// Builds and starts the standard topology for `parts`.
    ///
    /// # Errors
    /// As [`StandardBuilder::new`] and [`Topology::start`].
    pub fn start(test: &str, parts: Parts) -> Result<Self> {
        StandardBuilder::new(test, parts)?.start()
    }

    /// The frontend's outbound listener for `service`.
    ///
    /// # Errors
    /// The part is not running.
    pub fn outbound(&self, service: &str) -> Result<SocketAddr> {
        self.mesh.outbound(A, "frontend", service)
    }

    /// `http://<frontend outbound for service><path>`.
    ///
    /// # Errors
    /// The part is not running.
    pub fn url(&self, service: &str, path: &str) -> Result<String> {
        Ok(format!("http://{}{path}", self.outbound(service)?))
    }

    /// The nginx in B.
    ///
    /// # Errors
    /// Not running.
    pub fn nginx(&self) -> Result<&Nginx> {
        self.nginx
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("nginx is not part of this topology"))
    }
}

/// Times of one [`Standard::bulk_round_trip`].
#[derive(Debug, Clone, Copy)]
pub struct RoundTrip {
    /// Bytes each way.
    pub bytes: u64,
    /// Download time.
    pub down: Duration,
    /// Upload time.
    pub up: Duration,
}

impl RoundTrip {
    /// `label: download 1.2 s (53.3 MiB/s), upload …`, for the test output.
    pub fn summary(&self, label: &str) -> String {
        let mib = self.bytes as f64 / f64::from(1 << 20);
        format!(
            "{label} {mib} MiB: download {:.1} s ({:.1} MiB/s), upload {:.1} s ({:.1} MiB/s)",
            self.down.as_secs_f64(),
            mib / self.down.as_secs_f64(),
            self.up.as_secs_f64(),
            mib / self.up.as_secs_f64()
        )
    }
}

impl Standard {
    /// Through the frontend's `WEB` listener: downloads `len` random bytes
    /// from nginx with curl and checks length and SHA-256, then uploads
    /// `len` other random bytes (WebDAV PUT, 201/204) and checks what nginx
    /// stored, each bounded by `timeout`.
    ///
    /// # Errors
    /// A transfer failed, timed out, or the bytes differ.
    pub fn bulk_round_trip(&mut self, len: u64, timeout: Duration) -> Result<RoundTrip> {
        let served = self.nginx()?.root().join("big.bin");
        random_file(&served, len)?;
        let up_src = self.mesh.dir().join("upload-src.bin");
        random_file(&up_src, len)?;

        let got = self.mesh.dir().join("downloaded.bin");
        let got_arg = got.to_str().context("temp path is not UTF-8")?;
        let start = Instant::now();
        let r = curl(&["-o", got_arg, &self.url(WEB, "/big.bin")?], timeout)?;
        let down = start.elapsed();
        ensure!(
            r.out.success(),
            "download failed after {down:?}: {}",
            r.out.stderr
        );
        ensure!(r.status == 200, "download status {}", r.status);
        ensure!(std::fs::metadata(&got)?.len() == len, "downloaded length");
        ensure!(
            sha256_file(&got)? == sha256_file(&served)?,
            "downloaded bytes differ"
        );

        let up_arg = up_src.to_str().context("temp path is not UTF-8")?;
        let start = Instant::now();
        let r = curl(&["-T", up_arg, &self.url(WEB, "/upload/big.bin")?], timeout)?;
        let up = start.elapsed();
        ensure!(
            r.out.success(),
            "upload failed after {up:?}: {}",
            r.out.stderr
        );
        ensure!(
            r.status == 201 || r.status == 204,
            "upload status {}",
            r.status
        );
        let stored = self.nginx()?.upload_dir().join("big.bin");
        ensure!(
            sha256_file(&stored)? == sha256_file(&up_src)?,
            "uploaded bytes differ"
        );
        Ok(RoundTrip {
            bytes: len,
            down,
            up,
        })
    }
}

/// Whether `ISTHMUS_TEST_CONFIG=dynamic` asks for dynamic mode (any other
/// value, or none, is the static mode).
pub fn dynamic_from_env() -> bool {
    std::env::var("ISTHMUS_TEST_CONFIG").is_ok_and(|v| v == "dynamic")
}

/// A workload serving `service` on port 80 over HTTP from `app`, allowing
/// the frontend.
pub fn http_workload(name: &str, service: &str, app: SocketAddr) -> Workload {
    Workload::new("default", name).serves(service, 80, Protocol::Http, app, &[FRONTEND_ID])
}

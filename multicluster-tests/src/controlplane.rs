//! Controllers (`mesh-controller`) for the loopback clusters: one process per
//! Raft node on the cluster's `127.x.y.0/24`, its YAML config generated per
//! `docs/reference/controller.md`, an admin REST client ([`AdminClient`]),
//! linking two clusters through the real API ([`link`]: a peering token on
//! one side, redeemed on the other) and bounded waits for what the
//! controllers derive ([`wait_import`], [`wait_no_import`]).
//!
//! A [`crate::Topology`] switched to [`crate::Topology::use_control_plane`]
//! runs one [`ControlPlane`] per cluster and gives its gateways and sidecars
//! a `control_plane` section with a join token instead of static
//! `peers`/`exports`/`services` (see [`crate::mesh`]).
//!
//! Files of a node live in `<cluster>/controller-<id>/`: `controller.yaml`,
//! `data/`, `controller.log`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use trust_bundle::{Bundle, TrustDomain};

use crate::bins::binaries;
use crate::process::Process;
use crate::ready::{eventually, patience, wait_until, wait_until_all};
use crate::site::Site;
use crate::tools::{require, run, Tool};

/// Timeout of one admin API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A controller YAML config (`mesh-controller --config`), key for key as in
/// the contract / `docs/reference/controller.md`. Optional keys are left
/// out when `None` so the binary's defaults apply.
#[derive(Debug, Clone, Serialize)]
pub struct ControllerConfig {
    /// The cluster's name.
    pub cluster: String,
    /// The cluster's region (failover priorities); left out when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Raft node id, ≥ 1.
    pub node_id: u64,
    /// redb database and snapshots (relative to the config file).
    pub data_dir: PathBuf,
    /// Raft RPC listener (HTTP/1.1).
    pub raft_listen: SocketAddr,
    /// An existing node's Raft address to join through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    /// TLS gRPC listener: Identity, ADS, Peering.
    pub grpc_listen: SocketAddr,
    /// Plaintext ADS listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xds_plaintext_listen: Option<SocketAddr>,
    /// Admin REST API, health, metrics.
    pub admin_listen: SocketAddr,
    /// HTTPS SPIFFE bundle endpoint.
    pub bundle_listen: SocketAddr,
    /// This cluster's east-west gateways.
    pub gateways: Vec<ControllerGateway>,
    /// Lifetime of signed SVIDs, s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub svid_ttl_seconds: Option<u64>,
    /// Default workload lease, s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u64>,
}

/// `gateways[i]` of a controller config.
#[derive(Debug, Clone, Serialize)]
pub struct ControllerGateway {
    /// The gateway's QUIC address.
    pub address: SocketAddr,
    /// The gateway's admin address.
    pub admin: SocketAddr,
}

/// Options of a cluster's control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// `region` of the controllers (`None`: left out).
    pub region: Option<String>,
    /// Raft nodes (1, 3 or 5).
    pub nodes: usize,
    /// `svid_ttl_seconds` (`None`: the binary's default, 24 h).
    pub svid_ttl_seconds: Option<u64>,
    /// `lease_seconds` (`None`: the binary's default, 15 s).
    pub lease_seconds: Option<u64>,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        ControlPlaneOptions {
            region: None,
            nodes: 1,
            svid_ttl_seconds: None,
            lease_seconds: None,
        }
    }
}

/// One controller node: its config and process.
pub struct Controller {
    /// The config it runs with.
    pub config: ControllerConfig,
    config_path: PathBuf,
    process: Process,
    site: Site,
}

impl Controller {
    /// Writes `config` into `dir/controller-<node_id>/` and starts the node
    /// (does not wait; see [`Controller::wait_ready`]).
    ///
    /// # Errors
    /// Missing binary or write failure.
    pub fn spawn(dir: &Path, config: ControllerConfig) -> Result<Self> {
        Self::spawn_in(&Site::root(), dir, config)
    }

    /// [`Controller::spawn`] inside `site` (a cluster's namespace).
    ///
    /// # Errors
    /// Missing binary or write failure.
    pub fn spawn_in(site: &Site, dir: &Path, config: ControllerConfig) -> Result<Self> {
        let bins = binaries()?;
        let home = dir.join(format!("controller-{}", config.node_id));
        std::fs::create_dir_all(&home).with_context(|| format!("mkdir {}", home.display()))?;
        let config_path = home.join("controller.yaml");
        let text = serde_yaml_ng::to_string(&config).context("serializing controller.yaml")?;
        std::fs::write(&config_path, text)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log_level = std::env::var("ISTHMUS_TEST_LOG").unwrap_or_else(|_| "info".into());
        let spec = site
            .spec(&bins.controller)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", log_level)
            .env("NO_COLOR", "1");
        let name = format!("{}/controller-{}", config.cluster, config.node_id);
        let process = Process::spawn(&name, spec, &home.join("controller.log"))
            .with_context(|| format!("spawning {name}"))?;
        Ok(Controller {
            config,
            config_path,
            process,
            site: site.clone(),
        })
    }

    /// The admin API of this node.
    pub fn admin(&self) -> AdminClient {
        AdminClient::in_site(self.config.admin_listen, self.site.clone())
    }

    /// The Raft node id.
    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    /// The process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Waits until `GET /readyz` answers 200 (a leader is known and the CA
    /// exists).
    ///
    /// # Errors
    /// The process exited or was not ready within the patience.
    pub fn wait_ready(&mut self) -> Result<()> {
        let admin = self.admin();
        wait_until(&mut self.process, "controller /readyz -> 200", || {
            let r = admin.call("GET", "/readyz", None, b"")?;
            ensure!(r.status == 200, "readyz {}: {}", r.status, r.body.trim());
            Ok(())
        })
    }

    /// `kill -9`.
    ///
    /// # Errors
    /// The kill failed.
    pub fn kill9(&mut self) -> Result<()> {
        self.process.kill9()
    }

    /// SIGTERM, then waits (bounded by the patience) for the exit; SIGKILL
    /// if it does not exit in time.
    ///
    /// # Errors
    /// It did not exit after SIGTERM within the patience.
    pub fn stop(&mut self) -> Result<()> {
        if !self.process.is_running() {
            return Ok(());
        }
        self.process.signal("TERM")?;
        let start = Instant::now();
        while start.elapsed() < patience() {
            if !self.process.is_running() {
                return self.process.kill9();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process.kill9()?;
        bail!(
            "{} did not exit within {:?} of SIGTERM",
            self.process.name(),
            patience()
        )
    }

    /// Starts the node again with the same config (after a kill or stop).
    ///
    /// # Errors
    /// As [`Process::restart`].
    pub fn restart(&mut self) -> Result<()> {
        self.process.restart()
    }
}

/// A cluster's control plane: one or more Raft nodes of one cluster.
pub struct ControlPlane {
    /// The cluster's name.
    pub cluster: String,
    /// Its trust domain.
    pub trust_domain: String,
    /// The nodes, node ids 1..=n in order.
    pub nodes: Vec<Controller>,
    /// Where the nodes run.
    pub site: Site,
}

impl ControlPlane {
    /// Starts `ips.len()` nodes of `cluster` (node `i+1` on `ips[i]`, ports
    /// 15010 xDS, 15012 gRPC, 15013 Raft, 15014 admin, 15015 bundle
    /// preferred): node 1 first, alone, until ready; then the others with
    /// `join: <node 1's raft address>`; then waits until node 1 reports
    /// every node as a voter.
    ///
    /// # Errors
    /// A node failed to start, or the group did not form within the
    /// patience.
    pub fn start(
        dir: &Path,
        cluster: &str,
        trust_domain: &str,
        ips: &[Ipv4Addr],
        gateways: Vec<ControllerGateway>,
        options: &ControlPlaneOptions,
    ) -> Result<Self> {
        Self::start_in(
            &Site::root(),
            dir,
            cluster,
            trust_domain,
            ips,
            gateways,
            options,
        )
    }

    /// [`ControlPlane::start`] inside `site` (a cluster's namespace; the
    /// preferred ports are then used as they are).
    ///
    /// # Errors
    /// As [`ControlPlane::start`].
    pub fn start_in(
        site: &Site,
        dir: &Path,
        cluster: &str,
        trust_domain: &str,
        ips: &[Ipv4Addr],
        gateways: Vec<ControllerGateway>,
        options: &ControlPlaneOptions,
    ) -> Result<Self> {
        ensure!(!ips.is_empty(), "a control plane needs at least one node");
        let dir = dir.join(cluster);
        let mut nodes: Vec<Controller> = Vec::new();
        let mut first_raft = None;
        for (i, ip) in ips.iter().enumerate() {
            let config = ControllerConfig {
                cluster: cluster.to_owned(),
                region: options.region.clone(),
                trust_domain: trust_domain.to_owned(),
                node_id: i as u64 + 1,
                data_dir: "data".into(),
                raft_listen: site.tcp_addr(*ip, 15013)?,
                join: first_raft.map(|a: SocketAddr| a.to_string()),
                grpc_listen: site.tcp_addr(*ip, 15012)?,
                xds_plaintext_listen: Some(site.tcp_addr(*ip, 15010)?),
                admin_listen: site.tcp_addr(*ip, 15014)?,
                bundle_listen: site.tcp_addr(*ip, 15015)?,
                gateways: gateways.clone(),
                svid_ttl_seconds: options.svid_ttl_seconds,
                lease_seconds: options.lease_seconds,
            };
            first_raft.get_or_insert(config.raft_listen);
            let mut node = Controller::spawn_in(site, &dir, config)?;
            node.wait_ready()?;
            nodes.push(node);
        }
        let mut cp = ControlPlane {
            cluster: cluster.to_owned(),
            trust_domain: trust_domain.to_owned(),
            nodes,
            site: site.clone(),
        };
        cp.wait_voters(ips.len())?;
        Ok(cp)
    }

    /// Node 1's admin API (any node forwards writes to the leader).
    pub fn admin(&self) -> AdminClient {
        self.nodes[0].admin()
    }

    /// The admin APIs of every node that is running.
    pub fn running_admins(&mut self) -> Vec<AdminClient> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.process.is_running().then(|| n.admin()))
            .collect()
    }

    /// The node with Raft id `id`.
    ///
    /// # Errors
    /// No such node.
    pub fn node(&mut self, id: u64) -> Result<&mut Controller> {
        let cluster = self.cluster.clone();
        self.nodes
            .iter_mut()
            .find(|n| n.node_id() == id)
            .ok_or_else(|| anyhow!("{cluster} has no controller node {id}"))
    }

    /// The gRPC (TLS) address of node 1.
    pub fn grpc_address(&self) -> SocketAddr {
        self.nodes[0].config.grpc_listen
    }

    /// The bundle endpoint of node 1.
    pub fn bundle_address(&self) -> SocketAddr {
        self.nodes[0].config.bundle_listen
    }

    /// The leader's node id as reported by the first running node that
    /// knows one.
    ///
    /// # Errors
    /// No running node reports a leader.
    pub fn leader(&mut self) -> Result<u64> {
        let mut last = anyhow!("no node is running");
        for admin in self.running_admins() {
            match admin.status().and_then(|s| raft_leader(&s)) {
                Ok(Some(id)) => return Ok(id),
                Ok(None) => last = anyhow!("{} knows no leader", admin.addr),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Polls until a running node other than `not` reports a leader
    /// that is itself running, and returns its id.
    ///
    /// # Errors
    /// None within the patience.
    pub fn wait_leader_other_than(&mut self, not: u64) -> Result<u64> {
        let start = Instant::now();
        loop {
            if let Ok(id) = self.leader() {
                let running = self
                    .nodes
                    .iter_mut()
                    .any(|n| n.node_id() == id && n.process.is_running());
                if id != not && running {
                    return Ok(id);
                }
            }
            if start.elapsed() >= patience() {
                bail!(
                    "{}: no new leader (other than node {not}) within {:?}",
                    self.cluster,
                    patience()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until node 1 (or any running node) reports `n` voters and a
    /// leader.
    ///
    /// # Errors
    /// Not within the patience, or a node exited.
    pub fn wait_voters(&mut self, n: usize) -> Result<()> {
        let admins: Vec<AdminClient> = self.nodes.iter().map(Controller::admin).collect();
        let mut procs: Vec<&mut Process> = self.nodes.iter_mut().map(|c| &mut c.process).collect();
        wait_until_all(&mut procs, &format!("{n} Raft voters and a leader"), || {
            let mut last = anyhow!("no node answered");
            for a in &admins {
                match a.status() {
                    Ok(s) => {
                        let voters = raft_voters(&s);
                        if voters == n && raft_leader(&s).ok().flatten().is_some() {
                            return Ok(());
                        }
                        last = anyhow!("{}: {voters} voters; raft {}", a.addr, s["raft"]);
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }

    /// The cluster's current bundle (JWKS) from node 1's bundle endpoint.
    ///
    /// # Errors
    /// As [`fetch_bundle`].
    pub fn bundle(&self) -> Result<Bundle> {
        fetch_bundle_in(&self.site, self.bundle_address(), &self.trust_domain)
    }
}

/// The leader id in a `/v1/status` document (`raft.leader`), `None` when
/// the node knows none.
///
/// # Errors
/// The document has no `raft` object.
pub fn raft_leader(status: &Value) -> Result<Option<u64>> {
    let raft = status
        .get("raft")
        .ok_or_else(|| anyhow!("/v1/status has no `raft`: {status}"))?;
    Ok(raft.get("leader").and_then(Value::as_u64))
}

/// The number of voters in a `/v1/status` document (`raft.voters`).
pub fn raft_voters(status: &Value) -> usize {
    status["raft"]["voters"].as_array().map_or(0, Vec::len)
}

/// The SPIFFE bundle served at `https://<addr>/` (the `https_spiffe`
/// bundle endpoint), fetched with `curl -k`: the harness has no trust yet
/// when it bootstraps a cluster (the controller makes its CA at first
/// start), which is exactly the "bootstrap trust" step an operator does.
///
/// # Errors
/// curl failed, a non-200 answer, or the body is not a bundle of `td`.
pub fn fetch_bundle(addr: SocketAddr, trust_domain: &str) -> Result<Bundle> {
    fetch_bundle_in(&Site::root(), addr, trust_domain)
}

/// [`fetch_bundle`] with curl run inside `site`.
///
/// # Errors
/// As [`fetch_bundle`].
pub fn fetch_bundle_in(site: &Site, addr: SocketAddr, trust_domain: &str) -> Result<Bundle> {
    let curl = require(Tool::Curl)?;
    let mut cmd = site.command(curl);
    cmd.args(["-sS", "-k", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("https://{addr}/"));
    let out = run(&mut cmd, None, Duration::from_secs(10))?;
    ensure!(
        out.success(),
        "curl -k https://{addr}/ failed: {}",
        out.stderr
    );
    let text = out.stdout_text();
    let (body, code) = text
        .rsplit_once('\n')
        .ok_or_else(|| anyhow!("no status from curl"))?;
    ensure!(
        code.trim() == "200",
        "bundle endpoint {addr} answered {code}: {body}"
    );
    let td = TrustDomain::parse(trust_domain).with_context(|| format!("{trust_domain:?}"))?;
    Bundle::from_jwks(td, body.as_bytes())
        .with_context(|| format!("the bundle from https://{addr}/"))
}

/// Links `a` and `b` through the real API: `POST /v1/peering/tokens` on
/// `a`, `POST /v1/peering/redeem` on `b`. Returns the peer `b` recorded.
///
/// # Errors
/// Either call failed.
pub fn link(a: &AdminClient, b: &AdminClient) -> Result<Value> {
    let token = a.peering_token(600)?;
    let r = b.redeem(&token)?;
    ensure!(
        r.status == 200,
        "redeem on {} answered {}: {}",
        b.addr,
        r.status,
        r.body
    );
    Ok(r.json()?["peer"].clone())
}

/// Polls `GET /v1/resources/serviceimports/<ns>/<name>` until it is there
/// and (when `from` is given) its `status.clusters` names `from`; returns
/// the import and how long it took.
///
/// # Errors
/// Not within `patience`.
pub fn wait_import(
    admin: &AdminClient,
    namespace: &str,
    name: &str,
    from: Option<&str>,
    patience: Duration,
) -> Result<(Value, Duration)> {
    let start = Instant::now();
    let v = eventually(
        &format!("ServiceImport {namespace}/{name} in {}", admin.addr),
        patience,
        || {
            let v = admin
                .get("serviceimports", namespace, name)?
                .ok_or_else(|| anyhow!("not there yet"))?;
            if let Some(c) = from {
                ensure!(
                    import_clusters(&v).iter().any(|x| x == c),
                    "no cluster {c} in {}",
                    v["status"]
                );
            }
            Ok(v)
        },
    )?;
    Ok((v, start.elapsed()))
}

/// Polls until `serviceimports/<ns>/<name>` is gone (404).
///
/// # Errors
/// Still there after `patience`.
pub fn wait_no_import(
    admin: &AdminClient,
    namespace: &str,
    name: &str,
    patience: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    eventually(
        &format!("ServiceImport {namespace}/{name} gone from {}", admin.addr),
        patience,
        || match admin.get("serviceimports", namespace, name)? {
            None => Ok(()),
            Some(v) => bail!("still there: {v}"),
        },
    )?;
    Ok(start.elapsed())
}

/// The cluster names of a ServiceImport's `status.clusters[].cluster`.
pub fn import_clusters(import: &Value) -> Vec<String> {
    import["status"]["clusters"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["cluster"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A `ServiceExport` document (`multicluster.x-k8s.io/v1alpha1`).
pub fn service_export_yaml(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
    )
}

/// The certificate chain (PEM blocks, leaf first) a TLS server at `addr`
/// presents, read with `openssl s_client -showcerts` (the handshake may
/// then fail for want of a client certificate: the server's chain has been
/// sent by then in TLS 1.3).
///
/// # Errors
/// openssl is missing or printed no certificate.
pub fn presented_chain(addr: SocketAddr) -> Result<Vec<String>> {
    let mut cmd = std::process::Command::new(openssl()?);
    cmd.args(["s_client", "-showcerts", "-connect"])
        .arg(addr.to_string());
    let out = run(&mut cmd, Some(Vec::new()), Duration::from_secs(10))?;
    let text = out.stdout_text();
    let chain = pem_blocks(&text);
    ensure!(
        !chain.is_empty(),
        "openssl s_client -connect {addr} printed no certificate: {}",
        out.stderr
    );
    Ok(chain)
}

/// The PEM of each root of `bundle`.
///
/// # Errors
/// openssl is missing or refused a certificate.
pub fn bundle_roots_pem(bundle: &Bundle) -> Result<Vec<String>> {
    bundle
        .x509_authorities()
        .iter()
        .map(|der| {
            let mut cmd = std::process::Command::new(openssl()?);
            cmd.args(["x509", "-inform", "DER", "-outform", "PEM"]);
            let out = run(&mut cmd, Some(der.to_vec()), Duration::from_secs(10))?;
            ensure!(out.success(), "openssl x509 -inform DER: {}", out.stderr);
            Ok(out.stdout_text())
        })
        .collect()
}

/// Whether `chain` (leaf first) verifies against exactly the roots `roots`
/// (`openssl verify -partial_chain`, any purpose).
///
/// # Errors
/// openssl is missing or the files cannot be written.
pub fn chain_verifies(chain: &[String], roots: &[String], scratch: &Path) -> Result<bool> {
    let (Some(leaf), rest) = (chain.first(), chain.get(1..).unwrap_or_default()) else {
        bail!("empty chain");
    };
    std::fs::create_dir_all(scratch)?;
    let (leaf_f, untrusted_f, roots_f) = (
        scratch.join("leaf.pem"),
        scratch.join("untrusted.pem"),
        scratch.join("roots.pem"),
    );
    std::fs::write(&leaf_f, leaf)?;
    std::fs::write(&roots_f, roots.concat())?;
    let mut cmd = std::process::Command::new(openssl()?);
    cmd.arg("verify").arg("-CAfile").arg(&roots_f);
    if !rest.is_empty() {
        std::fs::write(&untrusted_f, rest.concat())?;
        cmd.arg("-untrusted").arg(&untrusted_f);
    }
    cmd.arg(&leaf_f);
    let out = run(&mut cmd, None, Duration::from_secs(10))?;
    Ok(out.success())
}

fn openssl() -> Result<PathBuf> {
    for d in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(d).join("openssl");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("`openssl` not found: install the Debian package `openssl`")
}

fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            cur = Some(String::new());
        }
        if let Some(c) = cur.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----") {
            out.extend(cur.take());
        }
    }
    out
}

/// Requests in a loop (curl, one per request, back to back) against `url`
/// on a thread until [`Traffic::stop`], counting 200s with the expected
/// body and everything else as failures.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<Vec<String>>,
}

/// What a [`Traffic`] loop saw.
#[derive(Debug, Clone)]
pub struct TrafficReport {
    /// Requests answered 200 with the expected body.
    pub ok: u64,
    /// Every other outcome.
    pub failed: u64,
    /// The first few failures, described.
    pub failures: Vec<String>,
}

impl Traffic {
    /// Starts the loop.
    pub fn start(url: String, expected_body: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let handle = std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match crate::tools::curl(&[&url], Duration::from_secs(5)) {
                    Ok(r) if r.status == 200 && r.body_text() == expected_body => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        if failures.len() < 10 {
                            failures.push(format!(
                                "status {} x-isthmus-error {:?} body {:?} curl: {}",
                                r.status,
                                r.header("x-isthmus-error"),
                                r.body_text(),
                                r.out.stderr.trim()
                            ));
                        }
                    }
                    Err(e) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        if failures.len() < 10 {
                            failures.push(format!("{e:#}"));
                        }
                    }
                }
            }
            failures
        });
        Traffic {
            stop,
            ok,
            failed,
            handle,
        }
    }

    /// (ok, failed) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Waits until `n` more requests than now have completed: a window of
    /// traffic measured in requests, not time. Bounded by the patience plus
    /// 250 ms per request (a loaded machine runs curl slowly).
    ///
    /// # Errors
    /// Fewer within the bound.
    pub fn wait_requests(&self, n: u64) -> Result<()> {
        let (o, f) = self.counts();
        let target = o + f + n;
        let bound = patience() + Duration::from_millis(250).saturating_mul(n as u32);
        eventually(&format!("{n} more requests"), bound, || {
            let (o, f) = self.counts();
            ensure!(
                o + f >= target,
                "{} of {n}",
                (o + f).saturating_sub(target - n)
            );
            Ok(())
        })
    }

    /// Stops the loop and reports.
    ///
    /// # Errors
    /// The loop thread panicked.
    pub fn stop(self) -> Result<TrafficReport> {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .handle
            .join()
            .map_err(|_| anyhow!("the traffic thread panicked"))?;
        Ok(TrafficReport {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            failures,
        })
    }
}

/// One admin API answer.
#[derive(Debug, Clone)]
pub struct AdminResponse {
    /// HTTP status.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

impl AdminResponse {
    /// The body as JSON.
    ///
    /// # Errors
    /// Not JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("status {} body is not JSON: {:?}", self.status, self.body))
    }

    /// The body as JSON when the status is `want`, else an error with both.
    ///
    /// # Errors
    /// Another status, or not JSON.
    pub fn expect(self, want: u16, what: &str) -> Result<Value> {
        ensure!(
            self.status == want,
            "{what}: status {} (want {want}): {}",
            self.status,
            self.body
        );
        self.json()
    }
}

/// A client of a controller's admin REST API (HTTP/1.1, one connection per
/// call, `Connection: close`), with an optional bearer token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// The admin listener.
    pub addr: SocketAddr,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// Where the listener is reachable (the controller's namespace).
    pub site: Site,
}

impl AdminClient {
    /// A client of the admin API at `addr` (root namespace).
    pub fn new(addr: SocketAddr) -> Self {
        Self::in_site(addr, Site::root())
    }

    /// A client of the admin API at `addr` inside `site`.
    pub fn in_site(addr: SocketAddr, site: Site) -> Self {
        AdminClient {
            addr,
            token: None,
            site,
        }
    }

    /// One call: `method path` with `body` of `content_type`.
    ///
    /// # Errors
    /// Connect, I/O or timeout, or an unparsable answer.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<AdminResponse> {
        let what = format!("{method} http://{}{path}", self.addr);
        self.call_inner(method, path, content_type, body)
            .with_context(|| what)
    }

    fn call_inner(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<AdminResponse> {
        let mut s = self.site.connect(self.addr, CALL_TIMEOUT)?;
        s.set_read_timeout(Some(CALL_TIMEOUT))?;
        s.set_write_timeout(Some(CALL_TIMEOUT))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).context("reading the response")?;
        parse_response(&buf)
    }

    /// `GET /v1/status`.
    ///
    /// # Errors
    /// Transport failure or a non-200 answer.
    pub fn status(&self) -> Result<Value> {
        self.call("GET", "/v1/status", None, b"")?
            .expect(200, "GET /v1/status")
    }

    /// `POST /v1/apply` with a YAML stream; the raw answer.
    ///
    /// # Errors
    /// Transport failure only.
    pub fn apply_raw(&self, content_type: &str, body: &str) -> Result<AdminResponse> {
        self.call("POST", "/v1/apply", Some(content_type), body.as_bytes())
    }

    /// `POST /v1/apply` with a YAML stream, expecting 200; the `results`.
    ///
    /// # Errors
    /// Transport failure or a non-200 answer.
    pub fn apply_yaml(&self, yaml: &str) -> Result<Value> {
        self.apply_raw("application/yaml", yaml)?
            .expect(200, "POST /v1/apply")
    }

    /// `GET /v1/resources/<plural>[?namespace=ns]` → `items`.
    ///
    /// # Errors
    /// Transport failure, a non-200 answer or no `items` list.
    pub fn list(&self, plural: &str, namespace: Option<&str>) -> Result<Vec<Value>> {
        let path = match namespace {
            Some(ns) => format!("/v1/resources/{plural}?namespace={ns}"),
            None => format!("/v1/resources/{plural}"),
        };
        let v = self.call("GET", &path, None, b"")?.expect(200, &path)?;
        v["items"]
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow!("GET {path}: no `items` list in {v}"))
    }

    /// `GET /v1/resources/<plural>/<ns>/<name>`; `None` on 404.
    ///
    /// # Errors
    /// Transport failure or another status than 200/404.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Result<Option<Value>> {
        let path = format!("/v1/resources/{plural}/{namespace}/{name}");
        let r = self.call("GET", &path, None, b"")?;
        if r.status == 404 {
            return Ok(None);
        }
        r.expect(200, &path).map(Some)
    }

    /// `DELETE /v1/resources/<plural>/<ns>/<name>`; the raw answer.
    ///
    /// # Errors
    /// Transport failure only.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> Result<AdminResponse> {
        let path = format!("/v1/resources/{plural}/{namespace}/{name}");
        self.call("DELETE", &path, None, b"")
    }

    /// `POST /v1/tokens/join` → the token.
    ///
    /// # Errors
    /// Transport failure or a non-200 answer.
    pub fn join_token(&self, namespace: &str, service_account: &str, ttl_s: u64) -> Result<String> {
        let body = json!({
            "namespace": namespace,
            "serviceAccount": service_account,
            "ttlSeconds": ttl_s,
        });
        let v = self
            .call(
                "POST",
                "/v1/tokens/join",
                Some("application/json"),
                body.to_string().as_bytes(),
            )?
            .expect(200, "POST /v1/tokens/join")?;
        token_of(&v)
    }

    /// `POST /v1/peering/tokens` → the token.
    ///
    /// # Errors
    /// Transport failure or a non-200 answer.
    pub fn peering_token(&self, ttl_s: u64) -> Result<String> {
        let body = json!({ "ttlSeconds": ttl_s });
        let v = self
            .call(
                "POST",
                "/v1/peering/tokens",
                Some("application/json"),
                body.to_string().as_bytes(),
            )?
            .expect(200, "POST /v1/peering/tokens")?;
        token_of(&v)
    }

    /// `POST /v1/peering/redeem`; the raw answer (200, 409 reused, 410
    /// expired, 400 malformed, 502 issuer unreachable).
    ///
    /// # Errors
    /// Transport failure only.
    pub fn redeem(&self, token: &str) -> Result<AdminResponse> {
        let body = json!({ "token": token });
        self.call(
            "POST",
            "/v1/peering/redeem",
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }

    /// `DELETE /v1/peering/peers/<cluster>`.
    ///
    /// # Errors
    /// Transport failure only.
    pub fn unlink(&self, cluster: &str) -> Result<AdminResponse> {
        self.call("DELETE", &format!("/v1/peering/peers/{cluster}"), None, b"")
    }

    /// `POST /v1/ca/rotate` with `body` (`{}` for the defaults); the raw
    /// answer (202 `{"sequence": n}`).
    ///
    /// # Errors
    /// Transport failure only.
    pub fn rotate_ca(&self, body: &Value) -> Result<AdminResponse> {
        self.call(
            "POST",
            "/v1/ca/rotate",
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }
}

fn token_of(v: &Value) -> Result<String> {
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no `token` in {v}"))
}

/// Splits an HTTP/1.1 response read to EOF into status and body (de-chunked
/// when `Transfer-Encoding: chunked`).
fn parse_response(buf: &[u8]) -> Result<AdminResponse> {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of head in {} bytes", buf.len()))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let raw = &buf[split + 4..];
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no status line in {:?}", head.lines().next()))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(raw)? } else { raw.to_vec() };
    Ok(AdminResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size line"))?;
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("chunk size {size_text:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(raw.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "{}"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.json().unwrap(), json!({"a": 1}));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn reads_leader_and_voters() {
        let s =
            json!({"raft": {"node_id": 2, "leader": 3, "voters": [[1, "a"], [2, "b"], [3, "c"]]}});
        assert_eq!(raft_leader(&s).unwrap(), Some(3));
        assert_eq!(raft_voters(&s), 3);
        assert_eq!(
            raft_leader(&json!({"raft": {"leader": null}})).unwrap(),
            None
        );
        assert!(raft_leader(&json!({})).is_err());
    }
}

//! A started topology: the gateways and sidecars as running processes (and,
//! in dynamic mode, each cluster's controllers), on loopback or, after
//! [`Topology::use_wan`], each cluster's inside its network namespace.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};

use crate::bins::binaries;
use crate::config::SidecarConfig;
use crate::controlplane::{
    link, service_export_yaml, wait_import, AdminClient, ControlPlane, ControllerGateway,
};
use crate::netns::Wan;
use crate::pki::{write_bundle_map, ClusterPki};
use crate::process::Process;
use crate::ready::{patience, wait_until};
use crate::site::Site;
use crate::topology::Topology;

/// The admin readiness path of both binaries.
pub const READY_PATH: &str = "/readyz";

/// A running topology. Dropping it kills every process (and prints their log
/// tails if the test panicked), then removes the temp dir.
pub struct Mesh {
    // Field order matters: processes die before the directory goes.
    processes: BTreeMap<String, Process>,
    control_planes: BTreeMap<String, ControlPlane>,
    pki: BTreeMap<String, ClusterPki>,
    topology: Topology,
}

impl Topology {
    /// Writes the PKI (one CA per cluster; bundle maps per trust), the
    /// configs, and starts every gateway, then every sidecar, each waited on
    /// until `/readyz` answers 200. With peers over TCP+TLS, it also waits
    /// until every gateway's connections to its linked peers are up (a
    /// refused TCP connect puts a peer in reconnect backoff, unlike a QUIC
    /// Initial that is retransmitted until the peer listens).
    ///
    /// In dynamic mode ([`Topology::use_control_plane`]) it first starts
    /// each cluster's controllers, writes the bootstrap bundle (fetched
    /// from the cluster's bundle endpoint) and a join token per component,
    /// links the linked clusters and applies every export through the admin
    /// API; after the components are ready it waits until the gateways
    /// reach their peers, every import has arrived and every sidecar's
    /// catalog has endpoints for the upstreams that are served somewhere.
    ///
    /// # Errors
    /// Missing binaries, a write failure, or a component that exits or is
    /// not ready within the patience (the error carries its log tail).
    pub fn start(self) -> Result<Mesh> {
        ensure!(
            self.resources.is_empty() || self.is_dynamic(),
            "apply_on_start needs the controllers (use_control_plane)"
        );
        let bins = binaries()?;
        let mut pki = BTreeMap::new();
        for c in &self.clusters {
            pki.insert(
                c.name.clone(),
                ClusterPki::create(&c.trust_domain, &self.dir().join(&c.name))?,
            );
        }
        for c in &self.clusters {
            let mut bundles = vec![pki[&c.name].bundle()];
            for t in self.trusted_by(&c.name) {
                let p = pki.get(t).ok_or_else(|| anyhow!("no cluster {t}"))?;
                bundles.push(p.bundle());
            }
            write_bundle_map(&self.dir().join(&c.name).join("bundles.json"), bundles)?;
        }
        let mut mesh = Mesh {
            processes: BTreeMap::new(),
            control_planes: BTreeMap::new(),
            pki,
            topology: self,
        };
        if mesh.topology.is_dynamic() {
            mesh.start_control_planes()?;
        }
        let gateways: Vec<(String, usize)> = mesh
            .topology
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.gateways.len()))
            .collect();
        let names: Vec<(String, Vec<String>)> = mesh
            .topology
            .clusters
            .iter()
            .map(|c| {
                let ws = c.workloads.iter().map(|w| w.spec.name.clone()).collect();
                (c.name.clone(), ws)
            })
            .collect();
        for (cluster, replicas) in &gateways {
            for r in 0..*replicas {
                let cfg = mesh.topology.gateway_replica_config(cluster, r)?;
                let component = Topology::gateway_component(r);
                let path = mesh.topology.config_path(cluster, &component);
                Topology::write_yaml(&path, &cfg)?;
                mesh.spawn(&bins.gateway, cluster, &component, &path)?;
            }
        }
        for (cluster, replicas) in &gateways {
            for r in 0..*replicas {
                mesh.wait_ready(cluster, &Topology::gateway_component(r))?;
            }
        }
        if mesh.topology.peers_over_tcp_tls() && !mesh.topology.is_dynamic() {
            for (cluster, replicas) in &gateways {
                for r in 0..*replicas {
                    mesh.wait_replica_peers_connected(cluster, r)?;
                }
            }
        }
        for (cluster, workloads) in &names {
            for w in workloads {
                let cfg = mesh.topology.sidecar_config(cluster, w)?;
                let path = mesh.topology.config_path(cluster, w);
                Topology::write_yaml(&path, &cfg)?;
                mesh.spawn(&bins.sidecar, cluster, w, &path)?;
            }
        }
        for (cluster, workloads) in &names {
            for w in workloads {
                mesh.wait_ready(cluster, w)?;
            }
        }
        if mesh.topology.is_dynamic() {
            mesh.wait_dynamic_converged()?;
        }
        Ok(mesh)
    }
}

impl Mesh {
    /// Dynamic mode, before the components start: controllers, bootstrap
    /// bundles, join tokens, links and exports.
    fn start_control_planes(&mut self) -> Result<()> {
        let mut options = self
            .topology
            .control_plane
            .clone()
            .ok_or_else(|| anyhow!("not in dynamic mode"))?;
        let clusters: Vec<String> = self
            .topology
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect();
        for name in &clusters {
            let mut ips = Vec::new();
            for _ in 0..options.nodes.max(1) {
                ips.push(self.topology.host(name)?);
            }
            let site = self.topology.site(name)?;
            let c = self.topology.cluster(name)?;
            let gateways: Vec<ControllerGateway> = c
                .gateways
                .iter()
                .map(|g| ControllerGateway {
                    address: g.listen,
                    admin: g.admin,
                })
                .collect();
            let td = c.trust_domain.clone();
            options.region.clone_from(&c.region);
            let cp =
                ControlPlane::start_in(&site, self.dir(), name, &td, &ips, gateways, &options)?;
            let dir = self.dir().join(name);
            write_bundle_map(&dir.join("bundles.json"), [cp.bundle()?])?;
            let admin = cp.admin();
            for r in 0..c.gateways.len() {
                let token = admin.join_token("isthmus-system", "east-west-gateway", 3600)?;
                let component = Topology::gateway_component(r);
                std::fs::write(dir.join(Topology::token_file(&component)), token)?;
            }
            for w in &c.workloads {
                let token = admin.join_token(&w.spec.namespace, &w.spec.name, 3600)?;
                std::fs::write(dir.join(Topology::token_file(&w.spec.name)), token)?;
            }
            self.topology.cluster_mut(name)?.controller_grpc = Some(cp.grpc_address());
            self.control_planes.insert(name.clone(), cp);
        }
        for (i, a) in clusters.iter().enumerate() {
            for b in self.topology.trusted_by(a) {
                let both = self.topology.trusted_by(b).any(|x| x == a);
                ensure!(
                    both,
                    "{a} trusts {b} one way only: a link through the controllers is always both ways"
                );
            }
            for b in clusters.iter().skip(i + 1) {
                if self.topology.trusted_by(a).any(|x| x == b) {
                    link(&self.admin(a)?, &self.admin(b)?)
                        .with_context(|| format!("linking {a} and {b}"))?;
                }
            }
        }
        for e in &self.topology.exports {
            let (ns, name) = e
                .service
                .split_once('/')
                .ok_or_else(|| anyhow!("service {:?} is not namespace/name", e.service))?;
            self.admin(&e.cluster)?
                .apply_yaml(&service_export_yaml(ns, name))
                .with_context(|| format!("exporting {} in {}", e.service, e.cluster))?;
        }
        for (cluster, yaml) in &self.topology.resources {
            self.admin(cluster)?
                .apply_yaml(yaml)
                .with_context(|| format!("applying resources in {cluster}:\n{yaml}"))?;
        }
        Ok(())
    }

    /// Dynamic mode, after the components are ready: gateways connected to
    /// their peers, imports present, sidecar catalogs filled.
    fn wait_dynamic_converged(&mut self) -> Result<()> {
        let clusters: Vec<String> = self
            .topology
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect();
        for c in &clusters {
            for r in 0..self.topology.cluster(c)?.gateways.len() {
                self.wait_replica_peers_connected(c, r)?;
            }
        }
        let exports: Vec<(String, String)> = self
            .topology
            .exports
            .iter()
            .map(|e| (e.cluster.clone(), e.service.clone()))
            .collect();
        for (from, service) in &exports {
            let (ns, name) = service.split_once('/').unwrap_or(("", service));
            let importers: Vec<String> =
                self.topology.trusted_by(from).map(str::to_owned).collect();
            for to in importers {
                wait_import(&self.admin(&to)?, ns, name, Some(from), patience())
                    .with_context(|| format!("{service} exported by {from}"))?;
            }
        }
        for c in &clusters {
            let workloads: Vec<String> = self
                .topology
                .cluster(c)?
                .workloads
                .iter()
                .map(|w| w.spec.name.clone())
                .collect();
            for w in workloads {
                self.wait_catalog(c, &w)?;
            }
        }
        Ok(())
    }

    /// Dynamic mode: waits until the sidecar's `/config_dump` lists
    /// endpoints (local or remote) for each of its upstreams that some
    /// workload serves in its cluster or exports to it from a linked one.
    ///
    /// # Errors
    /// The sidecar exited or its catalog stayed empty for the patience.
    pub fn wait_catalog(&mut self, cluster: &str, workload: &str) -> Result<()> {
        let expected: Vec<String> = {
            let t = &self.topology;
            let w = t.workload_spec(cluster, workload)?;
            w.outbound
                .iter()
                .map(|o| o.service.clone())
                .filter(|s| {
                    t.serves(cluster, s)
                        || t.exports.iter().any(|e| {
                            &e.service == s && t.trusted_by(cluster).any(|c| c == e.cluster)
                        })
                })
                .collect()
        };
        if expected.is_empty() {
            return Ok(());
        }
        let admin = self.topology.sidecar_admin(cluster, workload)?;
        let site = self.topology.site(cluster)?;
        let p = self.process(cluster, workload)?;
        wait_until(
            p,
            &format!("catalog of {cluster}/{workload} from xDS"),
            || {
                let (status, body) =
                    site.http_get(admin, "/config_dump", Duration::from_secs(2))?;
                ensure!(status == 200, "/config_dump answered {status}");
                let dump: serde_json::Value = serde_json::from_str(&body)
                    .with_context(|| format!("/config_dump is not JSON: {body}"))?;
                for s in &expected {
                    ensure!(
                        catalog_has_endpoints(&dump, s),
                        "no endpoints for {s} yet in {}",
                        dump["services"]
                    );
                }
                Ok(())
            },
        )
    }

    /// The control plane of `cluster` (dynamic mode).
    ///
    /// # Errors
    /// Not in dynamic mode, or no such cluster.
    pub fn control_plane(&mut self, cluster: &str) -> Result<&mut ControlPlane> {
        self.control_planes
            .get_mut(cluster)
            .ok_or_else(|| anyhow!("no control plane for {cluster} (static mode?)"))
    }

    /// The admin API of `cluster`'s controller (node 1).
    ///
    /// # Errors
    /// Not in dynamic mode, or no such cluster.
    pub fn admin(&self, cluster: &str) -> Result<AdminClient> {
        self.control_planes
            .get(cluster)
            .map(ControlPlane::admin)
            .ok_or_else(|| anyhow!("no control plane for {cluster} (static mode?)"))
    }
}

/// Whether a sidecar `/config_dump` lists local endpoints or remote
/// clusters for `service` (`namespace/name`).
pub fn catalog_has_endpoints(dump: &serde_json::Value, service: &str) -> bool {
    let Some(services) = dump["services"].as_array() else {
        return false;
    };
    services.iter().any(|s| {
        let name = match &s["service"] {
            serde_json::Value::String(n) => n.clone(),
            v => format!(
                "{}/{}",
                v["namespace"].as_str().unwrap_or_default(),
                v["name"].as_str().unwrap_or_default()
            ),
        };
        let non_empty = |k: &str| s[k].as_array().is_some_and(|a| !a.is_empty());
        name == service && (non_empty("endpoints") || non_empty("remote"))
    })
}

impl Mesh {
    /// The topology (addresses, configs).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The WAN of [`Topology::use_wan`] (for `partition`, `heal`,
    /// `set_link`, `stats`).
    ///
    /// # Errors
    /// The topology runs on loopback.
    pub fn wan(&self) -> Result<&Wan> {
        self.topology
            .wan()
            .ok_or_else(|| anyhow!("this mesh runs on loopback (no Topology::use_wan)"))
    }

    /// Where `cluster`'s processes run (see [`Topology::site`]).
    ///
    /// # Errors
    /// Unknown cluster.
    pub fn site(&self, cluster: &str) -> Result<Site> {
        self.topology.site(cluster)
    }

    /// `GET path` on a component's admin listener (`gateway`, `gateway-<r>`
    /// or a workload name), from the component's site.
    ///
    /// # Errors
    /// Unknown component, or the request failed.
    pub fn admin_get(&self, cluster: &str, component: &str, path: &str) -> Result<(u16, String)> {
        let admin = self.component_admin(cluster, component)?;
        self.site(cluster)?
            .http_get(admin, path, Duration::from_secs(5))
    }

    /// The temp dir.
    pub fn dir(&self) -> &Path {
        self.topology.dir()
    }

    /// The CA of `cluster`.
    ///
    /// # Errors
    /// Unknown cluster.
    pub fn pki(&self, cluster: &str) -> Result<&ClusterPki> {
        self.pki
            .get(cluster)
            .ok_or_else(|| anyhow!("no cluster {cluster}"))
    }

    /// The process of a component: `gateway` or a workload name.
    ///
    /// # Errors
    /// No such component.
    pub fn process(&mut self, cluster: &str, component: &str) -> Result<&mut Process> {
        self.processes
            .get_mut(&key(cluster, component))
            .ok_or_else(|| anyhow!("no component {cluster}/{component}"))
    }

    /// The outbound listener of `workload` for `service`.
    ///
    /// # Errors
    /// No such outbound.
    pub fn outbound(&self, cluster: &str, workload: &str, service: &str) -> Result<SocketAddr> {
        self.topology.outbound_addr(cluster, workload, service)
    }

    /// Waits until the component's `/readyz` answers 200.
    ///
    /// # Errors
    /// It exited or was not ready within the patience.
    pub fn wait_ready(&mut self, cluster: &str, component: &str) -> Result<()> {
        let admin = self.component_admin(cluster, component)?;
        let site = self.site(cluster)?;
        let p = self.process(cluster, component)?;
        site.wait_http_ready(p, admin, READY_PATH)
    }

    /// The admin address of `gateway`, `gateway-<r>` or a workload.
    fn component_admin(&self, cluster: &str, component: &str) -> Result<SocketAddr> {
        if component == "gateway" {
            return self.topology.gateway_admin(cluster);
        }
        if let Some(r) = component
            .strip_prefix("gateway-")
            .and_then(|r| r.parse().ok())
        {
            return self.topology.gateway_replica_admin(cluster, r);
        }
        self.topology.sidecar_admin(cluster, component)
    }

    /// Waits until `cluster`'s gateway reports its pooled connection up
    /// (`isthmus_gateway_peer_connections{peer=...} 1`) for every cluster
    /// linked with it both ways.
    ///
    /// # Errors
    /// The gateway exited, or a connection was not up within the patience.
    pub fn wait_peers_connected(&mut self, cluster: &str) -> Result<()> {
        self.wait_replica_peers_connected(cluster, 0)
    }

    /// [`Mesh::wait_peers_connected`] for gateway replica `r`.
    ///
    /// # Errors
    /// As [`Mesh::wait_peers_connected`].
    pub fn wait_replica_peers_connected(&mut self, cluster: &str, r: usize) -> Result<()> {
        let linked: Vec<String> = self
            .topology
            .trusted_by(cluster)
            .filter(|p| self.topology.trusted_by(p).any(|q| q == cluster))
            .map(str::to_owned)
            .collect();
        let admin = self.topology.gateway_replica_admin(cluster, r)?;
        let site = self.site(cluster)?;
        let p = self.process(cluster, &Topology::gateway_component(r))?;
        wait_until(p, "peer connections up", || {
            let (status, metrics) = site.http_get(admin, "/metrics", Duration::from_secs(2))?;
            ensure!(status == 200, "/metrics answered {status}");
            for peer in &linked {
                ensure!(
                    peer_connections(&metrics, peer) >= 1.0,
                    "no connection to {peer} yet"
                );
            }
            Ok(())
        })
    }

    /// Restarts a component with its current config file and waits until
    /// it is ready.
    ///
    /// # Errors
    /// As [`Mesh::wait_ready`].
    pub fn restart(&mut self, cluster: &str, component: &str) -> Result<()> {
        self.process(cluster, component)?.restart()?;
        self.wait_ready(cluster, component)
    }

    /// Overwrites a sidecar's config file (send SIGHUP to apply it).
    ///
    /// # Errors
    /// Write failure.
    pub fn write_sidecar_config(
        &self,
        cluster: &str,
        workload: &str,
        cfg: &SidecarConfig,
    ) -> Result<()> {
        Topology::write_yaml(&self.topology.config_path(cluster, workload), cfg)
    }

    /// Fails unless every component is still running.
    ///
    /// # Errors
    /// The first component found dead, with its log tail.
    pub fn assert_all_running(&mut self) -> Result<()> {
        for p in self.processes.values_mut() {
            p.assert_running()?;
        }
        Ok(())
    }

    fn spawn(
        &mut self,
        program: &Path,
        cluster: &str,
        component: &str,
        config: &Path,
    ) -> Result<()> {
        let log_level = std::env::var("ISTHMUS_TEST_LOG").unwrap_or_else(|_| "info".into());
        let mut spec = self
            .topology
            .site(cluster)?
            .spec(program)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", log_level)
            .env("NO_COLOR", "1");
        if let Some(cpus) = &self.topology.cpus {
            spec = spec.cpus(cpus.clone());
        }
        let name = key(cluster, component);
        let log = self.topology.log_path(cluster, component);
        let p = Process::spawn(&name, spec, &log).with_context(|| format!("spawning {name}"))?;
        self.processes.insert(name, p);
        Ok(())
    }
}

fn key(cluster: &str, component: &str) -> String {
    format!("{cluster}/{component}")
}

/// The sum of `isthmus_gateway_peer_connections` samples labelled
/// `peer="<peer>"` in a Prometheus text page (one sample per peer, or one
/// per peer replica).
fn peer_connections(metrics: &str, peer: &str) -> f64 {
    let label = format!("peer=\"{peer}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("isthmus_gateway_peer_connections{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

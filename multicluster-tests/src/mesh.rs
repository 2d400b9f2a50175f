//! A started topology: the gateways and sidecars as running processes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};

use crate::bins::{binaries, Binaries};
use crate::config::SidecarConfig;
use crate::pki::{write_bundle_map, ClusterPki};
use crate::process::{Process, Spec};
use crate::ready::{http_get, wait_http_ready, wait_until};
use crate::topology::Topology;

/// The admin readiness path of both binaries.
pub const READY_PATH: &str = "/readyz";

/// A running topology. Dropping it kills every process (and prints their log
/// tails if the test panicked), then removes the temp dir.
pub struct Mesh {
    // Field order matters: processes die before the directory goes.
    processes: BTreeMap<String, Process>,
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
    /// # Errors
    /// Missing binaries, a write failure, or a component that exits or is
    /// not ready within the patience (the error carries its log tail).
    pub fn start(self) -> Result<Mesh> {
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
            pki,
            topology: self,
        };
        let names: Vec<(String, Vec<String>)> = mesh
            .topology
            .clusters
            .iter()
            .map(|c| {
                let ws = c.workloads.iter().map(|w| w.spec.name.clone()).collect();
                (c.name.clone(), ws)
            })
            .collect();
        for (cluster, _) in &names {
            let cfg = mesh.topology.gateway_config(cluster)?;
            let path = mesh.topology.config_path(cluster, "gateway");
            Topology::write_yaml(&path, &cfg)?;
            mesh.spawn(&bins, cluster, "gateway", &path)?;
        }
        for (cluster, _) in &names {
            mesh.wait_ready(cluster, "gateway")?;
        }
        if mesh.topology.peers_over_tcp_tls() {
            for (cluster, _) in &names {
                mesh.wait_peers_connected(cluster)?;
            }
        }
        for (cluster, workloads) in &names {
            for w in workloads {
                let cfg = mesh.topology.sidecar_config(cluster, w)?;
                let path = mesh.topology.config_path(cluster, w);
                Topology::write_yaml(&path, &cfg)?;
                mesh.spawn(&bins, cluster, w, &path)?;
            }
        }
        for (cluster, workloads) in &names {
            for w in workloads {
                mesh.wait_ready(cluster, w)?;
            }
        }
        Ok(mesh)
    }
}

impl Mesh {
    /// The topology (addresses, configs).
    pub fn topology(&self) -> &Topology {
        &self.topology
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
        let admin = if component == "gateway" {
            self.topology.gateway_admin(cluster)?
        } else {
            self.topology.sidecar_admin(cluster, component)?
        };
        let p = self.process(cluster, component)?;
        wait_http_ready(p, admin, READY_PATH)
    }

    /// Waits until `cluster`'s gateway reports its pooled connection up
    /// (`isthmus_gateway_peer_connections{peer=...} 1`) for every cluster
    /// linked with it both ways.
    ///
    /// # Errors
    /// The gateway exited, or a connection was not up within the patience.
    pub fn wait_peers_connected(&mut self, cluster: &str) -> Result<()> {
        let linked: Vec<String> = self
            .topology
            .trusted_by(cluster)
            .filter(|p| self.topology.trusted_by(p).any(|q| q == cluster))
            .map(str::to_owned)
            .collect();
        let admin = self.topology.gateway_admin(cluster)?;
        let p = self.process(cluster, "gateway")?;
        wait_until(p, "peer connections up", || {
            let (status, metrics) = http_get(admin, "/metrics", Duration::from_secs(2))?;
            ensure!(status == 200, "/metrics answered {status}");
            for peer in &linked {
                let up = format!("isthmus_gateway_peer_connections{{peer=\"{peer}\"}} 1");
                ensure!(metrics.contains(&up), "no connection to {peer} yet");
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
        bins: &Binaries,
        cluster: &str,
        component: &str,
        config: &Path,
    ) -> Result<()> {
        let program = if component == "gateway" {
            &bins.gateway
        } else {
            &bins.sidecar
        };
        let log_level = std::env::var("ISTHMUS_TEST_LOG").unwrap_or_else(|_| "info".into());
        let mut spec = Spec::new(program)
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

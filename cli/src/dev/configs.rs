//! Component config files for the dev topology, following
//! docs/reference/data-path-config.md (the contract). Generation is pure:
//! it returns file names and contents; [`super::pki`] supplies the PEM and
//! bundle files they refer to.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::topology::{Cluster, Topology, Workload, SERVICE_PORT};

/// CA certificate file in each cluster directory.
pub(crate) const CA_CERT: &str = "ca.pem";
/// CA key file in each cluster directory.
pub(crate) const CA_KEY: &str = "ca-key.pem";
/// Bundle map file in each cluster directory.
pub(crate) const BUNDLES: &str = "bundles.json";
/// Gateway drain on SIGTERM, ms: short, a dev mesh has nothing to protect.
const DRAIN_MS: u64 = 1000;

/// A file to write under the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigFile {
    /// Path relative to the state directory, e.g. `cluster-a/gateway.yaml`.
    pub(crate) path: PathBuf,
    /// YAML text.
    pub(crate) yaml: String,
}

/// The `identity` section (trust_bundle::config::IdentityConfig).
#[derive(Debug, Serialize)]
struct Identity {
    spiffe_id: String,
    ca: PemFiles,
    bundles: &'static str,
}

#[derive(Debug, Serialize)]
struct PemFiles {
    cert: &'static str,
    key: &'static str,
}

/// `mesh-gateway` config.
#[derive(Debug, Serialize)]
pub(crate) struct GatewayConfig {
    cluster: String,
    identity: Identity,
    listen: SocketAddr,
    admin: SocketAddr,
    peers: Vec<GatewayPeer>,
    exports: Vec<GatewayExport>,
    timeouts: GatewayTimeouts,
}

#[derive(Debug, Serialize)]
struct GatewayPeer {
    cluster: String,
    trust_domain: String,
    address: String,
    spiffe_id: String,
}

#[derive(Debug, Serialize)]
struct GatewayExport {
    service: String,
    port: u16,
    exported_to: Vec<String>,
    endpoints: Vec<GatewayEndpoint>,
}

#[derive(Debug, Serialize)]
struct GatewayEndpoint {
    address: SocketAddr,
    spiffe_id: String,
}

#[derive(Debug, Serialize)]
struct GatewayTimeouts {
    drain_ms: u64,
}

/// `mesh-sidecar` config.
#[derive(Debug, Serialize)]
pub(crate) struct SidecarConfig {
    cluster: String,
    identity: Identity,
    admin: SocketAddr,
    gateway: SidecarGateway,
    outbound: Vec<SidecarOutbound>,
    inbound: Vec<SidecarInbound>,
    services: Vec<SidecarService>,
}

#[derive(Debug, Serialize)]
struct SidecarGateway {
    address: SocketAddr,
    spiffe_id: String,
}

#[derive(Debug, Serialize)]
struct SidecarOutbound {
    listen: SocketAddr,
    service: String,
    port: u16,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
}

#[derive(Debug, Serialize)]
struct SidecarInbound {
    listen: SocketAddr,
    protocol: &'static str,
    app: SocketAddr,
    app_protocol: &'static str,
    allow: Vec<String>,
}

#[derive(Debug, Serialize)]
struct SidecarService {
    service: String,
    port: u16,
    endpoints: Vec<SidecarEndpoint>,
    remote: Vec<SidecarRemote>,
}

#[derive(Debug, Serialize)]
struct SidecarEndpoint {
    address: SocketAddr,
    spiffe_id: String,
}

#[derive(Debug, Serialize)]
struct SidecarRemote {
    cluster: String,
    spiffe_id: String,
}

/// `cluster-a/gateway.yaml`.
pub(crate) fn gateway_path(cluster: &Cluster) -> PathBuf {
    PathBuf::from(&cluster.name).join("gateway.yaml")
}

/// `cluster-a/frontend-sidecar.yaml`.
pub(crate) fn sidecar_path(cluster: &Cluster, workload: &Workload) -> PathBuf {
    PathBuf::from(&cluster.name).join(format!("{}-sidecar.yaml", workload.name))
}

/// Every gateway and sidecar config of the topology.
///
/// # Errors
/// YAML serialization failed (not expected for these types).
pub(crate) fn generate(topology: &Topology) -> anyhow::Result<Vec<ConfigFile>> {
    let mut files = Vec::new();
    for cluster in &topology.clusters {
        files.push(ConfigFile {
            path: gateway_path(cluster),
            yaml: serde_yaml_ng::to_string(&gateway(topology, cluster))?,
        });
        for workload in &cluster.workloads {
            files.push(ConfigFile {
                path: sidecar_path(cluster, workload),
                yaml: serde_yaml_ng::to_string(&sidecar(topology, cluster, workload))?,
            });
        }
    }
    Ok(files)
}

/// The gateway config of `cluster`.
pub(crate) fn gateway(topology: &Topology, cluster: &Cluster) -> GatewayConfig {
    let peers = cluster
        .peers
        .iter()
        .filter_map(|name| topology.cluster(name))
        .map(|peer| GatewayPeer {
            cluster: peer.name.clone(),
            trust_domain: peer.trust_domain.clone(),
            address: peer.gateway_listen.to_string(),
            spiffe_id: peer.gateway_id.clone(),
        })
        .collect();
    let exports = cluster
        .exports
        .iter()
        .map(|(service, to)| GatewayExport {
            service: service.clone(),
            port: SERVICE_PORT,
            exported_to: to.clone(),
            endpoints: topology
                .endpoints(cluster, service)
                .into_iter()
                .map(|(address, spiffe_id)| GatewayEndpoint { address, spiffe_id })
                .collect(),
        })
        .collect();
    GatewayConfig {
        cluster: cluster.name.clone(),
        identity: identity(&cluster.gateway_id),
        listen: cluster.gateway_listen,
        admin: cluster.gateway_admin,
        peers,
        exports,
        timeouts: GatewayTimeouts { drain_ms: DRAIN_MS },
    }
}

/// The sidecar config of `workload` in `cluster`.
pub(crate) fn sidecar(
    topology: &Topology,
    cluster: &Cluster,
    workload: &Workload,
) -> SidecarConfig {
    let outbound = workload
        .outbound
        .iter()
        .map(|o| SidecarOutbound {
            listen: o.listen,
            service: o.service.clone(),
            port: SERVICE_PORT,
            protocol: "http",
            cluster: o.cluster.clone(),
        })
        .collect();
    let inbound = workload
        .inbound
        .iter()
        .map(|(listen, allow)| SidecarInbound {
            listen: *listen,
            protocol: "http",
            app: workload.app,
            app_protocol: "http1",
            allow: allow.clone(),
        })
        .collect();
    let mut services: Vec<String> = workload
        .outbound
        .iter()
        .map(|o| o.service.clone())
        .collect();
    services.sort();
    services.dedup();
    let services = services
        .into_iter()
        .map(|service| SidecarService {
            endpoints: topology
                .endpoints(cluster, &service)
                .into_iter()
                .map(|(address, spiffe_id)| SidecarEndpoint { address, spiffe_id })
                .collect(),
            remote: topology
                .remotes(cluster, &service)
                .into_iter()
                .map(|(cluster, spiffe_id)| SidecarRemote { cluster, spiffe_id })
                .collect(),
            service,
            port: SERVICE_PORT,
        })
        .collect();
    SidecarConfig {
        cluster: cluster.name.clone(),
        identity: identity(&workload.spiffe_id),
        admin: workload.admin,
        gateway: SidecarGateway {
            address: cluster.gateway_listen,
            spiffe_id: cluster.gateway_id.clone(),
        },
        outbound,
        inbound,
        services,
    }
}

fn identity(spiffe_id: &str) -> Identity {
    Identity {
        spiffe_id: spiffe_id.to_owned(),
        ca: PemFiles {
            cert: CA_CERT,
            key: CA_KEY,
        },
        bundles: BUNDLES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::topology::DEFAULT_PORT_BASE;
    use serde_yaml_ng::Value;

    fn files() -> Vec<ConfigFile> {
        generate(&Topology::dev(DEFAULT_PORT_BASE).unwrap()).unwrap()
    }

    fn yaml(path: &str) -> Value {
        let file = files()
            .into_iter()
            .find(|f| f.path == std::path::Path::new(path))
            .unwrap_or_else(|| panic!("no {path}"));
        serde_yaml_ng::from_str(&file.yaml).unwrap()
    }

    #[test]
    fn one_gateway_and_one_sidecar_per_workload() {
        let paths: Vec<String> = files()
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        assert_eq!(
            paths,
            vec![
                "cluster-a/gateway.yaml",
                "cluster-a/frontend-sidecar.yaml",
                "cluster-a/backend-sidecar.yaml",
                "cluster-b/gateway.yaml",
                "cluster-b/backend-sidecar.yaml",
            ]
        );
    }

    #[test]
    fn gateways_are_linked_to_each_other() {
        let a = yaml("cluster-a/gateway.yaml");
        let b = yaml("cluster-b/gateway.yaml");
        assert_eq!(a["listen"], "127.0.1.2:15443");
        assert_eq!(a["peers"][0]["cluster"], "cluster-b");
        assert_eq!(a["peers"][0]["trust_domain"], "cluster-b.mesh");
        assert_eq!(a["peers"][0]["address"], b["listen"]);
        assert_eq!(a["peers"][0]["spiffe_id"], b["identity"]["spiffe_id"]);
        assert_eq!(b["peers"][0]["address"], a["listen"]);
        assert_eq!(
            a["identity"]["spiffe_id"],
            "spiffe://cluster-a.mesh/ns/isthmus-system/sa/east-west-gateway"
        );
        assert_eq!(a["exports"].as_sequence().unwrap().len(), 0);
    }

    #[test]
    fn gateway_b_exports_backend_to_a_at_its_sidecar() {
        let b = yaml("cluster-b/gateway.yaml");
        let sidecar = yaml("cluster-b/backend-sidecar.yaml");
        let export = &b["exports"][0];
        assert_eq!(export["service"], "default/backend");
        assert_eq!(export["port"], 8080);
        assert_eq!(export["exported_to"][0], "cluster-a");
        assert_eq!(
            export["endpoints"][0]["address"],
            sidecar["inbound"][0]["listen"]
        );
        assert_eq!(
            export["endpoints"][0]["spiffe_id"],
            sidecar["identity"]["spiffe_id"]
        );
    }

    #[test]
    fn frontend_sidecar_routes_local_first_then_cluster_b() {
        let f = yaml("cluster-a/frontend-sidecar.yaml");
        let backend_a = yaml("cluster-a/backend-sidecar.yaml");
        let backend_b = yaml("cluster-b/backend-sidecar.yaml");
        assert_eq!(f["gateway"]["address"], "127.0.1.2:15443");
        assert_eq!(f["outbound"][0]["listen"], "127.0.1.10:18080");
        assert!(f["outbound"][0].get("cluster").is_none());
        assert_eq!(f["outbound"][1]["listen"], "127.0.1.10:18081");
        assert_eq!(f["outbound"][1]["cluster"], "cluster-b");
        assert_eq!(f["inbound"].as_sequence().unwrap().len(), 0);
        let svc = &f["services"][0];
        assert_eq!(f["services"].as_sequence().unwrap().len(), 1);
        assert_eq!(svc["service"], "default/backend");
        assert_eq!(
            svc["endpoints"][0]["address"],
            backend_a["inbound"][0]["listen"]
        );
        assert_eq!(
            svc["endpoints"][0]["spiffe_id"],
            backend_a["identity"]["spiffe_id"]
        );
        assert_eq!(svc["remote"][0]["cluster"], "cluster-b");
        assert_eq!(
            svc["remote"][0]["spiffe_id"],
            backend_b["identity"]["spiffe_id"]
        );
    }

    #[test]
    fn backend_sidecars_admit_the_frontend_and_forward_to_their_app() {
        let f = yaml("cluster-a/frontend-sidecar.yaml");
        for (path, app) in [
            ("cluster-a/backend-sidecar.yaml", "127.0.1.11:8080"),
            ("cluster-b/backend-sidecar.yaml", "127.0.2.11:8080"),
        ] {
            let s = yaml(path);
            assert_eq!(s["inbound"][0]["app"], app);
            assert_eq!(s["inbound"][0]["protocol"], "http");
            assert_eq!(s["inbound"][0]["allow"][0], f["identity"]["spiffe_id"]);
            assert_eq!(s["identity"]["ca"]["cert"], CA_CERT);
            assert_eq!(s["identity"]["bundles"], BUNDLES);
        }
    }

    #[test]
    fn components_accept_the_generated_configs() {
        let dir = std::path::Path::new("/state/cluster-x");
        for file in files() {
            let name = file.path.display().to_string();
            if name.ends_with("gateway.yaml") {
                mesh_gateway::Config::from_yaml(&file.yaml, dir)
                    .unwrap_or_else(|e| panic!("{name}: {e}\n{}", file.yaml));
            } else {
                mesh_sidecar::Config::from_yaml(&file.yaml, dir)
                    .unwrap_or_else(|e| panic!("{name}: {e}\n{}", file.yaml));
            }
        }
    }
}

//! Component config files for the dev topology: one controller per cluster
//! (docs/reference/controller.md) and gateways and sidecars that take their
//! identity, catalog and peers from it through their `control_plane`
//! section (docs/reference/data-path-config.md). Generation is pure: it
//! returns file names and contents; the bootstrap trust bundle and the join
//! tokens the files refer to are written by [`super::control`] once the
//! controllers run.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::topology::{Cluster, Topology, Workload, NAMESPACE, SERVICE_PORT};

/// Bootstrap trust in each cluster directory: the cluster's own bundle as
/// its controller serves it (the peers' bundles come from the controller).
pub(crate) const BUNDLES: &str = "bundles.json";
/// The controller's data directory (redb), relative to its config.
pub(crate) const CONTROLLER_DATA: &str = "controller-data";
/// Gateway drain on SIGTERM, ms: short, a dev mesh has nothing to protect.
const DRAIN_MS: u64 = 1000;
/// Workload lease, seconds: a sidecar that dies leaves the catalog this fast.
const LEASE_SECONDS: u64 = 10;

/// A file to write under the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigFile {
    /// Path relative to the state directory, e.g. `cluster-a/gateway.yaml`.
    pub(crate) path: PathBuf,
    /// YAML text.
    pub(crate) yaml: String,
}

/// `mesh-controller` config.
#[derive(Debug, Serialize)]
pub(crate) struct ControllerConfig {
    cluster: String,
    node_id: u64,
    data_dir: &'static str,
    raft_listen: SocketAddr,
    grpc_listen: SocketAddr,
    admin_listen: SocketAddr,
    bundle_listen: SocketAddr,
    gateways: Vec<ControllerGateway>,
    lease_seconds: u64,
}

#[derive(Debug, Serialize)]
struct ControllerGateway {
    address: SocketAddr,
    admin: SocketAddr,
}

/// The `identity` section with a control plane: who we are and whom we
/// trust before the controller tells us more.
#[derive(Debug, Serialize)]
struct Identity {
    spiffe_id: String,
    bundles: &'static str,
}

/// The `control_plane` section.
#[derive(Debug, Serialize)]
struct ControlPlane {
    address: SocketAddr,
    spiffe_id: String,
    join_token_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    register: Option<Register>,
}

#[derive(Debug, Serialize)]
struct Register {
    name: String,
    service: String,
    ports: Vec<RegisterPort>,
}

#[derive(Debug, Serialize)]
struct RegisterPort {
    port: u16,
    target_port: u16,
    protocol: &'static str,
}

/// `mesh-gateway` config.
#[derive(Debug, Serialize)]
pub(crate) struct GatewayConfig {
    cluster: String,
    identity: Identity,
    listen: SocketAddr,
    admin: SocketAddr,
    control_plane: ControlPlane,
    timeouts: GatewayTimeouts,
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
    control_plane: ControlPlane,
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

/// `cluster-a/controller.yaml`.
pub(crate) fn controller_path(cluster: &Cluster) -> PathBuf {
    PathBuf::from(&cluster.name).join("controller.yaml")
}

/// `cluster-a/gateway.yaml`.
pub(crate) fn gateway_path(cluster: &Cluster) -> PathBuf {
    PathBuf::from(&cluster.name).join("gateway.yaml")
}

/// `cluster-a/frontend-sidecar.yaml`.
pub(crate) fn sidecar_path(cluster: &Cluster, workload: &Workload) -> PathBuf {
    PathBuf::from(&cluster.name).join(format!("{}-sidecar.yaml", workload.name))
}

/// The join token file of the gateway (next to its config).
pub(crate) const GATEWAY_TOKEN: &str = "gateway.token";

/// The join token file of `workload`'s sidecar (next to its config).
pub(crate) fn sidecar_token(workload: &Workload) -> String {
    format!("{}.token", workload.name)
}

/// The controller configs, one per cluster.
///
/// # Errors
/// YAML serialization failed (not expected for these types).
pub(crate) fn controllers(topology: &Topology) -> anyhow::Result<Vec<ConfigFile>> {
    topology
        .clusters
        .iter()
        .map(|c| {
            Ok(ConfigFile {
                path: controller_path(c),
                yaml: serde_yaml_ng::to_string(&controller(c))?,
            })
        })
        .collect()
}

/// Every gateway and sidecar config of the topology.
///
/// # Errors
/// YAML serialization failed (not expected for these types).
pub(crate) fn proxies(topology: &Topology) -> anyhow::Result<Vec<ConfigFile>> {
    let mut files = Vec::new();
    for cluster in &topology.clusters {
        files.push(ConfigFile {
            path: gateway_path(cluster),
            yaml: serde_yaml_ng::to_string(&gateway(cluster))?,
        });
        for workload in &cluster.workloads {
            files.push(ConfigFile {
                path: sidecar_path(cluster, workload),
                yaml: serde_yaml_ng::to_string(&sidecar(cluster, workload))?,
            });
        }
    }
    Ok(files)
}

/// The controller config of `cluster`: a single Raft node (the embedded
/// default) that knows its cluster's gateway.
pub(crate) fn controller(cluster: &Cluster) -> ControllerConfig {
    let c = &cluster.controller;
    ControllerConfig {
        cluster: cluster.name.clone(),
        node_id: 1,
        data_dir: CONTROLLER_DATA,
        raft_listen: c.raft,
        grpc_listen: c.grpc,
        admin_listen: c.admin,
        bundle_listen: c.bundle,
        gateways: vec![ControllerGateway {
            address: cluster.gateway_listen,
            admin: cluster.gateway_admin,
        }],
        lease_seconds: LEASE_SECONDS,
    }
}

/// The gateway config of `cluster`: peers and exports come from the
/// controller.
pub(crate) fn gateway(cluster: &Cluster) -> GatewayConfig {
    GatewayConfig {
        cluster: cluster.name.clone(),
        identity: identity(&cluster.gateway_id),
        listen: cluster.gateway_listen,
        admin: cluster.gateway_admin,
        control_plane: control_plane(cluster, GATEWAY_TOKEN.to_owned(), None),
        timeouts: GatewayTimeouts { drain_ms: DRAIN_MS },
    }
}

/// The sidecar config of `workload` in `cluster`: the routing catalog comes
/// from the controller; a workload with an inbound listener registers
/// itself there (its address is the inbound listener's).
pub(crate) fn sidecar(cluster: &Cluster, workload: &Workload) -> SidecarConfig {
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
    let register = workload.inbound.as_ref().map(|(listen, _)| Register {
        name: workload_name(workload),
        service: workload.name.clone(),
        ports: vec![RegisterPort {
            port: SERVICE_PORT,
            target_port: listen.port(),
            protocol: "http",
        }],
    });
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
        control_plane: control_plane(cluster, sidecar_token(workload), register),
    }
}

/// The name `workload` registers under, e.g. `backend-1` (`default/backend-1`
/// in `meshctl get workloads`).
pub(crate) fn workload_name(workload: &Workload) -> String {
    format!("{}-1", workload.name)
}

/// `namespace/name` of the registered workload.
pub(crate) fn registered_as(workload: &Workload) -> String {
    format!("{NAMESPACE}/{}", workload_name(workload))
}

fn control_plane(cluster: &Cluster, token: String, register: Option<Register>) -> ControlPlane {
    ControlPlane {
        address: cluster.controller.grpc,
        spiffe_id: cluster.controller.spiffe_id.clone(),
        join_token_file: token,
        register,
    }
}

fn identity(spiffe_id: &str) -> Identity {
    Identity {
        spiffe_id: spiffe_id.to_owned(),
        bundles: BUNDLES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::topology::DEFAULT_PORT_BASE;
    use serde_yaml_ng::Value;

    fn files() -> Vec<ConfigFile> {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        let mut files = controllers(&t).unwrap();
        files.extend(proxies(&t).unwrap());
        files
    }

    fn yaml(path: &str) -> Value {
        let file = files()
            .into_iter()
            .find(|f| f.path == std::path::Path::new(path))
            .unwrap_or_else(|| panic!("no {path}"));
        serde_yaml_ng::from_str(&file.yaml).unwrap()
    }

    #[test]
    fn a_controller_per_cluster_then_a_gateway_and_one_sidecar_per_workload() {
        let paths: Vec<String> = files()
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        assert_eq!(
            paths,
            vec![
                "cluster-a/controller.yaml",
                "cluster-b/controller.yaml",
                "cluster-a/gateway.yaml",
                "cluster-a/frontend-sidecar.yaml",
                "cluster-a/backend-sidecar.yaml",
                "cluster-b/gateway.yaml",
                "cluster-b/backend-sidecar.yaml",
            ]
        );
    }

    #[test]
    fn controllers_know_their_gateway() {
        let c = yaml("cluster-b/controller.yaml");
        let g = yaml("cluster-b/gateway.yaml");
        assert_eq!(c["cluster"], "cluster-b");
        assert_eq!(c["node_id"], 1);
        assert_eq!(c["grpc_listen"], "127.0.2.3:15012");
        assert_eq!(c["admin_listen"], "127.0.2.3:15014");
        assert_eq!(c["gateways"][0]["address"], g["listen"]);
        assert_eq!(c["gateways"][0]["admin"], g["admin"]);
    }

    #[test]
    fn proxies_get_identity_and_catalog_from_their_own_controller() {
        for (path, token) in [
            ("cluster-a/gateway.yaml", "gateway.token"),
            ("cluster-a/frontend-sidecar.yaml", "frontend.token"),
            ("cluster-b/backend-sidecar.yaml", "backend.token"),
        ] {
            let p = yaml(path);
            let cluster = p["cluster"].as_str().unwrap().to_owned();
            let c = yaml(&format!("{cluster}/controller.yaml"));
            assert_eq!(p["control_plane"]["address"], c["grpc_listen"], "{path}");
            assert_eq!(
                p["control_plane"]["spiffe_id"],
                format!("spiffe://{cluster}.mesh/ns/isthmus-system/sa/controller").as_str()
            );
            assert_eq!(p["control_plane"]["join_token_file"], token, "{path}");
            assert_eq!(p["identity"]["bundles"], BUNDLES);
            assert!(p["identity"].get("ca").is_none(), "{path}");
            assert!(p.get("services").is_none() && p.get("peers").is_none());
        }
    }

    #[test]
    fn backends_register_their_inbound_listener_and_the_frontend_does_not() {
        let f = yaml("cluster-a/frontend-sidecar.yaml");
        assert!(f["control_plane"].get("register").is_none());
        for path in [
            "cluster-a/backend-sidecar.yaml",
            "cluster-b/backend-sidecar.yaml",
        ] {
            let s = yaml(path);
            let r = &s["control_plane"]["register"];
            assert_eq!(r["name"], "backend-1");
            assert_eq!(r["service"], "backend");
            assert_eq!(r["ports"][0]["port"], 8080);
            assert_eq!(r["ports"][0]["target_port"], 15006);
            assert_eq!(r["ports"][0]["protocol"], "http");
            assert_eq!(s["inbound"][0]["allow"][0], f["identity"]["spiffe_id"]);
        }
    }

    #[test]
    fn frontend_sidecar_routes_local_first_and_pinned_to_cluster_b() {
        let f = yaml("cluster-a/frontend-sidecar.yaml");
        assert_eq!(f["gateway"]["address"], "127.0.1.2:15443");
        assert_eq!(f["outbound"][0]["listen"], "127.0.1.10:18080");
        assert_eq!(f["outbound"][0]["service"], "default/backend");
        assert!(f["outbound"][0].get("cluster").is_none());
        assert_eq!(f["outbound"][1]["listen"], "127.0.1.10:18081");
        assert_eq!(f["outbound"][1]["cluster"], "cluster-b");
        assert_eq!(f["inbound"].as_sequence().unwrap().len(), 0);
    }

    #[test]
    fn components_accept_the_generated_configs() {
        let dir = std::path::Path::new("/state/cluster-x");
        for file in files() {
            let name = file.path.display().to_string();
            if name.ends_with("controller.yaml") {
                mesh_controller::config::Config::from_yaml(&file.yaml, dir)
                    .unwrap_or_else(|e| panic!("{name}: {e}\n{}", file.yaml));
            } else if name.ends_with("gateway.yaml") {
                mesh_gateway::Config::from_yaml(&file.yaml, dir)
                    .unwrap_or_else(|e| panic!("{name}: {e}\n{}", file.yaml));
            } else {
                mesh_sidecar::Config::from_yaml(&file.yaml, dir)
                    .unwrap_or_else(|e| panic!("{name}: {e}\n{}", file.yaml));
            }
        }
    }
}

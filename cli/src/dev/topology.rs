//! The `dev up` topology: which clusters, gateways and workloads exist, on
//! which loopback addresses and ports, with which SPIFFE IDs. Pure data,
//! derived only from `--port-base`, so the printed commands are stable.
//!
//! Layout: cluster `n` (1 = cluster-a, 2 = cluster-b) lives on `127.0.n.x`:
//! its gateway on `.2`, its controller on `.3`, `frontend` on `.10`,
//! `backend` on `.11`. Each workload address hosts the app and its sidecar,
//! like a pod IP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{anyhow, bail};

use crate::output::Hint;

/// Default `--port-base`: apps on 8080, sidecar admin 15000, inbound 15006,
/// controller gRPC 15012, Raft 15013, admin API 15014, bundle endpoint 15015,
/// gateway admin 15021, gateway QUIC 15443, outbound listeners 18080/18081.
pub(crate) const DEFAULT_PORT_BASE: u16 = 8000;
/// The logical service port of `default/backend`, named in tunnel headers.
pub(crate) const SERVICE_PORT: u16 = 8080;
/// Namespace of every demo workload.
pub(crate) const NAMESPACE: &str = "default";
/// Namespace of the controller's and the gateways' identities.
pub(crate) const SYSTEM_NAMESPACE: &str = "isthmus-system";
/// Service account of the east-west gateways.
pub(crate) const GATEWAY_SA: &str = "east-west-gateway";

/// Ports, each `--port-base` plus a fixed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ports {
    /// Demo app HTTP port (base + 80).
    pub(crate) app: u16,
    /// Sidecar admin (base + 7000).
    pub(crate) sidecar_admin: u16,
    /// Sidecar inbound mTLS listener (base + 7006).
    pub(crate) inbound: u16,
    /// Controller gRPC (TLS: Identity, ADS, Peering) (base + 7012).
    pub(crate) controller_grpc: u16,
    /// Controller Raft RPC (base + 7013).
    pub(crate) controller_raft: u16,
    /// Controller admin API (base + 7014).
    pub(crate) controller_admin: u16,
    /// Controller SPIFFE bundle endpoint (base + 7015).
    pub(crate) controller_bundle: u16,
    /// Gateway admin (base + 7021).
    pub(crate) gateway_admin: u16,
    /// Gateway QUIC listener, UDP (base + 7443).
    pub(crate) gateway_listen: u16,
    /// First sidecar outbound listener (base + 10080); the next ones follow.
    pub(crate) outbound: u16,
}

impl Ports {
    /// Ports for `base`.
    ///
    /// # Errors
    /// A port would pass 65535 or fall below 1024.
    pub(crate) fn new(base: u16) -> anyhow::Result<Self> {
        if base < 1024 {
            bail!("--port-base {base}: must be at least 1024");
        }
        let at = |offset: u16| {
            base.checked_add(offset)
                .ok_or_else(|| anyhow!("--port-base {base}: base + {offset} passes 65535"))
        };
        Ok(Self {
            app: at(80)?,
            sidecar_admin: at(7000)?,
            inbound: at(7006)?,
            controller_grpc: at(7012)?,
            controller_raft: at(7013)?,
            controller_admin: at(7014)?,
            controller_bundle: at(7015)?,
            gateway_admin: at(7021)?,
            gateway_listen: at(7443)?,
            outbound: at(10080)?,
        })
    }
}

/// What a demo workload does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Calls its upstreams (through its sidecar) and keeps a steady load.
    Frontend,
    /// Answers `GET /` naming itself and its cluster.
    Backend,
}

/// A sidecar outbound listener: one local port per upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outbound {
    /// Short name, e.g. `backend` or `backend-b`.
    pub(crate) name: String,
    /// Where the app sends plain HTTP.
    pub(crate) listen: SocketAddr,
    /// `namespace/name` of the upstream service.
    pub(crate) service: String,
    /// Pin to this cluster's endpoints (`cluster:` in the config).
    pub(crate) cluster: Option<String>,
}

/// A demo workload with its sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workload {
    /// Service account and service name, e.g. `backend`.
    pub(crate) name: String,
    /// What the app does.
    pub(crate) role: Role,
    /// `spiffe://<td>/ns/default/sa/<name>`.
    pub(crate) spiffe_id: String,
    /// The app's HTTP listener.
    pub(crate) app: SocketAddr,
    /// The sidecar admin listener.
    pub(crate) admin: SocketAddr,
    /// The sidecar inbound listener and the callers it admits.
    pub(crate) inbound: Option<(SocketAddr, Vec<String>)>,
    /// The sidecar outbound listeners.
    pub(crate) outbound: Vec<Outbound>,
}

/// A cluster's controller: one Raft node with its listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Controller {
    /// Raft RPC (HTTP/1.1).
    pub(crate) raft: SocketAddr,
    /// gRPC over TLS: Identity, ADS, Peering.
    pub(crate) grpc: SocketAddr,
    /// The admin REST API meshctl talks to.
    pub(crate) admin: SocketAddr,
    /// The SPIFFE bundle endpoint (https_spiffe).
    pub(crate) bundle: SocketAddr,
    /// `spiffe://<td>/ns/isthmus-system/sa/controller`.
    pub(crate) spiffe_id: String,
}

impl Controller {
    /// `http://<admin>`, the server of a meshctl context.
    pub(crate) fn server(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// `https://<bundle>/`, the bundle endpoint URL.
    pub(crate) fn bundle_url(&self) -> String {
        format!("https://{}/", self.bundle)
    }
}

/// One cluster: its identity, controller, gateway and workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cluster {
    /// DNS label, e.g. `cluster-a`.
    pub(crate) name: String,
    /// `<name>.mesh`.
    pub(crate) trust_domain: String,
    /// The gateway's QUIC listener (UDP).
    pub(crate) gateway_listen: SocketAddr,
    /// The gateway's admin listener.
    pub(crate) gateway_admin: SocketAddr,
    /// `spiffe://<td>/ns/isthmus-system/sa/east-west-gateway`.
    pub(crate) gateway_id: String,
    /// The controller.
    pub(crate) controller: Controller,
    /// Demo workloads.
    pub(crate) workloads: Vec<Workload>,
    /// Services (`namespace/name`) this cluster exports with a
    /// ServiceExport: every linked cluster imports them.
    pub(crate) exports: Vec<String>,
    /// Names of the clusters this one links to (`meshctl link`: the peering
    /// token is made here and redeemed there).
    pub(crate) peers: Vec<String>,
}

/// The whole dev mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Topology {
    /// The ports in use.
    pub(crate) ports: Ports,
    /// cluster-a, then cluster-b.
    pub(crate) clusters: Vec<Cluster>,
}

impl Topology {
    /// The two-cluster demo: `frontend` and `backend` in cluster-a,
    /// `backend` in cluster-b exported to cluster-a, gateways linked.
    ///
    /// # Errors
    /// See [`Ports::new`].
    pub(crate) fn dev(port_base: u16) -> anyhow::Result<Self> {
        let ports = Ports::new(port_base)?;
        let mut a = cluster("cluster-a", 1, ports, Some("cluster-b"));
        let mut b = cluster("cluster-b", 2, ports, None);
        let frontend_id = workload_id(&a.trust_domain, "frontend");
        let backend = "default/backend".to_owned();
        a.workloads.push(Workload {
            name: "frontend".into(),
            role: Role::Frontend,
            spiffe_id: frontend_id.clone(),
            app: addr(1, 10, ports.app),
            admin: addr(1, 10, ports.sidecar_admin),
            inbound: None,
            outbound: vec![
                Outbound {
                    name: "backend".into(),
                    listen: addr(1, 10, ports.outbound),
                    service: backend.clone(),
                    cluster: None,
                },
                Outbound {
                    name: "backend-b".into(),
                    listen: addr(1, 10, ports.outbound + 1),
                    service: backend.clone(),
                    cluster: Some("cluster-b".into()),
                },
            ],
        });
        a.workloads
            .push(backend_workload(&a, 1, ports, &frontend_id));
        b.workloads
            .push(backend_workload(&b, 2, ports, &frontend_id));
        b.exports.push(backend);
        Ok(Self {
            ports,
            clusters: vec![a, b],
        })
    }

    /// The cluster named `name`.
    pub(crate) fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The frontend workload (cluster-a).
    pub(crate) fn frontend(&self) -> &Workload {
        self.clusters[0]
            .workloads
            .iter()
            .find(|w| w.role == Role::Frontend)
            // Invariant: `dev` always places the frontend in cluster-a.
            .expect("the dev topology has a frontend in cluster-a")
    }

    /// The ready-to-paste commands `dev up` prints, with what each must
    /// answer (checked before they are printed).
    pub(crate) fn demos(&self) -> Vec<Demo> {
        let frontend = self.frontend();
        let home = &self.clusters[0].name;
        let says = |cluster: &str| format!("backend in {cluster} says hello");
        let mut demos = vec![Demo::new(
            frontend.app,
            "/",
            "frontend → backend (local first)",
            vec![format!("frontend in {home} says hello"), says(home)],
            false,
        )];
        for out in &frontend.outbound {
            let name = out.service.trim_start_matches("default/");
            let (comment, expect) = match &out.cluster {
                Some(pin) => (
                    format!("{name} in {pin}, through both gateways (QUIC)"),
                    says(pin),
                ),
                None => (
                    format!("{name} via the frontend's sidecar ({home})"),
                    says(home),
                ),
            };
            demos.push(Demo::new(
                out.listen,
                "/",
                &comment,
                vec![expect],
                out.cluster.is_some(),
            ));
        }
        demos.push(Demo::new(
            self.clusters[0].gateway_admin,
            "/metrics",
            "gateway A metrics",
            Vec::new(),
            false,
        ));
        demos.push(Demo::new(
            frontend.admin,
            "/metrics",
            "frontend sidecar metrics",
            Vec::new(),
            false,
        ));
        demos
    }

    /// The commands alone.
    pub(crate) fn hints(&self) -> Vec<Hint> {
        self.demos().into_iter().map(|d| d.hint).collect()
    }
}

/// A printed command and the answer it must give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Demo {
    /// What is printed.
    pub(crate) hint: Hint,
    /// Where the command sends `GET path`.
    pub(crate) addr: SocketAddr,
    /// The request path.
    pub(crate) path: String,
    /// Strings the 200 body contains.
    pub(crate) expect: Vec<String>,
    /// Goes to another cluster's endpoints only (a pinned listener).
    pub(crate) pinned: bool,
}

impl Demo {
    fn new(addr: SocketAddr, path: &str, comment: &str, expect: Vec<String>, pinned: bool) -> Self {
        Self {
            hint: Hint {
                command: format!("curl http://{addr}{path}"),
                comment: comment.to_owned(),
            },
            addr,
            path: path.to_owned(),
            expect,
            pinned,
        }
    }
}

fn cluster(name: &str, net: u8, ports: Ports, link_to: Option<&str>) -> Cluster {
    let trust_domain = format!("{name}.mesh");
    Cluster {
        name: name.into(),
        gateway_listen: addr(net, 2, ports.gateway_listen),
        gateway_admin: addr(net, 2, ports.gateway_admin),
        gateway_id: format!("spiffe://{trust_domain}/ns/{SYSTEM_NAMESPACE}/sa/{GATEWAY_SA}"),
        controller: Controller {
            raft: addr(net, 3, ports.controller_raft),
            grpc: addr(net, 3, ports.controller_grpc),
            admin: addr(net, 3, ports.controller_admin),
            bundle: addr(net, 3, ports.controller_bundle),
            spiffe_id: format!("spiffe://{trust_domain}/ns/{SYSTEM_NAMESPACE}/sa/controller"),
        },
        trust_domain,
        workloads: Vec::new(),
        exports: Vec::new(),
        peers: link_to.into_iter().map(str::to_owned).collect(),
    }
}

fn backend_workload(cluster: &Cluster, net: u8, ports: Ports, caller: &str) -> Workload {
    Workload {
        name: "backend".into(),
        role: Role::Backend,
        spiffe_id: workload_id(&cluster.trust_domain, "backend"),
        app: addr(net, 11, ports.app),
        admin: addr(net, 11, ports.sidecar_admin),
        inbound: Some((addr(net, 11, ports.inbound), vec![caller.to_owned()])),
        outbound: Vec::new(),
    }
}

fn workload_id(trust_domain: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{NAMESPACE}/sa/{name}")
}

fn addr(net: u8, host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, net, host)), port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn default_ports_are_the_well_known_ones() {
        let p = Ports::new(DEFAULT_PORT_BASE).unwrap();
        assert_eq!(
            (
                p.app,
                p.sidecar_admin,
                p.inbound,
                p.gateway_admin,
                p.gateway_listen,
                p.outbound
            ),
            (8080, 15000, 15006, 15021, 15443, 18080)
        );
        assert_eq!(
            (
                p.controller_grpc,
                p.controller_raft,
                p.controller_admin,
                p.controller_bundle
            ),
            (15012, 15013, 15014, 15015)
        );
    }

    #[test]
    fn port_base_out_of_range_is_refused() {
        assert!(Ports::new(80).is_err());
        let err = Ports::new(60000).unwrap_err().to_string();
        assert!(err.contains("passes 65535"), "{err}");
        assert!(Ports::new(65535 - 10081).is_ok());
        assert!(Ports::new(65535 - 10080).is_ok());
    }

    #[test]
    fn every_listener_has_its_own_address() {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        let mut seen = HashSet::new();
        for c in &t.clusters {
            // The gateway QUIC listener is UDP; the rest are TCP.
            assert!(seen.insert(("udp", c.gateway_listen)));
            assert!(seen.insert(("tcp", c.gateway_admin)));
            let ctl = &c.controller;
            for a in [ctl.raft, ctl.grpc, ctl.admin, ctl.bundle] {
                assert!(seen.insert(("tcp", a)), "{a}");
            }
            for w in &c.workloads {
                assert!(seen.insert(("tcp", w.app)));
                assert!(seen.insert(("tcp", w.admin)));
                if let Some((at, _)) = &w.inbound {
                    assert!(seen.insert(("tcp", *at)));
                }
                for o in &w.outbound {
                    assert!(seen.insert(("tcp", o.listen)));
                }
            }
        }
    }

    #[test]
    fn clusters_live_on_their_own_loopback_subnet() {
        let t = Topology::dev(20000).unwrap();
        for (c, net) in t.clusters.iter().zip([1u8, 2]) {
            let on_net = |a: SocketAddr| match a.ip() {
                IpAddr::V4(ip) => ip.octets()[..3] == [127, 0, net],
                IpAddr::V6(_) => false,
            };
            assert!(on_net(c.gateway_listen) && on_net(c.gateway_admin));
            assert!(on_net(c.controller.grpc) && on_net(c.controller.admin));
            assert!(c
                .controller
                .spiffe_id
                .starts_with(&format!("spiffe://{}/", c.trust_domain)));
            for w in &c.workloads {
                assert!(on_net(w.app) && on_net(w.admin), "{w:?}");
                assert!(w
                    .spiffe_id
                    .starts_with(&format!("spiffe://{}/", c.trust_domain)));
            }
        }
    }

    #[test]
    fn b_exports_backend_and_a_links_to_b() {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        let a = t.cluster("cluster-a").unwrap();
        let b = t.cluster("cluster-b").unwrap();
        assert!(a.exports.is_empty());
        assert_eq!(b.exports, vec!["default/backend".to_owned()]);
        // One link, made once: token on cluster-a, redeemed by cluster-b.
        assert_eq!(a.peers, vec!["cluster-b".to_owned()]);
        assert!(b.peers.is_empty());
        assert_eq!(a.controller.server(), "http://127.0.1.3:15014");
        assert_eq!(b.controller.bundle_url(), "https://127.0.2.3:15015/");
        assert_eq!(
            a.controller.spiffe_id,
            "spiffe://cluster-a.mesh/ns/isthmus-system/sa/controller"
        );
    }

    #[test]
    fn backends_admit_the_frontend() {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        let frontend = t.frontend().spiffe_id.clone();
        assert_eq!(frontend, "spiffe://cluster-a.mesh/ns/default/sa/frontend");
        for c in &t.clusters {
            for w in c.workloads.iter().filter(|w| w.role == Role::Backend) {
                let (_, allow) = w.inbound.as_ref().unwrap();
                assert_eq!(allow, &vec![frontend.clone()]);
            }
        }
    }

    #[test]
    fn hints_match_the_documented_commands() {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        let commands: Vec<String> = t.hints().into_iter().map(|h| h.command).collect();
        assert_eq!(
            commands,
            vec![
                "curl http://127.0.1.10:8080/",
                "curl http://127.0.1.10:18080/",
                "curl http://127.0.1.10:18081/",
                "curl http://127.0.1.2:15021/metrics",
                "curl http://127.0.1.10:15000/metrics",
            ]
        );
        let demos = t.demos();
        assert!(demos[2].hint.comment.contains("cluster-b"));
        assert_eq!(demos[2].expect, vec!["backend in cluster-b says hello"]);
        assert_eq!(
            demos.iter().filter(|d| d.pinned).count(),
            1,
            "only the cluster-b listener is pinned"
        );
        assert!(demos[2].pinned);
        assert_eq!(demos[1].expect, vec!["backend in cluster-a says hello"]);
        assert!(demos[0]
            .expect
            .contains(&"frontend in cluster-a says hello".to_owned()));
    }
}

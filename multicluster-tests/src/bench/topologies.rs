//! The Isthmus topologies of the benchmark, built with [`Topology`]:
//!
//! - same cluster: client → sidecar `client` (outbound listeners) ══mTLS,
//!   HTTP/2══ sidecar `server` (inbound) → backend;
//! - cross cluster: sidecar `client` in cluster-a → gateway a ══QUIC (or the
//!   TCP+TLS baseline)══ gateway b → sidecar `server` in cluster-b →
//!   backend, every service exported from b to a.
//!
//! Four services, each its own listener pair: `bench/http` (HTTP, app
//! HTTP/1.1 → nginx `/1k`), `bench/grpc` (HTTP, app h2c → nginx gRPC),
//! `bench/tcp` (opaque TCP → iperf3) and `bench/tcp-http` (opaque TCP →
//! nginx's HTTP/1.1 port, so each client connection is a new mesh
//! connection). [`Topology`] gives every HTTP inbound `app_protocol: http1`;
//! the gRPC one is switched to `h2c` by rewriting the server sidecar's
//! config and restarting it before measuring.

use std::net::SocketAddr;

use anyhow::Result;

use super::pinning::PinPlan;
use super::proxies::Backends;
use crate::config::{AppProtocol, PeerTransport, Protocol};
use crate::mesh::Mesh;
use crate::topology::{Topology, Tuning, Workload};

/// Service names and ports.
const HTTP: (&str, u16) = ("bench/http", 80);
const GRPC: (&str, u16) = ("bench/grpc", 50051);
const TCP: (&str, u16) = ("bench/tcp", 5201);
const TCP_HTTP: (&str, u16) = ("bench/tcp-http", 8080);

/// The gateway-to-gateway transport of a cross-cluster topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XcTransport {
    /// QUIC (Isthmus's transport).
    Quic,
    /// TLS over TCP with HTTP/2 CONNECT (the baseline).
    TcpTls,
}

impl XcTransport {
    /// The gateways' `peers[].transport` for it.
    pub fn peer_transport(self) -> PeerTransport {
        match self {
            XcTransport::Quic => PeerTransport::Quic,
            XcTransport::TcpTls => PeerTransport::TcpTls,
        }
    }
}

/// Which Isthmus topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshShape {
    /// Two sidecars in one cluster.
    SameCluster,
    /// Two sidecars in two clusters, through both gateways.
    CrossCluster(XcTransport),
}

/// The client sidecar's outbound listeners.
#[derive(Debug, Clone, Copy)]
pub struct MeshEntries {
    /// `bench/http` (HTTP/1.1 and h2c prior knowledge).
    pub http: SocketAddr,
    /// `bench/grpc` (h2c).
    pub grpc: SocketAddr,
    /// `bench/tcp` (opaque, to iperf3).
    pub tcp: SocketAddr,
    /// `bench/tcp-http` (opaque, to nginx HTTP/1.1).
    pub tcp_http: SocketAddr,
}

/// A started Isthmus topology.
pub struct StartedMesh {
    /// The processes (dropping it tears them down).
    pub mesh: Mesh,
    /// `(label, cluster, component)` of every proxy process, client side
    /// first: sidecar, [gateway a, gateway b,] sidecar.
    pub components: Vec<(String, String, String)>,
    /// Where clients connect.
    pub entries: MeshEntries,
}

/// Builds and starts `shape` in front of `backends`, every gateway and
/// sidecar started under `taskset -c` with the plan's proxy CPUs (the
/// caller narrows each to its own CPU), with the binaries' default tuning.
///
/// # Errors
/// The mesh did not start.
pub fn start_mesh(shape: MeshShape, backends: &Backends, plan: &PinPlan) -> Result<StartedMesh> {
    let (a, b) = ("cluster-a", "cluster-b");
    let (server_cluster, n_proxies, transport) = match shape {
        MeshShape::SameCluster => (a, 2, None),
        MeshShape::CrossCluster(x) => (b, 4, Some(x.peer_transport())),
    };
    let mut t = Topology::new("bench")?;
    t.tuning = Tuning {
        peer_transport: transport,
        ..Tuning::defaults()
    };
    t.cpus = plan.start_list(n_proxies);
    t.add_cluster(a)?;
    if server_cluster == b {
        t.add_cluster(b)?;
        t.link(a, b);
    }
    let client_id = Topology::spiffe_id(a, "bench", "client");
    let allow = [client_id.as_str()];
    let services = [
        (HTTP, Protocol::Http, backends.http),
        (GRPC, Protocol::Http, backends.grpc),
        (TCP, Protocol::Tcp, backends.tcp),
        (TCP_HTTP, Protocol::Tcp, backends.http),
    ];
    let mut server = Workload::new("bench", "server");
    let mut client = Workload::new("bench", "client");
    for ((svc, port), proto, app) in services {
        server = server.serves(svc, port, proto, app, &allow);
        client = client.calls(svc, port, proto);
    }
    t.add_workload(server_cluster, server)?;
    t.add_workload(a, client)?;
    if server_cluster == b {
        for ((svc, _), _, _) in services {
            t.export(b, svc, &[a]);
        }
    }
    let mut mesh = t.start()?;
    let mut cfg = mesh.topology().sidecar_config(server_cluster, "server")?;
    for i in &mut cfg.inbound {
        if i.app == backends.grpc && i.protocol == Protocol::Http {
            i.app_protocol = Some(AppProtocol::H2c);
        }
    }
    mesh.write_sidecar_config(server_cluster, "server", &cfg)?;
    mesh.restart(server_cluster, "server")?;
    let entries = MeshEntries {
        http: mesh.outbound(a, "client", HTTP.0)?,
        grpc: mesh.outbound(a, "client", GRPC.0)?,
        tcp: mesh.outbound(a, "client", TCP.0)?,
        tcp_http: mesh.outbound(a, "client", TCP_HTTP.0)?,
    };
    let comp = |label: &str, cluster: &str, component: &str| {
        (label.to_owned(), cluster.to_owned(), component.to_owned())
    };
    let components = match shape {
        MeshShape::SameCluster => vec![
            comp("sidecar-client", a, "client"),
            comp("sidecar-server", a, "server"),
        ],
        MeshShape::CrossCluster(_) => vec![
            comp("sidecar-client", a, "client"),
            comp("gateway-a", a, "gateway"),
            comp("gateway-b", b, "gateway"),
            comp("sidecar-server", b, "server"),
        ],
    };
    Ok(StartedMesh {
        mesh,
        components,
        entries,
    })
}

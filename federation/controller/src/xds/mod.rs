//! The xDS server: Aggregated Discovery Service, state of the world
//! (`StreamAggregatedResources`) and incremental (`DeltaAggregatedResources`),
//! over a [`Model`] derived from the catalog. The supported subset, names and
//! metadata are documented in `docs/xds.md`.
//!
//! Layout:
//! - [`Model`] (this file): the input, published through a
//!   `tokio::sync::watch` channel; replaced whole on every catalog change.
//! - [`node`]: what the server reads from a client's `Node` (role,
//!   `isthmus.upstreams`, client features).
//! - [`resources`]: pure functions from model + node to a [`Snapshot`] of
//!   Clusters, ClusterLoadAssignments, Listeners and RouteConfigurations,
//!   each with a content hash.
//! - [`sotw`] and [`delta`]: the per-stream protocol state machines,
//!   sans-IO (requests and snapshots in, responses out).
//! - [`XdsServer`] (`server.rs`): the tonic driver, one task per stream.
//!
//! Driving it:
//! ```no_run
//! # use std::sync::Arc;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_controller::xds::{Model, XdsServer};
//! let (publish, model) = tokio::sync::watch::channel(Arc::new(Model::default()));
//! let service = XdsServer::new(model).into_service();
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! tonic::transport::Server::builder()
//!     .add_service(service)
//!     .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
//!     .await?;
//! # drop(publish);
//! # Ok(()) }
//! ```

pub mod delta;
pub mod node;
pub mod resources;
mod server;
pub mod sotw;

pub use resources::{Resource, Snapshot};
pub use server::{XdsServer, XdsStats};

use std::net::SocketAddr;

use mesh_api::traffic::TrafficSettings;
use mesh_failover::Target;
use mesh_resources::OutlierDetection;

/// Everything the xDS server needs, derived from the catalog by
/// `catalog::xds_model`. Replaced whole on every catalog change; the server
/// diffs per client and pushes only what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// Increases with every change.
    pub version: u64,
    /// Our cluster name.
    pub cluster: String,
    /// Our cluster's region: the region of clients whose node names none.
    pub region: String,
    /// Our trust domain.
    pub trust_domain: String,
    /// Service ports every client may route to (locals and imports).
    pub services: Vec<ServiceModel>,
    /// Linked peers (gateway role).
    pub peers: Vec<PeerModel>,
    /// Local services exported to peers (gateway role).
    pub exports: Vec<ExportModel>,
}

/// The application protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppProtocol {
    /// HTTP/1.1 or HTTP/2.
    Http,
    /// gRPC (HTTP/2).
    Grpc,
    /// Opaque TCP.
    Tcp,
}

/// One service port, all its localities (local first) and its policies.
/// EDS priorities are not part of the model: they depend on the client's
/// locality and are computed per client from `targets`
/// (`mesh_failover::assign_priorities`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceModel {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Protocol.
    pub protocol: AppProtocol,
    /// Envoy's overprovisioning factor, percent (140 = 1.4).
    pub overprovisioning_factor: u32,
    /// Failover order after the client's own cluster and region: the
    /// `FailoverPolicy` targets, else every peer in link order.
    pub targets: Vec<Target>,
    /// Envoy's healthy panic threshold, percent (0 disables).
    pub panic_threshold_percent: u32,
    /// Passive outlier detection (the policy's or the defaults).
    pub outlier: OutlierDetection,
    /// The service's `TrafficPolicy` (defaults filled in); `None` without
    /// one (the defaults are pushed, and gRPC routes keep no timeout).
    pub traffic: Option<TrafficSettings>,
    /// Localities, in model order.
    pub localities: Vec<LocalityModel>,
}

/// One locality of a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalityModel {
    /// Cluster the locality lies in (xDS `sub_zone`).
    pub cluster: String,
    /// Region (may be empty).
    pub region: String,
    /// Zone (may be empty).
    pub zone: String,
    /// Locality weight (≥ 1).
    pub weight: u32,
    /// Local endpoints (empty for a remote locality).
    pub endpoints: Vec<EndpointModel>,
    /// Set for a remote cluster's locality: reached through our gateway.
    pub tunnel: Option<TunnelModel>,
}

/// One local endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointModel {
    /// Where callers connect (sidecar inbound, or the app when proxyless).
    pub address: SocketAddr,
    /// The workload's SPIFFE ID.
    pub spiffe_id: String,
    /// Healthy (lease live and not marked down).
    pub healthy: bool,
}

/// A remote cluster's locality, reached through the local gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelModel {
    /// Our gateway's address for local sidecars (QUIC).
    pub gateway: SocketAddr,
    /// Remote cluster name.
    pub cluster: String,
    /// Expected destination SPIFFE ID.
    pub spiffe_id: String,
    /// Healthy endpoints there (peer-reported, from the peering stream).
    pub healthy: u32,
    /// All endpoints there (peer-reported; 0 when the peer sent no
    /// locality).
    pub total: u32,
}

/// A linked peer (gateway role: `peer|<cluster>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerModel {
    /// Peer cluster name.
    pub cluster: String,
    /// Its trust domain.
    pub trust_domain: String,
    /// Its gateways, `host:port`.
    pub gateway_addresses: Vec<String>,
    /// Its gateways' SPIFFE ID.
    pub gateway_spiffe_id: String,
}

/// A local service port exported to peers (gateway role: `export|…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportModel {
    /// Namespace.
    pub namespace: String,
    /// Service.
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Peer clusters allowed.
    pub exported_to: Vec<String>,
    /// Local endpoints with locality.
    pub endpoints: Vec<(EndpointModel, String, String)>,
}

#[cfg(test)]
mod tests;

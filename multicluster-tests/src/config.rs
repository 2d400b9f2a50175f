//! The YAML config files of `mesh-gateway` and `mesh-sidecar`, as plain
//! serializable structs mirroring `docs/reference/data-path-config.md` (the
//! contract) key for key.
//!
//! The harness only writes these files; the binaries own the parsing and the
//! validation. Optional keys are `Option`s and are left out of the YAML when
//! `None`, so the binaries' defaults apply.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

/// The `identity` section shared by every component: the dev/test form
/// issues our own SVID from the cluster CA (`ca`); with a `control_plane`
/// section `ca` is left out, the SVID comes from the controller and
/// `bundles` is only the bootstrap trust for the first handshake.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    /// This component's SPIFFE ID.
    pub spiffe_id: String,
    /// The cluster CA the component issues its SVID from (static mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PemFiles>,
    /// The SPIFFE bundle map file: our trust domain and every linked one.
    pub bundles: PathBuf,
}

/// A certificate file and its key file.
#[derive(Debug, Clone, Serialize)]
pub struct PemFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PKCS#8 PEM key.
    pub key: PathBuf,
}

/// A whole `mesh-gateway` config file.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayConfig {
    /// This cluster's name.
    pub cluster: String,
    /// The gateway's identity.
    pub identity: Identity,
    /// UDP address of the QUIC listener.
    pub listen: SocketAddr,
    /// TCP address of the admin listener.
    pub admin: SocketAddr,
    /// TCP address of the TCP+TLS (HTTP/2 CONNECT) listener for peers that
    /// use `transport: tcp-tls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_listen: Option<SocketAddr>,
    /// TCP congestion control of the TCP+TLS transport (e.g. `cubic`);
    /// the kernel default if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_congestion: Option<String>,
    /// Linked clusters.
    pub peers: Vec<Peer>,
    /// Services reachable through this gateway.
    pub exports: Vec<Export>,
    /// QUIC transport knobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quic: Option<Quic>,
    /// Gateway timeouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<GatewayTimeouts>,
    /// Reconnect backoff toward peers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<Reconnect>,
    /// The controller: the SVID, `peers` and `exports` come from it (then
    /// `peers` and `exports` are empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneRef>,
}

/// The `control_plane` section of both binaries (the sidecar's may carry
/// `register`).
#[derive(Debug, Clone, Serialize)]
pub struct ControlPlaneRef {
    /// `host:port` of the controller's gRPC (TLS) listener.
    pub address: String,
    /// The controller's SPIFFE ID (the binaries' default:
    /// `spiffe://<td>/ns/isthmus-system/sa/controller`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// The join token file (relative to the config file).
    pub join_token_file: PathBuf,
    /// Leased workload registration (sidecars only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<Register>,
    /// First reconnect delay toward the controller, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_backoff_ms: Option<u64>,
    /// Largest reconnect delay toward the controller, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
}

/// `control_plane.register`: the workload the sidecar registers.
#[derive(Debug, Clone, Serialize)]
pub struct Register {
    /// Workload name, unique in its namespace.
    pub name: String,
    /// The service it backs (a name in the SVID's namespace).
    pub service: String,
    /// The ports it serves.
    pub ports: Vec<RegisterPort>,
}

/// `control_plane.register.ports[i]`.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterPort {
    /// The service port callers name.
    pub port: u16,
    /// The inbound listener's port on the workload's address.
    pub target_port: u16,
    /// `http`, `grpc` or `tcp`.
    pub protocol: Protocol,
}

/// A linked cluster in a gateway config.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    /// The peer cluster's name.
    pub cluster: String,
    /// The peer's trust domain.
    pub trust_domain: String,
    /// The peer gateway's `host:port` (UDP), when it runs one replica.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Every replica's `host:port` (UDP), when it runs several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<String>>,
    /// The peer gateway's SPIFFE ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// How this gateway reaches the peer (the binary's default: QUIC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<PeerTransport>,
    /// The peer gateway's `tcp_listen` (`host:port`); with
    /// [`PeerTransport::TcpTls`] only (then this or `tcp_addresses`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_address: Option<String>,
    /// Every replica's `tcp_listen`, when the peer runs several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_addresses: Option<Vec<String>>,
}

/// `peers[].transport`: the transport of the gateway-to-gateway hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerTransport {
    /// `quic`: QUIC streams (the default).
    Quic,
    /// `tcp-tls`: HTTP/2 CONNECT streams over one TLS 1.3/TCP connection
    /// per peer (the baseline the QUIC tunnel is measured against).
    TcpTls,
}

/// A service exported by a gateway.
#[derive(Debug, Clone, Serialize)]
pub struct Export {
    /// `namespace/name`.
    pub service: String,
    /// The service port named in tunnel headers.
    pub port: u16,
    /// Peer cluster names allowed to reach it.
    pub exported_to: Vec<String>,
    /// Workload sidecars' inbound listeners.
    pub endpoints: Vec<Endpoint>,
}

/// An endpoint: a workload sidecar's inbound listener and its identity.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// TCP address of the inbound listener.
    pub address: SocketAddr,
    /// The workload's SPIFFE ID.
    pub spiffe_id: String,
}

/// The gateway's `quic` section; every key optional.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Quic {
    /// QUIC keep-alive interval, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive_ms: Option<u64>,
    /// QUIC idle timeout, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

/// The gateway's `timeouts` section; every key optional.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayTimeouts {
    /// Tunnel header deadline, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_ms: Option<u64>,
    /// Connect / handshake deadline, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
    /// Drain time on SIGTERM, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_ms: Option<u64>,
    /// How long a peer replica may take to answer a tunnel OPEN before the
    /// gateway marks it down and tries the next one, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_open_ms: Option<u64>,
}

/// The gateway's `reconnect` section.
#[derive(Debug, Clone, Serialize)]
pub struct Reconnect {
    /// First backoff, ms.
    pub initial_backoff_ms: u64,
    /// Backoff cap, ms.
    pub max_backoff_ms: u64,
}

/// A whole `mesh-sidecar` config file.
#[derive(Debug, Clone, Serialize)]
pub struct SidecarConfig {
    /// This cluster's name.
    pub cluster: String,
    /// The workload's identity.
    pub identity: Identity,
    /// TCP address of the admin listener.
    pub admin: SocketAddr,
    /// Where the workload runs (left out when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// The local east-west gateway.
    pub gateway: GatewayRef,
    /// Outbound listeners, one per upstream service.
    pub outbound: Vec<Outbound>,
    /// Inbound listeners.
    pub inbound: Vec<Inbound>,
    /// The service catalog.
    pub services: Vec<Service>,
    /// Sidecar timeouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<SidecarTimeouts>,
    /// Header size limit, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u64>,
    /// The controller: the SVID and the catalog (then `services` is empty)
    /// come from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneRef>,
}

/// The sidecar's `locality` section.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Locality {
    /// Region name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Zone name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// The sidecar's `gateway` section.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayRef {
    /// The local gateway's QUIC address (replica 0).
    pub address: SocketAddr,
    /// Every local gateway replica's QUIC address, when there are several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<SocketAddr>>,
    /// The local gateway's SPIFFE ID.
    pub spiffe_id: String,
    /// QUIC keep-alive toward the gateway, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive_ms: Option<u64>,
    /// QUIC idle timeout toward the gateway, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

/// Application protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, HTTP/2 prior knowledge, gRPC.
    Http,
    /// Opaque TCP.
    Tcp,
}

/// Protocol an inbound HTTP listener speaks to its app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 cleartext.
    H2c,
}

/// An outbound listener.
#[derive(Debug, Clone, Serialize)]
pub struct Outbound {
    /// Plain TCP address the app connects to.
    pub listen: SocketAddr,
    /// `namespace/name` of the upstream.
    pub service: String,
    /// Upstream service port.
    pub port: u16,
    /// `http` or `tcp`.
    pub protocol: Protocol,
    /// Only this cluster's endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// An inbound listener.
#[derive(Debug, Clone, Serialize)]
pub struct Inbound {
    /// TLS listener address.
    pub listen: SocketAddr,
    /// `http` or `tcp`.
    pub protocol: Protocol,
    /// The app's address.
    pub app: SocketAddr,
    /// How to speak to an HTTP app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<AppProtocol>,
    /// Allowed caller SPIFFE IDs.
    pub allow: Vec<String>,
}

/// A service in the sidecar's catalog.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// `namespace/name`.
    pub service: String,
    /// Service port.
    pub port: u16,
    /// Endpoints in this cluster.
    pub endpoints: Vec<Endpoint>,
    /// Clusters exporting it to us.
    pub remote: Vec<Remote>,
    /// Locality LB and outlier detection settings (snake_case keys as in
    /// `docs/reference/data-path-config.md`); left out when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<serde_json::Value>,
    /// Retries, timeouts and circuit breaking; left out when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resilience: Option<serde_json::Value>,
}

/// A remote cluster serving a service.
#[derive(Debug, Clone, Serialize)]
pub struct Remote {
    /// The cluster's name.
    pub cluster: String,
    /// Expected identity of the final workload.
    pub spiffe_id: String,
}

/// The sidecar's `timeouts` section; every key optional.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SidecarTimeouts {
    /// Connect + handshake / tunnel open deadline, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u64>,
    /// Slowloris guard on HTTP listeners, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_ms: Option<u64>,
    /// Inbound TLS handshake deadline, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_handshake_ms: Option<u64>,
    /// Per-request deadline, ms (0 = none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
}

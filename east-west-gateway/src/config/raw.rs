//! The config file as written: serde structs with `deny_unknown_fields`,
//! defaults as in `docs/reference/data-path-config.md`. Serializable, so
//! tools and tests can build a file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The file as written. Serializable so tools and tests can build one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// This cluster's name (a DNS label).
    pub cluster: String,
    /// Who the gateway is and whom it trusts.
    pub identity: RawIdentity,
    /// UDP `ip:port` of the QUIC listener.
    pub listen: String,
    /// TCP `ip:port` of the admin HTTP listener.
    pub admin: String,
    /// TCP `ip:port` of the TCP+TLS (HTTP/2 CONNECT) listener for peers
    /// whose config reaches us with `transport: tcp-tls`; none if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_listen: Option<String>,
    /// TCP congestion control of the TCP+TLS transport (`tcp_listen` and
    /// connections to `tcp-tls` peers), e.g. `cubic`; the kernel default if
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_congestion: Option<String>,
    /// Linked peer clusters.
    #[serde(default)]
    pub peers: Vec<RawPeer>,
    /// Services of this cluster reachable through the gateway.
    #[serde(default)]
    pub exports: Vec<RawExport>,
    /// QUIC transport settings.
    #[serde(default)]
    pub quic: RawQuic,
    /// Deadlines.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Reconnect backoff toward peers.
    #[serde(default)]
    pub reconnect: RawReconnect,
    /// The controller: the SVID, `peers` and `exports` come from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<RawControlPlane>,
}

/// `control_plane`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControlPlane {
    /// `host:port` of the controller's gRPC listener.
    pub address: String,
    /// The controller's SPIFFE ID (default
    /// `spiffe://<our td>/ns/isthmus-system/sa/controller`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// File holding the join token for the first SVID.
    pub join_token_file: PathBuf,
    /// Plaintext h2c to the controller (loopback test setups only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub danger_plaintext: Option<bool>,
    /// First reconnect delay toward the controller, ms (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_backoff_ms: Option<u64>,
    /// Largest reconnect delay toward the controller, ms (default 15000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
}

/// The `identity` section (mirrors [`trust_bundle::config::IdentityConfig`], which is not
/// serializable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// Our SPIFFE ID.
    pub spiffe_id: String,
    /// Issue our own SVID from this CA (`cert`, `key` file paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<RawPemFiles>,
    /// Serve this SVID (`cert`, `key` file paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svid: Option<RawPemFiles>,
    /// SPIFFE bundle map file.
    pub bundles: PathBuf,
    /// Lifetime of SVIDs issued from `ca`, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svid_ttl_ms: Option<u64>,
}

/// A certificate file and its key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPemFiles {
    /// PEM certificates.
    pub cert: PathBuf,
    /// PKCS#8 PEM key.
    pub key: PathBuf,
}

/// One `peers[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    /// The peer cluster's name.
    pub cluster: String,
    /// The peer's trust domain.
    pub trust_domain: String,
    /// `host:port` of the peer gateway (IP literal or DNS name): the
    /// one-replica form of `addresses`; give exactly one of the two.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// `host:port` of each replica of the peer's gateway, in preference
    /// order for nothing: new streams are spread over the healthy ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The only SPIFFE ID accepted for the peer gateway (default: any ID in
    /// `trust_domain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// How this gateway reaches the peer (default [`RawTransport::Quic`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<RawTransport>,
    /// `host:port` of the peer gateway's `tcp_listen`; required with
    /// `transport: tcp-tls`, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_address: Option<String>,
    /// `host:port` of each replica's `tcp_listen`: the several-replica form
    /// of `tcp_address` (give at most one of the two).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_addresses: Vec<String>,
}

/// `peers[].transport`: the transport of the gateway-to-gateway hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawTransport {
    /// `quic`: tunnel streams are QUIC streams on the shared endpoint.
    Quic,
    /// `tcp-tls`: tunnel streams are HTTP/2 CONNECT streams on one TLS
    /// over TCP connection (the baseline transport).
    TcpTls,
}

/// One `exports[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExport {
    /// `namespace/name`.
    pub service: String,
    /// The service port named in tunnel headers.
    pub port: u16,
    /// Peer cluster names allowed to reach it.
    #[serde(default)]
    pub exported_to: Vec<String>,
    /// Where it runs.
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
}

/// One endpoint of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    /// TCP `ip:port` of the workload sidecar's inbound listener.
    pub address: String,
    /// The workload's SPIFFE ID.
    pub spiffe_id: String,
    /// Where it runs (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
}

/// A locality.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    /// Region, e.g. `eu-west`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Zone, e.g. `eu-west-1a`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// The `quic` section, defaults as in the reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQuic {
    /// Keep-alive interval, ms (0 = off).
    pub keep_alive_ms: u64,
    /// Idle timeout, ms.
    pub idle_timeout_ms: u64,
    /// Per-stream receive window, bytes.
    pub stream_receive_window_bytes: u64,
    /// Per-connection receive window, bytes.
    pub receive_window_bytes: u64,
    /// Per-connection send window, bytes.
    pub send_window_bytes: u64,
    /// Concurrent bidirectional streams a peer may open.
    pub max_concurrent_streams: u64,
    /// Streams in flight across the whole gateway; past it new streams are
    /// rejected as overloaded.
    pub max_streams_in_flight: u64,
    /// Congestion controller of every QUIC connection (sender side).
    pub congestion: RawCongestion,
}

/// `quic.congestion`: quinn's congestion controllers.
///
/// The default is BBR, from measurements (`multicluster-tests/tests/
/// failover_bulk.rs`: 10 concurrent downloads gateway to gateway at 50 ms
/// RTT and 1 % random loss, debug build): CUBIC and NewReno read every
/// random loss as congestion and carried 0.31 MB/s each, BBR 11.6–12.0
/// MB/s (the harness's ceiling, on par with the kernel's TCP BBR baseline
/// at 11.5 MB/s). WAN paths between clusters lose packets that are not
/// congestion; a loss-based controller collapses there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawCongestion {
    /// CUBIC (RFC 9438), quinn's own default.
    Cubic,
    /// BBR (v1, as quinn implements it): the default, see above.
    #[default]
    Bbr,
    /// NewReno (RFC 9002 §7).
    NewReno,
}

impl Default for RawQuic {
    fn default() -> Self {
        RawQuic {
            keep_alive_ms: 2_000,
            idle_timeout_ms: 10_000,
            stream_receive_window_bytes: 8_388_608,
            receive_window_bytes: 67_108_864,
            send_window_bytes: 67_108_864,
            max_concurrent_streams: 4_096,
            max_streams_in_flight: 65_536,
            congestion: RawCongestion::default(),
        }
    }
}

/// The `timeouts` section, defaults as in the reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    /// Tunnel header deadline, ms.
    pub header_ms: u64,
    /// TCP connect / QUIC handshake deadline, ms.
    pub connect_ms: u64,
    /// Drain deadline on SIGTERM, ms.
    pub drain_ms: u64,
    /// A peer gateway replica that sent nothing at all within this long
    /// after a relayed OPEN header is marked down and the header goes to
    /// the next replica, ms.
    pub peer_open_ms: u64,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            header_ms: 5_000,
            connect_ms: 3_000,
            drain_ms: 30_000,
            peer_open_ms: 1_000,
        }
    }
}

/// The `reconnect` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReconnect {
    /// First backoff, ms.
    pub initial_backoff_ms: u64,
    /// Backoff cap, ms.
    pub max_backoff_ms: u64,
}

impl Default for RawReconnect {
    fn default() -> Self {
        RawReconnect {
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
        }
    }
}

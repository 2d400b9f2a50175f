//! `isthmus.peering.v1.Peering`: controller to controller
//! (docs/reference/control-plane-api.md).
//!
//! - `Redeem`: the redeeming controller presents a peering token's id and
//!   secret and its own [`PeerInfo`]; the issuer checks the token (single
//!   use, not expired), stores the link and answers with its own
//!   [`PeerInfo`]. TLS: the redeemer verifies the issuer's controller SVID
//!   with the bundle carried in the token; no client certificate yet.
//! - `WatchExports`: the services the callee exports to the caller, with
//!   per-locality health counts and weights (never endpoint addresses),
//!   first immediately, then on every change. mTLS: the caller's controller
//!   SVID, verified against its linked trust domain's bundle.
//! - `Unlink`: the caller removes its link; the callee removes its side.

#![allow(missing_docs)]

/// What one side of a link tells the other.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PeerInfo {
    /// Cluster name (DNS-1123 label).
    #[prost(string, tag = "1")]
    pub cluster: ::prost::alloc::string::String,
    /// SPIFFE trust domain.
    #[prost(string, tag = "2")]
    pub trust_domain: ::prost::alloc::string::String,
    /// The current bundle of `trust_domain`, SPIFFE bundle JSON (Trust
    /// Domain and Bundle §4).
    #[prost(string, tag = "3")]
    pub bundle_json: ::prost::alloc::string::String,
    /// `https://host:port/` of the SPIFFE bundle endpoint (https_spiffe).
    #[prost(string, tag = "4")]
    pub bundle_endpoint: ::prost::alloc::string::String,
    /// `host:port` of the controller's gRPC listener (Peering service).
    #[prost(string, tag = "5")]
    pub controller_address: ::prost::alloc::string::String,
    /// `host:port` of each east-west gateway (QUIC, UDP).
    #[prost(string, repeated, tag = "6")]
    pub gateway_addresses: ::prost::alloc::vec::Vec<::prost::alloc::string::String>,
    /// The controller's SPIFFE ID.
    #[prost(string, tag = "7")]
    pub controller_spiffe_id: ::prost::alloc::string::String,
    /// The gateways' SPIFFE ID.
    #[prost(string, tag = "8")]
    pub gateway_spiffe_id: ::prost::alloc::string::String,
    /// Region of the cluster (may be empty).
    #[prost(string, tag = "9")]
    pub region: ::prost::alloc::string::String,
}

/// `Redeem` input.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RedeemRequest {
    #[prost(string, tag = "1")]
    pub token_id: ::prost::alloc::string::String,
    #[prost(string, tag = "2")]
    pub secret: ::prost::alloc::string::String,
    #[prost(message, optional, tag = "3")]
    pub redeemer: ::core::option::Option<PeerInfo>,
}

/// `Redeem` output.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RedeemResponse {
    #[prost(message, optional, tag = "1")]
    pub issuer: ::core::option::Option<PeerInfo>,
}

/// `WatchExports` input (empty: the caller is known from its SVID).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct WatchExportsRequest {}

/// All services the callee exports to the caller, as of `version`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExportSet {
    #[prost(uint64, tag = "1")]
    pub version: u64,
    #[prost(message, repeated, tag = "2")]
    pub services: ::prost::alloc::vec::Vec<ExportedService>,
    /// `host:port` of each east-west gateway (QUIC, UDP).
    #[prost(string, repeated, tag = "3")]
    pub gateway_addresses: ::prost::alloc::vec::Vec<::prost::alloc::string::String>,
}

/// One exported service.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExportedService {
    #[prost(string, tag = "1")]
    pub namespace: ::prost::alloc::string::String,
    #[prost(string, tag = "2")]
    pub name: ::prost::alloc::string::String,
    #[prost(message, repeated, tag = "3")]
    pub ports: ::prost::alloc::vec::Vec<ExportedPort>,
    /// `ClusterSetIP` or `Headless` (MCS ServiceImport type).
    #[prost(string, tag = "4")]
    pub r#type: ::prost::alloc::string::String,
    #[prost(message, repeated, tag = "5")]
    pub localities: ::prost::alloc::vec::Vec<LocalityHealth>,
    /// SPIFFE IDs of the service's workloads (the tunnel header's expected
    /// destination identity).
    #[prost(string, repeated, tag = "6")]
    pub spiffe_ids: ::prost::alloc::vec::Vec<::prost::alloc::string::String>,
    /// The ServiceExport's `metadata.creationTimestamp` (RFC 3339), for the
    /// MCS oldest-first conflict resolution.
    #[prost(string, tag = "7")]
    pub export_created: ::prost::alloc::string::String,
}

/// One service port.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExportedPort {
    #[prost(string, tag = "1")]
    pub name: ::prost::alloc::string::String,
    #[prost(uint32, tag = "2")]
    pub port: u32,
    /// `TCP`, `UDP` or `SCTP` (Kubernetes ServicePort protocol).
    #[prost(string, tag = "3")]
    pub protocol: ::prost::alloc::string::String,
    /// `http`, `grpc` or `tcp`.
    #[prost(string, tag = "4")]
    pub app_protocol: ::prost::alloc::string::String,
}

/// Health of one locality of an exported service: counts, not addresses.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct LocalityHealth {
    #[prost(string, tag = "1")]
    pub region: ::prost::alloc::string::String,
    #[prost(string, tag = "2")]
    pub zone: ::prost::alloc::string::String,
    #[prost(uint32, tag = "3")]
    pub healthy: u32,
    #[prost(uint32, tag = "4")]
    pub total: u32,
    /// Load-balancing weight of the locality (default: `healthy`).
    #[prost(uint32, tag = "5")]
    pub weight: u32,
}

/// `Unlink` input (empty: the caller is known from its SVID).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct UnlinkRequest {}

/// `Unlink` output (empty).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct UnlinkResponse {}

include!(concat!(env!("OUT_DIR"), "/isthmus.peering.v1.Peering.rs"));

//! `isthmus.identity.v1.Identity`: the controller's workload-facing service
//! (docs/reference/control-plane-api.md).
//!
//! - `SignSvid`: sign a PKCS#10 CSR whose one URI SAN is the workload's
//!   SPIFFE ID, and return the X509-SVID chain and the bundle map. The first
//!   call is authenticated by a join token (scoped to one namespace and
//!   service account, single trust domain); renewals by the caller's current
//!   SVID (mTLS), which must name the same SPIFFE ID as the CSR.
//! - `WatchBundles`: the SPIFFE bundle map (Trust Domain and Bundle §5: our
//!   own trust domain and every linked one), first immediately, then on
//!   every change. SVID-authenticated.
//! - `Register` / `Deregister`: universal-mode workload registration with a
//!   lease; renew by calling `Register` again before `lease_seconds` pass.
//!   SVID-authenticated; namespace and service account come from the SVID.

#![allow(missing_docs)] // field docs are the comments; prost derives add items

/// `SignSvid` input.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SignSvidRequest {
    /// DER PKCS#10 CSR (RFC 2986); exactly one URI SAN, the SPIFFE ID.
    #[prost(bytes = "vec", tag = "1")]
    pub csr_der: ::prost::alloc::vec::Vec<u8>,
    /// A join token from `meshctl token create`; empty when the caller
    /// authenticates with its current SVID.
    #[prost(string, tag = "2")]
    pub join_token: ::prost::alloc::string::String,
}

/// `SignSvid` output.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SignSvidResponse {
    /// DER certificates, the leaf SVID first, then intermediates up to (not
    /// including) the root.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub chain_der: ::prost::alloc::vec::Vec<::prost::alloc::vec::Vec<u8>>,
    /// SPIFFE bundle map JSON (Trust Domain and Bundle §5).
    #[prost(string, tag = "2")]
    pub bundles_json: ::prost::alloc::string::String,
}

/// `WatchBundles` input (empty).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct WatchBundlesRequest {}

/// One `WatchBundles` message.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct BundleMapUpdate {
    /// SPIFFE bundle map JSON (Trust Domain and Bundle §5).
    #[prost(string, tag = "1")]
    pub bundles_json: ::prost::alloc::string::String,
    /// Increases with every change.
    #[prost(uint64, tag = "2")]
    pub version: u64,
}

/// One service port a registered workload serves.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct WorkloadPort {
    /// The service port callers name (1..=65535).
    #[prost(uint32, tag = "1")]
    pub port: u32,
    /// Where callers connect on `address` (the sidecar's inbound listener,
    /// or the app itself for proxyless workloads) (1..=65535).
    #[prost(uint32, tag = "2")]
    pub target_port: u32,
    /// `http`, `grpc` or `tcp`.
    #[prost(string, tag = "3")]
    pub protocol: ::prost::alloc::string::String,
}

/// `Register` input.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RegisterRequest {
    /// Workload (instance) name, unique in its namespace (DNS-1123 label).
    #[prost(string, tag = "1")]
    pub name: ::prost::alloc::string::String,
    /// The service it backs (DNS-1123 label), in the SVID's namespace.
    #[prost(string, tag = "2")]
    pub service: ::prost::alloc::string::String,
    /// IP address callers connect to.
    #[prost(string, tag = "3")]
    pub address: ::prost::alloc::string::String,
    #[prost(message, repeated, tag = "4")]
    pub ports: ::prost::alloc::vec::Vec<WorkloadPort>,
    #[prost(string, tag = "5")]
    pub region: ::prost::alloc::string::String,
    #[prost(string, tag = "6")]
    pub zone: ::prost::alloc::string::String,
    /// Requested lease, seconds (0 = the controller's default, 15 s).
    #[prost(uint32, tag = "7")]
    pub lease_seconds: u32,
}

/// `Register` output.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RegisterResponse {
    /// The granted lease, seconds: renew well before it passes.
    #[prost(uint32, tag = "1")]
    pub lease_seconds: u32,
}

/// `Deregister` input.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DeregisterRequest {
    /// Workload name, in the SVID's namespace.
    #[prost(string, tag = "1")]
    pub name: ::prost::alloc::string::String,
}

/// `Deregister` output (empty).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DeregisterResponse {}

include!(concat!(env!("OUT_DIR"), "/isthmus.identity.v1.Identity.rs"));

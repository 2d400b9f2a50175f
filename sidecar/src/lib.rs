//! `mesh-sidecar`: the per-workload data-plane proxy of Isthmus.
//!
//! What it owns:
//! - outbound listeners, one local port per upstream service: HTTP/1.1,
//!   HTTP/2 with prior knowledge and gRPC ([`outbound::http`]), opaque TCP
//!   ([`outbound::tcp`]);
//! - inbound listeners that terminate the inner mTLS with the workload SVID,
//!   authorize the caller's SPIFFE ID and forward to the app on localhost
//!   ([`inbound`]);
//! - routing: a pure [`plan::plan`] from a config snapshot to ordered
//!   candidates (local endpoints first, then remote clusters through the
//!   local east-west gateway), naming next-hop and final identities apart;
//! - resilience per upstream service ([`resilience`]): retries with a
//!   budget, per-try, request, idle and connect timeouts, circuit breaking;
//! - the tunnel client toward the local gateway ([`tunnel`]);
//! - the admin listener ([`admin`]), metrics ([`metrics`]), config
//!   ([`config`]), reload and drain ([`runtime`]).
//!
//! - the link to the controller ([`control`]): SVID by join token and
//!   renewals, bundle watch, the catalog from CDS+EDS, registration.
//!
//! What it does not own: certificates and bundles ([`trust_bundle`]), the
//! tunnel wire format ([`tunnel_proto`]), routing between clusters (the
//! gateway), the xDS and Identity clients ([`mesh_api`]), and the catalog
//! itself (the YAML file's `services`, or the controller).
//!
//! Driving it: [`run_cli`] is the whole binary; embedders and tests build a
//! [`config::Config`] and call [`runtime::Sidecar::start`], then
//! [`runtime::Sidecar::apply`] / [`runtime::Sidecar::reload`] and
//! [`runtime::Sidecar::drain`]. The contract is
//! `docs/reference/data-path-config.md`.

pub mod admin;
mod cli;
pub mod config;
pub mod control;
pub mod drain;
pub mod errors;
pub mod health;
pub mod http_util;
pub mod inbound;
pub mod io;
pub mod lb;
pub mod metrics;
pub mod outbound;
pub mod plan;
pub mod resilience;
pub mod runtime;
pub mod tls;
pub mod tunnel;

pub use cli::run_cli;
pub use config::Config;
pub use runtime::Sidecar;

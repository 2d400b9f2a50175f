//! `mesh-gateway`, the Isthmus east-west gateway: QUIC tunnels (ALPN
//! `isthmus-tunnel/1`, SPIFFE mutual TLS) to the gateways of linked
//! clusters, and the tunnel endpoint for local sidecars. A TCP+TLS
//! baseline transport between gateways (HTTP/2 CONNECT, [`tcp_tls`]) can
//! replace QUIC per peer, for comparison.
//!
//! What it owns: the QUIC endpoint and its trust policy ([`endpoint`]), the
//! pool of connections to peer gateways with backoff and DNS re-resolution
//! ([`peers`], [`backoff`]), the TCP+TLS transport ([`tcp_tls`]), routing
//! of tunnel streams ([`route`], pure; carried out by [`forward`] and
//! [`inbound`]), the admin listener
//! ([`admin`], including `GET /peers`), config loading and reload
//! ([`config`], [`gateway`]), peers and exports from the controller's xDS
//! ([`control`], `control_plane` section), and the binary's entry point
//! [`run_cli`].
//!
//! What it does not own: the wire protocol (the sans-IO `tunnel-proto`
//! crate), identities and bundles (`trust-bundle`), and the end-to-end mTLS
//! between sidecars, which passes through as opaque bytes.
//!
//! Driving it: build a [`config::Config`] (`Config::load(path)` or
//! `Config::from_yaml`), then [`Gateway::start`] inside a tokio runtime with
//! a `prometheus_client` registry; call [`Gateway::reload`] on SIGHUP and
//! [`Gateway::drain`] on SIGTERM. The binary does exactly that.

pub mod admin;
pub mod backoff;
pub mod config;
pub mod control;
pub mod endpoint;
pub mod forward;
pub mod gateway;
pub mod handshake;
pub mod inbound;
pub mod metrics;
pub mod peers;
pub mod relay;
pub mod route;
pub mod server;
pub mod state;
pub mod tcp_tls;

mod cli;

pub use cli::run_cli;
pub use config::{Config, ConfigError};
pub use gateway::{DrainReport, Gateway, ReloadError, StartError};

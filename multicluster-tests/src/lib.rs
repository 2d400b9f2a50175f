//! The Isthmus multi-cluster test harness, loopback tier: several clusters on
//! one machine, each on its own `127.x.y.0/24`, driving the real
//! `mesh-gateway` and `mesh-sidecar` binaries with real servers (nginx,
//! PostgreSQL, python3 `http.server`) and real clients (curl, h2load, psql).
//!
//! What it owns: locating/building the binaries ([`bins`]), per-cluster CAs
//! and bundle maps ([`pki`]), generating configs per
//! `docs/reference/data-path-config.md` ([`config`], [`topology`]), running
//! and tearing down processes ([`process`], [`mesh`]), readiness
//! ([`ready`]), the third-party servers ([`servers`]) and clients
//! ([`tools`]), the standard two-cluster setup ([`standard`]), and the
//! benchmark harness against Envoy and HAProxy ([`bench`](mod@bench), run by the
//! `isthmus-bench` binary; docs/performance.md).
//! What it does not own: the binaries' behaviour (bugs found go to
//! `BUGS.md`), network namespaces and WAN faults (the [`netns`] tier).
//!
//! Driving it: build a [`topology::Topology`] (or a
//! [`standard::StandardBuilder`]), start the apps, `start()` it, point
//! clients at the outbound listeners, and let `Drop` clean up. Every wait is
//! bounded by [`ready::patience`]. This is test code: errors are `anyhow`.

pub mod bench;
pub mod bins;
pub mod config;
pub mod controlplane;
pub mod load;
pub mod mesh;
pub mod net;
pub mod netns;
pub mod pki;
pub mod process;
pub mod ready;
pub mod servers;
pub mod site;
pub mod standard;
pub mod tools;
pub mod topology;

pub use mesh::Mesh;
pub use standard::{Parts, Standard, StandardBuilder};
pub use topology::{Topology, Tuning, Workload};

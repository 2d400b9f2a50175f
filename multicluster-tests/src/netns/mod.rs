//! The network-namespace tier: each cluster in its own network namespace on
//! 198.18.0.0/15, joined by an emulated WAN with per-link delay, jitter,
//! loss, rate and partitions (`tc netem` is not available on our machines).
//!
//! What it owns: the namespaces and their addresses ([`Wan`]), the TUN
//! router that is the WAN ([`router`], sans-IO, and its driver in [`wan`]),
//! per-link impairments ([`link`]), and guaranteed teardown ([`cleanup`]).
//! What it does not own: what runs inside the namespaces (tests start the
//! real binaries and servers with [`Wan::command`] / [`Wan::spec`]).
//!
//! Driving it:
//!
//! ```no_run
//! use std::time::Duration;
//! use multicluster_tests::netns::{LinkConfig, Wan};
//!
//! let wan = Wan::start(&["a", "b"], LinkConfig::delay(Duration::from_millis(15)))?;
//! let b = wan.addr("b"); // 198.18.2.1
//! let status = wan.command("a", "curl").arg(format!("http://{b}:8080/")).status()?;
//! wan.partition("a", "b");
//! wan.heal("a", "b");
//! # let _ = status;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! `docs/reference/wan-harness.md` has the addresses, teardown guarantees and
//! limits.

pub mod cleanup;
pub mod link;
pub mod router;
pub mod wan;

pub use link::{DropReason, LinkConfig, LinkStats, Rate};
pub use wan::{netns_command, netns_spec, Cluster, Wan};

#[cfg(test)]
mod tests;

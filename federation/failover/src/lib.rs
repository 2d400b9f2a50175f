//! Isthmus's failover arithmetic: which priority level, which locality and
//! which host a request should go to, and which hosts passive outlier
//! detection has ejected.
//!
//! This crate owns the pure decisions behind `FailoverPolicy`
//! (`docs/failover.md`):
//!
//! - [`assign_priorities`]: the priority level of every locality as seen from
//!   a client (same zone, same cluster, same region, the policy's targets in
//!   order, the rest), dense from 0. The controller uses it for the EDS it
//!   pushes to each client; the sidecar for its static configuration.
//! - [`priority_load`]: Envoy's priority load with an overprovisioning factor
//!   and a panic threshold, the share of requests each level takes.
//! - [`locality_shares`] and [`pick_weighted`]: Envoy's locality-weighted load
//!   balancing inside one level.
//! - [`OutlierDetector`]: Envoy's passive outlier detection (consecutive 5xx,
//!   consecutive gateway errors, success rate) as a sans-IO state machine.
//!
//! It does no I/O, reads no clock and spawns nothing: time comes in as
//! [`std::time::Instant`] arguments and randomness as a `u64`. It does not
//! parse resources (`mesh-resources` does), build xDS (the controller does)
//! or keep connections (the sidecar does).
//!
//! Drive the load-balancing functions with a snapshot of health per level
//! ([`Health`], counts of hosts): recompute [`priority_load`] when health
//! changes, then for each request pick a level with
//! `pick_weighted(&load.percent, random)`, a locality inside it with
//! `pick_weighted(&locality_shares(..), random)`, then a host. Drive an
//! [`OutlierDetector`] by reporting every request's [`Outcome`] with
//! [`OutlierDetector::handle_outcome`], calling
//! [`OutlierDetector::handle_interval`] whenever
//! [`OutlierDetector::poll_timeout`] passes, and asking
//! [`OutlierDetector::is_ejected`] when building a health snapshot.
//!
//! ```
//! use mesh_failover::{
//!     assign_priorities, pick_weighted, priority_load, Health, Locality, Target,
//!     DEFAULT_OVERPROVISIONING_FACTOR, DEFAULT_PANIC_THRESHOLD_PERCENT,
//! };
//!
//! let at = |region: &str, zone: &str, cluster: &str| Locality {
//!     region: region.into(),
//!     zone: zone.into(),
//!     cluster: cluster.into(),
//! };
//! let client = at("eu", "eu-1a", "a");
//! let localities = [at("eu", "eu-1a", "a"), at("us", "us-1a", "b")];
//! let targets = [Target::Cluster("b".into())];
//! assert_eq!(assign_priorities(&client, &targets, &localities), [0, 1]);
//!
//! // Half of the local hosts are healthy: 70% stays local, 30% fails over.
//! let levels = [Health { healthy: 2, total: 4 }, Health { healthy: 3, total: 3 }];
//! let load = priority_load(
//!     &levels,
//!     DEFAULT_OVERPROVISIONING_FACTOR,
//!     DEFAULT_PANIC_THRESHOLD_PERCENT,
//! );
//! assert_eq!(load.percent, [70, 30]);
//! let weights: Vec<u64> = load.percent.iter().map(|&p| u64::from(p)).collect();
//! assert_eq!(pick_weighted(&weights, 0), Some(0));
//! assert_eq!(pick_weighted(&weights, u64::MAX), Some(1));
//! ```
//!
//! The numbers follow Envoy's documentation (priority levels,
//! overprovisioning, locality weighted LB, panic threshold, outlier
//! detection); the golden tables of those pages are unit tests here.

mod assign;
mod locality;
mod outlier;
mod priority;

pub use assign::{assign_priorities, Locality, Target};
pub use locality::{locality_shares, pick_weighted};
pub use outlier::{Outcome, OutlierConfig, OutlierDetector, OutlierStats};
pub use priority::{
    priority_load, Health, PriorityLoad, DEFAULT_OVERPROVISIONING_FACTOR,
    DEFAULT_PANIC_THRESHOLD_PERCENT,
};

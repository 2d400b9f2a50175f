//! The benchmark harness (`isthmus-bench`, issue 4): Isthmus against Envoy and
//! HAProxy in the same two-proxy mTLS topology, all on loopback, with the same
//! nginx backend and the same clients. See `docs/performance.md`.
//!
//! [`run::run`] drives it: [`backend`] (nginx and iperf3), the topologies
//! ([`topologies`] for Isthmus, [`proxies`] for Envoy and HAProxy), the
//! measuring tools ([`h2load`], [`load`], [`iperf`], [`connlat`],
//! [`procstat`]), CPU placement ([`pinning`]) and the report ([`report`],
//! [`sysinfo`]).

pub mod backend;
pub mod connlat;
pub mod h2load;
pub mod iperf;
pub mod load;
pub mod pinning;
pub mod procstat;
pub mod proxies;
pub mod report;
pub mod run;
pub mod sysinfo;
pub mod topologies;

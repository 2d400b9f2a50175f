//! The benchmark harness (`isthmus-bench`, issue 4): Isthmus against Envoy and
//! HAProxy in the same two-proxy mTLS topology, all on loopback, with the same
//! nginx backend and the same clients. See `docs/performance.md`.

pub mod proxies;

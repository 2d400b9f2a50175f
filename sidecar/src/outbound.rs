//! Outbound: the app connects to a local port per upstream service; the
//! sidecar plans ([`crate::plan`]), connects with mTLS to the peer sidecar
//! directly or through the gateway tunnel ([`connect`]), and carries HTTP
//! over one pooled HTTP/2 connection per peer ([`pool`], [`http`]) or copies
//! opaque TCP ([`tcp`]).

pub mod body;
pub mod connect;
pub mod http;
pub mod idle;
pub mod pool;
pub mod tcp;

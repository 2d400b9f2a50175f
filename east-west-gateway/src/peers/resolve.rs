//! DNS for peer addresses: an IP literal as is, a name through hickory
//! (built on first use), valid until the answer's TTL.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;

use super::PoolContext;
use crate::config::PeerAddress;

/// Resolved addresses of a peer and when they expire (`None`: an IP
/// literal, never).
pub(super) struct Resolved {
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) valid_until: Option<tokio::time::Instant>,
}

/// Sleeps until `at`; forever if `None`.
pub(super) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why a peer address did not resolve.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResolveError {
    /// The system resolver configuration could not be loaded.
    #[error("dns resolver setup")]
    Setup(#[source] hickory_resolver::net::NetError),
    /// The lookup failed.
    #[error("dns lookup")]
    Lookup(#[source] hickory_resolver::net::NetError),
}

/// Resolves `address`; with `v4_only`, AAAA answers are dropped.
pub(super) async fn resolve(
    ctx: &PoolContext,
    address: &PeerAddress,
    v4_only: bool,
) -> Result<Resolved, ResolveError> {
    let (host, port) = match address {
        PeerAddress::Ip(a) => {
            return Ok(Resolved {
                addrs: vec![*a],
                valid_until: None,
            })
        }
        PeerAddress::Dns { host, port } => (host, *port),
    };
    let resolver = ctx
        .resolver
        .get_or_try_init(|| async { TokioResolver::builder_tokio()?.build() })
        .await
        .map_err(ResolveError::Setup)?;
    let lookup = resolver
        .lookup_ip(host.as_str())
        .await
        .map_err(ResolveError::Lookup)?;
    let addrs: Vec<SocketAddr> = lookup
        .iter()
        .filter(|ip: &IpAddr| !v4_only || ip.is_ipv4())
        .map(|ip: IpAddr| SocketAddr::new(ip, port))
        .collect();
    let valid_until = tokio::time::Instant::from_std(lookup.valid_until())
        .max(tokio::time::Instant::now() + Duration::from_secs(1));
    Ok(Resolved {
        addrs,
        valid_until: Some(valid_until),
    })
}

//! quinn setup: one endpoint bound on `listen`, server for sidecars and
//! peers and client toward peers (so peers see us from one address), with
//! SPIFFE mutual TLS from `trust_bundle::tls` and ALPN `isthmus-tunnel/1`.
//!
//! Trust: the verifiers get a [`BundleStore`] holding only our own and the
//! linked peers' bundles ([`trusted_map`]), so a third trust domain fails
//! the handshake. The server authorizer reads the current config on every
//! handshake: our own trust domain (sidecars) or an admitted peer gateway.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use trust_bundle::{Authorizer, BundleMap, BundleStore, SvidSource};

use crate::config::{Config, QuicConfig, RawCongestion};
use crate::route::HopIdentity;
use crate::state::ConfigCell;

/// Why the QUIC endpoint or its TLS configs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// rustls refused the configuration.
    #[error("tls configuration")]
    Tls(#[source] rustls::Error),
    /// The rustls configuration has no QUIC-capable TLS 1.3 suite.
    #[error("tls configuration is unusable for quic")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The UDP socket could not be bound.
    #[error("cannot bind udp {addr}")]
    Bind {
        /// The `listen` address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Transport parameters from the `quic` section (RFC 9000 §18.2): keep-alive,
/// idle timeout (ms), flow-control windows (bytes), stream limit, and the
/// congestion controller (`quic.congestion`).
pub fn transport(q: &QuicConfig) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    let congestion: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> = match q.congestion
    {
        RawCongestion::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
        RawCongestion::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
        RawCongestion::NewReno => Arc::new(quinn::congestion::NewRenoConfig::default()),
    };
    t.congestion_controller_factory(congestion);
    t.keep_alive_interval(q.keep_alive)
        // Validated below 2^62 ms in config; the fallback never applies.
        .max_idle_timeout(IdleTimeout::try_from(q.idle_timeout).ok())
        .stream_receive_window(varint(q.stream_receive_window))
        .receive_window(varint(q.receive_window))
        .send_window(q.send_window)
        .max_concurrent_bidi_streams(varint(q.max_concurrent_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    Arc::new(t)
}

fn varint(v: u64) -> VarInt {
    VarInt::from_u64(v).unwrap_or(VarInt::MAX)
}

/// The bundles the verifiers may use: our own trust domain and the linked
/// peers', out of everything in `loaded`.
pub fn trusted_map(loaded: &BundleStore, config: &Config) -> BundleMap {
    let mut map = BundleMap::default();
    for (td, bundle) in loaded.to_map().trust_domains {
        if td == config.trust_domain || config.peers.values().any(|p| p.trust_domain == td) {
            map.insert(bundle);
        }
    }
    map
}

/// The server config: our SVID, client certificates verified against
/// `store`, authorized by the config current at handshake time.
///
/// # Errors
/// [`EndpointError::Tls`], [`EndpointError::Quic`].
pub fn server_config(
    source: Arc<SvidSource>,
    store: BundleStore,
    current: Arc<ConfigCell>,
    quic: &QuicConfig,
) -> Result<quinn::ServerConfig, EndpointError> {
    let authorizer = Authorizer::Predicate(Arc::new(move |id| {
        let config = current.load();
        id.is_member_of(&config.trust_domain) || config.peer_for_id(id).is_some()
    }));
    let tls = trust_bundle::tls::server_config(source, store, authorizer, &[tunnel_proto::ALPN])
        .map_err(EndpointError::Tls)?;
    let crypto = QuicServerConfig::try_from(tls).map_err(EndpointError::Quic)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport(quic));
    Ok(server)
}

/// The client config toward one peer gateway, which must present `hop`.
///
/// # Errors
/// [`EndpointError::Tls`], [`EndpointError::Quic`].
pub fn client_config(
    source: Arc<SvidSource>,
    store: BundleStore,
    hop: &HopIdentity,
    quic: &QuicConfig,
) -> Result<quinn::ClientConfig, EndpointError> {
    let authorizer = match hop {
        HopIdentity::Exact(id) => Authorizer::Exact(id.clone()),
        HopIdentity::MemberOf(td) => Authorizer::MemberOf(td.clone()),
    };
    let tls =
        trust_bundle::tls::client_config(Some(source), store, authorizer, &[tunnel_proto::ALPN])
            .map_err(EndpointError::Tls)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(EndpointError::Quic)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport(quic));
    Ok(client)
}

/// Binds the endpoint on `addr` (UDP).
///
/// # Errors
/// [`EndpointError::Bind`].
pub fn bind(
    addr: SocketAddr,
    server: quinn::ServerConfig,
) -> Result<quinn::Endpoint, EndpointError> {
    quinn::Endpoint::server(server, addr).map_err(|source| EndpointError::Bind { addr, source })
}

/// The server name passed to quinn (SNI is off; unused for verification).
pub const SERVER_NAME: &str = "spiffe.invalid";

/// The SPIFFE ID of a connection's authenticated peer.
pub fn peer_id(conn: &quinn::Connection) -> Option<trust_bundle::SpiffeId> {
    let identity = conn.peer_identity()?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    trust_bundle::verify::peer_spiffe_id(Some(&certs))
}

//! rustls configs of the TCP+TLS transport: TLS 1.3 only, our SVID, the
//! SPIFFE verifiers over the same [`BundleStore`] as the QUIC endpoint
//! (only our own and the linked peers' bundles), ALPN `h2`, no session
//! resumption (as `trust_bundle::tls`: every connection is verified against
//! the bundles held now).

use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};
use trust_bundle::verify::{SpiffeClientVerifier, SpiffeServerVerifier};
use trust_bundle::{Authorizer, BundleStore, SvidSource};

use crate::route::HopIdentity;
use crate::state::ConfigCell;

use super::ALPN_H2;

/// The `tcp_listen` server config: client certificates must be a linked
/// peer's gateway under the config current at handshake time (local
/// sidecars use QUIC, not this listener).
///
/// # Errors
/// rustls refused the configuration (never with *ring* and TLS 1.3).
pub fn server_config(
    source: Arc<SvidSource>,
    store: BundleStore,
    current: Arc<ConfigCell>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let authorizer =
        Authorizer::Predicate(Arc::new(move |id| current.load().peer_for_id(id).is_some()));
    let provider = trust_bundle::crypto_provider();
    let verifier = Arc::new(SpiffeClientVerifier::new(
        store,
        authorizer,
        provider.clone(),
    ));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(source);
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The client config toward one peer gateway, which must present `hop`.
///
/// # Errors
/// rustls refused the configuration (never with *ring* and TLS 1.3).
pub fn client_config(
    source: Arc<SvidSource>,
    store: BundleStore,
    hop: &HopIdentity,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let authorizer = match hop {
        HopIdentity::Exact(id) => Authorizer::Exact(id.clone()),
        HopIdentity::MemberOf(td) => Authorizer::MemberOf(td.clone()),
    };
    let provider = trust_bundle::crypto_provider();
    let verifier = Arc::new(SpiffeServerVerifier::new(
        store,
        authorizer,
        provider.clone(),
    ));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(source);
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

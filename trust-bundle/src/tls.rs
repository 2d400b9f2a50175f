//! rustls configurations for SPIFFE mutual TLS, assembled from a
//! [`SvidSource`] (what we present) and a [`BundleStore`] plus
//! [`Authorizer`] (whom we accept).
//!
//! Session resumption is off on both sides: a resumed session would carry
//! the peer identity verified when it began, past a rotation or a bundle
//! revocation (Trust Domain and Bundle §4.1.3). Every connection is verified
//! against the bundles held *now*; mesh connections are pooled and long-lived,
//! so the full handshake is rare.

use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};

use crate::source::SvidSource;
use crate::verify::{Authorizer, BundleStore, SpiffeClientVerifier, SpiffeServerVerifier};

/// A server config that presents `source`'s SVID and requires a client SVID
/// accepted by `store` and `authorizer`. TLS 1.3 and 1.2, *ring* provider.
///
/// # Errors
/// The provider rejects the protocol versions (never with *ring*).
pub fn server_config(
    source: Arc<SvidSource>,
    store: BundleStore,
    authorizer: Authorizer,
    alpn: &[&[u8]],
) -> Result<ServerConfig, rustls::Error> {
    let provider = crate::crypto_provider();
    let verifier = Arc::new(SpiffeClientVerifier::new(
        store,
        authorizer,
        provider.clone(),
    ));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(source);
    no_server_resumption(&mut config);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn no_server_resumption(config: &mut ServerConfig) {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

/// A server config that presents `source`'s SVID and asks for no client
/// certificate (the bundle endpoint, SPIFFE Federation §5.2.2.3).
///
/// # Errors
/// As [`server_config`].
pub fn server_config_no_client_auth(
    source: Arc<SvidSource>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(crate::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(source);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client config that presents `source`'s SVID (if given) and accepts a
/// server SVID allowed by `store` and `authorizer`. SNI is off: the server is
/// authenticated by SPIFFE ID, and the destination stays off the wire.
///
/// # Errors
/// As [`server_config`].
pub fn client_config(
    source: Option<Arc<SvidSource>>,
    store: BundleStore,
    authorizer: Authorizer,
    alpn: &[&[u8]],
) -> Result<ClientConfig, rustls::Error> {
    let provider = crate::crypto_provider();
    let verifier = Arc::new(SpiffeServerVerifier::new(
        store,
        authorizer,
        provider.clone(),
    ));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match source {
        Some(source) => builder.with_client_cert_resolver(source),
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The server name to pass to rustls when connecting with a
/// [`client_config`]: unused for verification and not sent (SNI is off).
pub fn spiffe_server_name() -> rustls_pki_types::ServerName<'static> {
    #[allow(clippy::expect_used)]
    rustls_pki_types::ServerName::try_from("spiffe.invalid").expect("a constant, valid DNS name")
}

//! The inner mutual TLS between sidecars (end to end, also through
//! gateways): client configs per final identity, server configs per inbound
//! listener. Both present our live SVID ([`SvidSource`]) and verify the peer
//! against the bundle of the peer's own trust domain ([`BundleStore`]).
//!
//! ALPN (docs/reference/data-path-config.md, "Listeners and ALPN"): `h2`
//! for HTTP (HTTP/2 between sidecars), `isthmus-tcp/1` for opaque TCP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::{ClientConfig, ServerConfig};
use trust_bundle::{Authorizer, BundleStore, SpiffeId, SvidSource};

use crate::config::{Inbound, Protocol};

/// ALPN for HTTP between sidecars (RFC 9113 §3.2).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for opaque TCP between sidecars.
pub const ALPN_TCP: &[u8] = b"isthmus-tcp/1";

/// Our identity material and a cache of client configs.
pub struct TlsContext {
    source: Arc<SvidSource>,
    store: BundleStore,
    clients: Mutex<HashMap<(SpiffeId, Protocol), Arc<ClientConfig>>>,
}

/// The ALPN protocol for a listener protocol.
pub fn alpn(protocol: Protocol) -> &'static [u8] {
    match protocol {
        Protocol::Http => ALPN_H2,
        Protocol::Tcp => ALPN_TCP,
    }
}

impl TlsContext {
    /// A context presenting `source` and trusting `store`.
    pub fn new(source: Arc<SvidSource>, store: BundleStore) -> Self {
        TlsContext {
            source,
            store,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Our SVID source.
    pub fn source(&self) -> &Arc<SvidSource> {
        &self.source
    }

    /// The bundles we trust.
    pub fn store(&self) -> &BundleStore {
        &self.store
    }

    /// A client config accepting exactly `final_identity`, offering the ALPN
    /// of `protocol`; cached.
    ///
    /// # Errors
    /// rustls refuses the protocol versions (never with *ring*).
    pub fn client(
        &self,
        final_identity: &SpiffeId,
        protocol: Protocol,
    ) -> Result<Arc<ClientConfig>, rustls::Error> {
        let key = (final_identity.clone(), protocol);
        {
            let cache = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(&key) {
                return Ok(c.clone());
            }
        }
        let config = Arc::new(trust_bundle::tls::client_config(
            Some(self.source.clone()),
            self.store.clone(),
            Authorizer::Exact(final_identity.clone()),
            &[alpn(protocol)],
        )?);
        let mut cache = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        Ok(cache.entry(key).or_insert(config).clone())
    }

    /// The server config of an inbound listener: client SVID required,
    /// caller authorized against `inbound.allow` during the handshake.
    ///
    /// # Errors
    /// As [`TlsContext::client`].
    pub fn server(&self, inbound: &Inbound) -> Result<Arc<ServerConfig>, rustls::Error> {
        let allow = inbound.allow.clone();
        let authorizer = Authorizer::Predicate(Arc::new(move |id: &SpiffeId| {
            let ok = allow.allows(id);
            if !ok {
                tracing::info!(caller = %id, "caller refused: not in the allow list");
            }
            ok
        }));
        Ok(Arc::new(trust_bundle::tls::server_config(
            self.source.clone(),
            self.store.clone(),
            authorizer,
            &[alpn(inbound.protocol)],
        )?))
    }
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext").finish_non_exhaustive()
    }
}

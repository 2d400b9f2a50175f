//! Trust for Isthmus: SPIFFE identities, per-cluster CAs and federated trust
//! bundles.
//!
//! What this crate owns:
//! - [`SpiffeId`] and [`TrustDomain`] (SPIFFE-ID §2);
//! - [`CertificateAuthority`]: a cluster's CA, self-signed or an operator's
//!   intermediate, issuing X.509-SVIDs from CSRs (SPIFFE X509-SVID);
//! - [`Bundle`] and [`BundleMap`]: SPIFFE bundles and bundle maps
//!   (SPIFFE Trust Domain and Bundle §4–§5);
//! - [`BundleStore`], [`SpiffeServerVerifier`], [`SpiffeClientVerifier`]:
//!   rustls verifiers that check a peer against the bundle of the peer's own
//!   trust domain only;
//! - [`SvidSource`] and the sans-IO [`rotation`] schedule: live certificates
//!   for rustls configs, renewed at half life without touching listeners;
//! - [`config`]: the `identity` section of every component's config file;
//! - [`endpoint`] (feature `endpoint`): the SPIFFE Federation bundle endpoint,
//!   server and client.
//!
//! What it does not own: attestation (the control plane decides which ID a
//! caller may have and passes it in an [`SvidRequest`]), storage of CA
//! material (callers persist [`CertificateAuthority::to_pem`]), and metrics
//! exporters (it exposes plain status structs).
//!
//! Driving it: build a [`BundleStore`] from the bundles you trust, an
//! [`SvidSource`] from your SVID, and hand both to [`tls::server_config`] /
//! [`tls::client_config`]. Keep the store fresh with
//! [`endpoint::BundleEndpointClient`] and the SVID with
//! [`source::run_rotation`]. All cryptography is rustls with the *ring*
//! provider; there is no OpenSSL.

pub mod bundle;
pub mod ca;
pub mod config;
#[cfg(feature = "endpoint")]
pub mod endpoint;
pub mod id;
pub mod rotation;
pub mod source;
pub mod svid;
pub mod tls;
pub mod verify;

pub use bundle::{Bundle, BundleError, BundleMap};
pub use ca::{CaError, CertificateAuthority, SvidRequest};
pub use id::{IdError, SpiffeId, TrustDomain};
pub use source::SvidSource;
pub use svid::{SvidError, X509Svid};
pub use verify::{
    Authorizer, BundleStore, SpiffeClientVerifier, SpiffeServerVerifier, VerifyError,
};

/// The rustls crypto provider every Isthmus component uses: *ring*.
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

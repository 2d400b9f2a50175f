//! rustls verifiers that authenticate a peer's X.509-SVID against the bundle
//! of the peer's own trust domain, then authorize its SPIFFE ID.
//!
//! Steps, for both [`SpiffeServerVerifier`] and [`SpiffeClientVerifier`]:
//! 1. read the leaf's SPIFFE ID and check the X509-SVID leaf rules
//!    ([`crate::svid::check_leaf`]) and signing-certificate rules on every
//!    intermediate presented;
//! 2. choose the bundle of *that ID's trust domain* from the
//!    [`BundleStore`]: never a merged root pool (X509-SVID §5.1, SPIFFE
//!    Federation §4.2). Unknown trust domain or an empty bundle: rejected
//!    (Trust Domain and Bundle §4.1.3);
//! 3. RFC 5280 path validation with webpki against that bundle's X.509
//!    authorities at the handshake time, for serverAuth or clientAuth;
//! 4. the [`Authorizer`].
//!
//! DNS names are not checked: SPIFFE authenticates by ID, as Envoy's SPIFFE
//! certificate validator does.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::bundle::{Bundle, BundleMap};
use crate::id::{SpiffeId, TrustDomain};
use crate::svid::{self, SvidError};

/// Why a peer's SVID was rejected.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The certificate breaks an X509-SVID rule.
    #[error("peer certificate is not a valid X509-SVID")]
    Svid(#[source] SvidError),
    /// No bundle is held for the peer's trust domain.
    #[error("no bundle for trust domain {0}")]
    UnknownTrustDomain(TrustDomain),
    /// The bundle of the peer's trust domain has no X.509 authority.
    #[error("bundle for trust domain {0} has no X.509 authorities")]
    EmptyBundle(TrustDomain),
    /// An intermediate names another trust domain than the leaf.
    #[error("intermediate certificate is for trust domain {found}, leaf is in {leaf}")]
    IntermediateTrustDomain {
        /// The leaf's trust domain.
        leaf: TrustDomain,
        /// The intermediate's.
        found: TrustDomain,
    },
    /// RFC 5280 path validation failed.
    #[error("path validation against the {trust_domain} bundle failed: {error}")]
    Path {
        /// The bundle used.
        trust_domain: TrustDomain,
        /// What webpki said.
        error: webpki::Error,
    },
    /// The SVID is valid but its ID is not allowed here.
    #[error("SPIFFE ID {0} is not authorized")]
    Unauthorized(SpiffeId),
}

/// Which authenticated SPIFFE IDs a verifier accepts.
#[derive(Clone)]
pub enum Authorizer {
    /// Any ID from any trust domain whose bundle is held.
    Any,
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any of these IDs.
    OneOf(Vec<SpiffeId>),
    /// Any ID of this trust domain.
    MemberOf(TrustDomain),
    /// IDs for which the predicate is true.
    Predicate(Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>),
}

impl Authorizer {
    /// Whether `id` is allowed.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Authorizer::Any => true,
            Authorizer::Exact(want) => want == id,
            Authorizer::OneOf(ids) => ids.contains(id),
            Authorizer::MemberOf(td) => id.is_member_of(td),
            Authorizer::Predicate(f) => f(id),
        }
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authorizer::Any => f.write_str("Any"),
            Authorizer::Exact(id) => write!(f, "Exact({id})"),
            Authorizer::OneOf(ids) => write!(f, "OneOf({ids:?})"),
            Authorizer::MemberOf(td) => write!(f, "MemberOf({td})"),
            Authorizer::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

/// The bundles held, by trust domain.
type BundleIndex = HashMap<TrustDomain, Arc<TrustedBundle>>;

/// A bundle with its trust anchors parsed once, for verification.
struct TrustedBundle {
    bundle: Bundle,
    anchors: Vec<TrustAnchor<'static>>,
}

/// The live set of bundles a process trusts, keyed by trust domain: its own
/// and its federated peers'. Cheap to clone (a shared handle); updates are
/// atomic per call and seen by the next handshake.
#[derive(Clone, Default)]
pub struct BundleStore {
    inner: Arc<RwLock<Arc<BundleIndex>>>,
}

impl BundleStore {
    /// An empty store: every peer is rejected.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding every bundle of `map`.
    pub fn from_map(map: &BundleMap) -> Self {
        let store = Self::new();
        store.replace_all(map);
        store
    }

    /// Sets (adds or replaces) the bundle of `bundle`'s trust domain.
    /// Authorities that webpki cannot parse as trust anchors are skipped and
    /// logged; a bundle left without anchors trusts nothing.
    pub fn set(&self, bundle: Bundle) {
        let trusted = Arc::new(trusted(bundle));
        self.update(|m| {
            m.insert(trusted.bundle.trust_domain().clone(), trusted);
        });
    }

    /// Replaces every bundle with those of `map`, atomically.
    pub fn replace_all(&self, map: &BundleMap) {
        let fresh: HashMap<_, _> = map
            .trust_domains
            .iter()
            .map(|(td, b)| (td.clone(), Arc::new(trusted(b.clone()))))
            .collect();
        self.update(|m| *m = fresh);
    }

    /// Removes a trust domain's bundle: its SVIDs are rejected from now on.
    pub fn remove(&self, td: &TrustDomain) -> Option<Bundle> {
        let mut removed = None;
        self.update(|m| removed = m.remove(td).map(|t| t.bundle.clone()));
        removed
    }

    /// The bundle held for `td`.
    pub fn get(&self, td: &TrustDomain) -> Option<Bundle> {
        self.read().get(td).map(|t| t.bundle.clone())
    }

    /// Every bundle held, as a bundle map.
    pub fn to_map(&self) -> BundleMap {
        let mut map = BundleMap::default();
        for t in self.read().values() {
            map.insert(t.bundle.clone());
        }
        map
    }

    /// Verifies an SVID chain for `usage` at `now` and returns its ID, without
    /// authorization. See the module docs for the steps.
    ///
    /// # Errors
    /// The first step that fails.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
        provider: &CryptoProvider,
    ) -> Result<SpiffeId, VerifyError> {
        let leaf = svid::check_leaf(end_entity).map_err(VerifyError::Svid)?;
        let td = leaf.id.trust_domain();
        for (i, cert) in intermediates.iter().enumerate() {
            let found = svid::check_signing_cert(cert, i + 1).map_err(VerifyError::Svid)?;
            if let Some(found) = found.filter(|f| *f != td) {
                return Err(VerifyError::IntermediateTrustDomain { leaf: td, found });
            }
        }
        let Some(trusted) = self.read().get(&td).cloned() else {
            return Err(VerifyError::UnknownTrustDomain(td));
        };
        if trusted.anchors.is_empty() {
            return Err(VerifyError::EmptyBundle(td));
        }
        let ee = EndEntityCert::try_from(end_entity).map_err(|error| VerifyError::Path {
            trust_domain: td.clone(),
            error,
        })?;
        ee.verify_for_usage(
            provider.signature_verification_algorithms.all,
            &trusted.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|error| VerifyError::Path {
            trust_domain: td.clone(),
            error,
        })?;
        Ok(leaf.id)
    }

    fn read(&self) -> Arc<BundleIndex> {
        // A poisoned lock only means a writer panicked mid-clone; the map it
        // guards is an `Arc` swapped whole, so it is never half-written.
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut BundleIndex)) {
        let mut guard = match self.inner.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut next = (**guard).clone();
        f(&mut next);
        *guard = Arc::new(next);
    }
}

impl fmt::Debug for BundleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.read();
        let mut tds: Vec<_> = map
            .values()
            .map(|t| (t.bundle.trust_domain().clone(), t.bundle.sequence()))
            .collect();
        tds.sort();
        f.debug_struct("BundleStore")
            .field("bundles", &tds)
            .finish()
    }
}

fn trusted(bundle: Bundle) -> TrustedBundle {
    let anchors = bundle
        .x509_authorities()
        .iter()
        .filter_map(|der| match webpki::anchor_from_trusted_cert(der) {
            Ok(a) => Some(a.to_owned()),
            Err(e) => {
                tracing::warn!(trust_domain = %bundle.trust_domain(), error = %e, "skipping unusable X.509 authority");
                None
            }
        })
        .collect();
    TrustedBundle { bundle, anchors }
}

/// Verifies servers' X.509-SVIDs (the client side of a handshake).
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    store: BundleStore,
    authorizer: Authorizer,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// A verifier checking against `store` and then `authorizer`.
    pub fn new(store: BundleStore, authorizer: Authorizer, provider: Arc<CryptoProvider>) -> Self {
        SpiffeServerVerifier {
            store,
            authorizer,
            provider,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_and_authorize(
            &self.store,
            &self.authorizer,
            &self.provider,
            end_entity,
            intermediates,
            now,
            KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies clients' X.509-SVIDs (the server side of mutual TLS). Client
/// authentication is mandatory.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    store: BundleStore,
    authorizer: Authorizer,
    provider: Arc<CryptoProvider>,
}

impl SpiffeClientVerifier {
    /// A verifier checking against `store` and then `authorizer`.
    pub fn new(store: BundleStore, authorizer: Authorizer, provider: Arc<CryptoProvider>) -> Self {
        SpiffeClientVerifier {
            store,
            authorizer,
            provider,
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_and_authorize(
            &self.store,
            &self.authorizer,
            &self.provider,
            end_entity,
            intermediates,
            now,
            KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn verify_and_authorize(
    store: &BundleStore,
    authorizer: &Authorizer,
    provider: &CryptoProvider,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: KeyUsage,
) -> Result<SpiffeId, rustls::Error> {
    let result = store
        .verify(end_entity, intermediates, now, usage, provider)
        .and_then(|id| {
            if authorizer.allows(&id) {
                Ok(id)
            } else {
                Err(VerifyError::Unauthorized(id))
            }
        });
    result.map_err(|e| {
        tracing::debug!(error = %e, "rejected peer SVID");
        rustls::Error::InvalidCertificate(certificate_error(e))
    })
}

/// Maps a verification failure onto the rustls alert it should cause, keeping
/// the typed error for everything rustls has no variant for.
fn certificate_error(e: VerifyError) -> CertificateError {
    if let VerifyError::Path { error, .. } = &e {
        match error {
            webpki::Error::CertExpired { .. } => return CertificateError::Expired,
            webpki::Error::CertNotValidYet { .. } => return CertificateError::NotValidYet,
            webpki::Error::InvalidSignatureForPublicKey => return CertificateError::BadSignature,
            _ => {}
        }
    }
    CertificateError::Other(OtherError(Arc::new(e)))
}

/// The SPIFFE ID of an authenticated peer, from the certificates rustls
/// reports after the handshake (`peer_certificates()`).
pub fn peer_spiffe_id(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = peer_certificates?.first()?;
    svid::spiffe_id_of(leaf).ok().flatten()
}

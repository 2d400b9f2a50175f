//! X.509-SVIDs: the certificate rules of the SPIFFE X509-SVID standard, and
//! [`X509Svid`], a workload's chain and private key.
//!
//! [`check_leaf`] and [`check_signing_cert`] hold the X509-SVID §3–§5 rules;
//! the CA checks its output with them and the verifiers check peers with them.
//! Path validation (signatures, validity, chaining to a bundle) is done by the
//! verifiers in [`crate::verify`], not here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::id::{IdError, SpiffeId, TrustDomain};

/// Why a certificate, chain or key is not a valid X.509-SVID.
#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    /// The DER is not an X.509 certificate.
    #[error("certificate {index} is not valid DER X.509: {reason}")]
    Der {
        /// Position in the chain, leaf first.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// PEM input could not be decoded.
    #[error("malformed PEM in {what}: {reason}")]
    Pem {
        /// Which input: "certificate chain", "private key", ...
        what: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The chain is empty.
    #[error("certificate chain is empty")]
    EmptyChain,
    /// No URI SAN, so no SPIFFE ID (X509-SVID §2).
    #[error("certificate has no URI SAN, so no SPIFFE ID")]
    NoUriSan,
    /// More than one URI SAN (X509-SVID §2).
    #[error("certificate has {0} URI SANs; an X509-SVID has exactly one")]
    MultipleUriSans(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN is not a valid SPIFFE ID")]
    InvalidId(#[source] IdError),
    /// A leaf SVID's ID has no path (X509-SVID §3.1).
    #[error("leaf SPIFFE ID {0} has no path")]
    LeafIdWithoutPath(SpiffeId),
    /// A signing certificate's ID has a path (X509-SVID §3.2).
    #[error("signing certificate SPIFFE ID {0} must not have a path")]
    SigningIdWithPath(SpiffeId),
    /// The leaf says `cA=true` (X509-SVID §4.1).
    #[error("leaf certificate has cA=true")]
    LeafIsCa,
    /// A signing certificate lacks `cA=true` (X509-SVID §4.1).
    #[error("signing certificate {index} does not have cA=true")]
    SigningCertNotCa {
        /// Position in the chain, leaf first.
        index: usize,
    },
    /// No keyUsage extension (X509-SVID §4.3).
    #[error("certificate {index} has no keyUsage extension")]
    NoKeyUsage {
        /// Position in the chain, leaf first.
        index: usize,
    },
    /// The leaf lacks `digitalSignature` (X509-SVID §4.3).
    #[error("leaf keyUsage lacks digitalSignature")]
    LeafNoDigitalSignature,
    /// The leaf has `keyCertSign` (X509-SVID §4.3).
    #[error("leaf keyUsage has keyCertSign")]
    LeafKeyCertSign,
    /// The leaf has `cRLSign` (X509-SVID §4.3).
    #[error("leaf keyUsage has cRLSign")]
    LeafCrlSign,
    /// A signing certificate lacks `keyCertSign` (X509-SVID §4.3).
    #[error("signing certificate {index} keyUsage lacks keyCertSign")]
    SigningCertNoKeyCertSign {
        /// Position in the chain, leaf first.
        index: usize,
    },
    /// An extension is duplicated or unparseable.
    #[error("certificate {index} has a malformed extension: {reason}")]
    Extension {
        /// Position in the chain, leaf first.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match the leaf certificate")]
    KeyMismatch,
    /// The private key is not a supported PKCS#8 key.
    #[error("unsupported or malformed private key: {0}")]
    Key(String),
}

/// What [`check_leaf`] read from a valid leaf SVID.
#[derive(Debug, Clone)]
pub struct LeafInfo {
    /// The SPIFFE ID from the single URI SAN.
    pub id: SpiffeId,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

/// A workload's X.509-SVID: the chain (leaf first, then intermediates up to
/// but not necessarily including the root) and the leaf's PKCS#8 private key.
///
/// Valid by construction: the leaf passes [`check_leaf`], every further
/// certificate passes [`check_signing_cert`], and the key matches the leaf.
pub struct X509Svid {
    info: LeafInfo,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl X509Svid {
    /// Builds an SVID from a DER chain (leaf first) and a PKCS#8 DER key.
    ///
    /// # Errors
    /// The chain breaks an X509-SVID rule or the key does not match the leaf.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivatePkcs8KeyDer<'static>,
    ) -> Result<Self, SvidError> {
        let info = check_chain(&chain)?;
        let key_pair = rcgen::KeyPair::try_from(&key).map_err(|e| SvidError::Key(e.to_string()))?;
        let (_, leaf) = X509Certificate::from_der(&chain[0]).map_err(|e| SvidError::Der {
            index: 0,
            reason: e.to_string(),
        })?;
        if leaf.public_key().raw
            != rcgen::PublicKeyData::subject_public_key_info(&key_pair).as_slice()
        {
            return Err(SvidError::KeyMismatch);
        }
        Ok(X509Svid { info, chain, key })
    }

    /// Builds an SVID from PEM: a chain of `CERTIFICATE` blocks (leaf first)
    /// and one `PRIVATE KEY` (PKCS#8) block.
    ///
    /// # Errors
    /// Malformed PEM, or anything [`X509Svid::from_der`] refuses.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, SvidError> {
        let chain = certs_from_pem(chain_pem, "certificate chain")?;
        let key = match PrivateKeyDer::from_pem_slice(key_pem) {
            Ok(PrivateKeyDer::Pkcs8(k)) => k,
            Ok(_) => {
                return Err(SvidError::Key(
                    "expected a PKCS#8 \"PRIVATE KEY\" block".into(),
                ))
            }
            Err(e) => {
                return Err(SvidError::Pem {
                    what: "private key",
                    reason: e.to_string(),
                })
            }
        };
        Self::from_der(chain, key)
    }

    /// The SPIFFE ID in the leaf.
    pub fn id(&self) -> &SpiffeId {
        &self.info.id
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf's PKCS#8 private key (DER, unencrypted).
    pub fn private_key(&self) -> &PrivatePkcs8KeyDer<'static> {
        &self.key
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> SystemTime {
        self.info.not_before
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> SystemTime {
        self.info.not_after
    }

    /// The chain as PEM `CERTIFICATE` blocks, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| cert_pem(c)).collect()
    }

    /// The private key as a PEM `PRIVATE KEY` block.
    pub fn key_pem(&self) -> String {
        pem_block("PRIVATE KEY", self.key.secret_pkcs8_der())
    }

    /// A rustls certified key for this SVID, signing with `provider`'s key
    /// loader.
    ///
    /// # Errors
    /// The provider does not support the key type.
    pub fn certified_key(
        &self,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<rustls::sign::CertifiedKey, SvidError> {
        let key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .map_err(|e| SvidError::Key(e.to_string()))?;
        Ok(rustls::sign::CertifiedKey::new(self.chain.clone(), key))
    }
}

impl Clone for X509Svid {
    fn clone(&self) -> Self {
        X509Svid {
            info: self.info.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Svid")
            .field("id", &self.info.id)
            .field("not_after", &self.info.not_after)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// A fresh ECDSA P-256 key and a PKCS#10 CSR for `id`, as a workload makes
/// them before asking its control plane for an SVID. The CSR carries `id` as
/// its only SAN and an empty subject.
///
/// # Errors
/// Key generation or CSR encoding failed (only on a broken RNG).
pub fn new_csr(
    id: &SpiffeId,
) -> Result<
    (
        PrivatePkcs8KeyDer<'static>,
        CertificateSigningRequestDer<'static>,
    ),
    rcgen::Error,
> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.as_str().try_into()?)];
    let csr = params.serialize_request(&key)?;
    let der = PrivatePkcs8KeyDer::from(key.serialize_der());
    Ok((der, csr.der().clone()))
}

/// Checks a whole chain: the leaf with [`check_leaf`], every other
/// certificate with [`check_signing_cert`], and that every signing
/// certificate's ID (if any) is in the leaf's trust domain.
///
/// # Errors
/// The first rule broken.
pub fn check_chain(chain: &[CertificateDer<'_>]) -> Result<LeafInfo, SvidError> {
    let Some(leaf) = chain.first() else {
        return Err(SvidError::EmptyChain);
    };
    let info = check_leaf(leaf)?;
    for (i, cert) in chain.iter().enumerate().skip(1) {
        check_signing_cert(cert, i)?;
    }
    Ok(info)
}

/// Checks the X509-SVID leaf rules: exactly one URI SAN holding a SPIFFE ID
/// with a path (§2, §3.1), `cA=false` (§4.1), keyUsage present with
/// `digitalSignature` and without `keyCertSign` and `cRLSign` (§4.3).
///
/// # Errors
/// The first rule broken.
pub fn check_leaf(der: &[u8]) -> Result<LeafInfo, SvidError> {
    let cert = parse(der, 0)?;
    let id = uri_san_id(&cert, 0)?.ok_or(SvidError::NoUriSan)?;
    if id.path().is_empty() {
        return Err(SvidError::LeafIdWithoutPath(id));
    }
    let bc = cert.basic_constraints().map_err(|e| ext_err(0, e))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::LeafIsCa);
    }
    let ku = cert
        .key_usage()
        .map_err(|e| ext_err(0, e))?
        .ok_or(SvidError::NoKeyUsage { index: 0 })?;
    if !ku.value.digital_signature() {
        return Err(SvidError::LeafNoDigitalSignature);
    }
    if ku.value.key_cert_sign() {
        return Err(SvidError::LeafKeyCertSign);
    }
    if ku.value.crl_sign() {
        return Err(SvidError::LeafCrlSign);
    }
    Ok(LeafInfo {
        id,
        not_before: to_system_time(cert.validity().not_before.timestamp()),
        not_after: to_system_time(cert.validity().not_after.timestamp()),
    })
}

/// Checks the X509-SVID signing certificate rules: `cA=true` (§4.1),
/// `keyCertSign` (§4.3), and a SPIFFE ID, if present, without a path (§3.2).
/// `index` is the certificate's position in its chain, for error messages.
///
/// # Errors
/// The first rule broken.
pub fn check_signing_cert(der: &[u8], index: usize) -> Result<Option<TrustDomain>, SvidError> {
    let cert = parse(der, index)?;
    let id = uri_san_id(&cert, index)?;
    if let Some(id) = &id {
        if !id.path().is_empty() {
            return Err(SvidError::SigningIdWithPath(id.clone()));
        }
    }
    let bc = cert.basic_constraints().map_err(|e| ext_err(index, e))?;
    if !bc.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::SigningCertNotCa { index });
    }
    let ku = cert
        .key_usage()
        .map_err(|e| ext_err(index, e))?
        .ok_or(SvidError::NoKeyUsage { index })?;
    if !ku.value.key_cert_sign() {
        return Err(SvidError::SigningCertNoKeyCertSign { index });
    }
    Ok(id.map(|id| id.trust_domain()))
}

/// Reads the SPIFFE ID from a certificate's URI SANs without checking any
/// other rule: `None` when there is no URI SAN.
///
/// # Errors
/// Malformed DER, more than one URI SAN, or a URI SAN that is not a SPIFFE ID.
pub fn spiffe_id_of(der: &[u8]) -> Result<Option<SpiffeId>, SvidError> {
    uri_san_id(&parse(der, 0)?, 0)
}

/// Decodes every `CERTIFICATE` block of a PEM input; `what` names the input
/// in errors.
///
/// # Errors
/// Malformed PEM or no certificate at all.
pub fn certs_from_pem(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, SvidError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SvidError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(SvidError::Pem {
            what,
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(chain)
}

/// One certificate as a PEM `CERTIFICATE` block.
pub fn cert_pem(der: &CertificateDer<'_>) -> String {
    pem_block("CERTIFICATE", der)
}

pub(crate) fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub(crate) fn parse(der: &[u8], index: usize) -> Result<X509Certificate<'_>, SvidError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(SvidError::Der {
            index,
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(SvidError::Der {
            index,
            reason: e.to_string(),
        }),
    }
}

fn uri_san_id(cert: &X509Certificate<'_>, index: usize) -> Result<Option<SpiffeId>, SvidError> {
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| ext_err(index, e))?
    else {
        return Ok(None);
    };
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Ok(None),
        [uri] => SpiffeId::parse(uri).map(Some).map_err(SvidError::InvalidId),
        many => Err(SvidError::MultipleUriSans(many.len())),
    }
}

fn ext_err(index: usize, e: x509_parser::error::X509Error) -> SvidError {
    SvidError::Extension {
        index,
        reason: e.to_string(),
    }
}

pub(crate) fn to_system_time(unix_seconds: i64) -> SystemTime {
    if unix_seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix_seconds.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix_seconds.unsigned_abs())
    }
}

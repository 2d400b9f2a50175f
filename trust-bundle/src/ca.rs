//! The per-cluster certificate authority.
//!
//! A [`CertificateAuthority`] is either a self-signed ECDSA P-256 root made on
//! demand ([`CertificateAuthority::self_signed`]) or an intermediate the
//! operator provides ([`CertificateAuthority::from_pem`]). It signs
//! X.509-SVIDs from PKCS#10 CSRs for an identity the caller has already
//! attested ([`SvidRequest`]), and signing certificates for downstream CAs.
//! Everything it issues follows SPIFFE X509-SVID §3–§4 and is checked with
//! [`crate::svid::check_chain`] before it is returned.
//!
//! The CA does no I/O and reads no clock: `now` is always an argument.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

use crate::id::{SpiffeId, TrustDomain};
use crate::svid::{self, SvidError, X509Svid};

/// Default lifetime of a leaf SVID: 24 hours (DESIGN.md).
pub const DEFAULT_SVID_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default lifetime of a self-signed root: 365 days.
pub const DEFAULT_ROOT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far notBefore is back-dated to tolerate clock skew: 5 minutes.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Why the CA refused to load or to issue.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CSR is not valid DER PKCS#10.
    #[error("malformed CSR: {0}")]
    CsrDer(String),
    /// The CSR's self-signature does not verify.
    #[error("CSR signature does not verify")]
    CsrSignature,
    /// The CSR's key type is not ECDSA P-256, ECDSA P-384 or Ed25519.
    #[error("unsupported CSR key type {0}; use ECDSA P-256, ECDSA P-384 or Ed25519")]
    UnsupportedKey(String),
    /// The CSR asks for SANs other than the attested identity.
    #[error("CSR SANs {found:?} differ from the attested identity {expected:?}")]
    SanMismatch {
        /// The SANs the attested identity allows.
        expected: Vec<String>,
        /// The SANs the CSR carries.
        found: Vec<String>,
    },
    /// The requested SPIFFE ID is not in this CA's trust domain.
    #[error("SPIFFE ID {id} is not in this CA's trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The requested ID.
        id: SpiffeId,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },
    /// A leaf SPIFFE ID must have a path (X509-SVID §3.1).
    #[error("leaf SPIFFE ID {0} has no path")]
    LeafIdWithoutPath(SpiffeId),
    /// A requested DNS SAN is not a valid DNS name.
    #[error("invalid DNS SAN {0:?}")]
    InvalidDnsName(String),
    /// The CA is not valid at `now`.
    #[error("CA certificate is not valid at the requested time")]
    NotValidNow,
    /// The operator's CA material is not usable.
    #[error("invalid CA certificate or key")]
    InvalidCa(#[source] SvidError),
    /// The operator's CA key is malformed or unsupported.
    #[error("invalid CA private key: {0}")]
    InvalidKey(String),
    /// The CA key does not match the CA certificate.
    #[error("CA private key does not match the CA certificate")]
    KeyMismatch,
    /// The CA certificate's SPIFFE ID names another trust domain.
    #[error("CA certificate is for trust domain {found}, expected {expected}")]
    CaTrustDomain {
        /// The configured trust domain.
        expected: TrustDomain,
        /// The one in the certificate.
        found: TrustDomain,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed")]
    Generate(#[source] rcgen::Error),
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Rng,
    /// The issued certificate failed the X509-SVID self-check (a bug).
    #[error("issued certificate breaks X509-SVID")]
    SelfCheck(#[source] SvidError),
}

/// An identity the caller has attested, to be bound into an SVID.
#[derive(Debug, Clone)]
pub struct SvidRequest {
    /// The SPIFFE ID; must be in the CA's trust domain and have a path.
    pub id: SpiffeId,
    /// Extra DNS SANs the caller has attested (X509-SVID §2 allows them).
    pub dns_names: Vec<String>,
    /// Requested lifetime; capped at the CA's own expiry.
    pub ttl: Duration,
}

impl SvidRequest {
    /// A request for `id` alone with the default 24 h lifetime.
    pub fn new(id: SpiffeId) -> Self {
        SvidRequest {
            id,
            dns_names: Vec::new(),
            ttl: DEFAULT_SVID_TTL,
        }
    }
}

/// A cluster's CA: its signing key, its certificate and the chain up to the
/// trust anchor that goes into the bundle.
pub struct CertificateAuthority {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    key_der: PrivatePkcs8KeyDer<'static>,
    /// The CA's own certificate first, then its issuers up to the anchor.
    chain: Vec<CertificateDer<'static>>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl CertificateAuthority {
    /// Makes a self-signed ECDSA P-256 root for `trust_domain`, valid from
    /// `now - CLOCK_SKEW` for `lifetime`. The root carries the trust domain's
    /// SPIFFE ID as its URI SAN (X509-SVID §3.2).
    ///
    /// # Errors
    /// Key generation failed.
    pub fn self_signed(
        trust_domain: TrustDomain,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = signing_params(&trust_domain)?;
        params.distinguished_name = ca_name(&trust_domain);
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + lifetime).into();
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
        Self::from_der(trust_domain, vec![cert.der().clone()], key_der)
    }

    /// Loads an operator-provided CA: `chain_pem` holds the CA certificate
    /// first, then its issuers (the last one is the trust anchor published in
    /// the bundle); `key_pem` the CA's PKCS#8 key.
    ///
    /// # Errors
    /// Malformed PEM, a certificate that is not a signing certificate
    /// (X509-SVID §4), a SPIFFE ID of another trust domain, or a key that does
    /// not match.
    pub fn from_pem(
        trust_domain: TrustDomain,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, CaError> {
        let chain =
            svid::certs_from_pem(chain_pem, "CA certificate chain").map_err(CaError::InvalidCa)?;
        let key = match PrivateKeyDer::from_pem_slice(key_pem) {
            Ok(PrivateKeyDer::Pkcs8(k)) => k,
            Ok(_) => {
                return Err(CaError::InvalidKey(
                    "expected a PKCS#8 \"PRIVATE KEY\" block".into(),
                ))
            }
            Err(e) => return Err(CaError::InvalidKey(e.to_string())),
        };
        Self::from_der(trust_domain, chain, key)
    }

    /// Like [`CertificateAuthority::from_pem`], from DER.
    ///
    /// # Errors
    /// As [`CertificateAuthority::from_pem`].
    pub fn from_der(
        trust_domain: TrustDomain,
        chain: Vec<CertificateDer<'static>>,
        key_der: PrivatePkcs8KeyDer<'static>,
    ) -> Result<Self, CaError> {
        let Some(ca_cert) = chain.first() else {
            return Err(CaError::InvalidCa(SvidError::EmptyChain));
        };
        for (i, cert) in chain.iter().enumerate() {
            if let Some(found) = svid::check_signing_cert(cert, i).map_err(CaError::InvalidCa)? {
                if found != trust_domain && i == 0 {
                    return Err(CaError::CaTrustDomain {
                        expected: trust_domain,
                        found,
                    });
                }
            }
        }
        let key = KeyPair::try_from(&key_der).map_err(|e| CaError::InvalidKey(e.to_string()))?;
        let parsed = svid::parse(ca_cert, 0).map_err(CaError::InvalidCa)?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::KeyMismatch);
        }
        let not_before = svid::to_system_time(parsed.validity().not_before.timestamp());
        let not_after = svid::to_system_time(parsed.validity().not_after.timestamp());
        let issuer = Issuer::from_ca_cert_der(ca_cert, key).map_err(CaError::Generate)?;
        Ok(CertificateAuthority {
            trust_domain,
            issuer,
            key_der,
            chain,
            not_before,
            not_after,
        })
    }

    /// Issues a leaf X.509-SVID for the attested identity in `request` to the
    /// key in `csr`. Returns the chain leaf first, without the trust anchor.
    ///
    /// The leaf has an empty subject and the SPIFFE ID as its only URI SAN,
    /// marked critical (X509-SVID §2, §3.1); `cA=false`; critical keyUsage
    /// `digitalSignature`; EKU serverAuth and clientAuth (§4.4); a random
    /// 128-bit serial; notBefore `now - CLOCK_SKEW`; notAfter
    /// `now + request.ttl`, capped at the CA's own notAfter.
    ///
    /// # Errors
    /// The CSR is malformed or badly signed, has an unsupported key type, or
    /// asks for SANs other than exactly the attested ones; the ID is not a
    /// leaf ID of this trust domain; the CA is not valid at `now`.
    pub fn issue_svid(
        &self,
        csr: &CertificateSigningRequestDer<'_>,
        request: &SvidRequest,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let id = &request.id;
        if !id.is_member_of(&self.trust_domain) {
            return Err(CaError::ForeignTrustDomain {
                id: id.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        if id.path().is_empty() {
            return Err(CaError::LeafIdWithoutPath(id.clone()));
        }
        let sans = attested_sans(request)?;
        let key = parse_csr(csr, &sans)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.fill_validity(&mut params, request.ttl, now)?;
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Generate)?;
        let chain = self.chain_with(leaf.der().clone());
        svid::check_chain(&chain).map_err(CaError::SelfCheck)?;
        Ok(chain)
    }

    /// Issues a signing (intermediate CA) certificate for the key in `csr`,
    /// for this trust domain: `cA=true` with path length 0, critical keyUsage
    /// `keyCertSign` and `cRLSign`, the trust domain's ID as URI SAN
    /// (X509-SVID §3.2, §4). Returns the chain, new certificate first,
    /// without the trust anchor. The CSR's SANs, if any, must be exactly the
    /// trust domain's ID.
    ///
    /// # Errors
    /// As [`CertificateAuthority::issue_svid`].
    pub fn issue_intermediate(
        &self,
        csr: &CertificateSigningRequestDer<'_>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let td_san = SanType::URI(ia5(self.trust_domain.id().as_str())?);
        let key = match parse_csr(csr, std::slice::from_ref(&td_san)) {
            Err(CaError::SanMismatch { found, .. }) if found.is_empty() => parse_csr(csr, &[])?,
            other => other?,
        };
        let mut params = signing_params(&self.trust_domain)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name = ca_name(&self.trust_domain);
        self.fill_validity(&mut params, ttl, now)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Generate)?;
        let chain = self.chain_with(cert.der().clone());
        for (i, c) in chain.iter().enumerate() {
            svid::check_signing_cert(c, i).map_err(CaError::SelfCheck)?;
        }
        Ok(chain)
    }

    /// Generates a key pair and issues an SVID for it: what a component with
    /// direct access to its cluster's CA (tests, `meshctl dev up`) uses instead
    /// of the CSR round trip.
    ///
    /// # Errors
    /// As [`CertificateAuthority::issue_svid`].
    pub fn issue(&self, request: &SvidRequest, now: SystemTime) -> Result<X509Svid, CaError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = attested_sans(request)?;
        let csr = params.serialize_request(&key).map_err(CaError::Generate)?;
        let chain = self.issue_svid(csr.der(), request, now)?;
        X509Svid::from_der(chain, PrivatePkcs8KeyDer::from(key.serialize_der()))
            .map_err(CaError::SelfCheck)
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA's own certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The trust anchor to publish in the bundle: the last certificate of the
    /// CA's chain (the CA itself when it is a self-signed root).
    pub fn trust_anchor(&self) -> &CertificateDer<'static> {
        // `chain` is never empty: from_der refuses an empty chain.
        &self.chain[self.chain.len() - 1]
    }

    /// Start of the CA certificate's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the CA certificate's validity: no SVID outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The CA chain as PEM and its key as PKCS#8 PEM, for persistence.
    pub fn to_pem(&self) -> (String, String) {
        let chain = self.chain.iter().map(|c| svid::cert_pem(c)).collect();
        (
            chain,
            svid::pem_block("PRIVATE KEY", self.key_der.secret_pkcs8_der()),
        )
    }

    fn fill_validity(
        &self,
        params: &mut CertificateParams,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(), CaError> {
        if now < self.not_before || now >= self.not_after {
            return Err(CaError::NotValidNow);
        }
        let not_before = (now - CLOCK_SKEW).max(self.not_before);
        let not_after = (now + ttl).min(self.not_after);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        Ok(())
    }

    /// `cert` followed by the CA chain minus its self-signed anchor.
    fn chain_with(&self, cert: CertificateDer<'static>) -> Vec<CertificateDer<'static>> {
        let mut chain = Vec::with_capacity(self.chain.len() + 1);
        chain.push(cert);
        let anchor_is_root = self.chain.len() > 1 || is_self_issued(&self.chain[0]);
        let keep = if anchor_is_root {
            self.chain.len() - 1
        } else {
            self.chain.len()
        };
        chain.extend(self.chain[..keep].iter().cloned());
        chain
    }
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// The public key of a CSR, with the rcgen algorithm matching its curve.
struct CsrKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// Parses and verifies a CSR, checks that its SANs are exactly `expected`,
/// and returns its public key.
fn parse_csr(
    csr: &CertificateSigningRequestDer<'_>,
    expected: &[SanType],
) -> Result<CsrKey, CaError> {
    let (rest, req) =
        X509CertificationRequest::from_der(csr).map_err(|e| CaError::CsrDer(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CaError::CsrDer("trailing bytes after the CSR".into()));
    }
    let spki = &req.certification_request_info.subject_pki;
    let alg = key_algorithm(spki)?;
    req.verify_signature().map_err(|_| CaError::CsrSignature)?;
    let mut found = Vec::new();
    if let Some(exts) = req.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                found.extend(san.general_names.iter().map(general_name_string));
            }
        }
    }
    let mut expected: Vec<String> = expected.iter().map(san_string).collect();
    expected.sort();
    found.sort();
    if found != expected {
        return Err(CaError::SanMismatch { expected, found });
    }
    Ok(CsrKey {
        raw: spki.subject_public_key.data.to_vec(),
        alg,
    })
}

fn key_algorithm(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<&'static SignatureAlgorithm, CaError> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_SIG_ED25519 {
        return Ok(&rcgen::PKCS_ED25519);
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(&rcgen::PKCS_ECDSA_P256_SHA256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(&rcgen::PKCS_ECDSA_P384_SHA384),
            Some(c) => Err(CaError::UnsupportedKey(format!("EC curve {c}"))),
            None => Err(CaError::UnsupportedKey(
                "EC key without a named curve".into(),
            )),
        };
    }
    Err(CaError::UnsupportedKey(oid.to_id_string()))
}

fn general_name_string(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        other => format!("{other}"),
    }
}

fn san_string(san: &SanType) -> String {
    match san {
        SanType::URI(u) => format!("URI:{}", u.as_str()),
        SanType::DnsName(d) => format!("DNS:{}", d.as_str()),
        other => format!("{other:?}"),
    }
}

fn attested_sans(request: &SvidRequest) -> Result<Vec<SanType>, CaError> {
    let mut sans = vec![SanType::URI(ia5(request.id.as_str())?)];
    for dns in &request.dns_names {
        let name = dns
            .as_str()
            .try_into()
            .map_err(|_| CaError::InvalidDnsName(dns.clone()))?;
        sans.push(SanType::DnsName(name));
    }
    Ok(sans)
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String, CaError> {
    s.try_into().map_err(CaError::Generate)
}

fn signing_params(td: &TrustDomain) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![SanType::URI(ia5(td.id().as_str())?)];
    Ok(params)
}

fn ca_name(td: &TrustDomain) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Isthmus");
    dn.push(DnType::CommonName, format!("{td} CA"));
    dn
}

/// A random positive 128-bit serial (RFC 5280 §4.1.2.2: at most 20 bytes).
fn random_serial() -> Result<SerialNumber, CaError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Rng)?;
    // Positive and always 16 bytes long: clear the sign bit, set the next.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn is_self_issued(der: &CertificateDer<'_>) -> bool {
    svid::parse(der, 0).is_ok_and(|c| c.subject() == c.issuer())
}

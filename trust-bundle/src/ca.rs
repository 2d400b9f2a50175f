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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn ca() -> CertificateAuthority {
        CertificateAuthority::self_signed(
            TrustDomain::parse("cluster-a.mesh").unwrap(),
            30 * DAY,
            SystemTime::now(),
        )
        .unwrap()
    }

    fn web_id() -> SpiffeId {
        SpiffeId::parse("spiffe://cluster-a.mesh/ns/default/sa/web").unwrap()
    }

    fn csr_with(
        sans: Vec<SanType>,
        alg: &'static SignatureAlgorithm,
    ) -> CertificateSigningRequestDer<'static> {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().der().clone()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn x3_x5_x6_x8_x9_leaf_follows_x509_svid() {
        let ca = ca();
        let svid = ca
            .issue(&SvidRequest::new(web_id()), SystemTime::now())
            .unwrap();
        let cert = svid::parse(&svid.chain()[0], 0).unwrap();
        assert!(
            cert.subject().iter().next().is_none(),
            "leaf subject is empty"
        );
        let san = cert
            .get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME)
            .unwrap()
            .unwrap();
        assert!(
            san.critical,
            "X-3: SAN is critical when the subject is empty"
        );
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca, "X-5: leaf cA=false");
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical, "X-6: keyUsage is critical");
        assert!(
            ku.value.digital_signature() && !ku.value.key_cert_sign() && !ku.value.crl_sign(),
            "X-8"
        );
        assert_eq!(ku.value.flags, 1, "digitalSignature only");
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth && eku.value.client_auth, "X-9");
        assert_eq!(svid.id(), &web_id());
        assert_eq!(
            svid.chain().len(),
            1,
            "a root CA's leaf chain has no intermediates"
        );
    }

    #[test]
    fn x4_x5_x6_x7_signing_certificates_follow_x509_svid() {
        let root = ca();
        let inter_csr = csr_with(
            vec![uri("spiffe://cluster-a.mesh")],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let chain = root
            .issue_intermediate(&inter_csr, DAY, SystemTime::now())
            .unwrap();
        for der in [&chain[0], root.certificate()] {
            let cert = svid::parse(der, 0).unwrap();
            assert!(
                cert.basic_constraints().unwrap().unwrap().value.ca,
                "X-5: cA=true"
            );
            let ku = cert.key_usage().unwrap().unwrap();
            assert!(ku.critical && ku.value.key_cert_sign(), "X-6, X-7");
            assert_eq!(
                svid::spiffe_id_of(der).unwrap().unwrap().path(),
                "",
                "X-4: no path"
            );
        }
        let wrong = csr_with(
            vec![uri("spiffe://cluster-a.mesh/x")],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        assert!(matches!(
            root.issue_intermediate(&wrong, DAY, SystemTime::now()),
            Err(CaError::SanMismatch { .. })
        ));
        let no_san = csr_with(vec![], &rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(root
            .issue_intermediate(&no_san, DAY, SystemTime::now())
            .is_ok());
    }

    #[test]
    fn x1_x2_issuer_refuses_ids_it_must_not_mint() {
        let ca = ca();
        let now = SystemTime::now();
        let two = csr_with(
            vec![uri(web_id().as_str()), uri("https://example.com/")],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        assert!(matches!(
            ca.issue_svid(&two, &SvidRequest::new(web_id()), now),
            Err(CaError::SanMismatch { .. })
        ));
        let td_only = SpiffeId::parse("spiffe://cluster-a.mesh").unwrap();
        let csr = csr_with(vec![uri(td_only.as_str())], &rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(matches!(
            ca.issue_svid(&csr, &SvidRequest::new(td_only), now),
            Err(CaError::LeafIdWithoutPath(_))
        ));
        let foreign = SpiffeId::parse("spiffe://cluster-b.mesh/ns/default/sa/web").unwrap();
        let csr = csr_with(vec![uri(foreign.as_str())], &rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(matches!(
            ca.issue_svid(&csr, &SvidRequest::new(foreign), now),
            Err(CaError::ForeignTrustDomain { .. })
        ));
    }

    #[test]
    fn csr_sans_must_equal_the_attested_identity() {
        let ca = ca();
        let now = SystemTime::now();
        let other = csr_with(
            vec![uri("spiffe://cluster-a.mesh/ns/kube-system/sa/admin")],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let err = ca
            .issue_svid(&other, &SvidRequest::new(web_id()), now)
            .unwrap_err();
        assert!(err.to_string().contains("kube-system"), "{err}");
        let empty = csr_with(vec![], &rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(matches!(
            ca.issue_svid(&empty, &SvidRequest::new(web_id()), now),
            Err(CaError::SanMismatch { .. })
        ));
        let extra_dns = csr_with(
            vec![
                uri(web_id().as_str()),
                SanType::DnsName("web.example".try_into().unwrap()),
            ],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        assert!(ca
            .issue_svid(&extra_dns, &SvidRequest::new(web_id()), now)
            .is_err());
        let mut attested = SvidRequest::new(web_id());
        attested.dns_names = vec!["web.example".into()];
        assert!(ca.issue_svid(&extra_dns, &attested, now).is_ok());
    }

    #[test]
    fn supported_key_types_are_ecdsa_and_ed25519_only() {
        let ca = ca();
        let now = SystemTime::now();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let csr = csr_with(vec![uri(web_id().as_str())], alg);
            assert!(
                ca.issue_svid(&csr, &SvidRequest::new(web_id()), now)
                    .is_ok(),
                "{alg:?}"
            );
        }
        let rsa_pem = include_str!("../tests/data/rsa2048-test-key.pem");
        let rsa = KeyPair::from_pem_and_sign_algo(rsa_pem, &rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![uri(web_id().as_str())];
        let csr = params.serialize_request(&rsa).unwrap();
        let err = ca
            .issue_svid(csr.der(), &SvidRequest::new(web_id()), now)
            .unwrap_err();
        assert!(matches!(err, CaError::UnsupportedKey(_)), "{err}");
    }

    #[test]
    fn malformed_or_tampered_csrs_are_refused() {
        let ca = ca();
        let now = SystemTime::now();
        let req = SvidRequest::new(web_id());
        let garbage = CertificateSigningRequestDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
        assert!(matches!(
            ca.issue_svid(&garbage, &req, now),
            Err(CaError::CsrDer(_))
        ));
        let good = csr_with(vec![uri(web_id().as_str())], &rcgen::PKCS_ECDSA_P256_SHA256);
        let mut bytes = good.as_ref().to_vec();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x55;
        let tampered = CertificateSigningRequestDer::from(bytes);
        assert!(matches!(
            ca.issue_svid(&tampered, &req, now),
            Err(CaError::CsrSignature | CaError::CsrDer(_))
        ));
        let mut trailing = good.as_ref().to_vec();
        trailing.push(0);
        assert!(matches!(
            ca.issue_svid(&trailing.into(), &req, now),
            Err(CaError::CsrDer(_))
        ));
    }

    #[test]
    fn lifetime_is_capped_backdated_and_serials_are_random() {
        let now = SystemTime::now();
        let ca = CertificateAuthority::self_signed(
            TrustDomain::parse("cluster-a.mesh").unwrap(),
            DAY / 2,
            now,
        )
        .unwrap();
        let a = ca.issue(&SvidRequest::new(web_id()), now).unwrap();
        assert!(
            a.not_after() <= ca.not_after(),
            "never past the CA's expiry"
        );
        assert!(
            a.not_before() <= now - Duration::from_secs(60),
            "back-dated for skew"
        );
        let mut short = SvidRequest::new(web_id());
        short.ttl = Duration::from_secs(3600);
        let b = ca.issue(&short, now).unwrap();
        let life = b.not_after().duration_since(now).unwrap().as_secs();
        assert!((3598..=3600).contains(&life), "{life}");
        let serial = |s: &X509Svid| svid::parse(&s.chain()[0], 0).unwrap().raw_serial().to_vec();
        assert_ne!(serial(&a), serial(&b));
        assert_eq!(serial(&a).len(), 16);
        let expired = now + DAY;
        assert!(matches!(
            ca.issue(&SvidRequest::new(web_id()), expired),
            Err(CaError::NotValidNow)
        ));
    }

    #[test]
    fn operator_intermediate_is_loaded_and_issues_chains() {
        let root = ca();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![uri("spiffe://cluster-a.mesh")];
        let csr = params.serialize_request(&key).unwrap();
        let mut chain = root
            .issue_intermediate(csr.der(), 10 * DAY, SystemTime::now())
            .unwrap();
        chain.push(root.certificate().clone());
        let pem: String = chain.iter().map(|c| svid::cert_pem(c)).collect();
        let td = TrustDomain::parse("cluster-a.mesh").unwrap();
        let inter = CertificateAuthority::from_pem(
            td.clone(),
            pem.as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap();
        assert_eq!(inter.trust_anchor(), root.certificate());
        let svid = inter
            .issue(&SvidRequest::new(web_id()), SystemTime::now())
            .unwrap();
        assert_eq!(svid.chain().len(), 2, "leaf + intermediate, root left out");
        assert!(svid.not_after() <= inter.not_after());
        // Round trip through PEM persistence.
        let (c, k) = inter.to_pem();
        assert!(CertificateAuthority::from_pem(td.clone(), c.as_bytes(), k.as_bytes()).is_ok());
        // Wrong key, wrong trust domain, garbage.
        let other = KeyPair::generate().unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem(td, pem.as_bytes(), other.serialize_pem().as_bytes()),
            Err(CaError::KeyMismatch)
        ));
        let b = TrustDomain::parse("cluster-b.mesh").unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem(
                b.clone(),
                pem.as_bytes(),
                key.serialize_pem().as_bytes()
            ),
            Err(CaError::CaTrustDomain { .. })
        ));
        assert!(CertificateAuthority::from_pem(
            b.clone(),
            b"-----BEGIN CERTIFICATE-----\nnope\n",
            b""
        )
        .is_err());
        // A leaf is not a CA.
        let leaf_pem = svid.chain_pem();
        let err = CertificateAuthority::from_pem(b, leaf_pem.as_bytes(), svid.key_pem().as_bytes())
            .unwrap_err();
        assert!(matches!(err, CaError::InvalidCa(_)), "{err}");
    }
}

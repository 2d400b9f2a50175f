//! Shared helpers for the trust-bundle integration tests: a test PKI per
//! trust domain that can also forge certificates breaking SVID rules, and a
//! loopback TLS exchange that reports what each side saw.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trust_bundle::verify::peer_spiffe_id;
use trust_bundle::{
    Bundle, CertificateAuthority, SpiffeId, SvidRequest, SvidSource, TrustDomain, X509Svid,
};

pub const DAY: Duration = Duration::from_secs(86_400);

/// One trust domain's PKI: a CA (our code) and the same root's key in rcgen
/// form, to forge certificates the CA would never issue.
pub struct Pki {
    pub td: TrustDomain,
    pub ca: CertificateAuthority,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(td: &str) -> Self {
        let td = TrustDomain::parse(td).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(&td, SystemTime::now() - DAY, SystemTime::now() + 30 * DAY);
        let cert = params.self_signed(&key).unwrap();
        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
        let ca =
            CertificateAuthority::from_der(td.clone(), vec![cert.der().clone()], key_der).unwrap();
        Pki {
            td,
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    pub fn id(&self, sa: &str) -> SpiffeId {
        self.td.service_account("default", sa).unwrap()
    }

    pub fn bundle(&self) -> Bundle {
        Bundle::with_x509_authorities(self.td.clone(), [self.ca.trust_anchor().clone()])
    }

    pub fn svid(&self, sa: &str) -> X509Svid {
        self.ca
            .issue(&SvidRequest::new(self.id(sa)), SystemTime::now())
            .unwrap()
    }

    pub fn source(&self, sa: &str) -> Arc<SvidSource> {
        SvidSource::new(self.svid(sa), trust_bundle::crypto_provider()).unwrap()
    }

    /// A leaf signed by this root with good SVID params for `id`, edited by
    /// `edit` before signing.
    pub fn forge(&self, id: &str, edit: impl FnOnce(&mut CertificateParams)) -> Forged {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = leaf_params(id);
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Forged {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }

    /// A good leaf for `id` under an intermediate signed by this root, the
    /// intermediate's params edited by `edit`.
    pub fn forge_via_intermediate(
        &self,
        id: &str,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Forged {
        let ikey = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut iparams = ca_params(&self.td, SystemTime::now() - DAY, SystemTime::now() + DAY);
        edit(&mut iparams);
        let icert = iparams.signed_by(&ikey, &self.issuer).unwrap();
        let inter = Issuer::new(iparams, ikey);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = leaf_params(id).signed_by(&key, &inter).unwrap();
        Forged {
            chain: vec![leaf.der().clone(), icert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

/// A chain and key that may break SVID rules.
pub struct Forged {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Forged {
    /// A server config presenting this chain, asking for no client cert.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig::builder_with_provider(trust_bundle::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .unwrap()
    }

    /// A client config presenting this chain and trusting any server.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::builder_with_provider(trust_bundle::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
            .with_client_auth_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .unwrap();
        c.enable_sni = false;
        c
    }
}

pub fn leaf_params(id: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = (SystemTime::now() - Duration::from_secs(300)).into();
    p.not_after = (SystemTime::now() + DAY).into();
    p
}

pub fn ca_params(
    td: &TrustDomain,
    not_before: SystemTime,
    not_after: SystemTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, format!("{td} test CA"));
    p.subject_alt_names = vec![SanType::URI(td.id().as_str().try_into().unwrap())];
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = not_before.into();
    p.not_after = not_after.into();
    p
}

/// What one loopback TLS exchange produced on each side: the peer's SPIFFE
/// ID, or the error rendered with its sources.
#[derive(Debug)]
pub struct Exchange {
    pub server_saw: Result<Option<SpiffeId>, String>,
    pub client_saw: Result<Option<SpiffeId>, String>,
}

impl Exchange {
    pub fn ok(&self) -> bool {
        self.server_saw.is_ok() && self.client_saw.is_ok()
    }

    /// Both sides' errors, for asserting on the reason.
    pub fn errors(&self) -> String {
        format!(
            "{:?} {:?}",
            self.server_saw.as_ref().err(),
            self.client_saw.as_ref().err()
        )
    }
}

/// Runs one TLS connection over real TCP on 127.0.0.1: the server answers
/// "ok" after its handshake, the client reads it. Bounded by a 10 s timeout.
pub async fn exchange(server: ServerConfig, client: ClientConfig) -> Exchange {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(render)?;
        let id = peer_spiffe_id(tls.get_ref().1.peer_certificates());
        tls.write_all(b"ok").await.map_err(render)?;
        tls.shutdown().await.map_err(render)?;
        Ok::<_, String>(id)
    });
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let connector = TlsConnector::from(Arc::new(client));
        let mut tls = connector
            .connect(trust_bundle::tls::spiffe_server_name(), tcp)
            .await
            .map_err(render)?;
        let id = peer_spiffe_id(tls.get_ref().1.peer_certificates());
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.map_err(render)?;
        if buf != b"ok" {
            return Err(format!("server sent {buf:?}"));
        }
        Ok(id)
    };
    let timeout = Duration::from_secs(10);
    let client_saw = tokio::time::timeout(timeout, client_side)
        .await
        .unwrap_or(Err("client timed out".into()));
    let server_saw = match tokio::time::timeout(timeout, server_task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("server timed out".into()),
    };
    Exchange {
        server_saw,
        client_saw,
    }
}

fn render(e: std::io::Error) -> String {
    let mut out = format!("{e}");
    if let Some(inner) = e.get_ref() {
        out.push_str(&format!(" [{inner:?}]"));
    }
    out
}

#[derive(Debug)]
struct AcceptAnyServer;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &trust_bundle::crypto_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &trust_bundle::crypto_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        trust_bundle::crypto_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

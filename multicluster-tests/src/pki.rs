//! Per-cluster certificate authorities and SPIFFE bundle maps on disk.
//!
//! Each cluster gets a self-signed ECDSA P-256 root
//! ([`trust_bundle::CertificateAuthority::self_signed`]) written as
//! `ca.pem`/`ca-key.pem`; components issue their own SVIDs from it (the
//! `identity.ca` form of the config). A cluster's bundle map (SPIFFE Trust
//! Domain and Bundle §5) holds its own bundle plus those of the clusters it
//! trusts.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use trust_bundle::{
    Authorizer, Bundle, BundleMap, BundleStore, CertificateAuthority, SpiffeId, SvidRequest,
    SvidSource, TrustDomain,
};

/// CA lifetime: long enough for any test run.
const CA_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A cluster's CA and where its files are.
pub struct ClusterPki {
    trust_domain: TrustDomain,
    authority: CertificateAuthority,
    /// `ca.pem`: the CA certificate.
    pub ca_cert: PathBuf,
    /// `ca-key.pem`: the CA's PKCS#8 key.
    pub ca_key: PathBuf,
}

impl ClusterPki {
    /// Makes a CA for `trust_domain` (e.g. `cluster-a.mesh`) and writes
    /// `ca.pem` and `ca-key.pem` into `dir` (created if missing).
    ///
    /// # Errors
    /// An invalid trust domain, key generation or file write failure.
    pub fn create(trust_domain: &str, dir: &Path) -> Result<Self> {
        let td = TrustDomain::parse(trust_domain)
            .with_context(|| format!("trust domain {trust_domain:?}"))?;
        let authority =
            CertificateAuthority::self_signed(td.clone(), CA_LIFETIME, SystemTime::now())
                .context("creating a self-signed CA")?;
        fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let (cert, key) = authority.to_pem();
        let ca_cert = dir.join("ca.pem");
        let ca_key = dir.join("ca-key.pem");
        fs::write(&ca_cert, cert).with_context(|| format!("writing {}", ca_cert.display()))?;
        fs::write(&ca_key, key).with_context(|| format!("writing {}", ca_key.display()))?;
        Ok(ClusterPki {
            trust_domain: td,
            authority,
            ca_cert,
            ca_key,
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA itself (to issue extra SVIDs in tests).
    pub fn authority(&self) -> &CertificateAuthority {
        &self.authority
    }

    /// This cluster's bundle: its trust anchor, sequence 1.
    pub fn bundle(&self) -> Bundle {
        Bundle::with_x509_authorities(
            self.trust_domain.clone(),
            [self.authority.trust_anchor().clone()],
        )
    }
}

impl ClusterPki {
    /// A rustls client config presenting a fresh SVID for `id` issued by
    /// this CA, accepting any server whose trust domain is in `trusted`
    /// (SNI off; connect with [`trust_bundle::tls::spiffe_server_name`]).
    /// For tests that talk to the mesh's TLS and QUIC listeners directly.
    ///
    /// # Errors
    /// `id` is invalid or not in this trust domain, or issuance failed.
    pub fn client_tls(
        &self,
        id: &str,
        trusted: impl IntoIterator<Item = Bundle>,
        alpn: &[&[u8]],
    ) -> Result<rustls::ClientConfig> {
        let id = SpiffeId::parse(id).with_context(|| format!("SPIFFE ID {id:?}"))?;
        let svid = self
            .authority
            .issue(&SvidRequest::new(id), SystemTime::now())
            .context("issuing a test SVID")?;
        let source = SvidSource::new(svid, trust_bundle::crypto_provider())?;
        let mut map = BundleMap::default();
        for b in trusted {
            map.insert(b);
        }
        let store = BundleStore::from_map(&map);
        Ok(trust_bundle::tls::client_config(
            Some(source),
            store,
            Authorizer::Any,
            alpn,
        )?)
    }
}

/// Writes a SPIFFE bundle map holding `bundles` to `path`.
///
/// # Errors
/// The file cannot be written.
pub fn write_bundle_map(path: &Path, bundles: impl IntoIterator<Item = Bundle>) -> Result<()> {
    let mut map = BundleMap::default();
    for b in bundles {
        map.insert(b);
    }
    fs::write(path, map.to_json()).with_context(|| format!("writing {}", path.display()))
}

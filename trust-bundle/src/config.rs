//! The `identity` section every Isthmus component's config carries, and its
//! loading into live trust material (see `docs/reference/data-path-config.md`).
//!
//! Parsing is serde (any format; the components use YAML). Loading reads the
//! named files, checks them and builds an [`SvidSource`] and a
//! [`BundleStore`]; it binds no port and does no network I/O.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::bundle::{BundleError, BundleMap};
use crate::ca::{CaError, CertificateAuthority, SvidRequest};
use crate::id::{IdError, SpiffeId};
use crate::source::{LocalCaIssuer, SvidIssuer, SystemClock};
use crate::svid::{SvidError, X509Svid};
use crate::verify::BundleStore;
use crate::SvidSource;

/// The `identity` section: who a component is and whom it trusts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// This component's SPIFFE ID (SPIFFE-ID §2), e.g.
    /// `spiffe://cluster-a.mesh/ns/default/sa/frontend`.
    pub spiffe_id: String,
    /// Issue our own SVID from this CA (development and tests). Exactly one
    /// of `ca` and `svid`.
    #[serde(default)]
    pub ca: Option<PemFiles>,
    /// Serve this SVID as written by someone else. Exactly one of `ca` and
    /// `svid`.
    #[serde(default)]
    pub svid: Option<PemFiles>,
    /// A SPIFFE Bundle Map file (Trust Domain and Bundle §5): our own trust
    /// domain and every linked one.
    pub bundles: PathBuf,
    /// Lifetime of SVIDs issued from `ca`, ms (default 24 h).
    #[serde(default)]
    pub svid_ttl_ms: Option<u64>,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemFiles {
    /// PEM certificates, the leaf (or CA) first.
    pub cert: PathBuf,
    /// PKCS#8 PEM private key.
    pub key: PathBuf,
}

/// Live trust material built from an [`IdentityConfig`].
pub struct LoadedIdentity {
    /// Our SPIFFE ID.
    pub id: SpiffeId,
    /// The SVID we present, ready for rustls.
    pub source: Arc<SvidSource>,
    /// The bundles we verify peers against.
    pub store: BundleStore,
    /// Renews the SVID when it came from a CA (drive with
    /// [`crate::source::run_rotation`]); `None` for `svid` files.
    pub issuer: Option<Arc<dyn SvidIssuer>>,
}

/// Why an identity section could not be loaded. Every variant names the key
/// or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum IdentityConfigError {
    /// `spiffe_id` is not a SPIFFE ID.
    #[error("identity.spiffe_id: {0}")]
    Id(#[source] IdError),
    /// Neither or both of `ca` and `svid` were given.
    #[error("identity: give exactly one of `ca` and `svid`")]
    SourceChoice,
    /// A file could not be read.
    #[error("identity.{key}: cannot read {}", path.display())]
    Read {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA files are not a usable CA.
    #[error("identity.ca: {}", path.display())]
    Ca {
        /// The CA certificate file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: CaError,
    },
    /// The SVID files are not a valid X509-SVID.
    #[error("identity.svid: {}", path.display())]
    Svid {
        /// The SVID certificate file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: SvidError,
    },
    /// The SVID (from files or issued) names another SPIFFE ID.
    #[error("identity: the SVID is for {actual}, not identity.spiffe_id {expected}")]
    IdMismatch {
        /// `spiffe_id` from the config.
        expected: SpiffeId,
        /// The SVID's URI SAN.
        actual: SpiffeId,
    },
    /// The bundle map is malformed.
    #[error("identity.bundles: {}", path.display())]
    Bundles {
        /// The bundle map file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: BundleError,
    },
    /// The bundle map lacks our own trust domain.
    #[error("identity.bundles: {} has no bundle for our own trust domain {td}", path.display())]
    OwnBundleMissing {
        /// The bundle map file.
        path: PathBuf,
        /// Our trust domain.
        td: String,
    },
}

impl IdentityConfig {
    /// Reads and checks the files (relative paths against `base_dir`),
    /// issuing a first SVID when `ca` is given.
    ///
    /// # Errors
    /// See [`IdentityConfigError`].
    pub fn load(&self, base_dir: &Path) -> Result<LoadedIdentity, IdentityConfigError> {
        let id = SpiffeId::parse(&self.spiffe_id).map_err(IdentityConfigError::Id)?;
        let (svid, issuer) = match (&self.ca, &self.svid) {
            (Some(ca), None) => {
                let ca_path = base_dir.join(&ca.cert);
                let cert = read(base_dir, "ca.cert", &ca.cert)?;
                let key = read(base_dir, "ca.key", &ca.key)?;
                // The CA must be for our own trust domain: from_pem checks
                // the certificate against the trust domain it is given.
                let authority = CertificateAuthority::from_pem(id.trust_domain(), &cert, &key)
                    .map_err(|source| IdentityConfigError::Ca {
                        path: ca_path.clone(),
                        source,
                    })?;
                let ttl = self
                    .svid_ttl_ms
                    .map_or(crate::ca::DEFAULT_SVID_TTL, Duration::from_millis);
                let mut request = SvidRequest::new(id.clone());
                request.ttl = ttl;
                let svid = authority
                    .issue(&request, SystemTime::now())
                    .map_err(|source| IdentityConfigError::Ca {
                        path: ca_path,
                        source,
                    })?;
                let issuer: Arc<dyn SvidIssuer> = Arc::new(LocalCaIssuer::new(
                    Arc::new(RwLock::new(authority)),
                    ttl,
                    Arc::new(SystemClock),
                ));
                (svid, Some(issuer))
            }
            (None, Some(files)) => {
                let cert = read(base_dir, "svid.cert", &files.cert)?;
                let key = read(base_dir, "svid.key", &files.key)?;
                let svid = X509Svid::from_pem(&cert, &key).map_err(|source| {
                    IdentityConfigError::Svid {
                        path: base_dir.join(&files.cert),
                        source,
                    }
                })?;
                (svid, None)
            }
            _ => return Err(IdentityConfigError::SourceChoice),
        };
        if svid.id() != &id {
            return Err(IdentityConfigError::IdMismatch {
                expected: id,
                actual: svid.id().clone(),
            });
        }
        let bundles_path = base_dir.join(&self.bundles);
        let json = read(base_dir, "bundles", &self.bundles)?;
        let map = BundleMap::from_json(&json).map_err(|source| IdentityConfigError::Bundles {
            path: bundles_path.clone(),
            source,
        })?;
        if !map.trust_domains.contains_key(&id.trust_domain()) {
            return Err(IdentityConfigError::OwnBundleMissing {
                path: bundles_path,
                td: id.trust_domain_str().to_owned(),
            });
        }
        let source = SvidSource::new(svid, crate::crypto_provider()).map_err(|source| {
            IdentityConfigError::Svid {
                path: base_dir.to_path_buf(),
                source,
            }
        })?;
        Ok(LoadedIdentity {
            id,
            source,
            store: BundleStore::from_map(&map),
            issuer,
        })
    }
}

fn read(base_dir: &Path, key: &'static str, path: &Path) -> Result<Vec<u8>, IdentityConfigError> {
    let full = base_dir.join(path);
    std::fs::read(&full).map_err(|source| IdentityConfigError::Read {
        key,
        path: full,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bundle;

    fn write_ca(dir: &Path, td: &str) -> CertificateAuthority {
        let td = crate::TrustDomain::parse(td).unwrap();
        let ca =
            CertificateAuthority::self_signed(td, Duration::from_secs(3600), SystemTime::now())
                .unwrap();
        let (cert, key) = ca.to_pem();
        std::fs::write(dir.join("ca.pem"), cert).unwrap();
        std::fs::write(dir.join("ca-key.pem"), key).unwrap();
        ca
    }

    fn write_bundles(dir: &Path, cas: &[&CertificateAuthority]) {
        let mut map = BundleMap::default();
        for ca in cas {
            map.insert(Bundle::with_x509_authorities(
                ca.trust_domain().clone(),
                [ca.trust_anchor().clone()],
            ));
        }
        std::fs::write(dir.join("bundles.json"), map.to_json()).unwrap();
    }

    fn config(id: &str) -> IdentityConfig {
        IdentityConfig {
            spiffe_id: id.into(),
            ca: Some(PemFiles {
                cert: "ca.pem".into(),
                key: "ca-key.pem".into(),
            }),
            svid: None,
            bundles: "bundles.json".into(),
            svid_ttl_ms: Some(600_000),
        }
    }

    #[test]
    fn ca_identity_issues_an_svid_for_the_configured_id() {
        let dir = tempfile::tempdir().unwrap();
        let ca = write_ca(dir.path(), "a.test");
        write_bundles(dir.path(), &[&ca]);
        let loaded = config("spiffe://a.test/ns/default/sa/web")
            .load(dir.path())
            .unwrap();
        assert_eq!(
            loaded.source.svid().id().as_str(),
            "spiffe://a.test/ns/default/sa/web"
        );
        assert!(loaded.issuer.is_some());
        assert!(loaded.store.get(ca.trust_domain()).is_some());
    }

    #[test]
    fn svid_files_must_match_the_configured_id() {
        let dir = tempfile::tempdir().unwrap();
        let ca = write_ca(dir.path(), "a.test");
        write_bundles(dir.path(), &[&ca]);
        let svid = ca
            .issue(
                &SvidRequest::new(SpiffeId::parse("spiffe://a.test/other").unwrap()),
                SystemTime::now(),
            )
            .unwrap();
        std::fs::write(dir.path().join("svid.pem"), svid.chain_pem()).unwrap();
        std::fs::write(dir.path().join("svid-key.pem"), svid.key_pem()).unwrap();
        let mut cfg = config("spiffe://a.test/web");
        cfg.ca = None;
        cfg.svid = Some(PemFiles {
            cert: "svid.pem".into(),
            key: "svid-key.pem".into(),
        });
        let err = cfg.load(dir.path()).err().unwrap();
        assert!(
            matches!(err, IdentityConfigError::IdMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_key_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let ca = write_ca(dir.path(), "a.test");
        let other_dir = tempfile::tempdir().unwrap();
        let other = write_ca(other_dir.path(), "b.test");
        write_bundles(dir.path(), &[&other]);
        let err = config("spiffe://a.test/web")
            .load(dir.path())
            .err()
            .unwrap();
        assert!(err.to_string().contains("identity.bundles"), "{err}");
        assert!(matches!(err, IdentityConfigError::OwnBundleMissing { .. }));

        write_bundles(dir.path(), &[&ca]);
        let err = config("spiffe://b.test/web")
            .load(dir.path())
            .err()
            .unwrap();
        assert!(matches!(err, IdentityConfigError::Ca { .. }), "{err}");

        let err = config("http://a.test/web").load(dir.path()).err().unwrap();
        assert!(err.to_string().starts_with("identity.spiffe_id"), "{err}");

        let mut cfg = config("spiffe://a.test/web");
        cfg.svid = cfg.ca.clone();
        assert!(matches!(
            cfg.load(dir.path()),
            Err(IdentityConfigError::SourceChoice)
        ));

        let mut cfg = config("spiffe://a.test/web");
        cfg.bundles = "missing.json".into();
        let err = cfg.load(dir.path()).err().unwrap();
        assert!(
            err.to_string().contains("identity.bundles: cannot read"),
            "{err}"
        );
    }
}

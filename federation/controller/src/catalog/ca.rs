//! CA material in the catalog and root rotation.
//!
//! The first leader generates a self-signed ECDSA P-256 root
//! ([`CaMaterial::generate`]) and proposes [`Command::InitCa`]; the first
//! proposal wins. Every node builds its signer from the catalog
//! ([`Catalog::signing_ca`]), so any node can sign SVIDs.
//!
//! Rotation (`POST /v1/ca/rotate`): the new root is published in the bundle
//! first ([`Command::StartCaRotation`]); at `switch_at_ms` (after the peers'
//! bundle refresh window) it starts signing; at `drop_at_ms` (one SVID
//! lifetime later, when no SVID of the old root is left) the old root
//! leaves the bundle. Each step bumps the bundle's `spiffe_sequence`.
//!
//! The CA key lives in the Raft log and snapshots (docs/reference/controller.md:
//! protect `data_dir` like a key file).
//!
//! [`Command::InitCa`]: super::Command::InitCa
//! [`Command::StartCaRotation`]: super::Command::StartCaRotation

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use trust_bundle::{Bundle, BundleMap, CaError, CertificateAuthority, TrustDomain};

use super::{unix_ms, Catalog, Response};

/// Lifetime of a generated root (10 years).
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// The refresh hint published in our bundle (SPIFFE Federation: peers poll
/// at this interval).
pub const BUNDLE_REFRESH_HINT: Duration = Duration::from_secs(300);

/// One CA: its chain (PEM, CA certificate first) and PKCS#8 key (PEM).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaMaterial {
    /// CA certificate chain, PEM.
    pub chain_pem: String,
    /// The CA's PKCS#8 private key, PEM.
    pub key_pem: String,
    /// End of the CA certificate's validity, Unix ms.
    pub not_after_ms: u64,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("not_after_ms", &self.not_after_ms)
            .finish_non_exhaustive()
    }
}

impl CaMaterial {
    /// Generates a self-signed root for `trust_domain`.
    ///
    /// # Errors
    /// Key generation failed.
    pub fn generate(trust_domain: &TrustDomain, now: SystemTime) -> Result<Self, CaError> {
        let ca = CertificateAuthority::self_signed(trust_domain.clone(), ROOT_LIFETIME, now)?;
        let (chain_pem, key_pem) = ca.to_pem();
        Ok(CaMaterial {
            chain_pem,
            key_pem,
            not_after_ms: unix_ms(ca.not_after()),
        })
    }

    /// The signer.
    ///
    /// # Errors
    /// The PEM does not hold a CA of `trust_domain`.
    pub fn authority(&self, trust_domain: &TrustDomain) -> Result<CertificateAuthority, CaError> {
        CertificateAuthority::from_pem(
            trust_domain.clone(),
            self.chain_pem.as_bytes(),
            self.key_pem.as_bytes(),
        )
    }
}

/// The CA state of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// The CA that signs.
    pub active: CaMaterial,
    /// A new root published but not signing yet.
    pub next: Option<CaMaterial>,
    /// Old roots still published (their SVIDs may still be live).
    pub previous: Vec<CaMaterial>,
    /// The bundle's `spiffe_sequence`.
    pub sequence: u64,
    /// The rotation in progress.
    pub rotation: Option<CaRotation>,
}

/// Times of a rotation, Unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRotation {
    /// The new root starts signing.
    pub switch_at_ms: u64,
    /// The old root leaves the bundle.
    pub drop_at_ms: u64,
}

impl Catalog {
    /// The signer of `trust_domain`, from the active CA material.
    ///
    /// # Errors
    /// No CA yet ([`CaError::NotValidNow`]) or unusable material.
    pub fn signing_ca(&self, trust_domain: &TrustDomain) -> Result<CertificateAuthority, CaError> {
        match &self.ca {
            Some(ca) => ca.active.authority(trust_domain),
            None => Err(CaError::NotValidNow),
        }
    }

    /// Our own bundle: every published root (next, active, previous) with
    /// the rotation sequence; `None` before the CA exists.
    pub fn own_bundle(&self, trust_domain: &TrustDomain) -> Option<Bundle> {
        let ca = self.ca.as_ref()?;
        let mut bundle = Bundle::new(trust_domain.clone());
        let roots = ca.next.iter().chain([&ca.active]).chain(ca.previous.iter());
        for m in roots {
            if let Ok(certs) = trust_bundle::svid::certs_from_pem(m.chain_pem.as_bytes(), "CA") {
                if let Some(anchor) = certs.last() {
                    bundle.add_x509_authority(anchor.clone());
                }
            }
        }
        bundle.set_refresh_hint(Some(BUNDLE_REFRESH_HINT));
        bundle.set_sequence(ca.sequence);
        Some(bundle)
    }

    /// The bundle map: our own trust domain and every linked one whose
    /// bundle parses.
    pub fn bundle_map(&self, trust_domain: &TrustDomain) -> BundleMap {
        let mut map = BundleMap::default();
        if let Some(own) = self.own_bundle(trust_domain) {
            map.insert(own);
        }
        for peer in self.peers.values() {
            let Ok(td) = TrustDomain::parse(&peer.trust_domain) else {
                continue;
            };
            if &td == trust_domain {
                continue;
            }
            if let Ok(b) = Bundle::from_jwks(td, peer.bundle_json.as_bytes()) {
                map.insert(b);
            }
        }
        map
    }

    /// The rotation step due at `now_ms`, if any.
    pub fn ca_rotation_due(&self, now_ms: u64) -> bool {
        let Some(ca) = &self.ca else { return false };
        match ca.rotation {
            Some(r) => {
                (ca.next.is_some() && now_ms >= r.switch_at_ms)
                    || (!ca.previous.is_empty() && now_ms >= r.drop_at_ms)
            }
            None => false,
        }
    }
}

pub(super) fn init(catalog: &mut Catalog, material: &CaMaterial) -> Response {
    if catalog.ca.is_some() {
        return Response::Refused("ca already initialized".to_owned());
    }
    catalog.ca = Some(CaState {
        active: material.clone(),
        next: None,
        previous: Vec::new(),
        sequence: 1,
        rotation: None,
    });
    Response::Sequence(1)
}

pub(super) fn start_rotation(
    catalog: &mut Catalog,
    next: &CaMaterial,
    switch_at_ms: u64,
    drop_at_ms: u64,
) -> Response {
    let Some(ca) = &mut catalog.ca else {
        return Response::Refused("no ca yet".to_owned());
    };
    if ca.rotation.is_some() {
        return Response::Refused("a ca rotation is in progress".to_owned());
    }
    ca.next = Some(next.clone());
    ca.rotation = Some(CaRotation {
        switch_at_ms,
        drop_at_ms,
    });
    ca.sequence += 1;
    Response::Sequence(ca.sequence)
}

pub(super) fn advance(catalog: &mut Catalog, now_ms: u64) -> Response {
    let Some(ca) = &mut catalog.ca else {
        return Response::Ok;
    };
    let Some(r) = ca.rotation else {
        return Response::Sequence(ca.sequence);
    };
    if now_ms >= r.switch_at_ms {
        if let Some(next) = ca.next.take() {
            let old = std::mem::replace(&mut ca.active, next);
            ca.previous.push(old);
            ca.sequence += 1;
        }
    }
    if now_ms >= r.drop_at_ms && ca.next.is_none() {
        if !ca.previous.is_empty() {
            ca.previous.clear();
            ca.sequence += 1;
        }
        ca.rotation = None;
    }
    Response::Sequence(ca.sequence)
}

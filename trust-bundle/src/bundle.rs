//! SPIFFE bundles (SPIFFE Trust Domain and Bundle §4) and the SPIFFE Bundle
//! Map (§5), Isthmus's file and wire format for federated bundles.
//!
//! A [`Bundle`] holds one trust domain's X.509 authorities (and, verbatim, its
//! JWT authorities), a `spiffe_sequence` that [`Bundle`]'s mutators bump on
//! every change (§4.1.1), and an optional refresh hint in whole seconds
//! (§4.1.2). Parsing follows the consumer rules: entries with a missing or
//! unknown `use`, or an unknown `kty`, are ignored (§4.2); an `x509-svid` entry
//! without `x5c` is ignored and only its first `x5c` value is used (X509-SVID
//! §6.2); a `jwt-svid` entry without `kid` is an error (JWT-SVID §6.1).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value};
use x509_parser::public_key::PublicKey;

use crate::id::{IdError, TrustDomain};
use crate::svid;

/// Why a bundle or bundle map document was refused. Every variant names the
/// place in the document, as a JSON pointer-like path.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The input is not JSON, or not the expected JSON shape.
    #[error("malformed JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A required member is absent (`keys`, `trust_domains`).
    #[error("{path}: required member is missing")]
    Missing {
        /// Where in the document.
        path: String,
    },
    /// A member has the wrong JSON type or an out-of-range value.
    #[error("{path}: {expected}")]
    Type {
        /// Where in the document.
        path: String,
        /// What was expected there.
        expected: &'static str,
    },
    /// An `x5c` value is not base64 DER of a single X.509 certificate.
    #[error("{path}: not a base64 DER X.509 certificate: {reason}")]
    Certificate {
        /// Where in the document.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A `jwt-svid` entry has no `kid` (JWT-SVID §6.1).
    #[error("{path}: jwt-svid key has no kid")]
    MissingKid {
        /// Where in the document.
        path: String,
    },
    /// A bundle map key is not a trust domain name.
    #[error("trust_domains.{key:?}: not a trust domain")]
    TrustDomain {
        /// The key as written.
        key: String,
        /// Why it is invalid.
        #[source]
        source: IdError,
    },
    /// A bundle map names the same trust domain twice (§5.1.1).
    #[error("trust_domains: trust domain {0} appears more than once")]
    DuplicateTrustDomain(TrustDomain),
}

/// A JWT authority kept verbatim: its key ID and the JWK as published.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtAuthority {
    /// The JWK `kid`.
    pub key_id: String,
    /// The whole JWK object.
    pub jwk: Map<String, Value>,
}

/// One trust domain's SPIFFE bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<CertificateDer<'static>>,
    jwt_authorities: Vec<JwtAuthority>,
    sequence: u64,
    refresh_hint: Option<Duration>,
}

impl Bundle {
    /// An empty bundle (which trusts nothing, §4.1.3) at sequence 0.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Bundle {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence: 0,
            refresh_hint: None,
        }
    }

    /// A bundle holding `authorities`, at sequence 1.
    pub fn with_x509_authorities(
        trust_domain: TrustDomain,
        authorities: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Self {
        let mut bundle = Bundle::new(trust_domain);
        for cert in authorities {
            bundle.add_x509_authority(cert);
        }
        bundle
    }

    /// The trust domain this bundle is for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The X.509 authorities (DER), in publication order.
    pub fn x509_authorities(&self) -> &[CertificateDer<'static>] {
        &self.x509_authorities
    }

    /// The JWT authorities, verbatim.
    pub fn jwt_authorities(&self) -> &[JwtAuthority] {
        &self.jwt_authorities
    }

    /// `spiffe_sequence` (§4.1.1).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// `spiffe_refresh_hint` (§4.1.2), whole seconds.
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    /// Adds an X.509 authority; bumps the sequence if it was not present.
    /// Returns whether the bundle changed. A certificate whose key cannot be
    /// published as a JWK (only EC with an uncompressed point on P-256,
    /// P-384 or P-521, RSA and Ed25519 can) is not added.
    pub fn add_x509_authority(&mut self, cert: CertificateDer<'static>) -> bool {
        if self.x509_authorities.contains(&cert) {
            return false;
        }
        if jwk_key_params(&cert).is_none() {
            tracing::warn!(trust_domain = %self.trust_domain, "not adding an X.509 authority whose key cannot be published as a JWK");
            return false;
        }
        self.x509_authorities.push(cert);
        self.bump();
        true
    }

    /// Removes an X.509 authority; bumps the sequence if it was present.
    /// Returns whether the bundle changed.
    pub fn remove_x509_authority(&mut self, cert: &CertificateDer<'_>) -> bool {
        let before = self.x509_authorities.len();
        self.x509_authorities
            .retain(|c| c.as_ref() != cert.as_ref());
        let changed = self.x509_authorities.len() != before;
        if changed {
            self.bump();
        }
        changed
    }

    /// Sets the refresh hint, truncated to whole seconds; bumps the sequence
    /// if it changed.
    pub fn set_refresh_hint(&mut self, hint: Option<Duration>) {
        let hint = hint.map(|d| Duration::from_secs(d.as_secs()));
        if hint != self.refresh_hint {
            self.refresh_hint = hint;
            self.bump();
        }
    }

    /// Sets the sequence explicitly (a consumer storing what it fetched).
    pub fn set_sequence(&mut self, sequence: u64) {
        self.sequence = sequence;
    }

    fn bump(&mut self) {
        self.sequence = self.sequence.wrapping_add(1);
    }

    /// Parses a SPIFFE bundle (a JWKS document, §4) for `trust_domain`.
    ///
    /// # Errors
    /// Malformed JSON, a missing `keys`, a non-integer `spiffe_sequence` or
    /// `spiffe_refresh_hint`, a bad `x5c` in an `x509-svid` entry, or a
    /// `jwt-svid` entry without `kid`.
    pub fn from_jwks(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        let value: Value = serde_json::from_slice(json).map_err(BundleError::Json)?;
        Self::from_value(trust_domain, &value, "")
    }

    /// Serializes this bundle as a SPIFFE bundle document (§4): one JWK per
    /// X.509 authority with `use: x509-svid`, no `kid` and a single-entry
    /// `x5c` (X509-SVID §6.1), then the JWT authorities verbatim.
    pub fn to_jwks(&self) -> Vec<u8> {
        // Serializing a `Value` cannot fail.
        serde_json::to_vec_pretty(&self.to_value()).unwrap_or_default()
    }

    pub(crate) fn to_value(&self) -> Value {
        let mut keys: Vec<Value> = self
            .x509_authorities
            .iter()
            .map(|c| Value::Object(x509_jwk(c)))
            .collect();
        keys.extend(
            self.jwt_authorities
                .iter()
                .map(|j| Value::Object(j.jwk.clone())),
        );
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        doc.insert("spiffe_sequence".into(), Value::from(self.sequence));
        if let Some(hint) = self.refresh_hint {
            doc.insert("spiffe_refresh_hint".into(), Value::from(hint.as_secs()));
        }
        Value::Object(doc)
    }

    pub(crate) fn from_value(
        trust_domain: TrustDomain,
        value: &Value,
        path: &str,
    ) -> Result<Self, BundleError> {
        let doc = value.as_object().ok_or_else(|| BundleError::Type {
            path: at(path, ""),
            expected: "expected a JSON object",
        })?;
        let keys = doc.get("keys").ok_or_else(|| BundleError::Missing {
            path: at(path, "keys"),
        })?;
        let keys = keys.as_array().ok_or_else(|| BundleError::Type {
            path: at(path, "keys"),
            expected: "expected an array",
        })?;
        let sequence = match doc.get("spiffe_sequence") {
            None => 0,
            Some(v) => v.as_u64().ok_or_else(|| BundleError::Type {
                path: at(path, "spiffe_sequence"),
                expected: "expected a non-negative integer",
            })?,
        };
        let refresh_hint = match doc.get("spiffe_refresh_hint") {
            None => None,
            Some(v) => Some(Duration::from_secs(v.as_u64().ok_or_else(|| {
                BundleError::Type {
                    path: at(path, "spiffe_refresh_hint"),
                    expected: "expected a non-negative integer number of seconds",
                }
            })?)),
        };
        let mut bundle = Bundle {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence,
            refresh_hint,
        };
        for (i, key) in keys.iter().enumerate() {
            let key_path = at(path, &format!("keys[{i}]"));
            let Some(jwk) = key.as_object() else {
                return Err(BundleError::Type {
                    path: key_path,
                    expected: "expected a JSON object",
                });
            };
            let known_kty = matches!(
                jwk.get("kty").and_then(Value::as_str),
                Some("EC" | "RSA" | "OKP")
            );
            match jwk.get("use").and_then(Value::as_str) {
                Some("x509-svid") if known_kty => {
                    if let Some(cert) = x5c_first(jwk, &key_path)? {
                        // A key we cannot describe is a key of unknown type
                        // (§4.2.2): ignored, so that what we read is exactly
                        // what we would write back.
                        if jwk_key_params(&cert).is_some()
                            && !bundle.x509_authorities.contains(&cert)
                        {
                            bundle.x509_authorities.push(cert);
                        }
                    }
                }
                Some("jwt-svid") if known_kty => {
                    let kid = jwk
                        .get("kid")
                        .and_then(Value::as_str)
                        .filter(|k| !k.is_empty());
                    let Some(kid) = kid else {
                        return Err(BundleError::MissingKid { path: key_path });
                    };
                    bundle.jwt_authorities.push(JwtAuthority {
                        key_id: kid.to_owned(),
                        jwk: jwk.clone(),
                    });
                }
                // §4.2.1–2: unknown or missing `use`, unknown `kty`: ignore.
                _ => {}
            }
        }
        Ok(bundle)
    }
}

/// A SPIFFE Bundle Map (§5): bundles keyed by trust domain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BundleMap {
    /// The bundles, one per trust domain.
    pub trust_domains: BTreeMap<TrustDomain, Bundle>,
}

impl BundleMap {
    /// Parses `{"trust_domains": {"<td>": <bundle>, ...}}`. Keys may be bare
    /// names or `spiffe://` trust domain IDs; they are compared after
    /// normalization, and a trust domain named twice is refused (§5.1.1).
    /// Per-bundle refresh hints are read but consumers should ignore them.
    ///
    /// # Errors
    /// Malformed JSON, a missing `trust_domains` (`{}` is an error), an
    /// invalid or duplicated key, or any [`Bundle::from_jwks`] error with its
    /// path.
    pub fn from_json(json: &[u8]) -> Result<Self, BundleError> {
        let doc: MapDocument = serde_json::from_slice(json).map_err(BundleError::Json)?;
        let Some(entries) = doc.trust_domains else {
            return Err(BundleError::Missing {
                path: "trust_domains".into(),
            });
        };
        let mut map = BundleMap::default();
        for (key, value) in entries.0 {
            let td = TrustDomain::parse(&key).map_err(|source| BundleError::TrustDomain {
                key: key.clone(),
                source,
            })?;
            if map.trust_domains.contains_key(&td) {
                return Err(BundleError::DuplicateTrustDomain(td));
            }
            let bundle = Bundle::from_value(td.clone(), &value, &format!("trust_domains.{key}"))?;
            map.trust_domains.insert(td, bundle);
        }
        Ok(map)
    }

    /// Serializes as a SPIFFE Bundle Map with bare trust domain names as keys.
    pub fn to_json(&self) -> Vec<u8> {
        let tds: Map<String, Value> = self
            .trust_domains
            .iter()
            .map(|(td, b)| (td.as_str().to_owned(), b.to_value()))
            .collect();
        let mut doc = Map::new();
        doc.insert("trust_domains".into(), Value::Object(tds));
        serde_json::to_vec_pretty(&Value::Object(doc)).unwrap_or_default()
    }

    /// Adds or replaces the bundle of its trust domain.
    pub fn insert(&mut self, bundle: Bundle) {
        self.trust_domains
            .insert(bundle.trust_domain().clone(), bundle);
    }
}

/// A bundle map document read so that duplicated `trust_domains` keys stay
/// visible: serde_json's `Map` would silently keep the last one (§5.1.1).
struct MapDocument {
    trust_domains: Option<OrderedEntries>,
}

/// A JSON object's members in document order, duplicates kept.
struct OrderedEntries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for MapDocument {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MapDocument;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a SPIFFE bundle map object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<MapDocument, A::Error> {
                let mut trust_domains = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "trust_domains" {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    } else if trust_domains.is_some() {
                        return Err(serde::de::Error::duplicate_field("trust_domains"));
                    } else {
                        trust_domains = Some(map.next_value::<OrderedEntries>()?);
                    }
                }
                Ok(MapDocument { trust_domains })
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl<'de> serde::Deserialize<'de> for OrderedEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderedEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object mapping trust domains to bundles")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OrderedEntries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(OrderedEntries(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

fn at(base: &str, member: &str) -> String {
    match (base.is_empty(), member.is_empty()) {
        (true, true) => "(document)".into(),
        (true, false) => member.into(),
        (false, true) => base.into(),
        (false, false) => format!("{base}.{member}"),
    }
}

/// The first `x5c` value of an `x509-svid` JWK, or `None` when `x5c` is absent
/// or empty (X509-SVID §6.2: ignore such entries).
fn x5c_first(
    jwk: &Map<String, Value>,
    path: &str,
) -> Result<Option<CertificateDer<'static>>, BundleError> {
    let Some(x5c) = jwk.get("x5c") else {
        return Ok(None);
    };
    let x5c = x5c.as_array().ok_or_else(|| BundleError::Type {
        path: format!("{path}.x5c"),
        expected: "expected an array of base64 strings",
    })?;
    let Some(first) = x5c.first() else {
        return Ok(None);
    };
    let b64 = first.as_str().ok_or_else(|| BundleError::Type {
        path: format!("{path}.x5c[0]"),
        expected: "expected a base64 string",
    })?;
    let der = STANDARD.decode(b64).map_err(|e| BundleError::Certificate {
        path: format!("{path}.x5c[0]"),
        reason: e.to_string(),
    })?;
    svid::parse(&der, 0).map_err(|e| BundleError::Certificate {
        path: format!("{path}.x5c[0]"),
        reason: e.to_string(),
    })?;
    Ok(Some(CertificateDer::from(der)))
}

/// The JWK of an X.509 authority: key parameters from its SPKI (RFC 7518 §6),
/// `use: x509-svid`, `x5c` with the certificate alone, and no `kid`.
fn x509_jwk(cert: &CertificateDer<'_>) -> Map<String, Value> {
    let mut jwk = jwk_key_params(cert).unwrap_or_default();
    jwk.insert("use".into(), "x509-svid".into());
    jwk.insert(
        "x5c".into(),
        Value::Array(vec![STANDARD.encode(cert).into()]),
    );
    jwk
}

/// The JWK key parameters (`kty` and the key) of a certificate's public key:
/// EC with an uncompressed point on P-256/P-384/P-521, RSA, or Ed25519.
/// `None` for any other key, which this crate can neither publish nor use.
fn jwk_key_params(cert: &CertificateDer<'_>) -> Option<Map<String, Value>> {
    let parsed = svid::parse(cert, 0).ok()?;
    let mut jwk = Map::new();
    match parsed.public_key().parsed() {
        Ok(PublicKey::EC(point)) => {
            let data = point.data();
            let coord = data.len().saturating_sub(1) / 2;
            let crv = match coord {
                32 => "P-256",
                48 => "P-384",
                66 => "P-521",
                _ => return None,
            };
            if data.first() != Some(&4) || data.len() != 1 + 2 * coord {
                return None;
            }
            jwk.insert("kty".into(), "EC".into());
            jwk.insert("crv".into(), crv.into());
            jwk.insert(
                "x".into(),
                URL_SAFE_NO_PAD.encode(&data[1..1 + coord]).into(),
            );
            jwk.insert(
                "y".into(),
                URL_SAFE_NO_PAD.encode(&data[1 + coord..]).into(),
            );
        }
        Ok(PublicKey::RSA(rsa)) => {
            jwk.insert("kty".into(), "RSA".into());
            jwk.insert(
                "n".into(),
                URL_SAFE_NO_PAD.encode(trim_zeros(rsa.modulus)).into(),
            );
            jwk.insert(
                "e".into(),
                URL_SAFE_NO_PAD.encode(trim_zeros(rsa.exponent)).into(),
            );
        }
        _ if parsed.public_key().algorithm.algorithm
            == x509_parser::oid_registry::OID_SIG_ED25519 =>
        {
            let raw = &parsed.public_key().subject_public_key.data;
            if raw.len() != 32 {
                return None;
            }
            jwk.insert("kty".into(), "OKP".into());
            jwk.insert("crv".into(), "Ed25519".into());
            jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(raw).into());
        }
        _ => return None,
    }
    Some(jwk)
}

fn trim_zeros(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|&x| x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use proptest::prelude::*;
    use std::time::SystemTime;

    fn td(s: &str) -> TrustDomain {
        TrustDomain::parse(s).unwrap()
    }

    fn root(name: &str) -> CertificateDer<'static> {
        CertificateAuthority::self_signed(td(name), Duration::from_secs(86_400), SystemTime::now())
            .unwrap()
            .certificate()
            .clone()
    }

    fn b64(cert: &CertificateDer<'_>) -> String {
        STANDARD.encode(cert)
    }

    #[test]
    fn x11_x509_entries_have_use_single_x5c_and_no_kid() {
        let cert = root("cluster-a.mesh");
        let mut bundle = Bundle::with_x509_authorities(td("cluster-a.mesh"), [cert.clone()]);
        bundle.set_refresh_hint(Some(Duration::from_millis(300_900)));
        let doc: Value = serde_json::from_slice(&bundle.to_jwks()).unwrap();
        let key = &doc["keys"][0];
        assert_eq!(key["use"], "x509-svid");
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(key["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(key["y"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(key["x5c"], serde_json::json!([b64(&cert)]));
        assert!(key.get("kid").is_none());
        assert_eq!(doc["spiffe_sequence"], 2);
        assert_eq!(doc["spiffe_refresh_hint"], 300, "B-5: whole seconds");
        let back = Bundle::from_jwks(td("cluster-a.mesh"), &bundle.to_jwks()).unwrap();
        assert_eq!(back, bundle);
    }

    #[test]
    fn x12_entries_without_x5c_are_ignored_and_only_the_first_x5c_is_used() {
        let (a, b) = (root("a.test"), root("b.test"));
        let doc = serde_json::json!({"keys": [
            {"use": "x509-svid", "kty": "EC"},
            {"use": "x509-svid", "kty": "EC", "x5c": []},
            {"use": "x509-svid", "kty": "EC", "x5c": [b64(&a), b64(&b)]},
        ]});
        let bundle = Bundle::from_jwks(td("a.test"), doc.to_string().as_bytes()).unwrap();
        assert_eq!(bundle.x509_authorities(), &[a]);
        let bad = serde_json::json!({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["%%%"]}]});
        let err = Bundle::from_jwks(td("a.test"), bad.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("keys[0].x5c[0]:"), "{err}");
        let not_cert = serde_json::json!({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": [STANDARD.encode(b"hello")]}]});
        assert!(matches!(
            Bundle::from_jwks(td("a.test"), not_cert.to_string().as_bytes()),
            Err(BundleError::Certificate { .. })
        ));
    }

    #[test]
    fn b1_keys_is_required() {
        let err = Bundle::from_jwks(td("a.test"), br#"{"spiffe_sequence": 1}"#).unwrap_err();
        assert_eq!(err.to_string(), "keys: required member is missing");
        assert!(matches!(
            Bundle::from_jwks(td("a.test"), br#"{"keys": {}}"#),
            Err(BundleError::Type { .. })
        ));
        assert!(matches!(
            Bundle::from_jwks(td("a.test"), b"[1]"),
            Err(BundleError::Type { .. })
        ));
        assert!(matches!(
            Bundle::from_jwks(td("a.test"), b"{"),
            Err(BundleError::Json(_))
        ));
    }

    #[test]
    fn b2_unknown_use_kty_and_missing_use_are_ignored() {
        let a = root("a.test");
        let doc = serde_json::json!({"keys": [
            {"kty": "EC", "x5c": [b64(&a)]},
            {"use": "x509-svid-v2", "kty": "EC", "x5c": [b64(&a)]},
            {"use": "x509-svid", "kty": "PQ", "x5c": [b64(&a)]},
            {"use": "enc", "kty": "EC"},
        ]});
        let bundle = Bundle::from_jwks(td("a.test"), doc.to_string().as_bytes()).unwrap();
        assert!(bundle.x509_authorities().is_empty());
        assert!(bundle.jwt_authorities().is_empty());
    }

    #[test]
    fn b2_authorities_whose_key_cannot_be_a_jwk_are_ignored_and_round_trips_are_stable() {
        // Found by the bundle_jwks fuzz target: a certificate whose EC point
        // is not uncompressed was accepted, then written back without a kty
        // and lost on the next read.
        for input in [
            &include_bytes!("../fuzz/known-crashes/bundle_jwks/ec_point_prefix_06.json")[..],
            &include_bytes!("../fuzz/known-crashes/bundle_jwks/ec_compressed_point.json")[..],
        ] {
            let bundle = Bundle::from_jwks(td("a.test"), input).unwrap();
            assert!(bundle.x509_authorities().is_empty());
            let again = Bundle::from_jwks(td("a.test"), &bundle.to_jwks()).unwrap();
            assert_eq!(again, bundle);
            let doc: Value = serde_json::from_slice(input).unwrap();
            let der = STANDARD
                .decode(doc["keys"][0]["x5c"][0].as_str().unwrap())
                .unwrap();
            let mut fresh = Bundle::new(td("a.test"));
            assert!(
                !fresh.add_x509_authority(CertificateDer::from(der)),
                "not addable either"
            );
            assert_eq!(fresh.sequence(), 0);
        }
    }

    #[test]
    fn b4_sequence_changes_on_every_content_change() {
        let (a, b) = (root("a.test"), root("b.test"));
        let mut bundle = Bundle::new(td("a.test"));
        assert_eq!(bundle.sequence(), 0);
        assert!(bundle.add_x509_authority(a.clone()));
        assert!(!bundle.add_x509_authority(a.clone()), "no change, no bump");
        assert_eq!(bundle.sequence(), 1);
        bundle.add_x509_authority(b.clone());
        bundle.remove_x509_authority(&a);
        assert!(!bundle.remove_x509_authority(&a));
        bundle.set_refresh_hint(Some(Duration::from_secs(60)));
        bundle.set_refresh_hint(Some(Duration::from_secs(60)));
        assert_eq!(bundle.sequence(), 4);
    }

    #[test]
    fn b5_refresh_hint_must_be_an_integer() {
        for hint in ["1.5", "\"300\"", "-1", "null"] {
            let doc = format!(r#"{{"keys": [], "spiffe_refresh_hint": {hint}}}"#);
            let err = Bundle::from_jwks(td("a.test"), doc.as_bytes()).unwrap_err();
            assert!(
                err.to_string().starts_with("spiffe_refresh_hint:"),
                "{hint}: {err}"
            );
        }
        let doc = br#"{"keys": [], "spiffe_sequence": 1.0}"#;
        assert!(
            Bundle::from_jwks(td("a.test"), doc).is_err(),
            "B-4: sequence is an integer"
        );
    }

    #[test]
    fn b6_jwt_entries_need_a_kid_and_are_kept_verbatim() {
        let ok = serde_json::json!({"keys": [{"use": "jwt-svid", "kty": "EC", "kid": "k1", "crv": "P-256", "x": "AA", "y": "AA"}]});
        let bundle = Bundle::from_jwks(td("a.test"), ok.to_string().as_bytes()).unwrap();
        assert_eq!(bundle.jwt_authorities()[0].key_id, "k1");
        assert!(
            bundle.x509_authorities().is_empty(),
            "jwt keys are not X.509 authorities"
        );
        let round: Value = serde_json::from_slice(&bundle.to_jwks()).unwrap();
        assert_eq!(round["keys"][0], ok["keys"][0]);
        let missing = serde_json::json!({"keys": [{"use": "jwt-svid", "kty": "EC"}]});
        let err = Bundle::from_jwks(td("a.test"), missing.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "keys[0]: jwt-svid key has no kid");
    }

    #[test]
    fn m1_bundle_map_needs_trust_domains() {
        assert!(matches!(
            BundleMap::from_json(b"{}"),
            Err(BundleError::Missing { .. })
        ));
        assert!(BundleMap::from_json(br#"{"trust_domains": {}}"#)
            .unwrap()
            .trust_domains
            .is_empty());
        assert!(BundleMap::from_json(br#"{"trust_domains": []}"#).is_err());
        assert!(BundleMap::from_json(
            br#"{"trust_domains": {"a.test": {"keys": []}}, "trust_domains": {}}"#
        )
        .is_err());
    }

    #[test]
    fn m2_duplicate_trust_domains_are_rejected() {
        for (k1, k2) in [
            ("a.test", "a.test"),
            ("a.test", "spiffe://a.test"),
            ("a.test", "A.TEST"),
        ] {
            let doc = format!(
                r#"{{"trust_domains": {{"{k1}": {{"keys": []}}, "{k2}": {{"keys": []}}}}}}"#
            );
            let err = BundleMap::from_json(doc.as_bytes()).unwrap_err();
            assert!(
                matches!(err, BundleError::DuplicateTrustDomain(ref t) if t.as_str() == "a.test"),
                "{err}"
            );
        }
        let bad_key =
            BundleMap::from_json(br#"{"trust_domains": {"a b": {"keys": []}}}"#).unwrap_err();
        assert!(matches!(bad_key, BundleError::TrustDomain { .. }));
        let bad_bundle = BundleMap::from_json(br#"{"trust_domains": {"a.test": {}}}"#).unwrap_err();
        assert_eq!(
            bad_bundle.to_string(),
            "trust_domains.a.test.keys: required member is missing"
        );
    }

    #[test]
    fn m3_map_round_trip_tolerates_per_bundle_hints() {
        let mut map = BundleMap::default();
        let mut a = Bundle::with_x509_authorities(td("a.test"), [root("a.test")]);
        a.set_refresh_hint(Some(Duration::from_secs(30)));
        map.insert(a);
        map.insert(Bundle::with_x509_authorities(
            td("b.test"),
            [root("b.test")],
        ));
        let json = map.to_json();
        let doc: Value = serde_json::from_slice(&json).unwrap();
        assert!(
            doc["trust_domains"]["a.test"].is_object(),
            "keys are bare trust domain names"
        );
        assert_eq!(BundleMap::from_json(&json).unwrap(), map);
    }

    proptest! {
        #[test]
        fn b4_any_sequence_of_edits_bumps_exactly_on_change(ops in proptest::collection::vec((0u8..3, 0usize..3), 0..20)) {
            let certs: Vec<_> = ["a.test", "b.test", "c.test"].iter().map(|n| root(n)).collect();
            let mut bundle = Bundle::new(td("a.test"));
            for (op, i) in ops {
                let before = (bundle.x509_authorities().to_vec(), bundle.refresh_hint(), bundle.sequence());
                match op {
                    0 => { bundle.add_x509_authority(certs[i].clone()); }
                    1 => { bundle.remove_x509_authority(&certs[i]); }
                    _ => bundle.set_refresh_hint(Some(Duration::from_secs(i as u64))),
                }
                let changed = before.0 != bundle.x509_authorities() || before.1 != bundle.refresh_hint();
                prop_assert_eq!(bundle.sequence() != before.2, changed);
            }
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Bundle::from_jwks(td("a.test"), &bytes);
            let _ = BundleMap::from_json(&bytes);
        }
    }
}

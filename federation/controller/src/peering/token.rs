//! The peering token: what `meshctl link` carries from the issuing cluster
//! to the redeeming one.
//!
//! Wire form: base64url without padding (RFC 4648 §5) of the JSON document
//! `{"v":1,"id":"…","secret":"…","issuer":{PeerInfo as camelCase JSON},"expiresAt":"RFC 3339"}`.
//! `secret` is 32 random bytes, base64url without padding; the issuer keeps
//! only the SHA-256 of that secret *string* (hex), so a leaked catalog cannot
//! redeem its tokens. The token is a bearer secret: whoever holds it can link
//! once until `expiresAt`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mesh_api::peering::PeerInfo;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The token format version this code writes and reads.
pub const TOKEN_VERSION: u32 = 1;
/// Random bytes in a token secret.
pub const SECRET_BYTES: usize = 32;
/// Random bytes in a token id.
pub const ID_BYTES: usize = 16;

/// Why a token could not be read. The message names the part that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not base64url.
    #[error("peering token is not base64url: {0}")]
    Base64(#[source] base64::DecodeError),
    /// Not the JSON document (the serde message names the field).
    #[error("peering token JSON is invalid: {0}")]
    Json(#[source] serde_json::Error),
    /// A `v` this code does not know.
    #[error("peering token version {0} is not supported (expected {TOKEN_VERSION})")]
    Version(u32),
    /// A field is present but unusable.
    #[error("peering token field {field}: {reason}")]
    Field {
        /// JSON path of the field, e.g. `issuer.trustDomain`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
}

/// A decoded peering token.
#[derive(Debug, Clone, PartialEq)]
pub struct PeeringToken {
    /// Token id (the catalog key at the issuer).
    pub id: String,
    /// The secret, base64url text as carried.
    pub secret: String,
    /// Who issued it: where to redeem it and which bundle authenticates the
    /// issuer's controller.
    pub issuer: PeerInfo,
    /// When it stops being redeemable.
    pub expires_at: OffsetDateTime,
}

impl PeeringToken {
    /// A fresh token for `issuer` expiring at `expires_at`, with a random id
    /// and secret.
    ///
    /// # Errors
    /// [`TokenError::Random`] when the system random generator fails.
    pub fn generate(issuer: PeerInfo, expires_at: OffsetDateTime) -> Result<Self, TokenError> {
        let rng = SystemRandom::new();
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill(&mut id).map_err(|_| TokenError::Random)?;
        rng.fill(&mut secret).map_err(|_| TokenError::Random)?;
        Ok(PeeringToken {
            id: hex(&id),
            secret: URL_SAFE_NO_PAD.encode(secret),
            issuer,
            expires_at,
        })
    }

    /// The wire form (base64url JSON).
    pub fn encode(&self) -> String {
        let wire = Wire {
            v: TOKEN_VERSION,
            id: self.id.clone(),
            secret: self.secret.clone(),
            issuer: WirePeerInfo::from(&self.issuer),
            // Formatting an `OffsetDateTime` from a `u64` ms clock as RFC
            // 3339 only fails for years beyond 9999.
            expires_at: self.expires_at.format(&Rfc3339).unwrap_or_default(),
        };
        // Serializing plain strings and vectors cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Reads the wire form. Surrounding whitespace is ignored (tokens are
    /// often pasted from files).
    ///
    /// # Errors
    /// [`TokenError`] naming what is wrong: encoding, JSON (with the
    /// field), version, an empty id/secret/issuer field, a bad timestamp.
    pub fn decode(token: &str) -> Result<Self, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim().trim_end_matches('='))
            .map_err(TokenError::Base64)?;
        let wire: Wire = serde_json::from_slice(&bytes).map_err(TokenError::Json)?;
        if wire.v != TOKEN_VERSION {
            return Err(TokenError::Version(wire.v));
        }
        let field = |field: &'static str, reason: &str| TokenError::Field {
            field,
            reason: reason.to_owned(),
        };
        if wire.id.is_empty() {
            return Err(field("id", "is empty"));
        }
        if wire.secret.is_empty() {
            return Err(field("secret", "is empty"));
        }
        for (name, value) in [
            ("issuer.cluster", &wire.issuer.cluster),
            ("issuer.trustDomain", &wire.issuer.trust_domain),
            ("issuer.bundleJson", &wire.issuer.bundle_json),
            ("issuer.controllerAddress", &wire.issuer.controller_address),
            (
                "issuer.controllerSpiffeId",
                &wire.issuer.controller_spiffe_id,
            ),
        ] {
            if value.is_empty() {
                return Err(field(name, "is empty"));
            }
        }
        let expires_at =
            OffsetDateTime::parse(&wire.expires_at, &Rfc3339).map_err(|e| TokenError::Field {
                field: "expiresAt",
                reason: format!("{:?} is not an RFC 3339 timestamp: {e}", wire.expires_at),
            })?;
        Ok(PeeringToken {
            id: wire.id,
            secret: wire.secret,
            issuer: wire.issuer.into(),
            expires_at,
        })
    }
}

/// SHA-256 of a token secret string, lowercase hex: what the issuer stores
/// and compares.
pub fn secret_sha256(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    v: u32,
    id: String,
    secret: String,
    issuer: WirePeerInfo,
    expires_at: String,
}

/// [`PeerInfo`] as camelCase JSON (proto3 JSON mapping field names).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePeerInfo {
    cluster: String,
    trust_domain: String,
    bundle_json: String,
    #[serde(default)]
    bundle_endpoint: String,
    controller_address: String,
    #[serde(default)]
    gateway_addresses: Vec<String>,
    controller_spiffe_id: String,
    #[serde(default)]
    gateway_spiffe_id: String,
    #[serde(default)]
    region: String,
}

impl From<&PeerInfo> for WirePeerInfo {
    fn from(p: &PeerInfo) -> Self {
        WirePeerInfo {
            cluster: p.cluster.clone(),
            trust_domain: p.trust_domain.clone(),
            bundle_json: p.bundle_json.clone(),
            bundle_endpoint: p.bundle_endpoint.clone(),
            controller_address: p.controller_address.clone(),
            gateway_addresses: p.gateway_addresses.clone(),
            controller_spiffe_id: p.controller_spiffe_id.clone(),
            gateway_spiffe_id: p.gateway_spiffe_id.clone(),
            region: p.region.clone(),
        }
    }
}

impl From<WirePeerInfo> for PeerInfo {
    fn from(p: WirePeerInfo) -> Self {
        PeerInfo {
            cluster: p.cluster,
            trust_domain: p.trust_domain,
            bundle_json: p.bundle_json,
            bundle_endpoint: p.bundle_endpoint,
            controller_address: p.controller_address,
            gateway_addresses: p.gateway_addresses,
            controller_spiffe_id: p.controller_spiffe_id,
            gateway_spiffe_id: p.gateway_spiffe_id,
            region: p.region,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> PeerInfo {
        PeerInfo {
            cluster: "cluster-a".into(),
            trust_domain: "cluster-a.mesh".into(),
            bundle_json: "{\"keys\":[]}".into(),
            bundle_endpoint: "https://127.0.0.1:1/".into(),
            controller_address: "127.0.0.1:2".into(),
            gateway_addresses: vec!["127.0.0.1:3".into()],
            controller_spiffe_id: "spiffe://cluster-a.mesh/ns/isthmus-system/sa/controller".into(),
            gateway_spiffe_id: String::new(),
            region: "eu".into(),
        }
    }

    #[test]
    fn round_trips_and_hides_nothing_it_needs() {
        let expires = OffsetDateTime::from_unix_timestamp(2_000_000_000).unwrap();
        let token = PeeringToken::generate(issuer(), expires).unwrap();
        assert_eq!(token.id.len(), 2 * ID_BYTES);
        assert_eq!(URL_SAFE_NO_PAD.decode(&token.secret).unwrap().len(), 32);
        let wire = token.encode();
        assert!(!wire.contains('=') && !wire.contains('+') && !wire.contains('/'));
        assert_eq!(PeeringToken::decode(&format!(" {wire}\n")).unwrap(), token);
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(&wire).unwrap()).unwrap();
        assert!(
            json.contains("\"trustDomain\":\"cluster-a.mesh\""),
            "{json}"
        );
        assert!(
            json.contains("\"expiresAt\":\"2033-05-18T03:33:20Z\""),
            "{json}"
        );
        assert_ne!(
            PeeringToken::generate(issuer(), expires).unwrap().secret,
            token.secret
        );
    }

    #[test]
    fn decode_errors_name_what_is_wrong() {
        let err = |s: &str| PeeringToken::decode(s).unwrap_err().to_string();
        assert!(err("not a token!").contains("not base64url"));
        let enc = |j: &str| URL_SAFE_NO_PAD.encode(j);
        assert!(err(&enc("{\"v\":1}")).contains("missing field `id`"));
        let mut doc = serde_json::json!({
            "v": 2, "id": "x", "secret": "s", "expiresAt": "2030-01-01T00:00:00Z",
            "issuer": {"cluster":"a","trustDomain":"a.mesh","bundleJson":"{}",
                        "controllerAddress":"h:1","controllerSpiffeId":"spiffe://a.mesh/c"}
        });
        assert!(err(&enc(&doc.to_string())).contains("version 2"));
        doc["v"] = 1.into();
        doc["expiresAt"] = "tomorrow".into();
        assert!(err(&enc(&doc.to_string())).contains("expiresAt"));
        doc["expiresAt"] = "2030-01-01T00:00:00Z".into();
        doc["issuer"]["trustDomain"] = "".into();
        assert!(err(&enc(&doc.to_string())).contains("issuer.trustDomain: is empty"));
    }

    #[test]
    fn secret_hash_is_sha256_hex() {
        assert_eq!(
            secret_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

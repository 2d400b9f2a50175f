//! Join tokens: a workload's first attestation in universal mode.
//!
//! A token is `<id>.<secret>` (16 hex digits, then 32 random bytes in
//! base64url). The catalog keeps only the SHA-256 of the secret, the
//! namespace and service account the token is for, and its expiry. A token
//! may be used for many `SignSvid` calls until it expires, each only for
//! `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::Catalog;

/// A join token as stored (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// Token id (16 hex digits).
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// The namespace the token attests.
    pub namespace: String,
    /// The service account the token attests.
    pub service_account: String,
    /// Expiry, Unix ms.
    pub expires_ms: u64,
}

/// Why a presented join token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `<id>.<secret>`.
    #[error("malformed join token")]
    Malformed,
    /// No such id, or the secret does not match.
    #[error("unknown join token")]
    Unknown,
    /// Past its expiry.
    #[error("join token {id} expired")]
    Expired {
        /// Token id.
        id: String,
    },
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// A new token for `namespace`/`service_account`, valid until `expires_ms`:
/// the string to hand out and the record to store.
///
/// # Errors
/// The system RNG failed.
pub fn new_join_token(
    namespace: &str,
    service_account: &str,
    expires_ms: u64,
) -> Result<(String, JoinTokenRecord), RandomError> {
    let id = hex(&random::<8>()?);
    let secret = URL_SAFE_NO_PAD.encode(random::<32>()?);
    let record = JoinTokenRecord {
        id: id.clone(),
        secret_sha256: sha256_hex(secret.as_bytes()),
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        expires_ms,
    };
    Ok((format!("{id}.{secret}"), record))
}

/// `n` random bytes.
///
/// # Errors
/// The system RNG failed.
pub fn random<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| RandomError)?;
    Ok(buf)
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// Compares without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Catalog {
    /// Checks a presented join token at `now_ms` and returns its record.
    ///
    /// # Errors
    /// [`TokenError`].
    pub fn check_join_token(
        &self,
        token: &str,
        now_ms: u64,
    ) -> Result<&JoinTokenRecord, TokenError> {
        let (id, secret) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let record = self.join_tokens.get(id).ok_or(TokenError::Unknown)?;
        let presented = sha256_hex(secret.as_bytes());
        if !constant_time_eq(presented.as_bytes(), record.secret_sha256.as_bytes()) {
            return Err(TokenError::Unknown);
        }
        if now_ms >= record.expires_ms {
            return Err(TokenError::Expired { id: id.to_owned() });
        }
        Ok(record)
    }
}

/// How long an expired join token is kept (so a late caller hears
/// "expired", not "unknown") before `ExpireLeases` drops it, ms.
pub const EXPIRED_TOKEN_GRACE_MS: u64 = 3_600_000;

/// Whether `ExpireLeases` at `now_ms` drops this token.
pub fn droppable(t: &JoinTokenRecord, now_ms: u64) -> bool {
    t.expires_ms.saturating_add(EXPIRED_TOKEN_GRACE_MS) <= now_ms
}

pub(super) fn expire(catalog: &mut Catalog, now_ms: u64) {
    catalog.join_tokens.retain(|_, t| !droppable(t, now_ms));
}

//! The peering part of the catalog state machine: the exact rules of the
//! peering [`Command`]s, as one deterministic function CORE calls from
//! `Catalog::apply` (and the peering tests call from a test state machine).
//!
//! Rules (time travels inside the command, so replaying the log gives the
//! same answers on every node):
//! - `CreatePeeringToken`: stores the token (replacing one with the same id,
//!   which only a retried proposal can produce: ids are 128 random bits).
//! - `RedeemPeeringToken`: refused with [`UNKNOWN_TOKEN`] when no token has
//!   that id, [`TOKEN_USED`] when it was redeemed before, [`TOKEN_EXPIRED`]
//!   when `now_ms >= expires_ms`, [`BAD_SECRET`] when the secret's SHA-256
//!   differs (compared in constant time); otherwise the token is marked
//!   redeemed by `by` and the answer is [`Response::TokenRedeemed`]. The
//!   checks run in that order, so a used token stays "used" after expiry.
//! - `UpsertPeer`: creates or replaces the peer record whole.
//! - `UpdatePeerBundle`: refused with [`UNKNOWN_PEER`] for an unknown peer
//!   and with [`OLDER_BUNDLE`] when `sequence` is lower than the held one
//!   (a bundle never goes back, SPIFFE Trust Domain and Bundle §4.1.1);
//!   otherwise replaces the bundle, its sequence and `bundle_refreshed_ms`.
//! - `UpdatePeerExports`: refused with [`UNKNOWN_PEER`] for an unknown peer;
//!   otherwise replaces the exports.
//! - `RemovePeer`: removes the peer; refused with [`UNKNOWN_PEER`] when
//!   there is none (removal is idempotent for callers: they may ignore it).

use std::collections::BTreeMap;

use crate::catalog::{Command, PeerRecord, PeeringTokenRecord, Response};

/// Refusal reason: no token with that id.
pub const UNKNOWN_TOKEN: &str = "unknown peering token";
/// Refusal reason: the token was redeemed before (single use).
pub const TOKEN_USED: &str = "peering token already used";
/// Refusal reason: the token's expiry has passed.
pub const TOKEN_EXPIRED: &str = "peering token expired";
/// Refusal reason: the presented secret does not match.
pub const BAD_SECRET: &str = "peering token secret does not match";
/// Refusal reason: no peer with that cluster name.
pub const UNKNOWN_PEER: &str = "unknown peer";
/// Refusal reason: a bundle update with a lower `spiffe_sequence`.
pub const OLDER_BUNDLE: &str = "bundle sequence is older than the one held";

/// Applies one peering command to the catalog's peering maps. Commands that
/// are not peering commands answer [`Response::Ok`] and change nothing (the
/// caller dispatches only peering commands here).
pub fn apply_peering(
    peers: &mut BTreeMap<String, PeerRecord>,
    tokens: &mut BTreeMap<String, PeeringTokenRecord>,
    command: &Command,
) -> Response {
    match command {
        Command::CreatePeeringToken(record) => {
            tokens.insert(record.id.clone(), record.clone());
            Response::Ok
        }
        Command::RedeemPeeringToken {
            id,
            secret_sha256,
            by,
            now_ms,
        } => {
            let Some(token) = tokens.get_mut(id) else {
                return refused(UNKNOWN_TOKEN);
            };
            if token.redeemed_by.is_some() {
                return refused(TOKEN_USED);
            }
            if *now_ms >= token.expires_ms {
                return refused(TOKEN_EXPIRED);
            }
            if !constant_time_eq(
                token.secret_sha256.as_bytes(),
                secret_sha256.to_ascii_lowercase().as_bytes(),
            ) {
                return refused(BAD_SECRET);
            }
            token.redeemed_by = Some(by.clone());
            Response::TokenRedeemed
        }
        Command::UpsertPeer(record) => {
            peers.insert(record.cluster.clone(), record.clone());
            Response::Ok
        }
        Command::UpdatePeerBundle {
            cluster,
            bundle_json,
            sequence,
            now_ms,
        } => {
            let Some(peer) = peers.get_mut(cluster) else {
                return refused(UNKNOWN_PEER);
            };
            if *sequence < peer.bundle_sequence {
                return refused(OLDER_BUNDLE);
            }
            peer.bundle_json.clone_from(bundle_json);
            peer.bundle_sequence = *sequence;
            peer.bundle_refreshed_ms = *now_ms;
            Response::Ok
        }
        Command::UpdatePeerExports { cluster, exports } => {
            let Some(peer) = peers.get_mut(cluster) else {
                return refused(UNKNOWN_PEER);
            };
            peer.exports.clone_from(exports);
            Response::Ok
        }
        Command::RemovePeer { cluster } => match peers.remove(cluster) {
            Some(_) => Response::Ok,
            None => refused(UNKNOWN_PEER),
        },
        _ => Response::Ok,
    }
}

fn refused(reason: &str) -> Response {
    Response::Refused(reason.to_owned())
}

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, expires_ms: u64) -> PeeringTokenRecord {
        PeeringTokenRecord {
            id: id.into(),
            secret_sha256: "ab".repeat(32),
            expires_ms,
            redeemed_by: None,
        }
    }

    fn redeem(id: &str, hash: &str, now_ms: u64) -> Command {
        Command::RedeemPeeringToken {
            id: id.into(),
            secret_sha256: hash.into(),
            by: "b".into(),
            now_ms,
        }
    }

    fn peer(cluster: &str, sequence: u64) -> PeerRecord {
        PeerRecord {
            cluster: cluster.into(),
            trust_domain: format!("{cluster}.mesh"),
            bundle_json: "{}".into(),
            bundle_sequence: sequence,
            bundle_refreshed_ms: 0,
            bundle_endpoint: String::new(),
            controller_address: String::new(),
            controller_spiffe_id: String::new(),
            gateway_addresses: vec![],
            gateway_spiffe_id: String::new(),
            region: String::new(),
            exports: vec![],
            linked_ms: 0,
        }
    }

    #[test]
    fn tokens_are_single_use_expire_and_check_the_hash() {
        let (mut p, mut t) = (BTreeMap::new(), BTreeMap::new());
        let good = "ab".repeat(32);
        apply_peering(
            &mut p,
            &mut t,
            &Command::CreatePeeringToken(token("t1", 1000)),
        );
        assert_eq!(
            apply_peering(&mut p, &mut t, &redeem("nope", &good, 1)),
            Response::Refused(UNKNOWN_TOKEN.into())
        );
        assert_eq!(
            apply_peering(&mut p, &mut t, &redeem("t1", &"cd".repeat(32), 1)),
            Response::Refused(BAD_SECRET.into())
        );
        assert_eq!(
            apply_peering(&mut p, &mut t, &redeem("t1", &good, 1000)),
            Response::Refused(TOKEN_EXPIRED.into())
        );
        assert_eq!(
            apply_peering(&mut p, &mut t, &redeem("t1", &good.to_uppercase(), 999)),
            Response::TokenRedeemed
        );
        assert_eq!(t["t1"].redeemed_by.as_deref(), Some("b"));
        assert_eq!(
            apply_peering(&mut p, &mut t, &redeem("t1", &good, 2)),
            Response::Refused(TOKEN_USED.into())
        );
        assert_eq!(
            apply_peering(&mut p, &mut t, &redeem("t1", &good, 5000)),
            Response::Refused(TOKEN_USED.into())
        );
    }

    #[test]
    fn peers_upsert_bundle_only_forward_exports_remove() {
        let (mut p, mut t) = (BTreeMap::new(), BTreeMap::new());
        let bundle = |sequence| Command::UpdatePeerBundle {
            cluster: "b".into(),
            bundle_json: format!("{{\"seq\":{sequence}}}"),
            sequence,
            now_ms: 7,
        };
        assert_eq!(
            apply_peering(&mut p, &mut t, &bundle(3)),
            Response::Refused(UNKNOWN_PEER.into())
        );
        let mut first = peer("b", 2);
        first.exports = vec![1, 2];
        apply_peering(&mut p, &mut t, &Command::UpsertPeer(first));
        apply_peering(&mut p, &mut t, &Command::UpsertPeer(peer("b", 2)));
        assert!(
            p["b"].exports.is_empty(),
            "upsert replaces the whole record"
        );
        assert_eq!(
            apply_peering(&mut p, &mut t, &bundle(1)),
            Response::Refused(OLDER_BUNDLE.into())
        );
        assert_eq!(apply_peering(&mut p, &mut t, &bundle(2)), Response::Ok);
        assert_eq!(p["b"].bundle_refreshed_ms, 7);
        assert_eq!(apply_peering(&mut p, &mut t, &bundle(5)), Response::Ok);
        assert_eq!(
            (p["b"].bundle_sequence, p["b"].bundle_json.as_str()),
            (5, "{\"seq\":5}")
        );
        let exports = Command::UpdatePeerExports {
            cluster: "b".into(),
            exports: vec![9],
        };
        assert_eq!(apply_peering(&mut p, &mut t, &exports), Response::Ok);
        assert_eq!(p["b"].exports, vec![9]);
        let remove = Command::RemovePeer {
            cluster: "b".into(),
        };
        assert_eq!(apply_peering(&mut p, &mut t, &remove), Response::Ok);
        assert!(p.is_empty());
        assert_eq!(
            apply_peering(&mut p, &mut t, &remove),
            Response::Refused(UNKNOWN_PEER.into())
        );
    }
}

//! The state changes of the peering commands. PEERING dispatch point: the
//! peering module (`crate::peering`) may replace [`apply`] with its own
//! rules; `Catalog::apply` calls only this function for them.
//!
//! - `CreatePeeringToken`: stores the token (replacing one with its id).
//! - `RedeemPeeringToken`: `unknown token` when the id is absent or the
//!   secret's hash differs; `token already used` once redeemed; `token
//!   expired` at or after `expires_ms`; otherwise marks it redeemed by the
//!   caller and answers `TokenRedeemed`.
//! - `UpsertPeer`: creates or replaces the peer.
//! - `UpdatePeerBundle` / `UpdatePeerExports`: `unknown peer` when absent.
//! - `RemovePeer`: `unknown peer` when absent; imports derived from it
//!   disappear with it.

use super::{Catalog, Command, Response};

pub(super) fn apply(catalog: &mut Catalog, command: &Command) -> Response {
    match command {
        Command::CreatePeeringToken(record) => {
            catalog
                .peering_tokens
                .insert(record.id.clone(), record.clone());
            Response::Ok
        }
        Command::RedeemPeeringToken {
            id,
            secret_sha256,
            by,
            now_ms,
        } => match catalog.peering_tokens.get_mut(id) {
            Some(t) if t.secret_sha256 != *secret_sha256 => refused("unknown token"),
            None => refused("unknown token"),
            Some(t) if t.redeemed_by.is_some() => refused("token already used"),
            Some(t) if *now_ms >= t.expires_ms => refused("token expired"),
            Some(t) => {
                t.redeemed_by = Some(by.clone());
                Response::TokenRedeemed
            }
        },
        Command::UpsertPeer(peer) => {
            catalog.peers.insert(peer.cluster.clone(), peer.clone());
            Response::Ok
        }
        Command::UpdatePeerBundle {
            cluster,
            bundle_json,
            sequence,
            now_ms,
        } => match catalog.peers.get_mut(cluster) {
            Some(p) => {
                p.bundle_json.clone_from(bundle_json);
                p.bundle_sequence = *sequence;
                p.bundle_refreshed_ms = *now_ms;
                Response::Ok
            }
            None => refused("unknown peer"),
        },
        Command::UpdatePeerExports { cluster, exports } => match catalog.peers.get_mut(cluster) {
            Some(p) => {
                p.exports.clone_from(exports);
                Response::Ok
            }
            None => refused("unknown peer"),
        },
        Command::RemovePeer { cluster } => match catalog.peers.remove(cluster) {
            Some(_) => Response::Ok,
            None => refused("unknown peer"),
        },
        _ => refused("not a peering command"),
    }
}

fn refused(reason: &str) -> Response {
    Response::Refused(reason.to_owned())
}

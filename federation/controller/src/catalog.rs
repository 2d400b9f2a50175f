//! The catalog: the controller's replicated state machine.
//!
//! SKELETON: the peering-facing shapes (`PeerRecord`, the peering commands)
//! are the contract; the core helper owns everything else here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::StateMachine;

/// A linked peer cluster, as the peering code keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Peer cluster name.
    pub cluster: String,
    /// Its trust domain.
    pub trust_domain: String,
    /// The bundle we hold for it, SPIFFE bundle JSON.
    pub bundle_json: String,
    /// Its bundle's `spiffe_sequence` (0 when absent).
    pub bundle_sequence: u64,
    /// When we last refreshed its bundle, Unix ms.
    pub bundle_refreshed_ms: u64,
    /// Its bundle endpoint URL.
    pub bundle_endpoint: String,
    /// Its controller's gRPC address, `host:port`.
    pub controller_address: String,
    /// Its controller's SPIFFE ID.
    pub controller_spiffe_id: String,
    /// Its gateways, `host:port`.
    pub gateway_addresses: Vec<String>,
    /// Its gateways' SPIFFE ID.
    pub gateway_spiffe_id: String,
    /// Its region (may be empty).
    pub region: String,
    /// What it exports to us, as last streamed (prost-encoded
    /// `mesh_api::peering::ExportSet`, kept opaque here).
    pub exports: Vec<u8>,
    /// When the link was made, Unix ms.
    pub linked_ms: u64,
}

/// A peering token we issued (only a hash of its secret is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeeringTokenRecord {
    /// Token id.
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// Expiry, Unix ms.
    pub expires_ms: u64,
    /// Set once redeemed (single use).
    pub redeemed_by: Option<String>,
}

/// Commands of the catalog. Times are in the command (the proposer's clock),
/// so `apply` is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store a new peering token.
    CreatePeeringToken(PeeringTokenRecord),
    /// Mark a token used, if it exists, is unused and `now_ms` is before its
    /// expiry; answers [`Response::TokenRedeemed`] or [`Response::Refused`].
    RedeemPeeringToken {
        /// Token id.
        id: String,
        /// SHA-256 of the presented secret, hex.
        secret_sha256: String,
        /// The redeeming cluster.
        by: String,
        /// Now, Unix ms.
        now_ms: u64,
    },
    /// Create or replace a peer (keeps nothing of an older record).
    UpsertPeer(PeerRecord),
    /// A refreshed bundle for a peer.
    UpdatePeerBundle {
        /// Peer cluster.
        cluster: String,
        /// The bundle JSON.
        bundle_json: String,
        /// Its sequence.
        sequence: u64,
        /// Now, Unix ms.
        now_ms: u64,
    },
    /// What a peer now exports to us (prost-encoded `ExportSet`).
    UpdatePeerExports {
        /// Peer cluster.
        cluster: String,
        /// prost-encoded `mesh_api::peering::ExportSet`.
        exports: Vec<u8>,
    },
    /// Remove a peer and everything imported from it.
    RemovePeer {
        /// Peer cluster.
        cluster: String,
    },
}

/// Answers of [`Command`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Done.
    Ok,
    /// A peering token was valid and is now used.
    TokenRedeemed,
    /// Refused, with the reason (e.g. "token expired", "token already used",
    /// "unknown token", "unknown peer").
    Refused(String),
}

/// The catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Bumps on every applied command.
    pub revision: u64,
    /// Linked peers by cluster name.
    pub peers: BTreeMap<String, PeerRecord>,
    /// Peering tokens by id.
    pub peering_tokens: BTreeMap<String, PeeringTokenRecord>,
}

impl StateMachine for Catalog {
    type Command = Command;
    type Response = Response;

    fn apply(&mut self, command: &Command) -> Response {
        self.revision += 1;
        let _ = command;
        Response::Ok
    }
}

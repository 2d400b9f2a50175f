//! The catalog: the controller's replicated state machine
//! (docs/reference/controller.md).
//!
//! What it holds: the resources operators apply (`ServiceExport`,
//! `FailoverPolicy`, `TrafficPolicy`, `Workload`) with server-set metadata, workloads
//! registered with a lease, the CA material and its rotation state, join
//! tokens (hashes only), and the linked peers with what they export.
//! `ServiceImport`s and the status of `ServiceExport`s are *derived* on read
//! ([`Catalog::service_imports`], [`Catalog::list`]), never stored.
//!
//! [`Catalog::apply`] is deterministic: times and ids travel inside the
//! [`Command`]s (the proposer's clock), so every Raft node computes the same
//! state. Views that need "now" (lease liveness, token expiry) take it as an
//! argument.
//!
//! Modules: [`resources`] (documents, all-or-nothing apply), [`imports`] (derived imports
//! and conditions), [`workloads`] (static and leased endpoints), [`ca`] (CA
//! material and rotation), [`tokens`] (join tokens), [`model`]
//! ([`xds_model`]). The peering commands' rules are
//! `crate::peering::apply_peering`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::StateMachine;

pub mod ca;
pub mod imports;
pub mod model;
pub mod resources;
pub mod tokens;
mod views;
pub mod workloads;

pub use ca::{CaMaterial, CaRotation, CaState};
pub use model::{export_set, xds_model};
pub use resources::{ApplyAction, ApplyResult, ResourceKind, StoredResource};
pub use tokens::JoinTokenRecord;
pub use workloads::{Endpoint, LeasedWorkload};

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
    /// Create or update resources, all or nothing. Each document is a JSON
    /// object as `mesh_resources::parse_json` accepts it; `ServiceImport`
    /// and `MeshLink` are refused (derived / read-only). Answers
    /// [`Response::Applied`] or [`Response::Refused`] (nothing changed).
    ApplyResources {
        /// The documents, in order.
        documents: Vec<serde_json::Value>,
        /// Now, Unix ms: `creationTimestamp` of new resources.
        now_ms: u64,
    },
    /// Delete one resource; answers [`Response::Ok`] or
    /// [`Response::NotFound`].
    DeleteResource {
        /// Its kind.
        kind: ResourceKind,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Register (or renew) a leased workload. Refused when a static
    /// `Workload` of that name exists or the name is held by another
    /// service account.
    RegisterWorkload(LeasedWorkload),
    /// Remove a leased workload; refused when it belongs to another service
    /// account; [`Response::NotFound`] when absent.
    DeregisterWorkload {
        /// Namespace.
        namespace: String,
        /// Workload name.
        name: String,
        /// The caller's service account.
        service_account: String,
    },
    /// Drop leases that expired at or before `now_ms`, and join tokens
    /// expired for longer than [`tokens::EXPIRED_TOKEN_GRACE_MS`]. The
    /// leader proposes it periodically.
    ExpireLeases {
        /// Now, Unix ms.
        now_ms: u64,
    },
    /// Install the first CA; refused when one exists (the first proposal
    /// wins, so two would-be leaders cannot both install one).
    InitCa(CaMaterial),
    /// Publish a new root next to the active one (it signs from
    /// `switch_at_ms`, the old root leaves the bundle at `drop_at_ms`);
    /// refused while a rotation is in progress. Answers
    /// [`Response::Sequence`].
    StartCaRotation {
        /// The new root.
        next: CaMaterial,
        /// When the new root starts signing, Unix ms.
        switch_at_ms: u64,
        /// When the old root leaves the bundle, Unix ms.
        drop_at_ms: u64,
    },
    /// Moves a rotation along: switch signing at `switch_at_ms`, drop the
    /// old root at `drop_at_ms`. No-op otherwise.
    AdvanceCaRotation {
        /// Now, Unix ms.
        now_ms: u64,
    },
    /// Store a join token (its secret's hash).
    CreateJoinToken(JoinTokenRecord),
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
    /// What [`Command::ApplyResources`] did to each document.
    Applied(Vec<ApplyResult>),
    /// The named thing does not exist (`serviceexports default/x`).
    NotFound(String),
    /// The CA bundle sequence after a CA command.
    Sequence(u64),
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
    /// Stored resources by [`resources::key`] (`<Kind>/<ns>/<name>`).
    #[serde(default)]
    pub resources: BTreeMap<String, StoredResource>,
    /// Leased workloads by `<ns>/<name>`.
    #[serde(default)]
    pub leased: BTreeMap<String, LeasedWorkload>,
    /// The CA, once initialized.
    #[serde(default)]
    pub ca: Option<CaState>,
    /// Join tokens by id.
    #[serde(default)]
    pub join_tokens: BTreeMap<String, JoinTokenRecord>,
    /// Counter behind resource uids.
    #[serde(default)]
    pub next_uid: u64,
}

impl StateMachine for Catalog {
    type Command = Command;
    type Response = Response;

    fn apply(&mut self, command: &Command) -> Response {
        self.revision += 1;
        match command {
            // PEERING dispatch point: the peering module's rules
            // (peering/state.rs).
            Command::CreatePeeringToken(_)
            | Command::RedeemPeeringToken { .. }
            | Command::UpsertPeer(_)
            | Command::UpdatePeerBundle { .. }
            | Command::UpdatePeerExports { .. }
            | Command::RemovePeer { .. } => {
                crate::peering::apply_peering(&mut self.peers, &mut self.peering_tokens, command)
            }
            Command::ApplyResources { documents, now_ms } => {
                resources::apply_documents(self, documents, *now_ms)
            }
            Command::DeleteResource {
                kind,
                namespace,
                name,
            } => resources::delete(self, *kind, namespace, name),
            Command::RegisterWorkload(w) => workloads::register(self, w),
            Command::DeregisterWorkload {
                namespace,
                name,
                service_account,
            } => workloads::deregister(self, namespace, name, service_account),
            Command::ExpireLeases { now_ms } => {
                workloads::expire(self, *now_ms);
                tokens::expire(self, *now_ms);
                Response::Ok
            }
            Command::InitCa(material) => ca::init(self, material),
            Command::StartCaRotation {
                next,
                switch_at_ms,
                drop_at_ms,
            } => ca::start_rotation(self, next, *switch_at_ms, *drop_at_ms),
            Command::AdvanceCaRotation { now_ms } => ca::advance(self, *now_ms),
            Command::CreateJoinToken(record) => {
                self.join_tokens.insert(record.id.clone(), record.clone());
                Response::Ok
            }
        }
    }
}

/// Unix ms of a [`std::time::SystemTime`] (0 before the epoch).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 (UTC, seconds) of Unix ms.
pub fn rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

//! Peering: linking this cluster with other clusters and keeping each link
//! fresh (docs/reference/peering.md).
//!
//! What this module owns:
//! - the peering token ([`token`]): single use, expiring, carrying the
//!   issuer's [`PeerInfo`](mesh_api::peering::PeerInfo) and bundle so the
//!   redeemer can authenticate the issuer's controller without any prior
//!   trust;
//! - the operator actions the admin API calls: [`create_token`],
//!   [`redeem`], [`unlink`] (errors carry their HTTP status:
//!   [`PeeringError::http_status`]);
//! - the `isthmus.peering.v1.Peering` gRPC service ([`PeeringService`]);
//! - the per-peer loops ([`run_peer_loops`]): bundle refresh over the SPIFFE
//!   bundle endpoint and the `WatchExports` stream from each peer;
//! - the peering rules of the catalog state machine ([`apply_peering`]),
//!   which `Catalog::apply` calls.
//!
//! What it does not own: the gRPC listener (CORE's `grpc.rs` inserts the
//! caller's [`PeerIdentity`](crate::grpc::PeerIdentity)), what a service
//! export contains ([`ExportSource`], implemented by CORE over the catalog's
//! resources), and the store.
//!
//! Driving it: build one [`PeeringContext`] per controller process, serve
//! [`PeeringService::into_server`] on the gRPC listener, spawn
//! [`run_peer_loops`], and call the three actions from the admin API.

mod client;
mod context;
mod loops;
mod service;
pub mod state;
mod tls;
pub mod token;

pub use client::{create_token, redeem, unlink, MAX_TOKEN_TTL};
pub use context::{
    decode_exports, link_conflict, peer_record, LocalPeer, PeerInfoError, PeeringContext,
    PeeringState, PeeringTiming,
};
pub use loops::run_peer_loops;
pub use service::{export_set_for, ExportSource, NoExports, PeeringService};
pub use state::apply_peering;
pub use token::{PeeringToken, TokenError};

use crate::store::WriteError;

/// Why a peering action failed. [`PeeringError::http_status`] is the status
/// the admin API answers with.
#[derive(Debug, thiserror::Error)]
pub enum PeeringError {
    /// The token cannot be read (400).
    #[error("peering token is malformed")]
    Malformed(#[source] TokenError),
    /// The issuer described in the token is unusable (400).
    #[error("peering token issuer is invalid")]
    InvalidIssuer(#[source] PeerInfoError),
    /// The token was issued by this cluster or its trust domain (400).
    #[error("peering token was issued by this cluster ({0}); redeem it on the other cluster")]
    SelfLink(String),
    /// A token TTL out of range (400).
    #[error("token ttl {0:?} is out of range (1 s to {MAX_TOKEN_TTL:?})")]
    InvalidTtl(std::time::Duration),
    /// The issuer's cluster name or trust domain is already linked under
    /// another trust domain or name (409).
    #[error("link conflict: {0}")]
    Conflict(String),
    /// The token was already redeemed (409).
    #[error("peering token already used")]
    Reused,
    /// The token has expired: `detail` says whose clock decided (410).
    #[error("peering token expired: {detail}")]
    Expired {
        /// E.g. "at 2026-01-01T00:00:00Z (local clock)" or the issuer's message.
        detail: String,
    },
    /// The issuer's controller could not be reached or authenticated, or did
    /// not answer in time (502).
    #[error("issuer controller {address} unreachable: {reason}")]
    IssuerUnreachable {
        /// `host:port` dialled.
        address: String,
        /// The transport or TLS error chain.
        reason: String,
    },
    /// The issuer refused the token for another reason: unknown token,
    /// secret mismatch, our info rejected (403).
    #[error("issuer refused the peering token: {0}")]
    IssuerRefused(String),
    /// The issuer answered something unusable (502).
    #[error("issuer answered an invalid redeem response")]
    BadIssuerAnswer(#[source] PeerInfoError),
    /// No linked peer has this cluster name (404).
    #[error("unknown peer {0:?}")]
    UnknownPeer(String),
    /// The store could not commit (503).
    #[error("store write failed")]
    Store(#[source] WriteError),
    /// Building a TLS configuration failed (500).
    #[error("TLS configuration failed")]
    Tls(#[source] rustls::Error),
    /// Generating a token failed (500).
    #[error("generating a peering token failed")]
    Generate(#[source] TokenError),
}

impl PeeringError {
    /// The HTTP status the admin API answers for this error: 400 malformed
    /// token or input, 403 refused by the issuer, 404 unknown peer, 409
    /// token reused or link conflict, 410 token expired, 502 issuer unreachable or invalid,
    /// 503 no Raft leader, 500 internal.
    pub fn http_status(&self) -> u16 {
        match self {
            PeeringError::Malformed(_)
            | PeeringError::InvalidIssuer(_)
            | PeeringError::SelfLink(_)
            | PeeringError::InvalidTtl(_) => 400,
            PeeringError::IssuerRefused(_) => 403,
            PeeringError::UnknownPeer(_) => 404,
            PeeringError::Reused | PeeringError::Conflict(_) => 409,
            PeeringError::Expired { .. } => 410,
            PeeringError::IssuerUnreachable { .. } | PeeringError::BadIssuerAnswer(_) => 502,
            PeeringError::Store(_) => 503,
            PeeringError::Tls(_) | PeeringError::Generate(_) => 500,
        }
    }
}

/// Renders an error with its whole source chain, `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_the_admin_api_contract() {
        assert_eq!(PeeringError::Reused.http_status(), 409);
        let expired = PeeringError::Expired { detail: "x".into() };
        assert_eq!(expired.http_status(), 410);
        assert_eq!(PeeringError::UnknownPeer("b".into()).http_status(), 404);
        let unreachable = PeeringError::IssuerUnreachable {
            address: "h:1".into(),
            reason: "refused".into(),
        };
        assert_eq!(unreachable.http_status(), 502);
        let malformed = PeeringError::Malformed(TokenError::Version(9));
        assert_eq!(malformed.http_status(), 400);
        assert_eq!(
            error_chain(&malformed),
            "peering token is malformed: peering token version 9 is not supported (expected 1)"
        );
    }
}

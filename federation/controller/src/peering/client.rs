//! The operator actions: issue a token, redeem a token, unlink a peer.

use std::time::Duration;

use mesh_api::peering::peering_client::PeeringClient;
use mesh_api::peering::{RedeemRequest, UnlinkRequest};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tonic::Code;
use trust_bundle::{BundleStore, SpiffeId};

use super::context::PeeringState;
use super::state::UNKNOWN_PEER;
use super::token::{secret_sha256, PeeringToken};
use super::{link_conflict, peer_record, tls, PeeringContext, PeeringError};
use crate::catalog::{Command, PeerRecord, PeeringTokenRecord, Response};

/// Longest token lifetime [`create_token`] accepts: 7 days.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Issues a single-use peering token valid for `ttl` (1 s to
/// [`MAX_TOKEN_TTL`]; expiry rounded up to the whole second) and stores its
/// hash (`CreatePeeringToken`). Returns the token's wire form and expiry
/// (`POST /v1/peering/tokens`).
///
/// # Errors
/// [`PeeringError::InvalidTtl`] (400), [`PeeringError::Store`] (503),
/// [`PeeringError::Generate`] (500).
pub async fn create_token<S: PeeringState>(
    ctx: &PeeringContext<S>,
    ttl: Duration,
) -> Result<(String, OffsetDateTime), PeeringError> {
    if ttl < Duration::from_secs(1) || ttl > MAX_TOKEN_TTL {
        return Err(PeeringError::InvalidTtl(ttl));
    }
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let expires_ms = ctx.now_ms().saturating_add(ttl_ms).div_ceil(1000) * 1000;
    let expires_at =
        OffsetDateTime::from_unix_timestamp(i64::try_from(expires_ms / 1000).unwrap_or(0))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let token = PeeringToken::generate(ctx.local.peer_info(), expires_at)
        .map_err(PeeringError::Generate)?;
    let record = PeeringTokenRecord {
        id: token.id.clone(),
        secret_sha256: secret_sha256(&token.secret),
        expires_ms,
        redeemed_by: None,
    };
    ctx.store
        .write(Command::CreatePeeringToken(record))
        .await
        .map_err(PeeringError::Store)?;
    tracing::info!(token_id = %token.id, expires_at = %expires_at.format(&Rfc3339).unwrap_or_default(), "peering token issued");
    Ok((token.encode(), expires_at))
}

/// Redeems a token issued by another cluster (`POST /v1/peering/redeem`):
/// decodes it, refuses it locally when expired by our clock, calls the
/// issuer's `Peering.Redeem` over TLS (no client certificate) verifying the
/// issuer controller's SPIFFE ID against the bundle in the token, stores
/// the issuer as a peer (`UpsertPeer`) and trusts its bundle from now on.
///
/// # Errors
/// [`PeeringError::Malformed`] / [`PeeringError::InvalidIssuer`] /
/// [`PeeringError::SelfLink`] (400), [`PeeringError::IssuerRefused`] (403),
/// [`PeeringError::Reused`] / [`PeeringError::Conflict`] (409), [`PeeringError::Expired`] (410),
/// [`PeeringError::IssuerUnreachable`] / [`PeeringError::BadIssuerAnswer`]
/// (502), [`PeeringError::Store`] (503).
pub async fn redeem<S: PeeringState>(
    ctx: &PeeringContext<S>,
    token: &str,
) -> Result<PeerRecord, PeeringError> {
    let token = PeeringToken::decode(token).map_err(PeeringError::Malformed)?;
    let now_ms = ctx.now_ms();
    let expires_ms =
        u64::try_from(token.expires_at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    if now_ms >= expires_ms {
        return Err(PeeringError::Expired {
            detail: format!(
                "at {} (local clock)",
                token.expires_at.format(&Rfc3339).unwrap_or_default()
            ),
        });
    }
    let (issuer_record, token_bundle, issuer_id) =
        peer_record(&token.issuer, now_ms).map_err(PeeringError::InvalidIssuer)?;
    if token.issuer.cluster == ctx.local.cluster
        || token_bundle.trust_domain() == &ctx.local.trust_domain
    {
        return Err(PeeringError::SelfLink(token.issuer.cluster));
    }
    let state = ctx.store.read().await.map_err(PeeringError::Store)?;
    if let Some(conflict) = link_conflict(&state.catalog().peers, &issuer_record) {
        return Err(PeeringError::Conflict(conflict));
    }
    drop(state);
    let address = token.issuer.controller_address.clone();
    let unreachable = |reason: String| PeeringError::IssuerUnreachable {
        address: address.clone(),
        reason,
    };
    // Trust only the token's bundle, and only the issuer's controller ID.
    let only_issuer = BundleStore::new();
    only_issuer.set(token_bundle);
    let config =
        tls::client_config(None, only_issuer, issuer_id.clone()).map_err(PeeringError::Tls)?;
    let channel = tls::connect(&address, config, ctx.timing.connect_timeout)
        .await
        .map_err(unreachable)?;
    let request = RedeemRequest {
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        redeemer: Some(ctx.local.peer_info()),
    };
    let answer = tokio::time::timeout(
        ctx.timing.rpc_timeout,
        PeeringClient::new(channel).redeem(request),
    )
    .await
    .map_err(|_| unreachable(format!("no answer within {:?}", ctx.timing.rpc_timeout)))?;
    let answer = match answer {
        Ok(a) => a.into_inner(),
        Err(status) => return Err(redeem_status(status, unreachable)),
    };
    let info = answer.issuer.unwrap_or_default();
    let (record, bundle, answered_id) =
        peer_record(&info, ctx.now_ms()).map_err(PeeringError::BadIssuerAnswer)?;
    if info.cluster != token.issuer.cluster || answered_id != issuer_id {
        return Err(PeeringError::BadIssuerAnswer(super::PeerInfoError {
            field: "cluster",
            reason: format!(
                "answered {} / {answered_id}, token names {} / {issuer_id}",
                info.cluster, token.issuer.cluster
            ),
        }));
    }
    ctx.store
        .write(Command::UpsertPeer(record.clone()))
        .await
        .map_err(PeeringError::Store)?;
    ctx.bundles.set(bundle);
    tracing::info!(peer = %record.cluster, trust_domain = %record.trust_domain, "linked with peer (redeemed its token)");
    Ok(record)
}

/// Maps the issuer's refusal onto our error (see the service's codes).
fn redeem_status(
    status: tonic::Status,
    unreachable: impl Fn(String) -> PeeringError,
) -> PeeringError {
    match status.code() {
        Code::AlreadyExists => PeeringError::Reused,
        Code::FailedPrecondition => PeeringError::Expired {
            detail: format!("the issuer says: {}", status.message()),
        },
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal => {
            unreachable(format!("{:?}: {}", status.code(), status.message()))
        }
        _ => PeeringError::IssuerRefused(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// Unlinks `cluster` (`DELETE /v1/peering/peers/{cluster}`): tells the peer
/// (`Peering.Unlink` over mTLS with our SVID; best effort, bounded by
/// `timing.unlink_timeout`, failures are logged), then removes it locally
/// (`RemovePeer`) and stops trusting its bundle.
///
/// # Errors
/// [`PeeringError::UnknownPeer`] (404), [`PeeringError::Store`] (503).
pub async fn unlink<S: PeeringState>(
    ctx: &PeeringContext<S>,
    cluster: &str,
) -> Result<(), PeeringError> {
    let state = ctx.store.read().await.map_err(PeeringError::Store)?;
    let Some(peer) = state.catalog().peers.get(cluster).cloned() else {
        return Err(PeeringError::UnknownPeer(cluster.to_owned()));
    };
    drop(state);
    match tokio::time::timeout(ctx.timing.unlink_timeout, tell_peer(ctx, &peer)).await {
        Ok(Ok(())) => tracing::info!(peer = cluster, "peer removed its side of the link"),
        Ok(Err(reason)) => {
            tracing::warn!(peer = cluster, %reason, "could not tell the peer to unlink; removing our side only")
        }
        Err(_) => {
            tracing::warn!(
                peer = cluster,
                "peer did not answer Unlink in time; removing our side only"
            )
        }
    }
    match ctx
        .store
        .write(Command::RemovePeer {
            cluster: cluster.to_owned(),
        })
        .await
        .map_err(PeeringError::Store)?
    {
        Response::Refused(reason) if reason == UNKNOWN_PEER => {
            return Err(PeeringError::UnknownPeer(cluster.to_owned()))
        }
        _ => {}
    }
    ctx.forget_bundle(&peer.trust_domain);
    Ok(())
}

async fn tell_peer<S: PeeringState>(
    ctx: &PeeringContext<S>,
    peer: &PeerRecord,
) -> Result<(), String> {
    let id = SpiffeId::parse(&peer.controller_spiffe_id).map_err(|e| e.to_string())?;
    let config = tls::client_config(Some(ctx.svid.clone()), ctx.bundles.clone(), id)
        .map_err(|e| e.to_string())?;
    let channel =
        tls::connect(&peer.controller_address, config, ctx.timing.connect_timeout).await?;
    PeeringClient::new(channel)
        .unlink(UnlinkRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

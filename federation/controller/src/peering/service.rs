//! The `isthmus.peering.v1.Peering` gRPC service.
//!
//! Caller identity comes from the [`PeerIdentity`] request extension the
//! TLS listener inserts. Status codes:
//!
//! | call | condition | code |
//! |---|---|---|
//! | Redeem | token unknown | `NOT_FOUND` |
//! | Redeem | secret mismatch | `PERMISSION_DENIED` |
//! | Redeem | token already used | `ALREADY_EXISTS` |
//! | Redeem | token expired (issuer's clock) | `FAILED_PRECONDITION` "peering token expired" |
//! | Redeem | redeemer info invalid, it is us, or its name or trust domain is linked under another trust domain or name | `INVALID_ARGUMENT` |
//! | WatchExports, Unlink | no client SVID | `UNAUTHENTICATED` |
//! | WatchExports, Unlink | SVID is no linked peer's controller | `PERMISSION_DENIED` |
//! | any | store cannot commit | `UNAVAILABLE` |

use std::pin::Pin;
use std::sync::Arc;

use mesh_api::peering::peering_server::{Peering, PeeringServer};
use mesh_api::peering::{
    ExportSet, RedeemRequest, RedeemResponse, UnlinkRequest, UnlinkResponse, WatchExportsRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Status};

use super::context::PeeringState;
use super::state::{BAD_SECRET, TOKEN_EXPIRED, TOKEN_USED, UNKNOWN_TOKEN};
use super::token::secret_sha256;
use super::{error_chain, link_conflict, peer_record, PeeringContext};
use crate::catalog::{Catalog, Command, PeerRecord, Response};
use crate::grpc::PeerIdentity;

/// What this cluster exports to one peer. CORE implements it over the
/// catalog's ServiceExports and workloads (per-locality healthy/total
/// counts, the workloads' SPIFFE IDs, the export's creationTimestamp); the
/// peering code adds the version and our gateway addresses
/// ([`export_set_for`]). Called on every catalog change for every open
/// `WatchExports` stream, so it should be cheap and pure.
pub trait ExportSource: Send + Sync {
    /// The services `catalog` exports to the peer cluster named `peer`.
    fn export_set(&self, catalog: &Catalog, peer: &str) -> ExportSet;
}

/// An [`ExportSource`] that exports nothing (until CORE's is wired in).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoExports;

impl ExportSource for NoExports {
    fn export_set(&self, _catalog: &Catalog, _peer: &str) -> ExportSet {
        ExportSet::default()
    }
}

/// The [`ExportSet`] we stream to `peer`: `source`'s services sorted by
/// namespace and name, `version` = the catalog revision, and our
/// `gateways` when the source named none.
pub fn export_set_for(
    source: &dyn ExportSource,
    catalog: &Catalog,
    peer: &str,
    gateways: &[String],
) -> ExportSet {
    let mut set = source.export_set(catalog, peer);
    set.services
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    if set.gateway_addresses.is_empty() {
        set.gateway_addresses = gateways.to_vec();
    }
    set.version = catalog.revision;
    set
}

/// The Peering service. Serve it with [`PeeringService::into_server`] on the
/// controller's TLS gRPC listener.
pub struct PeeringService<S: PeeringState = Catalog> {
    ctx: Arc<PeeringContext<S>>,
    exports: Arc<dyn ExportSource>,
}

impl<S: PeeringState> PeeringService<S> {
    /// A service answering from `ctx`, exporting what `exports` says.
    pub fn new(ctx: Arc<PeeringContext<S>>, exports: Arc<dyn ExportSource>) -> Self {
        PeeringService { ctx, exports }
    }

    /// The tonic server to add to the listener's router.
    pub fn into_server(self) -> PeeringServer<Self> {
        PeeringServer::new(self)
    }

    /// The linked peer whose controller the caller is.
    fn caller<T>(&self, request: &Request<T>) -> Result<PeerRecord, Status> {
        let Some(id) = request
            .extensions()
            .get::<PeerIdentity>()
            .and_then(|p| p.0.clone())
        else {
            return Err(Status::unauthenticated(
                "a client SVID of a linked peer's controller is required",
            ));
        };
        self.ctx
            .store
            .watch()
            .borrow()
            .catalog()
            .peers
            .values()
            .find(|p| p.controller_spiffe_id == id.as_str())
            .cloned()
            .ok_or_else(|| {
                Status::permission_denied(format!("{id} is not the controller of a linked peer"))
            })
    }
}

fn unavailable(e: &crate::store::WriteError) -> Status {
    Status::unavailable(error_chain(e))
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<ExportSet, Status>> + Send>>;

#[tonic::async_trait]
impl<S: PeeringState> Peering for PeeringService<S> {
    async fn redeem(
        &self,
        request: Request<RedeemRequest>,
    ) -> Result<tonic::Response<RedeemResponse>, Status> {
        let request = request.into_inner();
        let ctx = &self.ctx;
        let redeemer = request
            .redeemer
            .ok_or_else(|| Status::invalid_argument("redeemer: missing"))?;
        let now_ms = ctx.now_ms();
        let (record, bundle, _) = peer_record(&redeemer, now_ms)
            .map_err(|e| Status::invalid_argument(format!("redeemer.{e}")))?;
        if record.cluster == ctx.local.cluster || bundle.trust_domain() == &ctx.local.trust_domain {
            return Err(Status::invalid_argument(format!(
                "redeemer is this cluster ({}); a cluster cannot link with itself",
                record.cluster
            )));
        }
        if let Some(conflict) = link_conflict(&ctx.store.watch().borrow().catalog().peers, &record)
        {
            return Err(Status::invalid_argument(conflict));
        }
        let answer = ctx
            .store
            .write(Command::RedeemPeeringToken {
                id: request.token_id.clone(),
                secret_sha256: secret_sha256(&request.secret),
                by: record.cluster.clone(),
                now_ms,
            })
            .await
            .map_err(|e| unavailable(&e))?;
        match answer {
            Response::TokenRedeemed => {}
            Response::Refused(reason) => {
                tracing::info!(token_id = %request.token_id, redeemer = %record.cluster, %reason, "peering token refused");
                return Err(match reason.as_str() {
                    TOKEN_USED => Status::already_exists(reason),
                    TOKEN_EXPIRED => Status::failed_precondition(reason),
                    UNKNOWN_TOKEN => Status::not_found(reason),
                    BAD_SECRET => Status::permission_denied(reason),
                    _ => Status::failed_precondition(reason),
                });
            }
            _ => return Err(Status::internal("the catalog ignored the redeem command")),
        }
        ctx.store
            .write(Command::UpsertPeer(record.clone()))
            .await
            .map_err(|e| unavailable(&e))?;
        ctx.bundles.set(bundle);
        tracing::info!(peer = %record.cluster, trust_domain = %record.trust_domain, "linked with peer (it redeemed our token)");
        Ok(tonic::Response::new(RedeemResponse {
            issuer: Some(ctx.local.peer_info()),
        }))
    }

    type WatchExportsStream = ExportStream;

    async fn watch_exports(
        &self,
        request: Request<WatchExportsRequest>,
    ) -> Result<tonic::Response<ExportStream>, Status> {
        let peer = self.caller(&request)?;
        let (tx, rx) = mpsc::channel(4);
        let ctx = self.ctx.clone();
        let exports = self.exports.clone();
        tokio::spawn(async move {
            let mut catalog = ctx.store.watch();
            let mut last: Option<ExportSet> = None;
            loop {
                let state = catalog.borrow_and_update().clone();
                let still_linked = state
                    .catalog()
                    .peers
                    .get(&peer.cluster)
                    .is_some_and(|p| p.controller_spiffe_id == peer.controller_spiffe_id);
                if !still_linked {
                    let _ = tx
                        .send(Err(Status::permission_denied("the link was removed")))
                        .await;
                    return;
                }
                let set = export_set_for(
                    &*exports,
                    state.catalog(),
                    &peer.cluster,
                    &ctx.local.gateway_addresses,
                );
                let changed = last.as_ref().is_none_or(|l| {
                    l.services != set.services || l.gateway_addresses != set.gateway_addresses
                });
                if changed {
                    if tx.send(Ok(set.clone())).await.is_err() {
                        return;
                    }
                    last = Some(set);
                }
                tokio::select! {
                    changed = catalog.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn unlink(
        &self,
        request: Request<UnlinkRequest>,
    ) -> Result<tonic::Response<UnlinkResponse>, Status> {
        let peer = self.caller(&request)?;
        self.ctx
            .store
            .write(Command::RemovePeer {
                cluster: peer.cluster.clone(),
            })
            .await
            .map_err(|e| unavailable(&e))?;
        self.ctx.forget_bundle(&peer.trust_domain);
        tracing::info!(peer = %peer.cluster, "peer unlinked us");
        Ok(tonic::Response::new(UnlinkResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use mesh_api::peering::ExportedService;

    use super::*;

    struct Fixed(Vec<&'static str>);

    impl ExportSource for Fixed {
        fn export_set(&self, _catalog: &Catalog, peer: &str) -> ExportSet {
            ExportSet {
                services: self
                    .0
                    .iter()
                    .map(|n| ExportedService {
                        namespace: peer.into(),
                        name: (*n).into(),
                        ..ExportedService::default()
                    })
                    .collect(),
                ..ExportSet::default()
            }
        }
    }

    #[test]
    fn export_sets_are_sorted_versioned_and_name_our_gateways() {
        let catalog = Catalog {
            revision: 42,
            ..Catalog::default()
        };
        let gateways = vec!["127.0.0.1:15443".to_owned()];
        let set = export_set_for(&Fixed(vec!["web", "api"]), &catalog, "b", &gateways);
        let names: Vec<_> = set.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "web"]);
        assert_eq!(
            set.services[0].namespace, "b",
            "the peer name reaches the source"
        );
        assert_eq!(set.version, 42);
        assert_eq!(set.gateway_addresses, gateways);
        assert_eq!(
            export_set_for(&NoExports, &catalog, "b", &[]).services,
            vec![]
        );
    }
}

//! The production plug-ins of [`run::Hooks`](crate::run::Hooks): the
//! peering module (admin actions, Peering gRPC service, per-peer loops, our
//! exports from [`catalog::export_set`]) and the xDS server (ADS on the TLS
//! listener for our trust domain, and on the plaintext listener).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use mesh_api::peering::ExportSet;

use crate::admin::{ApiError, BoxFuture, PeeringApi};
use crate::catalog::{self, Catalog, PeerRecord};
use crate::config::Config;
use crate::peering::{self, ExportSource, LocalPeer, PeeringContext, PeeringError, PeeringService};
use crate::run::{Hooks, Runtime};
use crate::xds::XdsServer;

/// Hooks with peering and xDS wired.
pub fn production_hooks() -> Hooks {
    let ctx: Arc<OnceLock<Arc<PeeringContext>>> = Arc::new(OnceLock::new());
    let for_admin = ctx.clone();
    let for_grpc = ctx;
    Hooks {
        peering: Some(Arc::new(move |rt: &Runtime| {
            let ctx = for_admin.get_or_init(|| peering_context(rt)).clone();
            tokio::spawn(peering::run_peer_loops(ctx.clone(), rt.shutdown.clone()));
            Arc::new(PeeringActions(ctx)) as Arc<dyn PeeringApi>
        })),
        grpc_services: Some(Arc::new(move |rt: &Runtime, router| {
            let ctx = for_grpc.get_or_init(|| peering_context(rt)).clone();
            let exports = Arc::new(CatalogExports(rt.config.clone()));
            router
                .add_service(
                    XdsServer::new(rt.model.clone())
                        .require_trust_domain(rt.config.trust_domain.as_str())
                        .into_service(),
                )
                .add_service(PeeringService::new(ctx, exports).into_server())
        })),
        xds_plaintext: Some(Arc::new(|rt: &Runtime| {
            tonic::transport::Server::builder()
                .add_service(XdsServer::new(rt.model.clone()).into_service())
        })),
    }
}

fn peering_context(rt: &Runtime) -> Arc<PeeringContext> {
    let config = &rt.config;
    let mut local = LocalPeer::new(
        config.cluster.clone(),
        config.trust_domain.clone(),
        rt.own_bundle.clone(),
        config.bundle_endpoint_url.clone(),
        config.grpc_advertise.clone(),
    );
    local.region.clone_from(&config.region);
    local.gateway_addresses = config
        .gateways
        .iter()
        .map(|g| g.address.to_string())
        .collect();
    Arc::new(PeeringContext::new(
        local,
        rt.store.clone(),
        rt.svid.clone(),
        rt.bundles.clone(),
    ))
}

/// What we export to every peer: [`catalog::export_set`].
struct CatalogExports(Arc<Config>);

impl ExportSource for CatalogExports {
    fn export_set(&self, catalog: &Catalog, _peer: &str) -> ExportSet {
        catalog::export_set(catalog, &self.0)
    }
}

/// The admin API's peering endpoints over the peering module.
struct PeeringActions(Arc<PeeringContext>);

impl PeeringApi for PeeringActions {
    fn create_token(&self, ttl: Duration) -> BoxFuture<'_, Result<(String, SystemTime), ApiError>> {
        Box::pin(async move {
            let (token, expires) = peering::create_token(&self.0, ttl)
                .await
                .map_err(api_error)?;
            Ok((token, SystemTime::from(expires)))
        })
    }

    fn redeem(&self, token: String) -> BoxFuture<'_, Result<PeerRecord, ApiError>> {
        Box::pin(async move { peering::redeem(&self.0, &token).await.map_err(api_error) })
    }

    fn unlink(&self, cluster: String) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move { peering::unlink(&self.0, &cluster).await.map_err(api_error) })
    }
}

fn api_error(e: PeeringError) -> ApiError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ApiError::new(e.http_status(), message)
}

//! The tonic driver: one task per ADS stream feeds requests and model
//! changes into [`SotwStream`] / [`DeltaStream`] and sends what they return.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::delta::DeltaStream;
use super::node::NodeInfo;
use super::resources::Snapshot;
use super::sotw::{RequestKind, SotwStream};
use super::Model;
use crate::grpc::PeerIdentity;

/// Responses queued per stream before the driver waits for the client.
const STREAM_BUFFER: usize = 16;

/// The ADS server over a watched [`Model`].
///
/// Every stream gets the model's latest value when it starts and each new
/// one as it is published; it never blocks the publisher.
#[derive(Debug, Clone)]
pub struct XdsServer {
    model: watch::Receiver<Arc<Model>>,
    required_trust_domain: Option<String>,
    stats: Arc<Counters>,
}

/// Counters of an [`XdsServer`] (all its clones), for the controller's
/// metrics. Plain numbers; the application registers them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdsStats {
    /// Streams open now (SotW and delta).
    pub streams_active: u64,
    /// Streams opened since start.
    pub streams_total: u64,
    /// Responses sent.
    pub responses: u64,
    /// NACKs received.
    pub nacks: u64,
}

#[derive(Debug, Default)]
struct Counters {
    streams_active: AtomicU64,
    streams_total: AtomicU64,
    responses: AtomicU64,
    nacks: AtomicU64,
}

/// Counts a stream as active while alive.
struct StreamGuard(Arc<Counters>);

impl StreamGuard {
    fn new(c: &Arc<Counters>) -> StreamGuard {
        c.streams_active.fetch_add(1, Ordering::Relaxed);
        c.streams_total.fetch_add(1, Ordering::Relaxed);
        StreamGuard(c.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams_active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl XdsServer {
    /// A server over `model`. Accepts every caller; see
    /// [`XdsServer::require_trust_domain`] for the TLS listener.
    pub fn new(model: watch::Receiver<Arc<Model>>) -> XdsServer {
        XdsServer {
            model,
            required_trust_domain: None,
            stats: Arc::default(),
        }
    }

    /// Refuses streams (`UNAUTHENTICATED`) whose request extensions lack a
    /// [`PeerIdentity`] in `trust_domain` (the controller's TLS listener;
    /// the plaintext xDS listener does not call this).
    pub fn require_trust_domain(mut self, trust_domain: impl Into<String>) -> XdsServer {
        self.required_trust_domain = Some(trust_domain.into());
        self
    }

    /// The tonic service to add to a `tonic::transport::Server`.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<XdsServer> {
        AggregatedDiscoveryServiceServer::new(self)
    }

    /// The counters so far.
    pub fn stats(&self) -> XdsStats {
        let c = &self.stats;
        XdsStats {
            streams_active: c.streams_active.load(Ordering::Relaxed),
            streams_total: c.streams_total.load(Ordering::Relaxed),
            responses: c.responses.load(Ordering::Relaxed),
            nacks: c.nacks.load(Ordering::Relaxed),
        }
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(td) = &self.required_trust_domain else {
            return Ok(());
        };
        match req.extensions().get::<PeerIdentity>() {
            Some(PeerIdentity(Some(id))) if id.trust_domain_str() == td => Ok(()),
            Some(PeerIdentity(Some(id))) => Err(Status::permission_denied(format!(
                "ADS: client {} is not in trust domain {td}",
                id.as_str()
            ))),
            _ => Err(Status::unauthenticated(format!(
                "ADS: a client certificate (SVID) of trust domain {td} is required"
            ))),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.authorize(&request)?;
        let remote = request.remote_addr();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let span = tracing::info_span!("ads", mode = "sotw", remote = ?remote, node = tracing::field::Empty);
        tokio::spawn(
            drive(
                request.into_inner(),
                self.model.clone(),
                tx,
                Sotw::default(),
                StreamGuard::new(&self.stats),
            )
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.authorize(&request)?;
        let remote = request.remote_addr();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let span = tracing::info_span!("ads", mode = "delta", remote = ?remote, node = tracing::field::Empty);
        tokio::spawn(
            drive(
                request.into_inner(),
                self.model.clone(),
                tx,
                Delta::default(),
                StreamGuard::new(&self.stats),
            )
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What differs between the two stream flavours.
trait Flavour: Send + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    fn node(req: &Self::Req) -> Option<&envoy_types::pb::envoy::config::core::v3::Node>;
    fn describe(req: &Self::Req) -> (&str, usize);
    fn handle_request(
        &mut self,
        req: &Self::Req,
        snap: &Snapshot,
    ) -> (RequestKind, Option<Self::Resp>);
    fn handle_snapshot(&mut self, snap: &Snapshot) -> Vec<Self::Resp>;
}

#[derive(Default)]
struct Sotw(SotwStream);

impl Flavour for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    fn node(req: &DiscoveryRequest) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }
    fn describe(req: &DiscoveryRequest) -> (&str, usize) {
        (&req.type_url, req.resource_names.len())
    }
    fn handle_request(
        &mut self,
        req: &DiscoveryRequest,
        snap: &Snapshot,
    ) -> (RequestKind, Option<DiscoveryResponse>) {
        self.0.handle_request(req, snap)
    }
    fn handle_snapshot(&mut self, snap: &Snapshot) -> Vec<DiscoveryResponse> {
        self.0.handle_snapshot(snap)
    }
}

#[derive(Default)]
struct Delta(DeltaStream);

impl Flavour for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    fn node(
        req: &DeltaDiscoveryRequest,
    ) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }
    fn describe(req: &DeltaDiscoveryRequest) -> (&str, usize) {
        (&req.type_url, req.resource_names_subscribe.len())
    }
    fn handle_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snap: &Snapshot,
    ) -> (RequestKind, Option<DeltaDiscoveryResponse>) {
        self.0.handle_request(req, snap)
    }
    fn handle_snapshot(&mut self, snap: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        self.0.handle_snapshot(snap)
    }
}

/// One stream: reads requests, watches the model, sends responses, until
/// the client goes away or the stream fails.
async fn drive<F: Flavour>(
    mut inbound: Streaming<F::Req>,
    mut model: watch::Receiver<Arc<Model>>,
    tx: mpsc::Sender<Result<F::Resp, Status>>,
    mut flavour: F,
    guard: StreamGuard,
) where
    Streaming<F::Req>: Send,
    F::Req: prost::Message + Default,
{
    let mut node: Option<NodeInfo> = None;
    let mut snap = Snapshot::default();
    let mut model_open = true;
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let req = match msg {
                    Ok(Some(req)) => req,
                    Ok(None) => {
                        tracing::debug!("client closed the stream");
                        return;
                    }
                    Err(status) => {
                        tracing::debug!(%status, "stream failed");
                        return;
                    }
                };
                if node.is_none() {
                    let info = F::node(&req).map(NodeInfo::from_node).unwrap_or_default();
                    tracing::Span::current().record("node", info.id.as_str());
                    tracing::info!(
                        role = ?info.role,
                        upstreams = info.upstreams.len(),
                        client_features = ?info.client_features,
                        "ADS stream started"
                    );
                    let m = model.borrow_and_update().clone();
                    snap = Snapshot::build(&m, &info);
                    node = Some(info);
                }
                let (kind, resp) = flavour.handle_request(&req, &snap);
                let (type_url, names) = F::describe(&req);
                match &kind {
                    RequestKind::Nack { version, message } => {
                        guard.0.nacks.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(type_url, version, message, "NACK: client keeps its previous config");
                    }
                    RequestKind::Unsupported => tracing::debug!(type_url, "request for a type this server does not serve; ignored"),
                    RequestKind::Stale => tracing::debug!(type_url, "request with a stale nonce"),
                    other => tracing::debug!(type_url, names, kind = ?other, "request"),
                }
                if let Some(resp) = resp {
                    guard.0.responses.fetch_add(1, Ordering::Relaxed);
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
            changed = model.changed(), if model_open && node.is_some() => {
                if changed.is_err() {
                    tracing::debug!("model publisher gone; serving the last model");
                    model_open = false;
                    continue;
                }
                let m = model.borrow_and_update().clone();
                if let Some(info) = &node {
                    snap = Snapshot::build(&m, info);
                }
                let resps = flavour.handle_snapshot(&snap);
                tracing::debug!(model_version = m.version, pushes = resps.len(), "model changed");
                for resp in resps {
                    guard.0.responses.fetch_add(1, Ordering::Relaxed);
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
            () = tx.closed() => {
                tracing::debug!("response stream dropped");
                return;
            }
        }
    }
}

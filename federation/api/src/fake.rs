//! An in-process fake controller for data-plane tests (feature
//! `test-util`): an ADS server (envoy-types server trait, SotW) and an
//! Identity server signing with a `trust_bundle` CA, on one loopback port,
//! plaintext or SPIFFE TLS. It is *not* the real controller: it serves
//! whatever resources the test sets, records every request, and can be
//! stopped and started again on the same address with its state kept.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};
use trust_bundle::{
    Authorizer, BundleStore, CertificateAuthority, SpiffeClientVerifier, SpiffeId, SvidRequest,
    SvidSource,
};

use crate::identity::identity_server::{Identity, IdentityServer};
use crate::identity::{
    BundleMapUpdate, DeregisterRequest, DeregisterResponse, RegisterRequest, RegisterResponse,
    SignSvidRequest, SignSvidResponse, WatchBundlesRequest,
};

/// State that survives [`FakeControlPlane::stop`] and restarts.
pub struct FakeState {
    /// Resources served per type URL: `(version, resources)`.
    resources: watch::Sender<BTreeMap<String, (String, Vec<Any>)>>,
    requests_tx: mpsc::UnboundedSender<DiscoveryRequest>,
    requests_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<DiscoveryRequest>>,
    /// The CA signing SVIDs.
    pub ca: Arc<CertificateAuthority>,
    /// The join token accepted, and the ID it may sign for.
    pub join_token: String,
    /// The ID a join token signs for.
    pub token_id: SpiffeId,
    /// `(join token used, id)` of every SVID signed.
    pub signed: Mutex<Vec<(bool, SpiffeId)>>,
    /// Every Register call.
    pub registered: Mutex<Vec<RegisterRequest>>,
    /// Every Deregister call.
    pub deregistered: Mutex<Vec<String>>,
    /// The verified client SPIFFE ID (if any) of every ADS stream opened.
    pub ads_peers: Mutex<Vec<Option<SpiffeId>>>,
    /// The bundle map served: `(version, json)`.
    pub bundles: watch::Sender<(u64, String)>,
    stream_end: watch::Sender<u64>,
}

impl FakeState {
    /// A state signing with `ca`, accepting `join_token` for `token_id`.
    pub fn new(ca: CertificateAuthority, join_token: &str, token_id: SpiffeId) -> Arc<FakeState> {
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        Arc::new(FakeState {
            resources: watch::channel(BTreeMap::new()).0,
            requests_tx,
            requests_rx: tokio::sync::Mutex::new(requests_rx),
            ca: Arc::new(ca),
            join_token: join_token.to_owned(),
            token_id,
            signed: Mutex::new(Vec::new()),
            registered: Mutex::new(Vec::new()),
            deregistered: Mutex::new(Vec::new()),
            ads_peers: Mutex::new(Vec::new()),
            bundles: watch::channel((0, String::new())).0,
            stream_end: watch::channel(0).0,
        })
    }

    /// Serves `resources` as version `version` of `type_url` (pushed to open
    /// streams at once).
    pub fn set_resources(&self, type_url: &str, version: &str, resources: Vec<Any>) {
        self.resources.send_modify(|m| {
            m.insert(type_url.to_owned(), (version.to_owned(), resources));
        });
    }

    /// The next ADS request any stream received, within `within`.
    pub async fn next_request(&self, within: Duration) -> Option<DiscoveryRequest> {
        let mut rx = self.requests_rx.lock().await;
        tokio::time::timeout(within, rx.recv()).await.ok().flatten()
    }

    /// The next request of `type_url` that answers a response (nonce set),
    /// skipping others, within `within`.
    pub async fn next_reply(&self, type_url: &str, within: Duration) -> Option<DiscoveryRequest> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = self.next_request(left).await?;
            if r.type_url == type_url && !r.response_nonce.is_empty() {
                return Some(r);
            }
        }
    }

    /// Publishes a new bundle map to `WatchBundles` streams.
    pub fn set_bundles(&self, json: String) {
        self.bundles.send_modify(|(v, j)| {
            *v += 1;
            *j = json;
        });
    }
}

/// TLS settings of the fake: present `source` and verify optional client
/// certificates against `store`.
#[derive(Clone)]
pub struct FakeTls {
    /// The controller SVID.
    pub source: Arc<SvidSource>,
    /// Bundles client certificates are verified against.
    pub store: BundleStore,
}

/// A running fake controller.
pub struct FakeControlPlane {
    addr: SocketAddr,
    state: Arc<FakeState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeControlPlane {
    /// Serves on `addr` (port 0 picks one).
    pub async fn start(
        addr: SocketAddr,
        state: Arc<FakeState>,
        tls: Option<FakeTls>,
    ) -> FakeControlPlane {
        let listener = bind_retrying(addr).await;
        let addr = listener.local_addr().unwrap();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel::<std::io::Result<Io>>();
        let acceptor = tls.map(|t| {
            let verifier = Arc::new(OptionalClientAuth(Arc::new(SpiffeClientVerifier::new(
                t.store,
                Authorizer::Any,
                trust_bundle::crypto_provider(),
            ))));
            let mut config =
                rustls::ServerConfig::builder_with_provider(trust_bundle::crypto_provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_client_cert_verifier(verifier)
                    .with_cert_resolver(t.source);
            config.alpn_protocols = vec![b"h2".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let (stop_accept_tx, mut stop_accept) = oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = &mut stop_accept => return,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let tx = incoming_tx.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let io = match acceptor {
                        None => Io::Plain(tcp),
                        Some(a) => match a.accept(tcp).await {
                            Ok(tls) => Io::Tls(Box::new(tls)),
                            Err(_) => return,
                        },
                    };
                    let _ = tx.send(Ok(io));
                });
            }
        });
        let ads = AggregatedDiscoveryServiceServer::new(FakeAds {
            state: state.clone(),
        });
        let identity = IdentityServer::new(FakeIdentity {
            state: state.clone(),
        });
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(ads)
                .add_service(identity)
                .serve_with_incoming_shutdown(UnboundedReceiverStream::new(incoming_rx), async {
                    let _ = shutdown_rx.await;
                    let _ = stop_accept_tx.send(());
                })
                .await;
        });
        FakeControlPlane {
            addr,
            state,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its state.
    pub fn state(&self) -> &Arc<FakeState> {
        &self.state
    }

    /// Ends every open stream with `UNAVAILABLE`, stops listening and waits
    /// (bounded) for the server to finish; the port is free afterwards.
    pub async fn stop(mut self) {
        self.state.stream_end.send_modify(|n| *n += 1);
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(mut t) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        self.state.stream_end.send_modify(|n| *n += 1);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if tokio::time::Instant::now() < deadline => {
                // Polling a port the previous instance is releasing.
                let _ = e;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("fake control plane cannot bind {addr}: {e}"),
        }
    }
}

/// The peer's verified SPIFFE ID, if it sent a certificate.
#[derive(Debug, Clone)]
pub struct PeerId(pub Option<SpiffeId>);

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Io {
    type ConnectInfo = PeerId;

    fn connect_info(&self) -> PeerId {
        match self {
            Io::Plain(_) => PeerId(None),
            Io::Tls(t) => PeerId(trust_bundle::verify::peer_spiffe_id(
                t.get_ref().1.peer_certificates(),
            )),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Client certificates optional, verified when sent (like the controller).
#[derive(Debug)]
struct OptionalClientAuth(Arc<SpiffeClientVerifier>);

impl ClientCertVerifier for OptionalClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, intermediates, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

struct FakeAds {
    state: Arc<FakeState>,
}

type ResponseStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeAds {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        self.state.ads_peers.lock().unwrap().push(peer_id(&request));
        let mut incoming = request.into_inner();
        let state = self.state.clone();
        let (tx, rx) = mpsc::unbounded_channel::<Result<DiscoveryResponse, Status>>();
        tokio::spawn(async move {
            let mut resources = state.resources.subscribe();
            let mut end = state.stream_end.subscribe();
            // Per type: the version last sent on this stream.
            let mut sent: BTreeMap<String, String> = BTreeMap::new();
            // Per type: the names last requested on this stream.
            let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut nonce = 0u64;
            let mut send = |type_url: &str,
                            all: &BTreeMap<String, (String, Vec<Any>)>,
                            sent: &mut BTreeMap<String, String>| {
                let (version, res) = all.get(type_url).cloned().unwrap_or_default();
                if all.get(type_url).is_none() {
                    return;
                }
                nonce += 1;
                sent.insert(type_url.to_owned(), version.clone());
                let _ = tx.send(Ok(DiscoveryResponse {
                    version_info: version,
                    resources: res,
                    type_url: type_url.to_owned(),
                    nonce: nonce.to_string(),
                    ..Default::default()
                }));
            };
            loop {
                tokio::select! {
                    r = incoming.next() => {
                        let Some(Ok(r)) = r else { return };
                        let _ = state.requests_tx.send(r.clone());
                        // A new subscription (no nonce) or a changed name
                        // list gets the current resources of the type.
                        let changed_names = names.get(&r.type_url) != Some(&r.resource_names);
                        names.insert(r.type_url.clone(), r.resource_names.clone());
                        if r.response_nonce.is_empty() || changed_names {
                            let all = resources.borrow_and_update().clone();
                            send(&r.type_url, &all, &mut sent);
                        }
                    }
                    c = resources.changed() => {
                        if c.is_err() { return; }
                        let all = resources.borrow_and_update().clone();
                        let types: Vec<String> = sent.keys().cloned().collect();
                        for t in types {
                            if all.get(&t).map(|(v, _)| v) != sent.get(&t) {
                                send(&t, &all, &mut sent);
                            }
                        }
                    }
                    _ = end.changed() => {
                        let _ = tx.send(Err(Status::unavailable("fake control plane stopping")));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Err(Status::unimplemented("the fake serves SotW only"))
    }
}

struct FakeIdentity {
    state: Arc<FakeState>,
}

type BundleStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<BundleMapUpdate, Status>> + Send>>;

fn peer_id<T>(request: &Request<T>) -> Option<SpiffeId> {
    request
        .extensions()
        .get::<PeerId>()
        .and_then(|p| p.0.clone())
}

#[tonic::async_trait]
impl Identity for FakeIdentity {
    async fn sign_svid(
        &self,
        request: Request<SignSvidRequest>,
    ) -> Result<Response<SignSvidResponse>, Status> {
        let peer = peer_id(&request);
        let body = request.into_inner();
        let (by_token, id) = if !body.join_token.is_empty() {
            if body.join_token != self.state.join_token {
                return Err(Status::unauthenticated("unknown join token"));
            }
            (true, self.state.token_id.clone())
        } else {
            match peer {
                Some(id) => (false, id),
                None => return Err(Status::unauthenticated("no join token and no client SVID")),
            }
        };
        let csr = CertificateSigningRequestDer::from(body.csr_der);
        let chain = self
            .state
            .ca
            .issue_svid(&csr, &SvidRequest::new(id.clone()), SystemTime::now())
            .map_err(|e| Status::invalid_argument(format!("csr: {e}")))?;
        self.state.signed.lock().unwrap().push((by_token, id));
        Ok(Response::new(SignSvidResponse {
            chain_der: chain.into_iter().map(|c| c.to_vec()).collect(),
            bundles_json: self.state.bundles.borrow().1.clone(),
        }))
    }

    type WatchBundlesStream = BundleStream;

    async fn watch_bundles(
        &self,
        _request: Request<WatchBundlesRequest>,
    ) -> Result<Response<BundleStream>, Status> {
        let mut rx = self.state.bundles.subscribe();
        let mut end = self.state.stream_end.subscribe();
        let (tx, out) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (version, json) = rx.borrow_and_update().clone();
                if tx
                    .send(Ok(BundleMapUpdate {
                        bundles_json: json,
                        version,
                    }))
                    .is_err()
                {
                    return;
                }
                tokio::select! {
                    c = rx.changed() => if c.is_err() { return },
                    _ = end.changed() => {
                        let _ = tx.send(Err(Status::unavailable("fake control plane stopping")));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(out))))
    }

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let r = request.into_inner();
        let lease = if r.lease_seconds == 0 {
            15
        } else {
            r.lease_seconds
        };
        self.state.registered.lock().unwrap().push(r);
        Ok(Response::new(RegisterResponse {
            lease_seconds: lease,
        }))
    }

    async fn deregister(
        &self,
        request: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        self.state
            .deregistered
            .lock()
            .unwrap()
            .push(request.into_inner().name);
        Ok(Response::new(DeregisterResponse {}))
    }
}

/// A healthy lb endpoint at `addr`, with its SPIFFE ID under
/// [`crate::xds::IDENTITY_METADATA`] when given: what the controller pushes
/// for a local endpoint (`docs/xds.md`).
pub fn lb_endpoint(
    addr: SocketAddr,
    spiffe_id: Option<&str>,
) -> envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint {
    use envoy_types::pb::envoy::config::core::v3::{
        address, socket_address, Address, Metadata, SocketAddress,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, Endpoint, LbEndpoint};
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: addr.ip().to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(
                        addr.port().into(),
                    )),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        metadata: spiffe_id.map(|id| Metadata {
            filter_metadata: [(
                crate::xds::IDENTITY_METADATA.to_owned(),
                crate::xds_decode::string_struct([("spiffe_id", id)]),
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

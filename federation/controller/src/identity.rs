//! The `isthmus.identity.v1.Identity` gRPC service (mesh_api::identity).
//!
//! - `SignSvid` with a join token: the CSR's one URI SAN must be exactly
//!   `spiffe://<td>/ns/<token namespace>/sa/<token service account>`.
//! - `SignSvid` without a token (renewal): the caller's verified client
//!   SVID ([`PeerIdentity`]) must be in our trust domain and the CSR must
//!   ask for that same SPIFFE ID.
//! - Anything else: `PERMISSION_DENIED` naming what was asked and what is
//!   attested (`UNAUTHENTICATED` when nothing is attested: no token, no
//!   client SVID, or an unknown/expired token).
//! - `WatchBundles`: the bundle map (own + linked trust domains), first at
//!   once, then on every change. Needs a client SVID of our trust domain.
//! - `Register`/`Deregister`: a leased workload in the namespace and under
//!   the service account of the caller's SVID.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_api::identity::identity_server::Identity;
use mesh_api::identity::{
    BundleMapUpdate, DeregisterRequest, DeregisterResponse, RegisterRequest, RegisterResponse,
    SignSvidRequest, SignSvidResponse, WatchBundlesRequest,
};
use mesh_resources::{WorkloadPort, WorkloadProtocol};
use rustls::pki_types::CertificateSigningRequestDer;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use trust_bundle::{SpiffeId, SvidRequest};

use crate::catalog::{self, unix_ms, Catalog, Command, LeasedWorkload};
use crate::config::{dns_label, Config};
use crate::grpc::PeerIdentity;
use crate::store::{Store, WriteError};

/// Longest lease a workload may ask for.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

/// The Identity service. Wrap it with
/// `mesh_api::identity::identity_server::IdentityServer::new`.
#[derive(Clone)]
pub struct IdentityService {
    store: Arc<Store<Catalog>>,
    config: Arc<Config>,
    shutdown: Option<watch::Receiver<bool>>,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService")
            .field("trust_domain", &self.config.trust_domain)
            .finish_non_exhaustive()
    }
}

impl IdentityService {
    /// A service signing with the CA in `store`'s catalog.
    pub fn new(store: Arc<Store<Catalog>>, config: Arc<Config>) -> Self {
        IdentityService {
            store,
            config,
            shutdown: None,
        }
    }

    /// Ends `WatchBundles` streams when `shutdown` turns true, so that a
    /// graceful stop does not wait for clients to hang up.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    async fn catalog(&self) -> Result<Arc<Catalog>, Status> {
        self.store.read().await.map_err(unavailable)
    }

    /// The caller's SPIFFE ID, which must be in our trust domain.
    fn own_caller<T>(&self, request: &Request<T>) -> Result<SpiffeId, Status> {
        let Some(PeerIdentity(Some(id))) = request.extensions().get::<PeerIdentity>() else {
            return Err(Status::unauthenticated(
                "this call needs a client SVID (mutual TLS)",
            ));
        };
        if !id.is_member_of(&self.config.trust_domain) {
            return Err(Status::permission_denied(format!(
                "caller {id} is not in trust domain {}",
                self.config.trust_domain
            )));
        }
        Ok(id.clone())
    }

    fn caller_ns_sa<T>(&self, request: &Request<T>) -> Result<(String, String), Status> {
        let id = self.own_caller(request)?;
        namespace_and_sa(&id).ok_or_else(|| {
            Status::permission_denied(format!(
                "caller {id} is not a workload identity (/ns/<namespace>/sa/<service account>)"
            ))
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn sign_svid(
        &self,
        request: Request<SignSvidRequest>,
    ) -> Result<Response<SignSvidResponse>, Status> {
        let peer = request
            .extensions()
            .get::<PeerIdentity>()
            .cloned()
            .unwrap_or(PeerIdentity(None));
        let req = request.into_inner();
        let csr = CertificateSigningRequestDer::from(req.csr_der);
        let requested = csr_spiffe_id(&csr)?;
        let catalog = self.catalog().await?;
        let now = SystemTime::now();
        let td = &self.config.trust_domain;
        let (allowed, by) = if !req.join_token.is_empty() {
            let record = catalog
                .check_join_token(&req.join_token, unix_ms(now))
                .map_err(|e| Status::unauthenticated(e.to_string()))?;
            let id = td
                .service_account(&record.namespace, &record.service_account)
                .map_err(|e| Status::internal(format!("join token scope: {e}")))?;
            (id, "join token")
        } else if let Some(id) = peer.0 {
            if !id.is_member_of(td) {
                return Err(Status::permission_denied(format!(
                    "renewal: caller {id} is not in trust domain {td}"
                )));
            }
            (id, "caller's SVID")
        } else {
            return Err(Status::unauthenticated(
                "SignSvid needs a join token or a client SVID",
            ));
        };
        if requested != allowed {
            return Err(Status::permission_denied(format!(
                "the CSR asks for {requested} but the {by} attests only {allowed}"
            )));
        }
        let ca = catalog
            .signing_ca(td)
            .map_err(|e| Status::unavailable(format!("no usable CA yet: {e}")))?;
        let svid_request = SvidRequest {
            id: allowed,
            dns_names: Vec::new(),
            ttl: self.config.svid_ttl,
        };
        let chain = ca
            .issue_svid(&csr, &svid_request, now)
            .map_err(|e| Status::invalid_argument(format!("cannot sign the CSR: {e}")))?;
        let bundles_json = String::from_utf8(catalog.bundle_map(td).to_json())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(SignSvidResponse {
            chain_der: chain.into_iter().map(|c| c.to_vec()).collect(),
            bundles_json,
        }))
    }

    type WatchBundlesStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<BundleMapUpdate, Status>> + Send>>;

    async fn watch_bundles(
        &self,
        request: Request<WatchBundlesRequest>,
    ) -> Result<Response<Self::WatchBundlesStream>, Status> {
        self.own_caller(&request)?;
        let mut watch = self.store.watch();
        let td = self.config.trust_domain.clone();
        let (tx, rx) = mpsc::channel(4);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut last: Option<Vec<u8>> = None;
            let mut version = 0u64;
            loop {
                let json = {
                    let catalog = watch.borrow_and_update().clone();
                    catalog.bundle_map(&td).to_json()
                };
                if last.as_ref() != Some(&json) {
                    version += 1;
                    let update = BundleMapUpdate {
                        bundles_json: String::from_utf8_lossy(&json).into_owned(),
                        version,
                    };
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                    last = Some(json);
                }
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    () = stopped(&mut shutdown) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let (namespace, service_account) = self.caller_ns_sa(&request)?;
        let req = request.into_inner();
        let lease = match req.lease_seconds {
            0 => self.config.lease,
            s => Duration::from_secs(u64::from(s)).min(MAX_LEASE),
        };
        let workload = leased_workload(&req, namespace, service_account, lease, SystemTime::now())?;
        match self
            .store
            .write(Command::RegisterWorkload(workload))
            .await
            .map_err(unavailable)?
        {
            catalog::Response::Ok => Ok(Response::new(RegisterResponse {
                lease_seconds: u32::try_from(lease.as_secs()).unwrap_or(u32::MAX),
            })),
            catalog::Response::Refused(why) => Err(Status::permission_denied(why)),
            other => Err(Status::internal(format!("unexpected answer {other:?}"))),
        }
    }

    async fn deregister(
        &self,
        request: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        let (namespace, service_account) = self.caller_ns_sa(&request)?;
        let name = request.into_inner().name;
        let command = Command::DeregisterWorkload {
            namespace,
            name,
            service_account,
        };
        match self.store.write(command).await.map_err(unavailable)? {
            catalog::Response::Ok => Ok(Response::new(DeregisterResponse {})),
            catalog::Response::NotFound(what) => Err(Status::not_found(what)),
            catalog::Response::Refused(why) => Err(Status::permission_denied(why)),
            other => Err(Status::internal(format!("unexpected answer {other:?}"))),
        }
    }
}

/// Resolves when `shutdown` turns true or its sender is gone; never
/// without one.
async fn stopped(shutdown: &mut Option<watch::Receiver<bool>>) {
    match shutdown {
        Some(rx) => {
            let _ = rx.wait_for(|s| *s).await;
        }
        None => std::future::pending().await,
    }
}

/// Validates a `Register` request into the record to store.
fn leased_workload(
    req: &RegisterRequest,
    namespace: String,
    service_account: String,
    lease: Duration,
    now: SystemTime,
) -> Result<LeasedWorkload, Status> {
    let bad = |field: &str, why: String| Status::invalid_argument(format!("{field}: {why}"));
    dns_label(&req.name).map_err(|e| bad("name", e))?;
    dns_label(&req.service).map_err(|e| bad("service", e))?;
    req.address
        .parse::<IpAddr>()
        .map_err(|_| bad("address", format!("{:?} is not an IP address", req.address)))?;
    for (field, value) in [("region", &req.region), ("zone", &req.zone)] {
        if !value.is_empty() {
            dns_label(value).map_err(|e| bad(field, e))?;
        }
    }
    if req.ports.is_empty() {
        return Err(bad("ports", "at least one port is required".to_owned()));
    }
    let mut ports = Vec::with_capacity(req.ports.len());
    for (i, p) in req.ports.iter().enumerate() {
        let port = u16::try_from(p.port)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                bad(
                    &format!("ports[{i}].port"),
                    format!("{} is not 1..65535", p.port),
                )
            })?;
        let target = u16::try_from(p.target_port)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                bad(
                    &format!("ports[{i}].target_port"),
                    format!("{} is not 1..65535", p.target_port),
                )
            })?;
        let protocol = match p.protocol.as_str() {
            "" => WorkloadProtocol::Tcp,
            s => WorkloadProtocol::parse(s).ok_or_else(|| {
                bad(
                    &format!("ports[{i}].protocol"),
                    format!("{s:?} is not http, grpc or tcp"),
                )
            })?,
        };
        if ports.iter().any(|q: &WorkloadPort| q.port == port) {
            return Err(bad(
                &format!("ports[{i}].port"),
                format!("{port} is repeated"),
            ));
        }
        ports.push(WorkloadPort {
            port,
            target_port: Some(target),
            protocol,
        });
    }
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    Ok(LeasedWorkload {
        namespace,
        name: req.name.clone(),
        service: req.service.clone(),
        service_account,
        address: req.address.clone(),
        ports,
        region: req.region.clone(),
        zone: req.zone.clone(),
        lease_ms,
        expires_ms: unix_ms(now).saturating_add(lease_ms),
    })
}

/// `(namespace, service account)` of `spiffe://td/ns/<ns>/sa/<sa>`.
pub fn namespace_and_sa(id: &SpiffeId) -> Option<(String, String)> {
    let mut parts = id.path().strip_prefix('/')?.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa), None) if !ns.is_empty() && !sa.is_empty() => {
            Some((ns.to_owned(), sa.to_owned()))
        }
        _ => None,
    }
}

/// The SPIFFE ID a CSR asks for: its one URI SAN.
fn csr_spiffe_id(csr: &CertificateSigningRequestDer<'_>) -> Result<SpiffeId, Status> {
    let params = rcgen::CertificateSigningRequestParams::from_der(csr)
        .map_err(|e| Status::invalid_argument(format!("csr_der: not a PKCS#10 CSR: {e}")))?;
    let uris: Vec<String> = params
        .params
        .subject_alt_names
        .iter()
        .filter_map(|san| match san {
            rcgen::SanType::URI(uri) => Some(uri.as_str().to_owned()),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => SpiffeId::parse(one)
            .map_err(|e| Status::invalid_argument(format!("csr_der: URI SAN {one:?}: {e}"))),
        _ => Err(Status::invalid_argument(format!(
            "csr_der: must have exactly one URI SAN (the SPIFFE ID), found {}",
            uris.len()
        ))),
    }
}

fn unavailable(e: WriteError) -> Status {
    Status::unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::identity::WorkloadPort as ApiPort;

    fn request() -> RegisterRequest {
        RegisterRequest {
            name: "web-1".to_owned(),
            service: "web".to_owned(),
            address: "10.0.0.1".to_owned(),
            ports: vec![ApiPort {
                port: 80,
                target_port: 15006,
                protocol: "http".to_owned(),
            }],
            region: String::new(),
            zone: "z1".to_owned(),
            lease_seconds: 0,
        }
    }

    fn check(req: &RegisterRequest) -> Result<LeasedWorkload, Status> {
        leased_workload(
            req,
            "shop".to_owned(),
            "web".to_owned(),
            Duration::from_secs(15),
            std::time::UNIX_EPOCH,
        )
    }

    #[test]
    fn register_requests_are_validated_naming_the_field() {
        let ok = check(&request()).unwrap();
        assert_eq!(ok.expires_ms, 15_000);
        assert_eq!(ok.ports[0].effective_target_port(), 15006);
        let cases: Vec<(RegisterRequest, &str)> = vec![
            (
                RegisterRequest {
                    name: "Web_1".into(),
                    ..request()
                },
                "name: ",
            ),
            (
                RegisterRequest {
                    address: "localhost".into(),
                    ..request()
                },
                "address: ",
            ),
            (
                RegisterRequest {
                    ports: vec![],
                    ..request()
                },
                "ports: at least one",
            ),
            (
                RegisterRequest {
                    ports: vec![ApiPort {
                        port: 70000,
                        target_port: 1,
                        protocol: String::new(),
                    }],
                    ..request()
                },
                "ports[0].port: 70000",
            ),
            (
                RegisterRequest {
                    ports: vec![ApiPort {
                        port: 80,
                        target_port: 80,
                        protocol: "udp".into(),
                    }],
                    ..request()
                },
                "ports[0].protocol: \"udp\"",
            ),
        ];
        for (req, want) in cases {
            let err = check(&req).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(
                err.message().starts_with(want),
                "{:?} vs {want:?}",
                err.message()
            );
        }
    }

    #[test]
    fn workload_ids_split_into_namespace_and_service_account() {
        let id = SpiffeId::parse("spiffe://td/ns/shop/sa/web").unwrap();
        assert_eq!(namespace_and_sa(&id), Some(("shop".into(), "web".into())));
        for other in [
            "spiffe://td/ns/shop",
            "spiffe://td/ns/shop/sa/web/x",
            "spiffe://td/x/shop/sa/web",
        ] {
            assert_eq!(
                namespace_and_sa(&SpiffeId::parse(other).unwrap()),
                None,
                "{other}"
            );
        }
    }
}

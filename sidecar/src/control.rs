//! The sidecar's link to the controller (config section `control_plane`).
//!
//! - identity: the bundle map file is bootstrap trust; the first SVID is
//!   signed with the join token ([`mesh_api::identity_client`]); renewals go
//!   through the usual rotation with the controller as issuer; `WatchBundles`
//!   keeps the bundle store current.
//! - catalog: CDS+EDS over ADS for
//!   [`mesh_api::xds::service_cluster_name`] of every service our outbound
//!   listeners name; [`catalog`] turns the accepted ClusterLoadAssignments
//!   into `services` (pure), and the runtime swaps them in through the same
//!   snapshot path a reload uses. Invalid resources are NACKed (the
//!   validator runs the same translation), and the last good catalog stays
//!   while the controller is unreachable.
//! - registration: `Register` every lease/3, `Deregister` on drain.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_api::ads_client::{AdsClient, AdsConfig, AdsSnapshot, Subscriptions, Validator};
use mesh_api::envoy_types::pb::envoy::config::core::v3::Node;
use mesh_api::envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mesh_api::envoy_types::pb::google::protobuf::{value, Struct, Value};
use mesh_api::identity::{RegisterRequest, WorkloadPort};
use mesh_api::identity_client::{register_interval, BootstrapConfig, Bootstrapped, IdentityClient};
use mesh_api::transport::Target;
use mesh_api::xds::{self, CLUSTER_TYPE, ENDPOINT_TYPE, IDENTITY_METADATA, TUNNEL_METADATA};
use mesh_api::xds_decode;
use prost::Message;
use tokio::sync::watch;
use trust_bundle::{SpiffeId, SvidSource};

use crate::config::{Config, ControlPlane, Endpoint, Locality, Remote, Service, ServiceKey};

/// How long start-up keeps retrying the first `SignSvid`.
pub const BOOTSTRAP_PATIENCE: Duration = Duration::from_secs(60);

/// Why the control-plane identity could not be set up.
pub type ControlError = mesh_api::identity_client::BootstrapError;

/// Gets the first SVID from the controller (see
/// [`mesh_api::identity_client::bootstrap`]).
pub(crate) async fn bootstrap(
    config: &Config,
    cp: &ControlPlane,
) -> Result<Bootstrapped, ControlError> {
    mesh_api::identity_client::bootstrap(&BootstrapConfig {
        id: config.spiffe_id.clone(),
        address: cp.address.clone(),
        server_id: cp.spiffe_id.clone(),
        danger_plaintext: cp.danger_plaintext,
        bundles_file: config.base_dir.join(&config.identity.bundles),
        join_token_file: config.base_dir.join(&cp.join_token_file),
        connect_timeout: config.timeouts.connect,
        initial_backoff: cp.initial_backoff,
        max_backoff: cp.max_backoff,
        patience: BOOTSTRAP_PATIENCE,
    })
    .await
}

/// The CDS+EDS subscriptions for `config`'s outbound listeners.
pub fn subscriptions(config: &Config) -> Subscriptions {
    let names: BTreeSet<String> = config
        .outbound
        .iter()
        .map(|o| xds::service_cluster_name(&o.service.namespace, &o.service.name, o.port))
        .collect();
    Subscriptions::from([
        (CLUSTER_TYPE.to_owned(), names.clone()),
        (ENDPOINT_TYPE.to_owned(), names),
    ])
}

/// Starts the ADS client for `config` (SVID `source` for mTLS).
pub(crate) fn start_ads(config: &Config, target: &Target, source: Arc<SvidSource>) -> AdsClient {
    let cp = config.control_plane.as_ref();
    let (initial, max) = cp.map_or((Duration::from_millis(200), Duration::from_secs(15)), |c| {
        (c.initial_backoff, c.max_backoff)
    });
    let own_cluster = config.cluster.clone();
    let has_gateway = config.gateway.is_some();
    let validate: Validator = Arc::new(move |type_url: &str, set| {
        if type_url != ENDPOINT_TYPE {
            return Ok(());
        }
        for (name, any) in set {
            let cla = ClusterLoadAssignment::decode(any.value.as_slice())
                .map_err(|e| format!("{name}: {e}"))?;
            let (_, remote) = parse_cla(&own_cluster, &cla).map_err(|e| format!("{name}: {e}"))?;
            if !remote.is_empty() && !has_gateway {
                return Err(format!(
                    "{name}: remote clusters need a `gateway` section in the sidecar config"
                ));
            }
        }
        Ok(())
    });
    AdsClient::spawn(
        target.with_client(source),
        AdsConfig {
            node: node(config),
            subscriptions: subscriptions(config),
            initial_backoff: initial,
            max_backoff: max,
        },
        validate,
    )
}

fn node(config: &Config) -> Node {
    let mut metadata = Struct::default();
    metadata.fields.insert(
        xds::NODE_ROLE.to_owned(),
        Value {
            kind: Some(value::Kind::StringValue("sidecar".to_owned())),
        },
    );
    Node {
        id: format!("sidecar~{}~{}", config.admin.ip(), config.spiffe_id),
        cluster: config.cluster.clone(),
        metadata: Some(metadata),
        ..Default::default()
    }
}

/// The `services` of `config` built from accepted xDS resources: one entry
/// per outbound (service, port) whose cluster the last CDS response holds,
/// without endpoints until its ClusterLoadAssignment arrives.
///
/// # Errors
/// A lowercase message naming the resource at fault.
pub fn catalog(config: &Config, snapshot: &AdsSnapshot) -> Result<Vec<Service>, String> {
    let clas = snapshot
        .decode::<ClusterLoadAssignment>(ENDPOINT_TYPE)
        .map_err(|e| mesh_api::error_chain(&e))?;
    let mut out: Vec<Service> = Vec::new();
    for o in &config.outbound {
        if out
            .iter()
            .any(|s| s.service == o.service && s.port == o.port)
        {
            continue;
        }
        let name = xds::service_cluster_name(&o.service.namespace, &o.service.name, o.port);
        // CDS says which services exist (xDS "Deleting resources": a removed
        // cluster is signalled through CDS, and SotW EDS never deletes). A
        // service absent from CDS (nobody runs or exports it to us) is left
        // out, so its requests get 503 `unknown service`, as in static mode;
        // a stale assignment of a removed cluster is never used.
        if !in_cds(snapshot, &name) {
            continue;
        }
        let (endpoints, remote) = match clas.get(&name) {
            Some(cla) => parse_cla(&config.cluster, cla).map_err(|e| format!("{name}: {e}"))?,
            None => (Vec::new(), Vec::new()),
        };
        let remote = if config.gateway.is_some() {
            remote
        } else {
            Vec::new()
        };
        out.push(Service {
            service: ServiceKey {
                namespace: o.service.namespace.clone(),
                name: o.service.name.clone(),
            },
            port: o.port,
            endpoints,
            remote,
            resilience: crate::resilience::Resilience::default(),
        });
    }
    Ok(out)
}

/// Whether the last accepted CDS response holds the cluster `name`.
fn in_cds(snapshot: &AdsSnapshot, name: &str) -> bool {
    snapshot
        .types
        .get(CLUSTER_TYPE)
        .is_some_and(|r| r.resources.contains_key(name))
}

/// Local endpoints (localities whose `sub_zone` is our cluster) and remote
/// clusters (endpoints with tunnel metadata, in priority order) of one
/// ClusterLoadAssignment. Unhealthy and draining endpoints are left out.
///
/// # Errors
/// A lowercase message with the path of the field at fault.
pub fn parse_cla(
    own_cluster: &str,
    cla: &ClusterLoadAssignment,
) -> Result<(Vec<Endpoint>, Vec<Remote>), String> {
    let mut order: Vec<usize> = (0..cla.endpoints.len()).collect();
    order.sort_by_key(|&i| cla.endpoints[i].priority);
    let mut endpoints: Vec<Endpoint> = Vec::new();
    let mut remote: Vec<Remote> = Vec::new();
    for i in order {
        let loc = &cla.endpoints[i];
        let locality = loc.locality.clone().unwrap_or_default();
        for (j, lb) in loc.lb_endpoints.iter().enumerate() {
            let path = format!("endpoints[{i}].lb_endpoints[{j}]");
            if !xds_decode::is_usable(lb) {
                continue;
            }
            let md = lb.metadata.as_ref();
            if let Some(tunnel) = xds_decode::filter(md, TUNNEL_METADATA) {
                let at = |e: String| format!("{path}.metadata.{TUNNEL_METADATA}.{e}");
                let cluster = xds_decode::string_field(tunnel, "cluster").map_err(at)?;
                let id = xds_decode::string_field(tunnel, "spiffe_id").map_err(at)?;
                let spiffe_id = SpiffeId::parse(id).map_err(|e| at(format!("spiffe_id: {e}")))?;
                if cluster == own_cluster {
                    return Err(at(format!("cluster: {cluster} is our own cluster")));
                }
                if !crate::config::is_dns_label(cluster) {
                    return Err(at(format!("cluster: {cluster:?} is not a DNS label")));
                }
                if !remote.iter().any(|r| r.cluster == cluster) {
                    remote.push(Remote {
                        cluster: cluster.to_owned(),
                        spiffe_id,
                    });
                }
                continue;
            }
            if locality.sub_zone != own_cluster {
                return Err(format!(
                    "{path}: locality sub_zone {:?} is not our cluster and the endpoint has no {TUNNEL_METADATA} metadata",
                    locality.sub_zone
                ));
            }
            let address: SocketAddr =
                xds_decode::socket_addr(lb).map_err(|e| format!("{path}.{e}"))?;
            let identity = xds_decode::filter(md, IDENTITY_METADATA)
                .ok_or_else(|| format!("{path}.metadata.{IDENTITY_METADATA}: missing"))?;
            let id = xds_decode::string_field(identity, "spiffe_id")
                .map_err(|e| format!("{path}.metadata.{IDENTITY_METADATA}.{e}"))?;
            let spiffe_id = SpiffeId::parse(id)
                .map_err(|e| format!("{path}.metadata.{IDENTITY_METADATA}.spiffe_id: {e}"))?;
            if endpoints.iter().any(|e| e.address == address) {
                return Err(format!("{path}: {address} is listed twice"));
            }
            let locality =
                (!locality.region.is_empty() || !locality.zone.is_empty()).then(|| Locality {
                    region: (!locality.region.is_empty()).then(|| locality.region.clone()),
                    zone: (!locality.zone.is_empty()).then(|| locality.zone.clone()),
                });
            endpoints.push(Endpoint {
                address,
                spiffe_id,
                locality,
            });
        }
    }
    Ok((endpoints, remote))
}

/// The `Register` request for `config` (address: the first inbound
/// listener's IP, else the admin IP).
pub fn register_request(config: &Config) -> Option<RegisterRequest> {
    let r = config.control_plane.as_ref()?.register.as_ref()?;
    let ip = config
        .inbound
        .first()
        .map_or(config.admin.ip(), |i| i.listen.ip());
    let locality = config.locality.clone().unwrap_or_default();
    Some(RegisterRequest {
        name: r.name.clone(),
        service: r.service.clone(),
        address: ip.to_string(),
        ports: r
            .ports
            .iter()
            .map(|p| WorkloadPort {
                port: u32::from(p.port),
                target_port: u32::from(p.target_port),
                protocol: p.protocol.clone(),
            })
            .collect(),
        region: locality.region.unwrap_or_default(),
        zone: locality.zone.unwrap_or_default(),
        lease_seconds: r.lease_seconds,
    })
}

/// Registers every lease/3 until `stop`; failures retry after a third of
/// the last lease (or 1 s before any lease was granted).
pub(crate) async fn run_registration(
    client: Arc<IdentityClient>,
    source: Arc<SvidSource>,
    request: RegisterRequest,
    mut stop: watch::Receiver<bool>,
) {
    let mut interval = Duration::from_secs(1);
    loop {
        match client.register(&source, request.clone()).await {
            Ok(r) => {
                interval = register_interval(Duration::from_secs(u64::from(r.lease_seconds)));
                tracing::debug!(name = %request.name, lease_seconds = r.lease_seconds, "registered");
            }
            Err(e) => tracing::warn!(
                name = %request.name,
                error = %mesh_api::error_chain(&e),
                "registration failed; retrying"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            r = stop.wait_for(|s| *s) => { let _ = r; return; }
        }
    }
}

/// The running control-plane pieces a sidecar holds.
pub(crate) struct ControlHandle {
    pub(crate) ads: AdsClient,
    pub(crate) client: Arc<IdentityClient>,
    pub(crate) source: Arc<SvidSource>,
    pub(crate) register: Option<RegisterRequest>,
    pub(crate) stop: watch::Sender<bool>,
}

impl std::fmt::Debug for ControlHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlHandle")
            .field("register", &self.register.as_ref().map(|r| &r.name))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use mesh_api::envoy_types::pb::envoy::config::core::v3::{
        address, socket_address, Address, Locality as XdsLocality, Metadata, SocketAddress,
    };
    use mesh_api::envoy_types::pb::envoy::config::endpoint::v3::{
        lb_endpoint, Endpoint as XdsEndpoint, LbEndpoint, LocalityLbEndpoints,
    };
    use mesh_api::xds_decode::string_struct;

    use super::*;

    fn lb(addr: &str, metadata: Vec<(&str, Struct)>, health: i32) -> LbEndpoint {
        let sa: SocketAddr = addr.parse().unwrap();
        LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(XdsEndpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: sa.ip().to_string(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(
                            sa.port().into(),
                        )),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            health_status: health,
            metadata: Some(Metadata {
                filter_metadata: metadata
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn local(addr: &str, sa: &str) -> LbEndpoint {
        let id = format!("spiffe://cluster-a.mesh/ns/default/sa/{sa}");
        lb(
            addr,
            vec![(
                IDENTITY_METADATA,
                string_struct([("spiffe_id", id.as_str())]),
            )],
            0,
        )
    }

    fn tunnel(cluster: &str) -> LbEndpoint {
        let id = format!("spiffe://{cluster}.mesh/ns/default/sa/backend");
        lb(
            "127.0.1.1:15443",
            vec![(
                TUNNEL_METADATA,
                string_struct([("cluster", cluster), ("spiffe_id", id.as_str())]),
            )],
            0,
        )
    }

    fn locality(sub_zone: &str, priority: u32, eps: Vec<LbEndpoint>) -> LocalityLbEndpoints {
        LocalityLbEndpoints {
            locality: Some(XdsLocality {
                region: "eu".into(),
                zone: String::new(),
                sub_zone: sub_zone.into(),
            }),
            lb_endpoints: eps,
            priority,
            ..Default::default()
        }
    }

    #[test]
    fn local_endpoints_and_remote_clusters_in_priority_order() {
        let cla = ClusterLoadAssignment {
            cluster_name: "x".into(),
            endpoints: vec![
                locality("cluster-c", 2, vec![tunnel("cluster-c")]),
                locality("cluster-b", 1, vec![tunnel("cluster-b")]),
                locality(
                    "cluster-a",
                    0,
                    vec![
                        local("127.0.0.5:15006", "backend"),
                        lb("127.0.0.6:15006", vec![], 2), // UNHEALTHY: left out
                    ],
                ),
            ],
            ..Default::default()
        };
        let (eps, remote) = parse_cla("cluster-a", &cla).unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].address, "127.0.0.5:15006".parse().unwrap());
        assert_eq!(
            eps[0].locality.as_ref().unwrap().region.as_deref(),
            Some("eu")
        );
        let clusters: Vec<_> = remote.iter().map(|r| r.cluster.as_str()).collect();
        assert_eq!(clusters, ["cluster-b", "cluster-c"]);
        assert_eq!(
            remote[0].spiffe_id.as_str(),
            "spiffe://cluster-b.mesh/ns/default/sa/backend"
        );
    }

    #[test]
    fn invalid_endpoints_are_refused_with_their_path() {
        let no_identity = ClusterLoadAssignment {
            endpoints: vec![locality("cluster-a", 0, vec![lb("127.0.0.5:1", vec![], 0)])],
            ..Default::default()
        };
        let e = parse_cla("cluster-a", &no_identity).unwrap_err();
        assert!(
            e.starts_with("endpoints[0].lb_endpoints[0].metadata.isthmus.dev/identity"),
            "{e}"
        );

        let foreign = ClusterLoadAssignment {
            endpoints: vec![locality("cluster-b", 0, vec![local("127.0.0.5:1", "b")])],
            ..Default::default()
        };
        assert!(parse_cla("cluster-a", &foreign)
            .unwrap_err()
            .contains("sub_zone"));

        let own_tunnel = ClusterLoadAssignment {
            endpoints: vec![locality("cluster-a", 0, vec![tunnel("cluster-a")])],
            ..Default::default()
        };
        assert!(parse_cla("cluster-a", &own_tunnel)
            .unwrap_err()
            .contains("our own cluster"));

        let twice = ClusterLoadAssignment {
            endpoints: vec![locality(
                "cluster-a",
                0,
                vec![local("127.0.0.5:1", "b"), local("127.0.0.5:1", "b")],
            )],
            ..Default::default()
        };
        assert!(parse_cla("cluster-a", &twice)
            .unwrap_err()
            .contains("twice"));
    }
}

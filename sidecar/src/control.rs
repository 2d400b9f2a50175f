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
use mesh_api::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use mesh_api::envoy_types::pb::envoy::config::core::v3::{Locality as XdsLocality, Node};
use mesh_api::envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint};
use mesh_api::envoy_types::pb::google::protobuf::{value, Struct, Value};
use mesh_api::identity::{RegisterRequest, WorkloadPort};
use mesh_api::identity_client::{register_interval, BootstrapConfig, Bootstrapped, IdentityClient};
use mesh_api::transport::Target;
use mesh_api::xds::{self, CLUSTER_TYPE, ENDPOINT_TYPE, IDENTITY_METADATA, TUNNEL_METADATA};
use mesh_api::xds_decode;
use prost::Message;
use tokio::sync::watch;
use trust_bundle::{SpiffeId, SvidSource};

use mesh_failover::Health;

use crate::config::{
    Config, ControlPlane, Endpoint, FailoverSettings, Locality, Remote, Service, ServiceKey,
};

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
        if type_url == CLUSTER_TYPE {
            for (name, any) in set {
                let cluster =
                    Cluster::decode(any.value.as_slice()).map_err(|e| format!("{name}: {e}"))?;
                cluster_resilience(&cluster).map_err(|e| format!("{name}: {e}"))?;
            }
            return Ok(());
        }
        if type_url != ENDPOINT_TYPE {
            return Ok(());
        }
        for (name, any) in set {
            let cla = ClusterLoadAssignment::decode(any.value.as_slice())
                .map_err(|e| format!("{name}: {e}"))?;
            let assignment = parse_cla(&own_cluster, &cla).map_err(|e| format!("{name}: {e}"))?;
            if !assignment.remote.is_empty() && !has_gateway {
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
    let clusters = snapshot
        .decode::<Cluster>(CLUSTER_TYPE)
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
        let assignment = match clas.get(&name) {
            Some(cla) => parse_cla(&config.cluster, cla).map_err(|e| format!("{name}: {e}"))?,
            None => Assignment::default(),
        };
        let remote = if config.gateway.is_some() {
            assignment.remote
        } else {
            Vec::new()
        };
        let mut failover = FailoverSettings::default();
        if let Some(f) = assignment.overprovisioning_factor {
            failover.overprovisioning_factor = f;
        }
        out.push(Service {
            service: ServiceKey {
                namespace: o.service.namespace.clone(),
                name: o.service.name.clone(),
            },
            port: o.port,
            endpoints: assignment.endpoints,
            remote,
            resilience: match clusters.get(&name) {
                Some(c) => cluster_resilience(c).map_err(|e| format!("{name}: {e}"))?,
                None => crate::resilience::Resilience::default(),
            },
            failover,
        });
    }
    Ok(out)
}

/// The resilience policy of a CDS cluster (H3, issue 6): the
/// `isthmus.dev/traffic` metadata ([`mesh_api::traffic`]) when present
/// (the whole TrafficPolicy, defaults filled in by the controller); without
/// it, the defaults with the Envoy-native `connect_timeout` and
/// `circuit_breakers.thresholds[0]` limits applied. The native fields
/// describe the same policy for Envoy; the metadata wins when both exist.
///
/// # Errors
/// A lowercase message with the path of the field at fault.
pub fn cluster_resilience(cluster: &Cluster) -> Result<crate::resilience::Resilience, String> {
    use mesh_api::traffic::{TrafficSettings, TRAFFIC_METADATA};
    if let Some(s) = xds_decode::filter(cluster.metadata.as_ref(), TRAFFIC_METADATA) {
        let t = TrafficSettings::from_struct(s).map_err(|e| e.to_string())?;
        return crate::config::resilience::from_traffic(&t)
            .map_err(|e| format!("metadata.{TRAFFIC_METADATA}.{e}"));
    }
    let mut r = crate::resilience::Resilience::default();
    if let Some(d) = &cluster.connect_timeout {
        let ms = u64::try_from(d.seconds)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .and_then(|ms| ms.checked_add(u64::try_from(d.nanos / 1_000_000).ok()?))
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                format!(
                    "connect_timeout: {}s {}ns is not a positive duration",
                    d.seconds, d.nanos
                )
            })?;
        r.timeouts.connect = Duration::from_millis(ms);
    }
    let thresholds = cluster
        .circuit_breakers
        .as_ref()
        .and_then(|c| c.thresholds.first());
    if let Some(t) = thresholds {
        let limits = &mut r.circuit_breaker;
        for (name, v, slot) in [
            (
                "max_connections",
                &t.max_connections,
                &mut limits.max_connections,
            ),
            (
                "max_pending_requests",
                &t.max_pending_requests,
                &mut limits.max_pending_requests,
            ),
            ("max_requests", &t.max_requests, &mut limits.max_requests),
        ] {
            match v {
                None => {}
                Some(w) if w.value == 0 => {
                    return Err(format!(
                        "circuit_breakers.thresholds[0].{name}: must be greater than 0"
                    ))
                }
                Some(w) => *slot = w.value,
            }
        }
    }
    Ok(r)
}

/// Whether the last accepted CDS response holds the cluster `name`.
fn in_cds(snapshot: &AdsSnapshot, name: &str) -> bool {
    snapshot
        .types
        .get(CLUSTER_TYPE)
        .is_some_and(|r| r.resources.contains_key(name))
}

/// What the sidecar takes from one ClusterLoadAssignment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// Local endpoints (localities whose `sub_zone` is our cluster), the
    /// unhealthy ones included (they count in their level's total).
    pub endpoints: Vec<Endpoint>,
    /// Remote clusters (endpoints with tunnel metadata), by priority.
    pub remote: Vec<Remote>,
    /// `policy.overprovisioning_factor`, if set (percent).
    pub overprovisioning_factor: Option<u32>,
}

/// The local endpoints and remote clusters of one ClusterLoadAssignment,
/// with their priorities (`LocalityLbEndpoints.priority`), locality weights
/// (`load_balancing_weight`, default 1) and health: a local endpoint is
/// healthy iff its `health_status` is UNKNOWN or HEALTHY; a remote cluster
/// carries the peer's `healthy`/`total` counts from its
/// `isthmus.dev/tunnel` metadata (absent: 1/1 if HEALTHY, else 0/1).
/// Unhealthy endpoints stay in, marked so; an unhealthy endpoint that does
/// not parse is skipped.
///
/// # Errors
/// A lowercase message with the path of the field at fault.
pub fn parse_cla(own_cluster: &str, cla: &ClusterLoadAssignment) -> Result<Assignment, String> {
    let mut order: Vec<usize> = (0..cla.endpoints.len()).collect();
    order.sort_by_key(|&i| cla.endpoints[i].priority);
    let mut endpoints: Vec<Endpoint> = Vec::new();
    let mut remote: Vec<Remote> = Vec::new();
    for i in order {
        let loc = &cla.endpoints[i];
        let locality = loc.locality.clone().unwrap_or_default();
        let weight = loc
            .load_balancing_weight
            .as_ref()
            .map_or(1, |w| w.value)
            .max(1);
        for (j, lb) in loc.lb_endpoints.iter().enumerate() {
            let path = format!("endpoints[{i}].lb_endpoints[{j}]");
            let usable = xds_decode::is_usable(lb);
            let parsed = parse_lb_endpoint(own_cluster, &path, &locality, lb);
            let host = match parsed {
                Ok(h) => h,
                Err(_) if !usable => continue,
                Err(e) => return Err(e),
            };
            match host {
                LbHost::Remote {
                    cluster,
                    spiffe_id,
                    health,
                } => {
                    let health = health.unwrap_or(Health {
                        healthy: u32::from(usable),
                        total: 1,
                    });
                    let health = if usable {
                        health
                    } else {
                        Health {
                            healthy: 0,
                            total: health.total,
                        }
                    };
                    if !remote.iter().any(|r| r.cluster == cluster) {
                        remote.push(Remote {
                            cluster,
                            spiffe_id,
                            priority: loc.priority,
                            weight,
                            health,
                        });
                    }
                }
                LbHost::Local {
                    address,
                    spiffe_id,
                    locality,
                } => {
                    if endpoints.iter().any(|e| e.address == address) {
                        if usable {
                            return Err(format!("{path}: {address} is listed twice"));
                        }
                        continue;
                    }
                    endpoints.push(Endpoint {
                        address,
                        spiffe_id,
                        locality,
                        priority: loc.priority,
                        weight,
                        healthy: usable,
                    });
                }
            }
        }
    }
    let overprovisioning_factor = cla
        .policy
        .as_ref()
        .and_then(|p| p.overprovisioning_factor.as_ref())
        .map(|f| f.value)
        .filter(|f| *f > 0);
    Ok(Assignment {
        endpoints,
        remote,
        overprovisioning_factor,
    })
}

/// One lb endpoint, parsed.
enum LbHost {
    Remote {
        cluster: String,
        spiffe_id: SpiffeId,
        health: Option<Health>,
    },
    Local {
        address: SocketAddr,
        spiffe_id: SpiffeId,
        locality: Option<Locality>,
    },
}

fn parse_lb_endpoint(
    own_cluster: &str,
    path: &str,
    locality: &XdsLocality,
    lb: &LbEndpoint,
) -> Result<LbHost, String> {
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
        let healthy = count_field(tunnel, "healthy").map_err(at)?;
        let total = count_field(tunnel, "total").map_err(at)?;
        let health = match (healthy, total) {
            (None, None) => None,
            (Some(healthy), Some(total)) if healthy <= total => Some(Health { healthy, total }),
            (Some(h), Some(t)) => return Err(at(format!("healthy: {h} is above total {t}"))),
            _ => return Err(at("healthy, total: give both or neither".to_owned())),
        };
        return Ok(LbHost::Remote {
            cluster: cluster.to_owned(),
            spiffe_id,
            health,
        });
    }
    if locality.sub_zone != own_cluster {
        return Err(format!(
            "{path}: locality sub_zone {:?} is not our cluster and the endpoint has no {TUNNEL_METADATA} metadata",
            locality.sub_zone
        ));
    }
    let address: SocketAddr = xds_decode::socket_addr(lb).map_err(|e| format!("{path}.{e}"))?;
    let identity = xds_decode::filter(md, IDENTITY_METADATA)
        .ok_or_else(|| format!("{path}.metadata.{IDENTITY_METADATA}: missing"))?;
    let id = xds_decode::string_field(identity, "spiffe_id")
        .map_err(|e| format!("{path}.metadata.{IDENTITY_METADATA}.{e}"))?;
    let spiffe_id = SpiffeId::parse(id)
        .map_err(|e| format!("{path}.metadata.{IDENTITY_METADATA}.spiffe_id: {e}"))?;
    let locality = (!locality.region.is_empty() || !locality.zone.is_empty()).then(|| Locality {
        region: (!locality.region.is_empty()).then(|| locality.region.clone()),
        zone: (!locality.zone.is_empty()).then(|| locality.zone.clone()),
    });
    Ok(LbHost::Local {
        address,
        spiffe_id,
        locality,
    })
}

/// An optional non-negative whole-number field of a metadata struct
/// (protobuf `Struct` numbers are doubles).
fn count_field(s: &Struct, key: &str) -> Result<Option<u32>, String> {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        None | Some(value::Kind::NullValue(_)) => Ok(None),
        Some(value::Kind::NumberValue(n))
            if n.fract() == 0.0 && *n >= 0.0 && *n <= f64::from(u32::MAX) =>
        {
            // In range and whole, checked just above.
            Ok(Some(*n as u32))
        }
        Some(_) => Err(format!("{key}: not a whole number in 0..=4294967295")),
    }
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
        let Assignment {
            endpoints: eps,
            remote,
            overprovisioning_factor,
        } = parse_cla("cluster-a", &cla).unwrap();
        assert_eq!(overprovisioning_factor, None);
        assert_eq!(
            eps.len(),
            1,
            "an unhealthy endpoint that does not parse is skipped"
        );
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
        assert_eq!((remote[0].priority, remote[1].priority), (1, 2));
        assert_eq!(
            remote[0].health,
            Health {
                healthy: 1,
                total: 1
            }
        );
        assert_eq!(
            (eps[0].priority, eps[0].weight, eps[0].healthy),
            (0, 1, true)
        );
    }

    fn tunnel_counts(cluster: &str, healthy: f64, total: f64, status: i32) -> LbEndpoint {
        let mut e = tunnel(cluster);
        e.health_status = status;
        let md = e.metadata.as_mut().unwrap();
        let t = md.filter_metadata.get_mut(TUNNEL_METADATA).unwrap();
        for (k, v) in [("healthy", healthy), ("total", total)] {
            t.fields.insert(
                k.to_owned(),
                Value {
                    kind: Some(value::Kind::NumberValue(v)),
                },
            );
        }
        e
    }

    #[test]
    fn priorities_weights_counts_and_unhealthy_endpoints_are_kept() {
        use mesh_api::envoy_types::pb::envoy::config::endpoint::v3::cluster_load_assignment::Policy;
        use mesh_api::envoy_types::pb::google::protobuf::UInt32Value;
        let mut b = locality(
            "cluster-b",
            1,
            vec![tunnel_counts("cluster-b", 2.0, 4.0, 1)],
        );
        b.load_balancing_weight = Some(UInt32Value { value: 3 });
        let mut sick = local("127.0.0.6:15006", "backend");
        sick.health_status = 2; // UNHEALTHY
        let cla = ClusterLoadAssignment {
            endpoints: vec![
                locality(
                    "cluster-a",
                    0,
                    vec![local("127.0.0.5:15006", "backend"), sick],
                ),
                b,
                locality(
                    "cluster-c",
                    2,
                    vec![tunnel_counts("cluster-c", 0.0, 3.0, 2)],
                ),
                locality("cluster-d", 3, vec![tunnel("cluster-d")]),
            ],
            policy: Some(Policy {
                overprovisioning_factor: Some(UInt32Value { value: 200 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = parse_cla("cluster-a", &cla).unwrap();
        assert_eq!(a.overprovisioning_factor, Some(200));
        let eps: Vec<_> = a
            .endpoints
            .iter()
            .map(|e| (e.address.port(), e.healthy))
            .collect();
        assert_eq!(eps, [(15006, true), (15006, false)]);
        assert_eq!(a.endpoints[1].address, "127.0.0.6:15006".parse().unwrap());
        let r: Vec<_> = a
            .remote
            .iter()
            .map(|r| {
                (
                    r.cluster.as_str(),
                    r.priority,
                    r.weight,
                    r.health.healthy,
                    r.health.total,
                )
            })
            .collect();
        assert_eq!(
            r,
            [
                ("cluster-b", 1, 3, 2, 4),
                ("cluster-c", 2, 1, 0, 3),
                ("cluster-d", 3, 1, 1, 1),
            ]
        );

        let bad = ClusterLoadAssignment {
            endpoints: vec![locality(
                "cluster-b",
                0,
                vec![tunnel_counts("cluster-b", 5.0, 4.0, 1)],
            )],
            ..Default::default()
        };
        assert!(
            parse_cla("cluster-a", &bad)
                .unwrap_err()
                .contains("above total"),
            "healthy > total"
        );
        let frac = ClusterLoadAssignment {
            endpoints: vec![locality(
                "cluster-b",
                0,
                vec![tunnel_counts("cluster-b", 0.5, 4.0, 1)],
            )],
            ..Default::default()
        };
        assert!(parse_cla("cluster-a", &frac)
            .unwrap_err()
            .contains("healthy: not a whole number"));
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

    #[test]
    fn cds_resilience_comes_from_the_traffic_metadata_else_the_native_fields() {
        use mesh_api::envoy_types::pb::envoy::config::cluster::v3::{
            circuit_breakers::Thresholds, CircuitBreakers,
        };
        use mesh_api::envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
        use mesh_api::traffic::{TrafficSettings, TRAFFIC_METADATA};

        let native = Cluster {
            connect_timeout: Some(PbDuration {
                seconds: 0,
                nanos: 250_000_000,
            }),
            circuit_breakers: Some(CircuitBreakers {
                thresholds: vec![Thresholds {
                    max_requests: Some(UInt32Value { value: 7 }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = cluster_resilience(&native).unwrap();
        assert_eq!(r.timeouts.connect, Duration::from_millis(250));
        assert_eq!(r.circuit_breaker.max_requests, 7);
        assert_eq!(r.circuit_breaker.max_connections, 1024);
        assert_eq!(r.retries, crate::resilience::RetryPolicy::default());

        let mut t = TrafficSettings::default();
        t.retries.attempts = 5;
        t.timeouts.request_ms = 0;
        let with_metadata = Cluster {
            metadata: Some(Metadata {
                filter_metadata: [(TRAFFIC_METADATA.to_owned(), t.to_struct())].into(),
                ..Default::default()
            }),
            ..native
        };
        let r = cluster_resilience(&with_metadata).unwrap();
        assert_eq!(r.retries.attempts, 5);
        assert_eq!(r.timeouts.request, None);
        assert_eq!(r.circuit_breaker.max_requests, 1024, "the metadata wins");

        t.retries.attempts = 99;
        let bad = Cluster {
            metadata: Some(Metadata {
                filter_metadata: [(TRAFFIC_METADATA.to_owned(), t.to_struct())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(cluster_resilience(&bad)
            .unwrap_err()
            .contains("retries.attempts"));
    }
}

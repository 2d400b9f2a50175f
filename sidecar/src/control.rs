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
use std::sync::Arc;
use std::time::Duration;

use mesh_api::ads_client::{AdsClient, AdsConfig, Subscriptions, Validator};
use mesh_api::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use mesh_api::envoy_types::pb::envoy::config::core::v3::{Locality as XdsLocality, Node};
use mesh_api::envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mesh_api::envoy_types::pb::google::protobuf::{value, Struct, Value};
use mesh_api::identity::{RegisterRequest, WorkloadPort};
use mesh_api::identity_client::{register_interval, BootstrapConfig, Bootstrapped, IdentityClient};
use mesh_api::transport::Target;
use mesh_api::xds::{self, CLUSTER_TYPE, ENDPOINT_TYPE};
use prost::Message;
use tokio::sync::watch;
use trust_bundle::SvidSource;

use crate::config::{Config, ControlPlane};

mod catalog;

pub use catalog::{catalog, cluster_resilience, failover_from_cds, parse_cla, Assignment};

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
    // The controller computes EDS priorities per client locality (issue 6,
    // contract C): region and zone from `locality`, sub_zone = our cluster.
    let own = config.locality.clone().unwrap_or_default();
    Node {
        id: format!("sidecar~{}~{}", config.admin.ip(), config.spiffe_id),
        cluster: config.cluster.clone(),
        metadata: Some(metadata),
        locality: Some(XdsLocality {
            region: own.region.unwrap_or_default(),
            zone: own.zone.unwrap_or_default(),
            sub_zone: config.cluster.clone(),
        }),
        ..Default::default()
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
    use mesh_api::envoy_types::pb::google::protobuf::{Duration as ProtoDuration, UInt32Value};
    use mesh_api::xds::{IDENTITY_METADATA, TUNNEL_METADATA};
    use mesh_api::xds_decode::string_struct;
    use mesh_failover::Health;
    use std::net::SocketAddr;

    use super::*;
    use crate::config::FailoverSettings;

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

    #[test]
    fn the_node_carries_our_locality_for_per_client_priorities() {
        let yaml = "cluster: cluster-a\nidentity:\n  spiffe_id: spiffe://cluster-a.mesh/ns/default/sa/f\n  bundles: b.json\nadmin: 127.0.0.1:15000\nlocality: { region: eu, zone: eu-1a }\ncontrol_plane: { address: \"127.0.0.1:1\", join_token_file: t }\n";
        let c = Config::from_yaml(yaml, std::path::Path::new(".")).unwrap();
        let n = node(&c);
        assert_eq!(
            n.locality,
            Some(XdsLocality {
                region: "eu".into(),
                zone: "eu-1a".into(),
                sub_zone: "cluster-a".into(),
            })
        );
    }

    #[test]
    fn failover_settings_come_from_the_cds_cluster() {
        use mesh_api::envoy_types::pb::envoy::config::cluster::v3::{cluster, OutlierDetection};
        use mesh_api::envoy_types::pb::envoy::r#type::v3::Percent;
        assert_eq!(
            failover_from_cds(&Cluster::default()),
            FailoverSettings::default()
        );
        let c = Cluster {
            common_lb_config: Some(cluster::CommonLbConfig {
                healthy_panic_threshold: Some(Percent { value: 30.0 }),
                ..Default::default()
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx: Some(UInt32Value { value: 0 }),
                base_ejection_time: Some(ProtoDuration {
                    seconds: 1,
                    nanos: 500_000_000,
                }),
                max_ejection_percent: Some(UInt32Value { value: 250 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = failover_from_cds(&c);
        assert_eq!(f.panic_threshold_percent, 30);
        assert_eq!(f.overprovisioning_factor, 140);
        assert_eq!(f.outlier.consecutive_5xx, 0);
        assert_eq!(f.outlier.consecutive_gateway_failure, 5);
        assert_eq!(f.outlier.base_ejection_time, Duration::from_millis(1500));
        assert_eq!(f.outlier.interval, Duration::from_secs(10));
        assert_eq!(f.outlier.max_ejection_percent, 100);
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

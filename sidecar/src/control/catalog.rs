//! The catalog half of the sidecar's control-plane link: CDS and EDS
//! accepted over ADS turned into `services` (pure functions; invalid
//! resources become lowercase errors with the field path, which the ADS
//! validator NACKs).

use std::net::SocketAddr;
use std::time::Duration;

use mesh_api::ads_client::AdsSnapshot;
use mesh_api::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use mesh_api::envoy_types::pb::envoy::config::core::v3::Locality as XdsLocality;
use mesh_api::envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint};
use mesh_api::envoy_types::pb::google::protobuf::{
    value, Duration as ProtoDuration, Struct, UInt32Value,
};
use mesh_api::xds::{self, CLUSTER_TYPE, ENDPOINT_TYPE, IDENTITY_METADATA, TUNNEL_METADATA};
use mesh_api::xds_decode;
use trust_bundle::SpiffeId;

use mesh_failover::Health;

use crate::config::{Config, Endpoint, FailoverSettings, Locality, Remote, Service, ServiceKey};

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
        let mut failover = clusters
            .get(&name)
            .map_or_else(FailoverSettings::default, failover_from_cds);
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

// ---- failover settings from CDS (H2; issue 6) ----

/// The failover settings of a CDS cluster: the panic threshold from
/// `common_lb_config.healthy_panic_threshold` and outlier detection from
/// `outlier_detection`, each field at its default when absent (the
/// overprovisioning factor comes from the CLA).
pub fn failover_from_cds(cluster: &Cluster) -> FailoverSettings {
    let mut f = FailoverSettings::default();
    if let Some(p) = cluster
        .common_lb_config
        .as_ref()
        .and_then(|c| c.healthy_panic_threshold.as_ref())
    {
        if p.value.is_finite() {
            // Clamped to 0..=100 first, so the cast cannot truncate.
            f.panic_threshold_percent = p.value.clamp(0.0, 100.0).round() as u32;
        }
    }
    if let Some(od) = &cluster.outlier_detection {
        let o = &mut f.outlier;
        let count = |v: &Option<UInt32Value>, d: u32| v.as_ref().map_or(d, |v| v.value);
        let time = |v: &Option<ProtoDuration>, d: Duration| {
            v.as_ref()
                .filter(|v| v.seconds >= 0 && v.nanos >= 0)
                .map_or(d, |v| {
                    Duration::new(v.seconds.unsigned_abs(), v.nanos.unsigned_abs())
                })
        };
        o.consecutive_5xx = count(&od.consecutive_5xx, o.consecutive_5xx);
        o.consecutive_gateway_failure = count(
            &od.consecutive_gateway_failure,
            o.consecutive_gateway_failure,
        );
        o.interval = time(&od.interval, o.interval);
        o.base_ejection_time = time(&od.base_ejection_time, o.base_ejection_time);
        o.max_ejection_time = time(&od.max_ejection_time, o.max_ejection_time);
        o.max_ejection_percent = count(&od.max_ejection_percent, o.max_ejection_percent).min(100);
        o.success_rate_minimum_hosts =
            count(&od.success_rate_minimum_hosts, o.success_rate_minimum_hosts);
        o.success_rate_request_volume = count(
            &od.success_rate_request_volume,
            o.success_rate_request_volume,
        );
        o.success_rate_stdev_factor =
            count(&od.success_rate_stdev_factor, o.success_rate_stdev_factor);
    }
    f
}

// ---- end failover settings from CDS ----

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

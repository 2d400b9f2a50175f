//! xDS v3 conventions shared by the controller's ADS server and our proxies'
//! ADS client (`docs/xds.md`).
//!
//! Names follow Istio's, so operators reading a config dump feel at home:
//!
//! | resource | name |
//! |---|---|
//! | Cluster / ClusterLoadAssignment of a service port | `outbound\|<port>\|\|<svc>.<ns>.svc.clusterset.local` |
//! | Listener (gRPC API listener) and RouteConfiguration | `<svc>.<ns>.svc.clusterset.local:<port>` |
//! | Cluster of a peer cluster's gateways (gateway role) | `peer\|<cluster>` |
//! | Cluster / ClusterLoadAssignment of an export (gateway role) | `export\|<port>\|\|<svc>.<ns>` |
//!
//! Localities are `{region, zone, sub_zone: <cluster name>}` for local and
//! remote endpoints alike. A remote cluster's locality holds one lb endpoint
//! whose address is the local east-west gateway and whose metadata names the
//! tunnel target under [`TUNNEL_METADATA`]. Local endpoints carry their
//! SPIFFE ID under [`IDENTITY_METADATA`].

/// Type URL of `envoy.config.listener.v3.Listener`.
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of `envoy.config.route.v3.RouteConfiguration`.
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Type URL of `envoy.config.cluster.v3.Cluster`.
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of `envoy.config.endpoint.v3.ClusterLoadAssignment`.
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// Endpoint metadata filter naming a remote cluster reached through the
/// tunnel: `{"cluster": "<name>", "spiffe_id": "<expected destination>",
/// "healthy": <number>, "total": <number>}` (the counts are the peer's
/// report for that locality).
pub const TUNNEL_METADATA: &str = "isthmus.dev/tunnel";
/// Endpoint metadata filter with a local endpoint's identity:
/// `{"spiffe_id": "<id>"}`.
pub const IDENTITY_METADATA: &str = "isthmus.dev/identity";
/// Cluster metadata filter with Isthmus facts of a cluster:
/// `{"protocol": "http"|"grpc"|"tcp", ...}`; for `peer|` clusters also
/// `trust_domain`, `spiffe_id`, `transport`; for `export|` clusters
/// `exported_to` (a list of cluster names) and `service` (`ns/name`).
/// Service clusters also carry
/// [`TRAFFIC_METADATA`](crate::traffic::TRAFFIC_METADATA).
pub const CLUSTER_METADATA: &str = "isthmus.dev/cluster";
/// Node metadata key with the proxy's role: `"sidecar"`, `"gateway"`;
/// absent for Envoy and gRPC clients.
pub const NODE_ROLE: &str = "isthmus.role";
/// Node metadata key (Envoy clients): list of `"<ns>/<svc>:<port>@<ip>:<port>"`
/// upstreams to get outbound listeners for.
pub const NODE_UPSTREAMS: &str = "isthmus.upstreams";

/// `<svc>.<ns>.svc.clusterset.local` (MCS API naming).
pub fn clusterset_host(namespace: &str, service: &str) -> String {
    format!("{service}.{namespace}.svc.clusterset.local")
}

/// Cluster and ClusterLoadAssignment name of a service port.
pub fn service_cluster_name(namespace: &str, service: &str, port: u16) -> String {
    format!("outbound|{port}||{}", clusterset_host(namespace, service))
}

/// Listener (API listener) and RouteConfiguration name of a service port.
pub fn listener_name(namespace: &str, service: &str, port: u16) -> String {
    format!("{}:{port}", clusterset_host(namespace, service))
}

/// Cluster name of a peer cluster's gateways.
pub fn peer_cluster_name(cluster: &str) -> String {
    format!("peer|{cluster}")
}

/// Cluster and ClusterLoadAssignment name of an export (gateway role).
pub fn export_cluster_name(namespace: &str, service: &str, port: u16) -> String {
    format!("export|{port}||{service}.{namespace}")
}

/// Parses [`service_cluster_name`] back into `(namespace, service, port)`.
pub fn parse_service_cluster_name(name: &str) -> Option<(String, String, u16)> {
    let rest = name.strip_prefix("outbound|")?;
    let (port, host) = rest.split_once("||")?;
    let port: u16 = port.parse().ok()?;
    let host = host.strip_suffix(".svc.clusterset.local")?;
    let (service, namespace) = host.split_once('.')?;
    if service.is_empty() || namespace.is_empty() || namespace.contains('.') {
        return None;
    }
    Some((namespace.to_owned(), service.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_cluster_names_round_trip() {
        let name = service_cluster_name("default", "backend", 8080);
        assert_eq!(name, "outbound|8080||backend.default.svc.clusterset.local");
        assert_eq!(
            parse_service_cluster_name(&name),
            Some(("default".into(), "backend".into(), 8080))
        );
        assert_eq!(
            parse_service_cluster_name("outbound|x||a.b.svc.clusterset.local"),
            None
        );
        assert_eq!(parse_service_cluster_name("peer|cluster-b"), None);
    }
}

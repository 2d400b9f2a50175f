//! What the server reads from an xDS client's `Node` (docs/xds.md, "Node").

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{value::Kind, Struct};
use mesh_api::xds::{NODE_ROLE, NODE_UPSTREAMS};
use mesh_failover::Locality;

/// gRPC's client feature: it ignores `overprovisioning_factor`
/// (gRFC A27), so priorities must not rely on it.
pub const FEATURE_NO_OVERPROVISIONING: &str = "envoy.lb.does_not_support_overprovisioning";

/// The role a client announces under [`NODE_ROLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeRole {
    /// No role: an Envoy or a proxyless gRPC client.
    Client,
    /// An Isthmus sidecar.
    Sidecar,
    /// An Isthmus east-west gateway: also gets `peer|` and `export|` clusters.
    Gateway,
}

/// One outbound listener an Envoy client asked for under [`NODE_UPSTREAMS`]:
/// `"<ns>/<svc>:<port>@<ip>:<port>"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Upstream {
    /// Namespace of the service.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// Service port.
    pub port: u16,
    /// Where the listener binds on the client's host.
    pub listen: SocketAddr,
}

/// `node.locality` as sent (empty strings when absent). `sub_zone` is the
/// client's cluster in Isthmus's convention.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NodeLocality {
    /// `locality.region`.
    pub region: String,
    /// `locality.zone`.
    pub zone: String,
    /// `locality.sub_zone`: the client's cluster.
    pub sub_zone: String,
}

impl NodeLocality {
    /// The client's locality for priorities: an empty `sub_zone` means our
    /// own cluster (a client of this controller runs in its cluster; Envoy's
    /// `node.cluster` is a service name, so it is not used), an empty
    /// region our cluster's region; the zone stays as sent.
    pub fn resolve(&self, own_cluster: &str, own_region: &str) -> Locality {
        let or = |v: &str, d: &str| {
            if v.is_empty() {
                d.to_owned()
            } else {
                v.to_owned()
            }
        };
        Locality {
            region: or(&self.region, own_region),
            zone: self.zone.clone(),
            cluster: or(&self.sub_zone, own_cluster),
        }
    }
}

/// The facts of a client's `Node` that shape its resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// `node.id` (for logs).
    pub id: String,
    /// The role from node metadata.
    pub role: NodeRole,
    /// Outbound listeners wanted (Envoy clients).
    pub upstreams: Vec<Upstream>,
    /// `true` unless the client announced [`FEATURE_NO_OVERPROVISIONING`].
    pub overprovisioning: bool,
    /// `node.client_features` as sent.
    pub client_features: Vec<String>,
    /// `node.locality` as sent: decides the EDS priorities it gets.
    pub locality: NodeLocality,
}

impl NodeInfo {
    /// Reads a node. Malformed metadata entries are skipped with a warning
    /// (the client still gets everything else), never an error.
    pub fn from_node(node: &Node) -> Self {
        let empty = Struct::default();
        let metadata = node.metadata.as_ref().unwrap_or(&empty);
        let role = match string_field(metadata, NODE_ROLE).as_deref() {
            None => NodeRole::Client,
            Some("sidecar") => NodeRole::Sidecar,
            Some("gateway") => NodeRole::Gateway,
            Some(other) => {
                tracing::warn!(node = %node.id, role = other, "unknown {NODE_ROLE} in node metadata; treated as a plain client");
                NodeRole::Client
            }
        };
        let mut upstreams = Vec::new();
        if let Some(value) = metadata.fields.get(NODE_UPSTREAMS) {
            match &value.kind {
                Some(Kind::ListValue(list)) => {
                    for (i, v) in list.values.iter().enumerate() {
                        let parsed = match &v.kind {
                            Some(Kind::StringValue(s)) => parse_upstream(s),
                            _ => Err("not a string".to_owned()),
                        };
                        match parsed {
                            Ok(u) => upstreams.push(u),
                            Err(e) => tracing::warn!(
                                node = %node.id,
                                "node metadata {NODE_UPSTREAMS}[{i}]: {e}; entry ignored"
                            ),
                        }
                    }
                }
                _ => {
                    tracing::warn!(node = %node.id, "node metadata {NODE_UPSTREAMS} is not a list; ignored")
                }
            }
        }
        upstreams.sort();
        upstreams.dedup();
        NodeInfo {
            id: node.id.clone(),
            role,
            upstreams,
            overprovisioning: !node
                .client_features
                .iter()
                .any(|f| f == FEATURE_NO_OVERPROVISIONING),
            client_features: node.client_features.clone(),
            locality: node
                .locality
                .as_ref()
                .map(|l| NodeLocality {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                    sub_zone: l.sub_zone.clone(),
                })
                .unwrap_or_default(),
        }
    }
}

impl Default for NodeInfo {
    fn default() -> Self {
        NodeInfo {
            id: String::new(),
            role: NodeRole::Client,
            upstreams: Vec::new(),
            overprovisioning: true,
            client_features: Vec::new(),
            locality: NodeLocality::default(),
        }
    }
}

fn string_field(s: &Struct, key: &str) -> Option<String> {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

/// Parses `"<ns>/<svc>:<port>@<ip>:<port>"`; the error says which part is wrong.
pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let (target, listen) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?}: expected <ns>/<svc>:<port>@<ip>:<port>, no '@'"))?;
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| format!("{s:?}: listen address {listen:?} is not <ip>:<port>"))?;
    let (ns_svc, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: {target:?} has no ':<port>'"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{s:?}: service port {port:?} is not 1..=65535"))?;
    let (namespace, service) = ns_svc
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: {ns_svc:?} is not <ns>/<svc>"))?;
    let label = |x: &str| {
        !x.is_empty()
            && x.len() <= 63
            && x.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !label(namespace) || !label(service) {
        return Err(format!(
            "{s:?}: namespace and service must be DNS labels, got {namespace:?} and {service:?}"
        ));
    }
    Ok(Upstream {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        port,
        listen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{ListValue, Value};

    fn s(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    #[test]
    fn upstreams_parse_and_bad_entries_are_named() {
        let u = parse_upstream("default/web:8080@127.0.0.1:15001").unwrap();
        assert_eq!(
            (u.namespace.as_str(), u.service.as_str(), u.port),
            ("default", "web", 8080)
        );
        assert_eq!(u.listen, "127.0.0.1:15001".parse().unwrap());
        assert!(parse_upstream("default/web:8080")
            .unwrap_err()
            .contains("no '@'"));
        assert!(parse_upstream("web:8080@127.0.0.1:1")
            .unwrap_err()
            .contains("<ns>/<svc>"));
        assert!(parse_upstream("a/b:0@127.0.0.1:1")
            .unwrap_err()
            .contains("1..=65535"));
        assert!(parse_upstream("a/b:1@localhost:1")
            .unwrap_err()
            .contains("listen address"));
    }

    #[test]
    fn node_metadata_role_upstreams_and_features() {
        let mut md = Struct::default();
        md.fields.insert(NODE_ROLE.into(), s("gateway"));
        md.fields.insert(
            NODE_UPSTREAMS.into(),
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![s("a/b:1@127.0.0.1:2"), s("garbage"), Value::default()],
                })),
            },
        );
        let node = Node {
            id: "n1".into(),
            metadata: Some(md),
            client_features: vec![FEATURE_NO_OVERPROVISIONING.into()],
            ..Default::default()
        };
        let info = NodeInfo::from_node(&node);
        assert_eq!(info.role, NodeRole::Gateway);
        assert_eq!(info.upstreams.len(), 1);
        assert!(!info.overprovisioning);
        assert!(NodeInfo::from_node(&Node::default()).overprovisioning);
        assert_eq!(NodeInfo::from_node(&Node::default()).role, NodeRole::Client);
    }

    #[test]
    fn node_locality_resolves_with_our_cluster_and_region_as_defaults() {
        use envoy_types::pb::envoy::config::core::v3::Locality as XdsLocality;
        let node = Node {
            cluster: "web".into(), // Envoy's service cluster: not a mesh cluster
            locality: Some(XdsLocality {
                region: String::new(),
                zone: "z1".into(),
                sub_zone: String::new(),
            }),
            ..Default::default()
        };
        let info = NodeInfo::from_node(&node);
        assert_eq!(info.locality.zone, "z1");
        assert_eq!(
            info.locality.resolve("cluster-a", "eu"),
            Locality {
                region: "eu".into(),
                zone: "z1".into(),
                cluster: "cluster-a".into()
            }
        );
        let node = Node {
            locality: Some(XdsLocality {
                region: "us".into(),
                zone: "us-1".into(),
                sub_zone: "cluster-b".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            NodeInfo::from_node(&node)
                .locality
                .resolve("cluster-a", "eu"),
            Locality {
                region: "us".into(),
                zone: "us-1".into(),
                cluster: "cluster-b".into()
            }
        );
    }
}

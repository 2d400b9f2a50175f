//! The gateway's config from the controller (config section
//! `control_plane`): CDS (wildcard) and EDS for the gateway-role clusters.
//!
//! - `peer|<cluster>` clusters become `peers`: cluster metadata
//!   `isthmus.dev/cluster` carries `trust_domain`, optional `spiffe_id`,
//!   `transport` (`quic` | `tcp-tls`) and `tcp_address`; the peer gateway's
//!   replicas (`addresses`: IPs or DNS names, `STRICT_DNS`) are every
//!   usable endpoint of the cluster's inline `load_assignment` or of the
//!   ClusterLoadAssignment of the same name, in order, duplicates dropped
//!   (the peer's `MeshLink.gatewayAddresses` / its controller's
//!   `gateways[]`).
//! - `export|<port>||<svc>.<ns>` clusters become `exports`: metadata
//!   `exported_to` (list of peer clusters) and `service` (`ns/name`),
//!   endpoints from the ClusterLoadAssignment of the same name (identity
//!   metadata `isthmus.dev/identity`, locality region/zone).
//!
//! [`from_xds`] is pure; the result goes through
//! [`crate::Config::with_dynamic`], i.e. the same validation as the file,
//! and then the gateway's reload path. Resources that do not parse are
//! NACKed by [`validator`]; a set that parses but does not validate as a
//! whole (e.g. a peer without an address yet) keeps the last good config.

use std::collections::BTreeSet;

use mesh_api::ads_client::{AdsSnapshot, Subscriptions, Validator};
use mesh_api::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use mesh_api::envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use mesh_api::envoy_types::pb::google::protobuf::Any;
use mesh_api::xds::{CLUSTER_METADATA, CLUSTER_TYPE, ENDPOINT_TYPE, IDENTITY_METADATA};
use mesh_api::xds_decode;
use prost::Message;

use crate::config::{Locality, RawEndpoint, RawExport, RawPeer, RawTransport};

/// CDS wildcard, and EDS for every `peer|`/`export|` cluster held.
pub fn subscriptions(snapshot: &AdsSnapshot) -> Subscriptions {
    let names: BTreeSet<String> = snapshot
        .types
        .get(CLUSTER_TYPE)
        .map(|r| {
            r.resources
                .keys()
                .filter(|n| n.starts_with("peer|") || n.starts_with("export|"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut subs = Subscriptions::from([(CLUSTER_TYPE.to_owned(), BTreeSet::new())]);
    if !names.is_empty() {
        subs.insert(ENDPOINT_TYPE.to_owned(), names);
    }
    subs
}

/// NACKs resources that do not parse (per resource; cross-resource rules
/// are checked when the config is built).
pub fn validator() -> Validator {
    std::sync::Arc::new(|type_url: &str, set| {
        for (name, any) in set {
            check(type_url, name, any).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    })
}

fn check(type_url: &str, name: &str, any: &Any) -> Result<(), String> {
    if type_url == CLUSTER_TYPE {
        let c = Cluster::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
        if let Some(peer) = name.strip_prefix("peer|") {
            peer_facts(peer, &c)?;
        } else if name.starts_with("export|") {
            export_facts(name, &c)?;
        }
    } else if type_url == ENDPOINT_TYPE {
        let cla = ClusterLoadAssignment::decode(any.value.as_slice()).map_err(|e| e.to_string())?;
        if name.starts_with("export|") {
            endpoints(&cla)?;
        } else {
            all_addresses(&cla)?;
        }
    }
    Ok(())
}

/// `peers` and `exports` from accepted resources. Peers without an address
/// yet are left out (their EDS may still come), and so are `exported_to`
/// entries naming clusters that are not peers.
///
/// # Errors
/// A lowercase message naming the resource at fault.
pub fn from_xds(snapshot: &AdsSnapshot) -> Result<(Vec<RawPeer>, Vec<RawExport>), String> {
    let clusters = snapshot
        .decode::<Cluster>(CLUSTER_TYPE)
        .map_err(|e| mesh_api::error_chain(&e))?;
    let clas = snapshot
        .decode::<ClusterLoadAssignment>(ENDPOINT_TYPE)
        .map_err(|e| mesh_api::error_chain(&e))?;
    let mut peers = Vec::new();
    for (name, c) in &clusters {
        let Some(peer) = name.strip_prefix("peer|") else {
            continue;
        };
        let mut raw = peer_facts(peer, c).map_err(|e| format!("{name}: {e}"))?;
        let inline = c
            .load_assignment
            .as_ref()
            .filter(|l| !l.endpoints.is_empty());
        let addresses = match inline.or_else(|| clas.get(name)) {
            Some(cla) => all_addresses(cla).map_err(|e| format!("{name}: {e}"))?,
            None => Vec::new(),
        };
        if addresses.is_empty() {
            tracing::info!(peer, "peer has no gateway address yet; left out");
            continue;
        }
        raw.addresses = addresses;
        peers.push(raw);
    }
    let peer_names: BTreeSet<&str> = peers.iter().map(|p| p.cluster.as_str()).collect();
    let mut exports = Vec::new();
    for (name, c) in &clusters {
        if !name.starts_with("export|") {
            continue;
        }
        let mut raw = export_facts(name, c).map_err(|e| format!("{name}: {e}"))?;
        raw.exported_to.retain(|p| peer_names.contains(p.as_str()));
        let inline = c
            .load_assignment
            .as_ref()
            .filter(|l| !l.endpoints.is_empty());
        if let Some(cla) = inline.or_else(|| clas.get(name)) {
            raw.endpoints = endpoints(cla).map_err(|e| format!("{name}: {e}"))?;
        }
        exports.push(raw);
    }
    Ok((peers, exports))
}

/// A peer's facts from its cluster metadata (address left empty).
fn peer_facts(peer: &str, c: &Cluster) -> Result<RawPeer, String> {
    let at = |e: String| format!("metadata.{CLUSTER_METADATA}.{e}");
    let md = xds_decode::filter(c.metadata.as_ref(), CLUSTER_METADATA)
        .ok_or_else(|| format!("metadata.{CLUSTER_METADATA}: missing"))?;
    let trust_domain = xds_decode::string_field(md, "trust_domain").map_err(at)?;
    let spiffe_id = xds_decode::opt_string_field(md, "spiffe_id").map_err(at)?;
    let transport = match xds_decode::opt_string_field(md, "transport").map_err(at)? {
        None | Some("quic") => None,
        Some("tcp-tls") => Some(RawTransport::TcpTls),
        Some(other) => return Err(at(format!("transport: {other:?} is not quic or tcp-tls"))),
    };
    let tcp_address = xds_decode::opt_string_field(md, "tcp_address").map_err(at)?;
    Ok(RawPeer {
        cluster: peer.to_owned(),
        trust_domain: trust_domain.to_owned(),
        address: String::new(),
        addresses: Vec::new(),
        spiffe_id: spiffe_id.map(str::to_owned),
        transport,
        tcp_address: tcp_address.map(str::to_owned),
        tcp_addresses: Vec::new(),
    })
}

/// An export's facts from its name and cluster metadata (no endpoints).
fn export_facts(name: &str, c: &Cluster) -> Result<RawExport, String> {
    let (port, host) = name
        .strip_prefix("export|")
        .and_then(|r| r.split_once("||"))
        .ok_or_else(|| "not export|<port>||<svc>.<ns>".to_owned())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} in the name is not 1-65535"))?;
    let (svc, ns) = host
        .split_once('.')
        .ok_or_else(|| format!("{host:?} in the name is not <svc>.<ns>"))?;
    let at = |e: String| format!("metadata.{CLUSTER_METADATA}.{e}");
    let md = xds_decode::filter(c.metadata.as_ref(), CLUSTER_METADATA)
        .ok_or_else(|| format!("metadata.{CLUSTER_METADATA}: missing"))?;
    let service = match xds_decode::opt_string_field(md, "service").map_err(at)? {
        Some(s) => s.to_owned(),
        None => format!("{ns}/{svc}"),
    };
    if service != format!("{ns}/{svc}") {
        return Err(at(format!(
            "service: {service:?} does not match the name's {ns}/{svc}"
        )));
    }
    let exported_to = xds_decode::string_list_field(md, "exported_to").map_err(at)?;
    Ok(RawExport {
        service,
        port,
        exported_to,
        endpoints: Vec::new(),
    })
}

/// The `host:port` of every usable endpoint (one per gateway replica), in
/// order, without duplicates.
fn all_addresses(cla: &ClusterLoadAssignment) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for (i, loc) in cla.endpoints.iter().enumerate() {
        for (j, lb) in loc.lb_endpoints.iter().enumerate() {
            if !xds_decode::is_usable(lb) {
                continue;
            }
            let a = xds_decode::host_port(lb)
                .map_err(|e| format!("endpoints[{i}].lb_endpoints[{j}].{e}"))?;
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// An export's endpoints (usable ones, identity metadata required).
fn endpoints(cla: &ClusterLoadAssignment) -> Result<Vec<RawEndpoint>, String> {
    let mut out = Vec::new();
    for (i, loc) in cla.endpoints.iter().enumerate() {
        let locality = loc.locality.clone().unwrap_or_default();
        for (j, lb) in loc.lb_endpoints.iter().enumerate() {
            if !xds_decode::is_usable(lb) {
                continue;
            }
            let path = format!("endpoints[{i}].lb_endpoints[{j}]");
            let address = xds_decode::socket_addr(lb).map_err(|e| format!("{path}.{e}"))?;
            let md = xds_decode::filter(lb.metadata.as_ref(), IDENTITY_METADATA)
                .ok_or_else(|| format!("{path}.metadata.{IDENTITY_METADATA}: missing"))?;
            let id = xds_decode::string_field(md, "spiffe_id")
                .map_err(|e| format!("{path}.metadata.{IDENTITY_METADATA}.{e}"))?;
            let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            let locality =
                (!locality.region.is_empty() || !locality.zone.is_empty()).then(|| Locality {
                    region: some(&locality.region),
                    zone: some(&locality.zone),
                });
            out.push(RawEndpoint {
                address: address.to_string(),
                spiffe_id: id.to_owned(),
                locality,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mesh_api::ads_client::Resources;
    use mesh_api::envoy_types::pb::envoy::config::core::v3::{address, Address, Metadata};
    use mesh_api::envoy_types::pb::envoy::config::endpoint::v3::{
        lb_endpoint, LbEndpoint, LocalityLbEndpoints,
    };
    use mesh_api::envoy_types::pb::google::protobuf::{value, ListValue, Struct, Value};
    use mesh_api::xds_decode::string_struct;

    use super::*;

    fn cluster(name: &str, md: Struct, addr: Option<&str>) -> Any {
        let load_assignment = addr.map(|a| ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb(a, None)],
                ..Default::default()
            }],
            ..Default::default()
        });
        Any {
            type_url: CLUSTER_TYPE.into(),
            value: Cluster {
                name: name.into(),
                metadata: Some(Metadata {
                    filter_metadata: [(CLUSTER_METADATA.to_owned(), md)].into(),
                    ..Default::default()
                }),
                load_assignment,
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    fn lb(addr: &str, id: Option<&str>) -> LbEndpoint {
        mesh_api::fake::lb_endpoint(addr.parse().unwrap(), id)
    }

    fn list(items: &[&str]) -> Value {
        Value {
            kind: Some(value::Kind::ListValue(ListValue {
                values: items
                    .iter()
                    .map(|s| Value {
                        kind: Some(value::Kind::StringValue((*s).to_owned())),
                    })
                    .collect(),
            })),
        }
    }

    fn snapshot(clusters: Vec<Any>, clas: Vec<ClusterLoadAssignment>) -> AdsSnapshot {
        let named = |v: Vec<(String, Any)>| Resources {
            version: "1".into(),
            resources: v.into_iter().collect::<BTreeMap<_, _>>(),
        };
        let cds = clusters
            .into_iter()
            .map(|a| (Cluster::decode(a.value.as_slice()).unwrap().name, a))
            .collect();
        let eds = clas
            .into_iter()
            .map(|c| {
                (
                    c.cluster_name.clone(),
                    Any {
                        type_url: ENDPOINT_TYPE.into(),
                        value: c.encode_to_vec(),
                    },
                )
            })
            .collect();
        AdsSnapshot {
            types: [
                (CLUSTER_TYPE.to_owned(), named(cds)),
                (ENDPOINT_TYPE.to_owned(), named(eds)),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn peers_exports_and_their_endpoints() {
        let mut export_md = string_struct([("service", "default/web")]);
        export_md
            .fields
            .insert("exported_to".into(), list(&["cluster-b", "cluster-gone"]));
        let snap = snapshot(
            vec![
                cluster(
                    "peer|cluster-b",
                    string_struct([
                        ("trust_domain", "cluster-b.mesh"),
                        ("transport", "tcp-tls"),
                        ("tcp_address", "127.0.0.2:15444"),
                    ]),
                    Some("127.0.0.2:15443"),
                ),
                // No address yet: left out, and so is it from exported_to.
                cluster(
                    "peer|cluster-c",
                    string_struct([("trust_domain", "cluster-c.mesh")]),
                    None,
                ),
                cluster("export|8080||web.default", export_md, None),
                cluster(
                    "outbound|80||x.y.svc.clusterset.local",
                    Struct::default(),
                    None,
                ),
            ],
            vec![ClusterLoadAssignment {
                cluster_name: "export|8080||web.default".into(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![lb(
                        "127.0.0.9:15006",
                        Some("spiffe://cluster-a.mesh/ns/default/sa/web"),
                    )],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        );
        let (peers, exports) = from_xds(&snap).unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].cluster, "cluster-b");
        assert_eq!(peers[0].addresses, vec!["127.0.0.2:15443"]);
        assert_eq!(peers[0].transport, Some(RawTransport::TcpTls));
        assert_eq!(peers[0].tcp_address.as_deref(), Some("127.0.0.2:15444"));
        assert_eq!(exports.len(), 1);
        assert_eq!(
            (exports[0].service.as_str(), exports[0].port),
            ("default/web", 8080)
        );
        assert_eq!(exports[0].exported_to, vec!["cluster-b"]);
        assert_eq!(exports[0].endpoints[0].address, "127.0.0.9:15006");

        // A peer gateway named by DNS keeps its name.
        let mut named = lb("127.0.0.3:15443", None);
        if let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &mut named.host_identifier {
            if let Some(Address {
                address: Some(address::Address::SocketAddress(sa)),
            }) = &mut ep.address
            {
                sa.address = "gw.cluster-d.example".into();
            }
        }
        let dns = ClusterLoadAssignment {
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![named],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            all_addresses(&dns).unwrap(),
            vec!["gw.cluster-d.example:15443"]
        );

        let subs = subscriptions(&snap);
        assert!(subs[CLUSTER_TYPE].is_empty(), "CDS is a wildcard");
        assert_eq!(subs[ENDPOINT_TYPE].len(), 3);
    }

    #[test]
    fn every_gateway_replica_the_peer_advertises_is_taken() {
        let cla = ClusterLoadAssignment {
            cluster_name: "peer|cluster-b".into(),
            endpoints: vec![
                LocalityLbEndpoints {
                    lb_endpoints: vec![lb("127.0.0.2:15443", None), lb("127.0.0.3:15443", None)],
                    ..Default::default()
                },
                LocalityLbEndpoints {
                    lb_endpoints: vec![lb("127.0.0.2:15443", None), lb("127.0.0.4:15443", None)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let snap = snapshot(
            vec![cluster(
                "peer|cluster-b",
                string_struct([("trust_domain", "cluster-b.mesh")]),
                None,
            )],
            vec![cla],
        );
        let (peers, _) = from_xds(&snap).unwrap();
        assert_eq!(
            peers[0].addresses,
            vec!["127.0.0.2:15443", "127.0.0.3:15443", "127.0.0.4:15443"],
            "every replica once, in order"
        );
        assert_eq!(peers[0].address, "");
    }

    #[test]
    fn malformed_gateway_clusters_are_refused_by_the_validator() {
        let v = validator();
        let bad_transport = cluster(
            "peer|b",
            string_struct([("trust_domain", "b.mesh"), ("transport", "udp")]),
            None,
        );
        let set: BTreeMap<String, Any> = [("peer|b".to_owned(), bad_transport)].into();
        let e = v(CLUSTER_TYPE, &set).unwrap_err();
        assert!(e.contains("transport"), "{e}");
        let mismatch = cluster(
            "export|80||web.default",
            {
                let mut s = string_struct([("service", "other/web")]);
                s.fields.insert("exported_to".into(), list(&[]));
                s
            },
            None,
        );
        let set: BTreeMap<String, Any> = [("export|80||web.default".to_owned(), mismatch)].into();
        assert!(v(CLUSTER_TYPE, &set)
            .unwrap_err()
            .contains("does not match"));
    }
}

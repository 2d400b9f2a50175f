//! Property: serializing a valid `ServiceImport` and parsing it back, in YAML
//! and in JSON, yields the same value.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use time::OffsetDateTime;

use crate::*;

fn label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,20}[a-z0-9])?"
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Sctp)
    ]
}

fn meta() -> impl Strategy<Value = ObjectMeta> {
    (
        label(),
        label(),
        proptest::option::of((0i64..4_000_000_000, 0u32..1_000_000_000)),
        proptest::collection::btree_map("[a-z./-]{1,12}", "\\PC{0,16}", 0..3),
    )
        .prop_map(|(namespace, name, ts, labels)| ObjectMeta {
            creation_timestamp: ts.and_then(|(s, n)| {
                OffsetDateTime::from_unix_timestamp(s)
                    .ok()?
                    .replace_nanosecond(n)
                    .ok()
            }),
            labels,
            ..ObjectMeta::new(namespace, name)
        })
}

fn ports() -> impl Strategy<Value = Vec<ServicePort>> {
    (
        proptest::collection::btree_map(
            (1u16..=65535, protocol()),
            proptest::option::of("\\PC{1,20}"),
            0..6,
        ),
        label(),
        any::<bool>(),
    )
        .prop_map(|(by_port, prefix, unnamed_single)| {
            let n = by_port.len();
            by_port
                .into_iter()
                .enumerate()
                .map(|(i, ((port, protocol), app_protocol))| ServicePort {
                    name: (n > 1 || !unnamed_single)
                        .then(|| format!("{}-{i}", &prefix[..prefix.len().min(40)])),
                    protocol,
                    app_protocol,
                    port,
                })
                .collect()
        })
}

fn ips() -> impl Strategy<Value = Vec<String>> {
    (
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u128>()),
    )
        .prop_map(|(v4, v6)| {
            let mut ips = Vec::new();
            ips.extend(v4.map(|a| Ipv4Addr::from(a).to_string()));
            ips.extend(v6.map(|a| Ipv6Addr::from(a).to_string()));
            ips
        })
}

fn service_import() -> impl Strategy<Value = ServiceImport> {
    (
        prop_oneof![Just(McsVersion::V1Alpha1), Just(McsVersion::V1Beta1)],
        meta(),
        ports(),
        any::<bool>(),
        ips(),
        proptest::option::of(proptest::option::of(1u32..=86400)),
        proptest::option::of(proptest::collection::vec(label(), 0..4)),
    )
        .prop_map(
            |(version, metadata, ports, headless, ips, affinity, clusters)| ServiceImport {
                version,
                metadata,
                spec: ServiceImportSpec {
                    ports,
                    ips: if headless { Vec::new() } else { ips },
                    type_: if headless {
                        ServiceImportType::Headless
                    } else {
                        ServiceImportType::ClusterSetIp
                    },
                    session_affinity: if affinity.is_some() {
                        SessionAffinity::ClientIp
                    } else {
                        SessionAffinity::None
                    },
                    session_affinity_config: affinity.map(|timeout_seconds| {
                        SessionAffinityConfig {
                            client_ip: Some(ClientIpConfig { timeout_seconds }),
                        }
                    }),
                },
                status: clusters.map(|cs| ServiceImportStatus {
                    clusters: cs
                        .into_iter()
                        .map(|cluster| ClusterStatus { cluster })
                        .collect(),
                }),
            },
        )
}

proptest! {
    #[test]
    fn serialize_then_parse_is_identity(si in service_import()) {
        let r = Resource::ServiceImport(si);
        let yaml = r.to_yaml().unwrap();
        let parsed = parse_yaml(&yaml).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert_eq!(parsed.as_slice(), std::slice::from_ref(&r), "yaml:\n{}", yaml);
        let json = r.to_json().unwrap();
        let parsed = parse_json(&json).map_err(|e| TestCaseError::fail(format!("{e}\n{json}")))?;
        prop_assert_eq!(parsed.as_slice(), std::slice::from_ref(&r), "json:\n{}", json);
        let stream = to_yaml_stream(&[r.clone(), r.clone()]).unwrap();
        prop_assert_eq!(parse(&stream).unwrap(), vec![r.clone(), r]);
    }
}

#[test]
fn labels_are_kept_verbatim() {
    let mut labels = BTreeMap::new();
    labels.insert("app".to_owned(), "null".to_owned());
    labels.insert("x".to_owned(), "~".to_owned());
    let r = Resource::ServiceExport(ServiceExport {
        version: McsVersion::V1Beta1,
        metadata: ObjectMeta {
            labels,
            ..ObjectMeta::new("ns", "web")
        },
        status: None,
    });
    assert_eq!(parse(&r.to_yaml().unwrap()).unwrap(), [r]);
}

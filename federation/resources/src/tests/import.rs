//! `derive_import`: oldest export wins, ports are united, losers get a
//! `Conflict` condition.

use time::OffsetDateTime;

use crate::*;

fn port(name: &str, port: u16, protocol: Protocol) -> ServicePort {
    ServicePort {
        name: (!name.is_empty()).then(|| name.to_owned()),
        protocol,
        app_protocol: None,
        port,
    }
}

fn export(
    cluster: &str,
    created: i64,
    type_: ServiceImportType,
    ports: Vec<ServicePort>,
) -> ClusterExport {
    ClusterExport {
        cluster: cluster.to_owned(),
        created: OffsetDateTime::from_unix_timestamp(created).unwrap(),
        type_,
        ports,
        session_affinity: SessionAffinity::None,
        session_affinity_config: None,
    }
}

use Protocol::{Tcp, Udp};
use ServiceImportType::{ClusterSetIp as Ip, Headless};

struct Case {
    what: &'static str,
    exports: Vec<ClusterExport>,
    type_: ServiceImportType,
    ports: Vec<ServicePort>,
    conflicts: Vec<(&'static str, ConflictReason)>,
}

#[test]
fn conflict_resolution_table() {
    let http = port("http", 80, Tcp);
    let http8080 = port("http", 8080, Tcp);
    let grpc = port("grpc", 9090, Tcp);
    let dns = port("dns", 53, Udp);
    let web80 = port("web", 80, Tcp);
    let cases = vec![
        Case {
            what: "one export",
            exports: vec![export("a", 10, Ip, vec![http.clone()])],
            type_: Ip,
            ports: vec![http.clone()],
            conflicts: vec![],
        },
        Case {
            what: "identical exports",
            exports: vec![
                export("b", 20, Ip, vec![http.clone()]),
                export("a", 10, Ip, vec![http.clone()]),
            ],
            type_: Ip,
            ports: vec![http.clone()],
            conflicts: vec![],
        },
        Case {
            what: "union of ports, oldest first",
            exports: vec![
                export("b", 20, Ip, vec![http.clone(), grpc.clone()]),
                export("a", 10, Ip, vec![http.clone(), dns.clone()]),
            ],
            type_: Ip,
            ports: vec![http.clone(), dns.clone(), grpc.clone()],
            conflicts: vec![],
        },
        Case {
            what: "same name, other number: the newer export loses",
            exports: vec![
                export("a", 20, Ip, vec![http8080.clone()]),
                export("b", 10, Ip, vec![http.clone()]),
            ],
            type_: Ip,
            ports: vec![http.clone()],
            conflicts: vec![("a", ConflictReason::PortConflict)],
        },
        Case {
            what: "same number, other name",
            exports: vec![
                export("a", 10, Ip, vec![http.clone()]),
                export("b", 20, Ip, vec![web80.clone(), grpc.clone()]),
            ],
            type_: Ip,
            ports: vec![http.clone(), grpc.clone()],
            conflicts: vec![("b", ConflictReason::PortConflict)],
        },
        Case {
            what: "type conflict: oldest type wins",
            exports: vec![
                export("a", 30, Ip, vec![http.clone()]),
                export("b", 10, Headless, vec![http.clone()]),
            ],
            type_: Headless,
            ports: vec![http.clone()],
            conflicts: vec![("a", ConflictReason::TypeConflict)],
        },
        Case {
            what: "tie on timestamp broken by cluster name",
            exports: vec![
                export("z", 10, Headless, vec![http8080.clone()]),
                export("m", 10, Ip, vec![http.clone()]),
            ],
            type_: Ip,
            ports: vec![http.clone()],
            conflicts: vec![
                ("z", ConflictReason::TypeConflict),
                ("z", ConflictReason::PortConflict),
            ],
        },
        Case {
            what: "three clusters, two losers",
            exports: vec![
                export("c", 30, Headless, vec![http.clone()]),
                export("a", 10, Ip, vec![http.clone()]),
                export("b", 20, Ip, vec![http8080.clone(), dns.clone()]),
            ],
            type_: Ip,
            ports: vec![http.clone(), dns.clone()],
            conflicts: vec![
                ("b", ConflictReason::PortConflict),
                ("c", ConflictReason::TypeConflict),
            ],
        },
    ];
    for case in cases {
        let out = derive_import(&case.exports);
        let spec = out
            .spec
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no import", case.what));
        assert_eq!(spec.type_, case.type_, "{}", case.what);
        assert_eq!(spec.ports, case.ports, "{}", case.what);
        assert!(spec.ips.is_empty(), "{}", case.what);
        let got: Vec<_> = out
            .conflicts
            .iter()
            .map(|c| (c.cluster.as_str(), c.reason))
            .collect();
        assert_eq!(got, case.conflicts, "{}", case.what);
        let mut clusters: Vec<_> = case.exports.iter().map(|e| e.cluster.clone()).collect();
        clusters.sort();
        let status: Vec<_> = out
            .status
            .clusters
            .iter()
            .map(|c| c.cluster.clone())
            .collect();
        assert_eq!(status, clusters, "{}", case.what);
    }
}

#[test]
fn no_exports_means_no_import() {
    let out = derive_import(&[]);
    assert_eq!(out.spec, None);
    assert!(out.status.clusters.is_empty());
    assert!(out.conflicts.is_empty());
}

#[test]
fn conflict_conditions() {
    let out = derive_import(&[
        export("a", 10, Ip, vec![port("http", 80, Tcp)]),
        export("b", 20, Headless, vec![port("http", 81, Tcp)]),
    ]);
    let a = out.conflict_condition("a");
    assert_eq!(a.type_, "Conflict");
    assert_eq!(a.status, ConditionStatus::False);
    assert_eq!(a.reason.as_deref(), Some("NoConflicts"));
    let b = out.conflict_condition("b");
    assert_eq!(b.status, ConditionStatus::True);
    assert_eq!(b.reason.as_deref(), Some("TypeConflict"));
    assert_eq!(
        b.message.as_deref(),
        Some("type Headless conflicts with ClusterSetIP of the oldest export, in cluster a; ports conflict with older exports: port \"http\" 81/TCP conflicts with port \"http\" 80/TCP")
    );
}

#[test]
fn derived_import_is_a_valid_resource() {
    let out = derive_import(&[
        export(
            "a",
            10,
            Ip,
            vec![port("http", 80, Tcp), port("dns", 53, Udp)],
        ),
        export("b", 20, Ip, vec![port("grpc", 9090, Tcp)]),
    ]);
    let r = Resource::ServiceImport(ServiceImport {
        version: McsVersion::V1Alpha1,
        metadata: ObjectMeta::new("shop", "web"),
        spec: out.spec.unwrap(),
        status: Some(out.status),
    });
    assert_eq!(parse(&r.to_yaml().unwrap()).unwrap(), [r]);
}

//! Valid documents parse, and serialize back to what they were.

use super::examples::{self, stream};
use crate::*;

fn one(doc: &str) -> Resource {
    let mut rs = parse(doc).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rs.len(), 1);
    rs.remove(0)
}

fn assert_round_trips(r: &Resource) {
    let yaml = r.to_yaml().unwrap();
    assert_eq!(&one(&yaml), r, "yaml:\n{yaml}");
    let json = r.to_json().unwrap();
    assert_eq!(&one(&json), r, "json:\n{json}");
}

#[test]
fn every_kind_parses_and_round_trips() {
    let rs = parse(&stream()).unwrap_or_else(|e| panic!("{e}"));
    let summary: Vec<_> = rs
        .iter()
        .map(|r| (r.kind(), r.api_version(), r.namespace(), r.name()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "ServiceExport",
                "multicluster.x-k8s.io/v1alpha1",
                "shop",
                "web"
            ),
            (
                "ServiceImport",
                "multicluster.x-k8s.io/v1beta1",
                "default",
                "web"
            ),
            (
                "MeshLink",
                "isthmus.dev/v1alpha1",
                "isthmus-system",
                "cluster-b"
            ),
            ("FailoverPolicy", "isthmus.dev/v1alpha1", "shop", "web"),
        ]
    );
    for r in &rs {
        assert_round_trips(r);
    }
    let again = parse(&to_yaml_stream(&rs).unwrap()).unwrap();
    assert_eq!(again, rs);
}

#[test]
fn typed_fields_and_defaults() {
    let Resource::ServiceImport(si) = one(examples::SERVICE_IMPORT) else {
        panic!("not a ServiceImport");
    };
    assert_eq!(si.version, McsVersion::V1Beta1);
    assert_eq!(si.spec.type_, ServiceImportType::ClusterSetIp);
    assert_eq!(si.spec.session_affinity, SessionAffinity::ClientIp);
    assert_eq!(si.spec.ports[0].protocol, Protocol::Tcp);
    assert_eq!(si.spec.ports[1].protocol, Protocol::Udp);
    assert_eq!(si.spec.ports[1].port, 53);

    let Resource::FailoverPolicy(fp) = one(examples::FAILOVER_POLICY) else {
        panic!("not a FailoverPolicy");
    };
    assert_eq!(fp.spec.overprovisioning_factor, 140);
    assert_eq!(fp.spec.panic_threshold_percent, 50);
    assert_eq!(
        fp.spec.targets,
        [
            FailoverTarget::Cluster("cluster-b".into()),
            FailoverTarget::Region("eu-west".into())
        ]
    );

    let Resource::ServiceExport(se) = one(examples::SERVICE_EXPORT) else {
        panic!("not a ServiceExport");
    };
    let ts = se.metadata.creation_timestamp.unwrap();
    assert_eq!(ts.unix_timestamp(), 1_735_787_045);
}

#[test]
fn both_mcs_versions_are_accepted() {
    for version in McsVersion::ALL {
        for kind in ["ServiceExport", "ServiceImport"] {
            let spec = if kind == "ServiceImport" {
                "spec: {type: Headless}\n"
            } else {
                ""
            };
            let doc = format!(
                "apiVersion: {}\nkind: {kind}\nmetadata: {{name: db}}\n{spec}",
                version.api_version()
            );
            let r = one(&doc);
            assert_eq!(r.api_version(), version.api_version());
            assert_eq!(r.kind(), kind);
            assert_round_trips(&r);
        }
    }
}

#[test]
fn json_object_and_array_are_accepted() {
    let doc = r#"{"apiVersion":"multicluster.x-k8s.io/v1alpha1","kind":"ServiceExport","metadata":{"name":"web"}}"#;
    assert_eq!(one(doc).name(), "web");
    let arr = format!("[{doc}, {doc}]");
    assert_eq!(parse(&arr).unwrap().len(), 2);
}

#[test]
fn empty_documents_and_nulls_are_skipped() {
    let doc = "---\n---\napiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata:\n  name: web\n  labels:\nstatus:\n---\n";
    let rs = parse(doc).unwrap();
    assert_eq!(rs.len(), 1);
    assert!(parse("").unwrap().is_empty());
}

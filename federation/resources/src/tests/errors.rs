//! Invalid documents are rejected with kubectl-style messages naming the
//! document, the resource and the field path; nothing of the stream is kept.

use super::examples::{self, stream};
use crate::*;

fn messages(input: &str) -> Vec<String> {
    match parse(input) {
        Ok(rs) => panic!("accepted {} resources from:\n{input}", rs.len()),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

/// Replaces the first occurrence of `from` in `doc` (which must occur).
fn edit(doc: &str, from: &str, to: &str) -> String {
    assert!(doc.contains(from), "{from:?} not in {doc}");
    doc.replacen(from, to, 1)
}

#[test]
fn field_errors_name_their_path() {
    use examples::{
        FAILOVER_POLICY as FP, MESH_LINK as ML, SERVICE_EXPORT as SE, SERVICE_IMPORT as SI,
    };
    let si = "document 1 (ServiceImport default/web): ";
    let se = "document 1 (ServiceExport shop/web): ";
    let ml = "document 1 (MeshLink isthmus-system/cluster-b): ";
    let fp = "document 1 (FailoverPolicy shop/web): ";
    let cases: &[(&str, String, String)] = &[
        ("port out of range", edit(SI, "port: 80", "port: 70000"),
         format!("{si}spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535")),
        ("port zero", edit(SI, "port: 80", "port: 0"),
         format!("{si}spec.ports[0].port: Invalid value: 0: must be between 1 and 65535")),
        ("port is a string", edit(SI, "port: 80", "port: http"),
         format!("{si}spec.ports[0].port: Invalid value: \"http\": must be an integer")),
        ("port missing", edit(SI, "      port: 80\n", ""),
         format!("{si}spec.ports[0].port: Required value")),
        ("unknown field", edit(SI, "spec:", "spce: {}\nspec:"),
         format!("{si}spce: unknown field \"spce\"")),
        ("nested unknown field", edit(SI, "appProtocol: http", "appProtocl: http"),
         format!("{si}spec.ports[0].appProtocl: unknown field \"appProtocl\"")),
        ("bad type", edit(SI, "type: ClusterSetIP", "type: LoadBalancer"),
         format!("{si}spec.type: Unsupported value: \"LoadBalancer\": supported values: \"ClusterSetIP\", \"Headless\"")),
        ("type missing", edit(SI, "  type: ClusterSetIP\n", ""),
         format!("{si}spec.type: Required value")),
        ("spec missing", "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\nmetadata: {name: web}\n".to_owned(),
         format!("{si}spec: Required value")),
        ("bad protocol", edit(SI, "protocol: UDP", "protocol: udp"),
         format!("{si}spec.ports[1].protocol: Unsupported value: \"udp\": supported values: \"TCP\", \"UDP\", \"SCTP\"")),
        ("duplicate port name", edit(SI, "name: dns", "name: http"),
         format!("{si}spec.ports[1].name: Duplicate value: \"http\"")),
        ("unnamed port among several", edit(SI, "- name: dns\n      protocol", "- protocol"),
         format!("{si}spec.ports[1].name: Required value")),
        ("bad ip", edit(SI, "10.42.0.10", "10.42.0.300"),
         format!("{si}spec.ips[0]: Invalid value: \"10.42.0.300\": must be a valid IP address")),
        ("headless with ips", edit(SI, "type: ClusterSetIP", "type: Headless"),
         format!("{si}spec.ips: Invalid value: [\"10.42.0.10\", \"fd00::10\"]: must be empty when type is Headless")),
        ("affinity timeout", edit(SI, "timeoutSeconds: 600", "timeoutSeconds: 100000"),
         format!("{si}spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 100000: must be between 1 and 86400")),
        ("status cluster", edit(SI, "cluster: cluster-b", "cluster: Cluster_B"),
         format!("{si}status.clusters[1].cluster: Invalid value: \"Cluster_B\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")),
        ("uppercase name", edit(SE, "name: web", "name: Web"),
         "document 1 (ServiceExport shop/Web): metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".to_owned()),
        ("name too long", edit(SE, "name: web", &format!("name: {}", "a".repeat(64))),
         format!("document 1 (ServiceExport shop/{a}): metadata.name: Invalid value: \"{a}\": must be no more than 63 characters", a = "a".repeat(64))),
        ("name missing", edit(SE, "  name: web\n", ""),
         "document 1: metadata.name: Required value".to_owned()),
        ("name is a number", edit(SE, "name: web", "name: 12"),
         "document 1: metadata.name: Invalid value: 12: must be a string".to_owned()),
        ("bad namespace", edit(SE, "namespace: shop", "namespace: -shop"),
         "document 1 (ServiceExport -shop/web): metadata.namespace: Invalid value: \"-shop\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".to_owned()),
        ("bad creationTimestamp", edit(SE, "\"2025-01-02T03:04:05Z\"", "yesterday"),
         format!("{se}metadata.creationTimestamp: Invalid value: \"yesterday\": must be an RFC 3339 timestamp such as 2025-01-02T03:04:05Z")),
        ("label not a string", edit(SE, "app: web", "app: [web]"),
         format!("{se}metadata.labels[app]: Invalid value: [\"web\"]: must be a string")),
        ("metadata unknown field", edit(SE, "labels:", "generation: 1\n  labels:"),
         format!("{se}metadata.generation: unknown field \"generation\"")),
        ("condition status", edit(SE, "status: \"True\"", "status: yes"),
         format!("{se}status.conditions[0].status: Unsupported value: \"yes\": supported values: \"True\", \"False\", \"Unknown\"")),
        ("condition time", edit(SE, "\"2025-01-02T03:04:06Z\"", "\"2025-13-02T03:04:06Z\""),
         format!("{se}status.conditions[0].lastTransitionTime: Invalid value: \"2025-13-02T03:04:06Z\": must be an RFC 3339 timestamp such as 2025-01-02T03:04:05Z")),
        ("service export spec", edit(SE, "status:", "spec: {}\nstatus:"),
         format!("{se}spec: unknown field \"spec\"")),
        ("peer cluster", edit(ML, "peerCluster: cluster-b", "peerCluster: B"),
         format!("{ml}spec.peerCluster: Invalid value: \"B\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")),
        ("trust domain", edit(ML, "trustDomain: cluster-b.isthmus.local", "trustDomain: spiffe://B"),
         format!("{ml}spec.trustDomain: Invalid value: \"spiffe://B\": a trust domain must consist of lower case letters, digits, '.', '-' and '_'")),
        ("bundle endpoint", edit(ML, "https://controller", "http://controller"),
         format!("{ml}spec.bundleEndpoint: Invalid value: \"http://controller.cluster-b.example:8443/bundle\": must be an https URL with a host, such as https://host:8443/bundle")),
        ("gateway address", edit(ML, "192.0.2.7:15443", "192.0.2.7"),
         format!("{ml}spec.gatewayAddresses[2]: Invalid value: \"192.0.2.7\": must be host:port with a port between 1 and 65535")),
        ("no gateways", edit(ML, "gatewayAddresses: [\"gw.cluster-b.example:15443\", \"[fd00::1]:15443\", \"192.0.2.7:15443\"]", "gatewayAddresses: []"),
         format!("{ml}spec.gatewayAddresses: Required value")),
        ("overprovisioning", edit(FP, "service: web", "service: web\n  overprovisioningFactor: 99"),
         format!("{fp}spec.overprovisioningFactor: Invalid value: 99: must be between 100 and 1000")),
        ("panic threshold", edit(FP, "service: web", "service: web\n  panicThresholdPercent: 101"),
         format!("{fp}spec.panicThresholdPercent: Invalid value: 101: must be between 0 and 100")),
        ("target with both", edit(FP, "- region: eu-west", "- {region: eu-west, cluster: c}"),
         format!("{fp}spec.targets[1]: Invalid value: {{\"cluster\":\"c\",\"region\":\"eu-west\"}}: must set exactly one of cluster, region")),
        ("target with none", edit(FP, "- region: eu-west", "- {}"),
         format!("{fp}spec.targets[1]: Invalid value: {{}}: must set exactly one of cluster, region")),
        ("duplicate target", edit(FP, "- region: eu-west", "- cluster: cluster-b"),
         format!("{fp}spec.targets[1]: Duplicate value: {{\"cluster\":\"cluster-b\"}}")),
        ("no targets", edit(FP, "targets:\n    - cluster: cluster-b\n    - region: eu-west", "targets: []"),
         format!("{fp}spec.targets: Required value")),
        ("target unknown field", edit(FP, "- region: eu-west", "- zone: eu-west-1a"),
         format!("{fp}spec.targets[1].zone: unknown field \"zone\"")),
    ];
    for (what, doc, want) in cases {
        let got = messages(doc);
        assert_eq!(got.as_slice(), std::slice::from_ref(want), "case {what:?}");
    }
}

#[test]
fn unknown_kind_and_api_version_are_named() {
    let cases = [
        ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n",
         "document 1 (Service default/web): kind: Unsupported value: \"Service\": supported values: \"ServiceExport\", \"ServiceImport\", \"MeshLink\", \"FailoverPolicy\", \"Workload\", \"TrafficPolicy\""),
        ("apiVersion: multicluster.x-k8s.io/v2\nkind: ServiceExport\nmetadata: {name: web}\n",
         "document 1 (ServiceExport default/web): apiVersion: Unsupported value: \"multicluster.x-k8s.io/v2\": supported values: \"multicluster.x-k8s.io/v1alpha1\", \"multicluster.x-k8s.io/v1beta1\""),
        ("apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: MeshLink\nmetadata: {name: b}\n",
         "document 1 (MeshLink default/b): apiVersion: Unsupported value: \"multicluster.x-k8s.io/v1alpha1\": supported values: \"isthmus.dev/v1alpha1\""),
        ("apiVersion: isthmus.dev/v1alpha1\nmetadata: {name: b}\n", "document 1: kind: Required value"),
        ("kind: ServiceExport\nmetadata: {name: b}\n", "document 1 (ServiceExport default/b): apiVersion: Required value"),
    ];
    for (doc, want) in cases {
        assert_eq!(messages(doc), [want], "{doc}");
    }
}

#[test]
fn one_bad_document_rejects_the_whole_stream() {
    let bad = edit(examples::SERVICE_IMPORT, "port: 80", "port: 70000");
    let input = format!("{}---{bad}", stream());
    let err = parse(&input).unwrap_err();
    assert_eq!(
        err.errors().iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["document 5 (ServiceImport default/web): spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535"]
    );
    assert_eq!(err.errors()[0].index(), 5);
    assert_eq!(err.errors()[0].field().unwrap().path, "spec.ports[0].port");
}

#[test]
fn every_error_of_every_document_is_reported() {
    let a = edit(examples::SERVICE_IMPORT, "port: 80", "port: 70000");
    let a = edit(&a, "spec:", "spce: 1\nspec:");
    let b = edit(examples::MESH_LINK, "name: cluster-b", "name: B");
    let input = format!("---{a}---{}---{b}", examples::FAILOVER_POLICY);
    let got = messages(&input);
    assert_eq!(
        got,
        [
            "document 1 (ServiceImport default/web): spce: unknown field \"spce\"",
            "document 1 (ServiceImport default/web): spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535",
            "document 3 (MeshLink isthmus-system/B): metadata.name: Invalid value: \"B\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        ]
    );
    let all = parse(&input).unwrap_err().to_string();
    assert!(
        all.starts_with("stream rejected (3 error(s)): document 1"),
        "{all}"
    );
}

#[test]
fn syntax_errors_are_reported_by_document() {
    let input = format!("---{}---\nkind: [unclosed\n", examples::MESH_LINK);
    let err = parse(&input).unwrap_err();
    assert_eq!(err.errors().len(), 1);
    assert_eq!(err.errors()[0].index(), 2);
    assert!(matches!(
        err.errors()[0],
        DocumentError::Syntax {
            source: SyntaxError::Yaml(_),
            ..
        }
    ));

    let err = parse("{\"kind\": ").unwrap_err();
    assert!(matches!(
        err.errors()[0],
        DocumentError::Syntax {
            source: SyntaxError::Json(_),
            ..
        }
    ));

    let err = parse("- a\n- b\n").unwrap_err();
    assert_eq!(
        err.errors()[0].to_string(),
        "document 1: a resource must be a mapping"
    );
    let err = parse("[1]").unwrap_err();
    assert_eq!(
        err.errors()[0].to_string(),
        "document 1: a resource must be a mapping"
    );
}

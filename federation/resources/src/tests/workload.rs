//! The `Workload` kind: parsing, defaults, errors with field paths, round trip.

use crate::*;

const WORKLOAD: &str = "\
apiVersion: isthmus.dev/v1alpha1
kind: Workload
metadata:
  name: web-1
  namespace: shop
spec:
  service: web
  serviceAccount: web
  address: 10.0.0.7
  ports:
    - port: 80
      targetPort: 15006
      protocol: http
    - port: 9090
  locality:
    region: eu-west
    zone: eu-west-1a
";

#[test]
fn parses_with_defaults() {
    let rs = parse(WORKLOAD).unwrap();
    let Resource::Workload(w) = &rs[0] else {
        panic!("not a workload: {rs:?}")
    };
    assert_eq!(w.metadata.namespace, "shop");
    assert_eq!(w.spec.ports[0].effective_target_port(), 15006);
    assert_eq!(w.spec.ports[0].protocol, WorkloadProtocol::Http);
    assert_eq!(w.spec.ports[1].effective_target_port(), 9090);
    assert_eq!(w.spec.ports[1].protocol, WorkloadProtocol::Tcp);
    assert_eq!(w.spec.locality.as_ref().unwrap().zone, "eu-west-1a");
}

#[test]
fn round_trips_through_yaml_and_json() {
    let rs = parse(WORKLOAD).unwrap();
    assert_eq!(parse(&to_yaml_stream(&rs).unwrap()).unwrap(), rs);
    assert_eq!(parse(&rs[0].to_json().unwrap()).unwrap(), rs);
}

#[test]
fn errors_name_field_paths() {
    let bad = WORKLOAD
        .replace("address: 10.0.0.7", "address: not-an-ip")
        .replace("protocol: http", "protocol: udp")
        .replace("    - port: 9090\n", "    - port: 80\n");
    let errors: Vec<String> = parse(&bad)
        .unwrap_err()
        .errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    let w = "document 1 (Workload shop/web-1): ";
    assert!(
        errors.contains(&format!(
            "{w}spec.address: Invalid value: \"not-an-ip\": must be a valid IP address"
        )),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{w}spec.ports[0].protocol: Unsupported value"))),
        "{errors:#?}"
    );
    // The walk stops before cross-field checks when a field is malformed.
    let dup = WORKLOAD.replace("    - port: 9090\n", "    - port: 80\n");
    let errors: Vec<String> = parse(&dup)
        .unwrap_err()
        .errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [format!("{w}spec.ports[1].port: Duplicate value: 80")]
    );
}

#[test]
fn server_set_metadata_is_accepted_and_kept() {
    let doc = WORKLOAD.replace(
        "  namespace: shop\n",
        "  namespace: shop\n  uid: 00000000-0000-4000-8000-000000000001\n  resourceVersion: \"7\"\n",
    );
    let rs = parse(&doc).unwrap();
    assert_eq!(rs[0].metadata().resource_version.as_deref(), Some("7"));
    assert_eq!(parse(&rs[0].to_json().unwrap()).unwrap(), rs);
}

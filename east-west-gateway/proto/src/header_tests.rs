use super::*;

#[test]
fn smoke_round_trip() {
    let h = OpenHeader {
        target_cluster: "cluster-b".into(),
        namespace: "billing".into(),
        service: "api".into(),
        port: 8443,
        expected_identity: SpiffeId::parse("spiffe://cluster-b.mesh/ns/billing/sa/api").unwrap(),
        traceparent: None,
        tracestate: None,
    };
    let bytes = h.encode().unwrap();
    assert_eq!(OpenHeader::decode(&bytes), Ok(Some((h, bytes.len()))));
}

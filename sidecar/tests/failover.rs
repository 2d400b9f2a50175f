//! Passive health wired through a running sidecar, on loopback: a dead
//! local endpoint is marked down at its first connect failure (failfast),
//! never chosen first again while marked, and shown in `/config_dump`
//! (`failover_status`) and `/metrics` (ejections, priority load).

mod common;

use common::*;

#[tokio::test]
async fn a_dead_endpoint_is_marked_at_once_and_reported_by_the_admin() {
    let pki = Pki::new();
    let app = start_app("one").await;
    let [front_admin, back_admin, out_http, in_http, dead] = std::array::from_fn(|_| free_addr());
    let back_yaml = format!(
        "cluster: cluster-a\n{identity}admin: {back_admin}\ninbound:\n\
  - {{ listen: \"{in_http}\", protocol: http, app: \"{app}\", allow: [\"{front}\"] }}\n",
        identity = pki.identity_yaml("backend"),
        app = app.addr,
        front = id("frontend"),
    );
    // The dead endpoint is listed first: with round robin over two healthy
    // endpoints, some request tries it first until it is marked.
    let front_yaml = format!(
        "cluster: cluster-a\n{identity}admin: {front_admin}\noutbound:\n\
  - {{ listen: \"{out_http}\", service: default/backend, port: 8080, protocol: http }}\n\
services:\n\
  - {{ service: default/backend, port: 8080, endpoints: [{{ address: \"{dead}\", spiffe_id: \"{back}\" }}, {{ address: \"{in_http}\", spiffe_id: \"{back}\" }}], failover: {{ outlier_detection: {{ base_ejection_time_ms: 60000 }} }} }}\n\
timeouts: {{ header_read_ms: 300, connect_ms: 2000 }}\n",
        identity = pki.identity_yaml("frontend"),
        back = id("backend"),
    );
    let (_back, _) = start_sidecar(&pki, "back", &back_yaml).await;
    let (_front, _) = start_sidecar(&pki, "front", &front_yaml).await;

    for i in 0..20 {
        let (status, _, _) = get(out_http, "/").await;
        assert_eq!(status, 200, "request {i}");
    }
    let text = metrics(front_admin).await;
    assert_eq!(
        metric_value(
            &text,
            "isthmus_outlier_ejections_total{service=\"default/backend\"}"
        ),
        1.0,
        "marked once, never tried first again while marked:\n{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "isthmus_priority_load_percent{service=\"default/backend\",priority=\"0\"}"
        ),
        100.0,
        "{text}"
    );

    let (status, _, dump) = get(front_admin, "/config_dump").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&dump).unwrap();
    let s = &v["failover_status"][0];
    assert_eq!(s["service"], "default/backend");
    assert_eq!(s["priority_load"], serde_json::json!([100]));
    assert_eq!(s["ejected"], serde_json::json!([dead.to_string()]));
    assert_eq!(s["remote_marks"], serde_json::json!([]));
    assert_eq!(
        v["services"][0]["failover"]["outlier_detection"]["base_ejection_time_ms"],
        60000
    );
}

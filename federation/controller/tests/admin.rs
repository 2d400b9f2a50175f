//! The admin REST API against a whole controller on loopback.

mod common;

use common::{call, start};
use serde_json::Value;

const EXPORT_AND_WORKLOAD: &str = "\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata:
  name: web
  namespace: shop
---
apiVersion: isthmus.dev/v1alpha1
kind: Workload
metadata:
  name: web-1
  namespace: shop
spec:
  service: web
  serviceAccount: web
  address: 127.0.0.10
  ports:
    - port: 80
      targetPort: 8080
      protocol: http
";

fn condition<'a>(export: &'a Value, type_: &str) -> &'a Value {
    export["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {export:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_list_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "").await;
    let admin = c.admin_addr();
    let yaml = Some(("application/yaml", EXPORT_AND_WORKLOAD));

    let (status, body) = call(admin, "POST", "/v1/apply", yaml, None).await;
    assert_eq!(status, 200, "{body}");
    let actions: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "created"]);
    assert_eq!(body["results"][0]["kind"], "ServiceExport");
    assert_eq!(body["results"][0]["namespace"], "shop");

    // The same stream again changes nothing; an edit is "configured".
    let (_, body) = call(admin, "POST", "/v1/apply", yaml, None).await;
    assert_eq!(body["results"][1]["action"], "unchanged");
    let edited = EXPORT_AND_WORKLOAD.replace("address: 127.0.0.10", "address: 127.0.0.11");
    let (_, body) = call(
        admin,
        "POST",
        "/v1/apply",
        Some(("application/yaml", &edited)),
        None,
    )
    .await;
    assert_eq!(body["results"][0]["action"], "unchanged");
    assert_eq!(body["results"][1]["action"], "configured");

    // GET one: server-set metadata and derived conditions.
    let (status, export) = call(
        admin,
        "GET",
        "/v1/resources/serviceexports/shop/web",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(export["kind"], "ServiceExport");
    assert!(
        export["metadata"]["creationTimestamp"].is_string(),
        "{export}"
    );
    assert!(export["metadata"]["uid"].is_string(), "{export}");
    assert!(
        export["metadata"]["resourceVersion"].is_string(),
        "{export}"
    );
    assert_eq!(condition(&export, "Valid")["status"], "True");
    assert_eq!(condition(&export, "Ready")["status"], "True");
    assert_eq!(condition(&export, "Conflict")["status"], "False");

    // The import is derived from the local export.
    let (status, list) = call(
        admin,
        "GET",
        "/v1/resources/serviceimports?namespace=shop",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["spec"]["ports"][0]["port"], 80);
    assert_eq!(items[0]["status"]["clusters"][0]["cluster"], "cluster-a");
    let (status, _) = call(
        admin,
        "GET",
        "/v1/resources/serviceimports?namespace=other",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Derived kinds are read-only.
    let (status, body) = call(
        admin,
        "DELETE",
        "/v1/resources/serviceimports/shop/web",
        None,
        None,
    )
    .await;
    assert_eq!(status, 405, "{body}");

    // Delete, then it is gone, and so is the import.
    let (status, body) = call(
        admin,
        "DELETE",
        "/v1/resources/serviceexports/shop/web",
        None,
        None,
    )
    .await;
    assert_eq!((status, body), (200, serde_json::json!({"deleted": true})));
    let (status, body) = call(
        admin,
        "GET",
        "/v1/resources/serviceexports/shop/web",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "serviceexports shop/web not found");
    let (status, body) = call(
        admin,
        "DELETE",
        "/v1/resources/serviceexports/shop/web",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (_, list) = call(admin, "GET", "/v1/resources/serviceimports", None, None).await;
    assert_eq!(list["items"], serde_json::json!([]));

    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_documents_are_rejected_with_field_paths_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), "").await;
    let admin = c.admin_addr();
    // Document 1 is valid; document 2 has a bad address and an unknown field.
    let bad = EXPORT_AND_WORKLOAD
        .replace("address: 127.0.0.10", "address: nowhere")
        .replace("  serviceAccount: web", "  serviceAcount: web");
    let (status, body) = call(
        admin,
        "POST",
        "/v1/apply",
        Some(("application/yaml", &bad)),
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let errors: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let w = "document 2 (Workload shop/web-1): ";
    assert!(
        errors.contains(
            &format!("{w}spec.address: Invalid value: \"nowhere\": must be a valid IP address")
                .as_str()
        ),
        "{errors:#?}"
    );
    assert!(
        errors
            .contains(&format!("{w}spec.serviceAcount: unknown field \"serviceAcount\"").as_str()),
        "{errors:#?}"
    );
    assert!(
        errors.contains(&format!("{w}spec.serviceAccount: Required value").as_str()),
        "{errors:#?}"
    );

    // A derived kind cannot be applied either.
    let import = "{\"apiVersion\":\"multicluster.x-k8s.io/v1alpha1\",\"kind\":\"ServiceImport\",\
                  \"metadata\":{\"name\":\"web\"},\"spec\":{\"type\":\"ClusterSetIP\"}}";
    let (status, body) = call(
        admin,
        "POST",
        "/v1/apply",
        Some(("application/json", import)),
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("document 1 (ServiceImport default/web): kind: ServiceImport is derived"),
        "{body}"
    );

    // Nothing of either stream was stored.
    for plural in ["serviceexports", "workloads", "serviceimports"] {
        let (status, list) =
            call(admin, "GET", &format!("/v1/resources/{plural}"), None, None).await;
        assert_eq!(status, 200);
        assert_eq!(list["items"], serde_json::json!([]), "{plural}: {list}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_health_and_unwired_peering() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), "s3cret\n").unwrap();
    let c = start(dir.path(), "admin_token_file: admin-token\n").await;
    let admin = c.admin_addr();

    let (status, body) = call(admin, "GET", "/v1/resources/workloads", None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = call(
        admin,
        "GET",
        "/v1/resources/workloads",
        None,
        Some("wrong!"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        admin,
        "GET",
        "/v1/resources/workloads",
        None,
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, 200);

    // Health is open; ready once a leader and the CA exist (start waited for both).
    assert_eq!(call(admin, "GET", "/healthz", None, None).await.0, 200);
    assert_eq!(call(admin, "GET", "/readyz", None, None).await.0, 200);
    let (status, metrics) = call(admin, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("isthmus_controller_catalog_revision"),
        "{metrics}"
    );

    let token = Some("s3cret");
    let body = Some(("application/json", "{\"ttlSeconds\":600}"));
    let (status, body) = call(admin, "POST", "/v1/peering/tokens", body, token).await;
    assert_eq!(
        (status, body),
        (501, serde_json::json!({"error": "peering not wired"}))
    );

    // Status answers with the contract's top-level keys.
    let (status, s) = call(admin, "GET", "/v1/status", None, token).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["cluster"], "cluster-a");
    assert_eq!(s["trustDomain"], "cluster-a.mesh");
    assert_eq!(s["ca"]["sequence"], 1);
    assert!(s["ca"]["daysLeft"].as_u64().unwrap() > 3000, "{s}");
    assert_eq!(s["gateways"][0]["reachable"], false);
    for key in ["raft", "peers", "exports", "imports"] {
        assert!(!s[key].is_null(), "{key} missing in {s}");
    }
    c.stop().await;
}

/// A gateway admin answering `GET /peers` like DATAPLANE's gateway does.
async fn fake_gateway_admin() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = if req.uri().path() == "/peers" {
                            r#"[{"cluster":"cluster-b","connected":true,"rtt_ms":0.5}]"#
                        } else {
                            "[]"
                        };
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes())),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_gateway_peers_from_the_gateway_admin() {
    let dir = tempfile::tempdir().unwrap();
    let gw_admin = fake_gateway_admin().await;
    // The common config names one gateway without admin; add a second one.
    let extra = format!("  - address: 127.0.0.1:25443\n    admin: {gw_admin}\n");
    let c = start(dir.path(), &extra).await;
    let (status, s) = call(c.admin_addr(), "GET", "/v1/status", None, None).await;
    assert_eq!(status, 200, "{s}");
    let gw = &s["gateways"][1];
    assert_eq!(gw["address"], "127.0.0.1:25443", "{s}");
    assert_eq!(gw["reachable"], true, "{s}");
    assert_eq!(
        gw["peers"],
        serde_json::json!([{"cluster": "cluster-b", "connected": true, "rttMs": 0.5}])
    );
    c.stop().await;
}

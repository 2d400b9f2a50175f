//! Two controllers with production hooks, linked through the admin API:
//! an export in cluster B becomes an import in cluster A (ServiceImport and
//! a tunnelled priority-1 locality in A's xDS model); unexport withdraws it.

mod common;

use std::time::Duration;

use common::{call, eventually};
use mesh_controller::config::Config;
use mesh_controller::run::Controller;

fn config(dir: &std::path::Path, cluster: &str) -> Config {
    let yaml = format!(
        "cluster: {cluster}\nnode_id: 1\ndata_dir: data\n\
         raft_listen: 127.0.0.1:0\ngrpc_listen: 127.0.0.1:0\n\
         admin_listen: 127.0.0.1:0\nbundle_listen: 127.0.0.1:0\n\
         gateways:\n  - address: 127.0.0.1:15443\n"
    );
    Config::from_yaml(&yaml, dir).unwrap()
}

const EXPORT: &str = "\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: web, namespace: shop}
---
apiVersion: isthmus.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop}
spec:
  service: web
  serviceAccount: web
  address: 127.0.0.30
  ports: [{port: 80, targetPort: 15006, protocol: http}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_in_b_is_imported_in_a() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let hooks = mesh_controller::wiring::production_hooks;
    // Advertised addresses must be real: bind first, then rewrite.
    let mut ca = config(da.path(), "cluster-a");
    let mut cb = config(db.path(), "cluster-b");
    for c in [&mut ca, &mut cb] {
        let grpc = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let bundle = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        c.grpc_listen = grpc;
        c.grpc_advertise = grpc.to_string();
        c.bundle_listen = bundle;
        c.bundle_endpoint_url = format!("https://{bundle}/");
    }
    let a = Controller::start(ca, hooks(), rx.clone()).await.unwrap();
    let b = Controller::start(cb, hooks(), rx).await.unwrap();

    let (status, v) = call(
        b.admin_addr(),
        "POST",
        "/v1/apply",
        Some(("application/yaml", EXPORT)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");

    let (status, v) = call(
        a.admin_addr(),
        "POST",
        "/v1/peering/tokens",
        Some(("application/json", "{\"ttlSeconds\":600}")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let body = format!("{{\"token\":{}}}", v["token"]);
    let (status, v) = call(
        b.admin_addr(),
        "POST",
        "/v1/peering/redeem",
        Some(("application/json", &body)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["peer"]["cluster"], "cluster-a");

    let model = a.model();
    eventually(Duration::from_secs(20), "shop/web imported into A", || {
        let found = model.borrow().services.iter().any(|s| {
            s.namespace == "shop"
                && s.name == "web"
                && s.localities.iter().any(|l| {
                    l.cluster == "cluster-b"
                        && l.tunnel
                            .as_ref()
                            .is_some_and(|t| (t.healthy, t.total) == (1, 1))
                })
        });
        async move { found }
    })
    .await;
    let (_, imports) = call(
        a.admin_addr(),
        "GET",
        "/v1/resources/serviceimports",
        None,
        None,
    )
    .await;
    assert_eq!(
        imports["items"][0]["status"]["clusters"][0]["cluster"], "cluster-b",
        "{imports}"
    );

    // Unexport in B withdraws the import in A.
    let (status, _) = call(
        b.admin_addr(),
        "DELETE",
        "/v1/resources/serviceexports/shop/web",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(20), "import withdrawn", || {
        let gone = !model
            .borrow()
            .services
            .iter()
            .any(|s| s.localities.iter().any(|l| l.cluster == "cluster-b"));
        async move { gone }
    })
    .await;
    a.stop().await;
    b.stop().await;
}

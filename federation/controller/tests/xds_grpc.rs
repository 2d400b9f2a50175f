//! Interop: proxyless gRPC (Python grpcio, C-core's xDS client) with target
//! `xds:///greeter.default.svc.clusterset.local:50051` and a
//! `GRPC_XDS_BOOTSTRAP` pointing at our in-process ADS server (plaintext)
//! calls a Python gRPC server in the priority-0 locality, and after that
//! server is killed, the one in the priority-1 locality.
//!
//! Needs the venv `scripts/test.sh` creates (grpcio); fails, never skips,
//! without it.

mod xds_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use mesh_controller::xds::AppProtocol;
use xds_support::*;

/// A unary server answering every call to `/isthmus.test.Echo/Hello` with
/// its name; no protoc (generic handler, identity serializers).
const SERVER_PY: &str = r#"
import sys, time, grpc
from concurrent import futures
port, name = sys.argv[1], sys.argv[2].encode()
def hello(request, context):
    return name
handler = grpc.method_handlers_generic_handler("isthmus.test.Echo", {
    "Hello": grpc.unary_unary_rpc_method_handler(hello),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("127.0.0.1:" + port)
server.start()
print("listening", flush=True)
server.wait_for_termination()
"#;

/// Calls the xDS target every 100 ms and prints `ok <name>` or `err <code>`
/// per call; exits after 120 s at the latest.
const CLIENT_PY: &str = r#"
import sys, time, grpc
target = sys.argv[1]
channel = grpc.insecure_channel(target)
call = channel.unary_unary("/isthmus.test.Echo/Hello")
deadline = time.time() + 120
while time.time() < deadline:
    try:
        print("ok", call(b"hi", timeout=5).decode(), flush=True)
    except grpc.RpcError as e:
        print("err", e.code(), e.details(), flush=True)
    time.sleep(0.1)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_xds_client_fails_over_to_priority_1() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.py"), SERVER_PY).unwrap();
    std::fs::write(dir.path().join("client.py"), CLIENT_PY).unwrap();

    let (p0_port, p1_port) = (free_port(), free_port());
    let spawn_server = |port: u16, name: &'static str| {
        Proc::spawn(
            name,
            Command::new(&python)
                .arg(dir.path().join("server.py"))
                .args([port.to_string(), name.to_string()])
                .stdout(Stdio::null()),
        )
    };
    let mut p0 = spawn_server(p0_port, "p0");
    let _p1 = spawn_server(p1_port, "p1");

    let addr = |port: u16| -> SocketAddr { ([127, 0, 0, 1], port).into() };
    let m = model(
        1,
        vec![service(
            "default",
            "greeter",
            50051,
            AppProtocol::Grpc,
            vec![
                local_locality("cluster-a", vec![endpoint(addr(p0_port), true)]),
                local_locality("cluster-b", vec![endpoint(addr(p1_port), true)]),
            ],
        )],
    );
    let (ads, _publish) = start_server(m).await;

    let bootstrap = serde_json::json!({
        "xds_servers": [{
            "server_uri": ads.to_string(),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"]
        }],
        "node": {"id": "grpc-python-client", "locality": {"region": "eu"}}
    });
    let bootstrap_path = dir.path().join("bootstrap.json");
    std::fs::write(&bootstrap_path, serde_json::to_vec(&bootstrap).unwrap()).unwrap();

    let mut client = Proc::spawn(
        "grpc client",
        Command::new(&python)
            .arg(dir.path().join("client.py"))
            .arg("xds:///greeter.default.svc.clusterset.local:50051")
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap_path)
            .stdout(Stdio::piped()),
    );
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = client.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let seen = wait_for_line(&lines, "ok p0");
    assert!(
        !seen.iter().any(|l| l == "ok p1"),
        "priority 1 took traffic while priority 0 was healthy: {seen:?}"
    );
    p0.kill();
    let seen = wait_for_line(&lines, "ok p1");
    assert!(!seen.is_empty());
}

/// Reads lines until `want`; returns the lines read. Panics after
/// [`PATIENCE`] with what was seen.
fn wait_for_line(lines: &mpsc::Receiver<String>, want: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = line == want;
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!(
                "no {want:?} from the gRPC client within {PATIENCE:?}; last lines: {:#?}",
                &seen[seen.len().saturating_sub(10)..]
            ),
        }
    }
}

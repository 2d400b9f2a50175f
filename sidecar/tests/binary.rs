//! The real `mesh-sidecar` binary: exit codes, readiness, SIGHUP reload and
//! SIGTERM drain.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

async fn reachable(addr: std::net::SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

#[tokio::test]
async fn bad_config_exits_2_naming_the_key() {
    let pki = Pki::new();
    let path = pki.path().join("bad.yaml");
    let yaml = format!(
        "cluster: cluster-a\n{}admin: 127.0.0.1:1\noutbound:\n  - {{ listen: 127.0.0.1:2, service: default/x, port: 80, protocol: http }}\n",
        pki.identity_yaml("frontend")
    );
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("outbound[0].service: default/x is not in services"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.yaml"), "{stderr}");
}

#[tokio::test]
async fn runs_reloads_on_sighup_and_drains_on_sigterm() {
    let pki = Pki::new();
    let admin = free_addr();
    let extra = free_addr();
    let app = start_app("one").await;
    let base = format!(
        "cluster: cluster-a\n{}admin: \"{admin}\"\ninbound:\n  - {{ listen: \"{{IN}}\", protocol: http, app: \"{}\", allow: [\"{}\"] }}\n",
        pki.identity_yaml("backend"),
        app.addr,
        id("frontend"),
    );
    let first = free_addr();
    let path = pki.path().join("sidecar.yaml");
    std::fs::write(&path, base.replace("{IN}", &first.to_string())).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"))
        .arg("--config")
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(|| async { reachable(admin).await && get(admin, "/readyz").await.0 == 200 })
            .await,
        "ready"
    );
    assert!(reachable(first).await);

    // A broken file changes nothing.
    std::fs::write(&path, "cluster: [").unwrap();
    kill(child.id(), "-HUP");
    assert!(
        eventually(|| async {
            metric_value(
                &metrics(admin).await,
                "isthmus_sidecar_config_reloads_total{result=\"failed\"}",
            ) == 1.0
        })
        .await
    );
    assert!(reachable(first).await);

    // A good one moves the inbound listener.
    std::fs::write(&path, base.replace("{IN}", &extra.to_string())).unwrap();
    kill(child.id(), "-HUP");
    assert!(
        eventually(|| async { reachable(extra).await }).await,
        "new listener"
    );
    assert!(
        eventually(|| async { !reachable(first).await }).await,
        "old listener stopped"
    );

    kill(child.id(), "-TERM");
    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        None
    })
    .await
    .unwrap()
    .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

//! The real binary: a bad config exits 2 with one line naming the file and
//! key; a good one becomes ready, reloads on SIGHUP, and drains to exit 0
//! on SIGTERM.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_mesh-gateway");

#[test]
fn bad_config_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = Cluster::new(dir.path(), "cluster-a");
    a.write_bundles(&[&a]);
    let path = a.dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "cluster: cluster-a\n{}listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nexports:\n  - service: backend\n    port: 8080\n",
            a.identity_yaml()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exports[0].service"), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(out.stdout.is_empty());

    // An unknown key, and a missing file.
    std::fs::write(&path, "cluster: a\nbogus: 1\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/gw.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reload_and_sigterm_drain() {
    let dir = tempfile::tempdir().unwrap();
    let a = Cluster::new(dir.path(), "cluster-a");
    a.write_bundles(&[&a]);
    let path = a.dir.join("gateway.yaml");
    let yaml = format!(
        "cluster: cluster-a\n{}listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n",
        a.identity_yaml()
    );
    std::fs::write(&path, &yaml).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_line = |needle: &str| -> String {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no log line containing {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    };
    let ready = wait_line("mesh-gateway ready");
    let admin: std::net::SocketAddr = ready
        .split("admin=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(http_get(admin, "/readyz").await.unwrap().0, 200);

    let pid = child.id().to_string();
    let kill = |sig: &str| {
        let st = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(st.success());
    };
    // A bad file on SIGHUP is logged and changes nothing.
    std::fs::write(&path, "cluster: [").unwrap();
    kill("-HUP");
    wait_line("bad config, keeping the running one");
    std::fs::write(
        &path,
        yaml.replace("admin: 127.0.0.1:0", "admin: 127.0.0.1:1"),
    )
    .unwrap();
    kill("-HUP");
    let line = wait_line("reload refused");
    assert!(line.contains("restart"), "{line}");
    std::fs::write(&path, &yaml).unwrap();
    kill("-HUP");
    wait_line("SIGHUP: config reloaded");
    assert_eq!(http_get(admin, "/healthz").await.unwrap().0, 200);

    kill("-TERM");
    wait_line("draining");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

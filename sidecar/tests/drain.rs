//! Drain: listeners stop accepting at once, a request in flight finishes,
//! then drain reports completion.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use http::Request;
use http_body_util::BodyExt;

#[tokio::test]
async fn drain_stops_accepting_and_lets_the_in_flight_request_finish() {
    let pki = Pki::new();
    let app = start_app("one").await;
    let [back_admin, front_admin, inbound, out] = std::array::from_fn(|_| free_addr());
    let back_yaml = format!(
        "cluster: cluster-a\n{}admin: \"{back_admin}\"\ninbound:\n\
  - {{ listen: \"{inbound}\", protocol: http, app: \"{}\", allow: [\"{}\"] }}\n",
        pki.identity_yaml("backend"),
        app.addr,
        id("frontend"),
    );
    let front_yaml = format!(
        "cluster: cluster-a\n{}admin: \"{front_admin}\"\noutbound:\n\
  - {{ listen: \"{out}\", service: default/backend, port: 8080, protocol: http }}\n\
services:\n  - {{ service: default/backend, port: 8080, endpoints: [{{ address: \"{inbound}\", spiffe_id: \"{}\" }}] }}\n\
timeouts: {{ drain_ms: 10000 }}\n",
        pki.identity_yaml("frontend"),
        id("backend"),
    );
    let (_back, _) = start_sidecar(&pki, "backend", &back_yaml).await;
    let (front, _) = start_sidecar(&pki, "frontend", &front_yaml).await;
    let front = std::sync::Arc::new(front);

    let mut c = h1_client(out).await;
    let slow = tokio::spawn(async move {
        let req = Request::get("/slow")
            .header("host", "backend.default")
            .body(body(b""))
            .unwrap();
        let resp = c.send_request(req).await.unwrap();
        let status = resp.status();
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        (status, b)
    });
    assert!(eventually(|| async { app.requests.load(Ordering::SeqCst) == 1 }).await);

    let drainer = front.clone();
    let drain = tokio::spawn(async move { drainer.drain().await });
    assert!(
        eventually(|| async { tokio::net::TcpStream::connect(out).await.is_err() }).await,
        "the outbound listener stops accepting"
    );
    assert!(
        !drain.is_finished(),
        "the in-flight request holds the drain"
    );
    assert!(!front.shared().is_ready(), "not ready while draining");

    app.release.notify_one();
    let (status, _) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert!(drain.await.unwrap(), "drained within drain_ms");
    assert_eq!(front.shared().drain.active(), 0);
}

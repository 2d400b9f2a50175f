//! Two sidecars of one cluster in front of tiny apps, on loopback: the
//! same-cluster data path end to end (HTTP/1.1, HTTP/2, gRPC-style
//! trailers, TCP with half-close), authorization, XFCC, connection reuse and
//! the error rescue.

mod common;

use std::net::SocketAddr;

use common::*;
use http::Request;
use http_body_util::BodyExt;
use mesh_sidecar::Sidecar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Mesh {
    pki: Pki,
    front: Sidecar,
    back: Sidecar,
    front_admin: SocketAddr,
    back_admin: SocketAddr,
    out_http: SocketAddr,
    out_grpc: SocketAddr,
    out_tcp: SocketAddr,
    out_empty: SocketAddr,
    out_down: SocketAddr,
    in_http: SocketAddr,
    app: App,
}

async fn mesh() -> Mesh {
    let pki = Pki::new();
    let app = start_app("one").await;
    let echo = start_tcp_echo().await;
    let [front_admin, back_admin, out_http, out_grpc, out_tcp, out_empty, out_down, in_http, in_grpc, in_tcp, dead] =
        std::array::from_fn(|_| free_addr());
    let back_yaml = format!(
        "cluster: cluster-a\n{identity}admin: {back_admin}\ninbound:\n\
  - {{ listen: \"{in_http}\", protocol: http, app: \"{app}\", allow: [\"{front}\"] }}\n\
  - {{ listen: \"{in_grpc}\", protocol: http, app: \"{app}\", app_protocol: h2c, allow: [\"spiffe://{TD}/*\"] }}\n\
  - {{ listen: \"{in_tcp}\", protocol: tcp, app: \"{echo}\", allow: [\"{front}\"] }}\n",
        identity = pki.identity_yaml("backend"),
        app = app.addr,
        front = id("frontend"),
    );
    let front_yaml = format!(
        "cluster: cluster-a\n{identity}admin: {front_admin}\noutbound:\n\
  - {{ listen: \"{out_http}\", service: default/backend, port: 8080, protocol: http }}\n\
  - {{ listen: \"{out_grpc}\", service: default/grpc, port: 9090, protocol: http }}\n\
  - {{ listen: \"{out_tcp}\", service: default/echo, port: 9000, protocol: tcp }}\n\
  - {{ listen: \"{out_empty}\", service: default/empty, port: 80, protocol: http }}\n\
  - {{ listen: \"{out_down}\", service: default/down, port: 80, protocol: http }}\n\
services:\n\
  - {{ service: default/backend, port: 8080, endpoints: [{{ address: \"{in_http}\", spiffe_id: \"{back}\" }}] }}\n\
  - {{ service: default/grpc, port: 9090, endpoints: [{{ address: \"{in_grpc}\", spiffe_id: \"{back}\" }}] }}\n\
  - {{ service: default/echo, port: 9000, endpoints: [{{ address: \"{in_tcp}\", spiffe_id: \"{back}\" }}] }}\n\
  - {{ service: default/empty, port: 80 }}\n\
  - {{ service: default/down, port: 80, endpoints: [{{ address: \"{dead}\", spiffe_id: \"{back}\" }}] }}\n\
timeouts: {{ header_read_ms: 300, connect_ms: 2000 }}\n",
        identity = pki.identity_yaml("frontend"),
        back = id("backend"),
    );
    let (back, _) = start_sidecar(&pki, "backend", &back_yaml).await;
    let (front, _) = start_sidecar(&pki, "frontend", &front_yaml).await;
    Mesh {
        pki,
        front,
        back,
        front_admin,
        back_admin,
        out_http,
        out_grpc,
        out_tcp,
        out_empty,
        out_down,
        in_http,
        app,
    }
}

#[tokio::test]
async fn http1_request_reaches_the_app_with_body_and_xfcc() {
    let m = mesh().await;
    let mut c = h1_client(m.out_http).await;
    let req = Request::post("/echo")
        .header("host", "backend.default:8080")
        .header("x-forwarded-client-cert", "By=spoofed")
        .body(body(b"hello over the mesh"))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-app"], "one");
    assert_eq!(
        resp.headers()["x-xfcc"].to_str().unwrap(),
        format!("By={};URI={}", id("backend"), id("frontend")),
        "the caller's XFCC is replaced by the authenticated one"
    );
    assert_eq!(resp.headers()["x-host"], "backend.default:8080");
    assert_eq!(resp.headers()["x-app-version"], "HTTP/1.1");
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&b[..], b"hello over the mesh");
    let text = metrics(m.back_admin).await;
    assert_eq!(
        metric_value(
            &text,
            &format!(
                "isthmus_sidecar_inbound_requests_by_caller_total{{caller=\"{}\"}}",
                id("frontend")
            )
        ),
        1.0,
        "{text}"
    );
    drop(m.pki);
}

#[tokio::test]
async fn h2_prior_knowledge_carries_body_and_trailers_both_ways() {
    let m = mesh().await;
    let mut c = h2_client(m.out_grpc).await;
    let req = Request::post("http://grpc.default/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::BodyExt::boxed(frames_with_trailers(
            b"\0\0\0\0\x05hello",
            &[("grpc-status", "0"), ("x-trailer", "yes")],
        )))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-app-version"],
        "HTTP/2.0",
        "h2c to the app"
    );
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-trailer"], "yes");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x05hello");
}

#[tokio::test]
async fn many_requests_share_one_h2_connection_to_the_peer_sidecar() {
    let m = mesh().await;
    let mut tasks = Vec::new();
    // Sequential first (one connection established), then concurrent.
    let (status, _, _) = get(m.out_http, "/first").await;
    assert_eq!(status, 200);
    for i in 0..20 {
        let addr = m.out_http;
        tasks.push(tokio::spawn(async move {
            let (status, headers, _) = get(addr, &format!("/r{i}")).await;
            assert_eq!(status, 200);
            assert_eq!(headers["x-app"], "one");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let back = metrics(m.back_admin).await;
    assert_eq!(
        metric_value(
            &back,
            "isthmus_sidecar_inbound_tls_handshakes_total{result=\"ok\"}"
        ),
        1.0,
        "21 requests over one mTLS connection\n{back}"
    );
    let front = metrics(m.front_admin).await;
    assert_eq!(
        metric_value(
            &front,
            "isthmus_sidecar_upstream_connections_total{route=\"direct\",protocol=\"http\"}"
        ),
        1.0,
        "{front}"
    );
    assert_eq!(
        metric_value(
            &front,
            "isthmus_sidecar_requests_total{direction=\"outbound\",service=\"default/backend\",status=\"200\"}"
        ),
        21.0,
        "{front}"
    );
}

#[tokio::test]
async fn caller_not_in_the_allow_list_is_refused() {
    let m = mesh().await;
    let intruder_admin = free_addr();
    let out = free_addr();
    let yaml = format!(
        "cluster: cluster-a\n{identity}admin: {intruder_admin}\noutbound:\n\
  - {{ listen: \"{out}\", service: default/backend, port: 8080, protocol: http }}\n\
services:\n\
  - {{ service: default/backend, port: 8080, endpoints: [{{ address: \"{in_http}\", spiffe_id: \"{back}\" }}] }}\n",
        identity = m.pki.identity_yaml("intruder"),
        in_http = m.in_http,
        back = id("backend"),
    );
    let (_intruder, _) = start_sidecar(&m.pki, "intruder", &yaml).await;
    let (status, headers, _) = get(out, "/").await;
    assert_eq!(status, 502);
    assert!(headers.contains_key("x-isthmus-error"));
    assert_eq!(
        m.app.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the app"
    );
    let back = metrics(m.back_admin).await;
    assert!(
        metric_value(
            &back,
            "isthmus_sidecar_inbound_tls_handshakes_total{result=\"failed\"}"
        ) >= 1.0,
        "{back}"
    );
}

#[tokio::test]
async fn tcp_echo_passes_half_close_both_ways() {
    let m = mesh().await;
    let mut s = TcpStream::connect(m.out_tcp).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    // Our FIN reaches the app, which answers "bye" and closes: we read it
    // and then EOF.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the app's FIN arrives")
        .unwrap();
    assert_eq!(rest, b"bye");
}

#[tokio::test]
async fn no_endpoint_is_503_and_unreachable_endpoint_is_502() {
    let m = mesh().await;
    let (status, headers, body) = get(m.out_empty, "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-isthmus-error"], "no healthy endpoint");
    assert!(!body.is_empty());
    let (status, headers, _) = get(m.out_down, "/").await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-isthmus-error"], "upstream connect failed");
    let front = metrics(m.front_admin).await;
    assert_eq!(
        metric_value(
            &front,
            "isthmus_sidecar_requests_total{direction=\"outbound\",service=\"default/empty\",status=\"503\"}"
        ),
        1.0,
        "{front}"
    );
}

#[tokio::test]
async fn admin_serves_health_readiness_and_config_dump() {
    let m = mesh().await;
    assert_eq!(get(m.front_admin, "/healthz").await.0, 200);
    assert_eq!(get(m.front_admin, "/readyz").await.0, 200);
    assert_eq!(get(m.front_admin, "/nope").await.0, 404);
    let (status, _, dump) = get(m.front_admin, "/config_dump").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&dump).unwrap();
    assert_eq!(v["spiffe_id"], id("frontend"));
    assert_eq!(v["outbound"][0]["service"], "default/backend");
    assert_eq!(v["timeouts"]["header_read_ms"], 300);
    assert!(!String::from_utf8_lossy(&dump).contains("ca-key"));
    drop(m.front);
    drop(m.back);
}

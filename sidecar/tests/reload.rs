//! Reload: a new config switches routes for new requests while a request in
//! flight finishes on the config it started with; a config that fails to
//! load or bind changes nothing.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use common::*;
use http::Request;
use http_body_util::BodyExt;

fn front_yaml(pki: &Pki, admin: SocketAddr, outs: &[SocketAddr], endpoint: SocketAddr) -> String {
    let mut y = format!(
        "cluster: cluster-a\n{}admin: \"{admin}\"\noutbound:\n",
        pki.identity_yaml("frontend")
    );
    for o in outs {
        y.push_str(&format!(
            "  - {{ listen: \"{o}\", service: default/backend, port: 8080, protocol: http }}\n"
        ));
    }
    y.push_str(&format!(
        "services:\n  - {{ service: default/backend, port: 8080, endpoints: [{{ address: \"{endpoint}\", spiffe_id: \"{}\" }}] }}\n",
        id("backend")
    ));
    y
}

#[tokio::test]
async fn reload_switches_routes_while_an_in_flight_request_finishes_on_the_old_one() {
    let pki = Pki::new();
    let one = start_app("one").await;
    let two = start_app("two").await;
    let [back_admin, front_admin, in1, in2, out, out2] = std::array::from_fn(|_| free_addr());
    let back_yaml = format!(
        "cluster: cluster-a\n{}admin: \"{back_admin}\"\ninbound:\n\
  - {{ listen: \"{in1}\", protocol: http, app: \"{}\", allow: [\"{f}\"] }}\n\
  - {{ listen: \"{in2}\", protocol: http, app: \"{}\", allow: [\"{f}\"] }}\n",
        pki.identity_yaml("backend"),
        one.addr,
        two.addr,
        f = id("frontend"),
    );
    let (_back, _) = start_sidecar(&pki, "backend", &back_yaml).await;
    let (front, path) = start_sidecar(
        &pki,
        "frontend",
        &front_yaml(&pki, front_admin, &[out], in1),
    )
    .await;

    // A slow request, in flight on the old config.
    let mut c = h1_client(out).await;
    let slow = tokio::spawn(async move {
        let req = Request::get("/slow")
            .header("host", "backend.default")
            .body(body(b""))
            .unwrap();
        let resp = c.send_request(req).await.unwrap();
        let app = resp.headers()["x-app"].clone();
        let status = resp.status();
        let _ = resp.into_body().collect().await.unwrap();
        (status, app)
    });
    assert!(eventually(|| async { one.requests.load(Ordering::SeqCst) == 1 }).await);

    // New config: route to the second endpoint, and add a listener.
    std::fs::write(&path, front_yaml(&pki, front_admin, &[out, out2], in2)).unwrap();
    front.reload().await.unwrap();
    let (status, headers, _) = get(out, "/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-app"], "two", "new requests use the new config");
    let (status, headers, _) = get(out2, "/").await;
    assert_eq!((status, headers["x-app"].to_str().unwrap()), (200, "two"));

    one.release.notify_one();
    let (status, app) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        app, "one",
        "the in-flight request finished where it started"
    );

    let text = metrics(front_admin).await;
    assert_eq!(
        metric_value(&text, "isthmus_sidecar_config_reloads_total{result=\"ok\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_config_that_fails_to_load_or_bind_changes_nothing() {
    let pki = Pki::new();
    let one = start_app("one").await;
    let [back_admin, front_admin, in1, out] = std::array::from_fn(|_| free_addr());
    let back_yaml = format!(
        "cluster: cluster-a\n{}admin: \"{back_admin}\"\ninbound:\n\
  - {{ listen: \"{in1}\", protocol: http, app: \"{}\", allow: [\"{}\"] }}\n",
        pki.identity_yaml("backend"),
        one.addr,
        id("frontend"),
    );
    let (_back, _) = start_sidecar(&pki, "backend", &back_yaml).await;
    let (front, path) = start_sidecar(
        &pki,
        "frontend",
        &front_yaml(&pki, front_admin, &[out], in1),
    )
    .await;

    std::fs::write(&path, "cluster: [").unwrap();
    assert!(front.reload().await.is_err());

    // A listener address someone else holds: the whole reload is refused.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let dead = free_addr();
    std::fs::write(&path, front_yaml(&pki, front_admin, &[out, busy], dead)).unwrap();
    let err = front.reload().await.err().unwrap();
    assert!(err.to_string().contains(&busy.to_string()), "{err}");

    // Another identity is refused too.
    std::fs::write(
        &path,
        front_yaml(&pki, front_admin, &[out], dead).replace("sa/frontend", "sa/other"),
    )
    .unwrap();
    assert!(front.reload().await.is_err());

    let (status, headers, _) = get(out, "/").await;
    assert_eq!(status, 200, "still routed by the first config");
    assert_eq!(headers["x-app"], "one");
    let text = metrics(front_admin).await;
    assert_eq!(
        metric_value(
            &text,
            "isthmus_sidecar_config_reloads_total{result=\"failed\"}"
        ),
        3.0,
        "{text}"
    );
}

//! Shared helpers of the controller's integration tests: a controller on
//! loopback port 0, an admin HTTP client, and a TLS gRPC channel.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mesh_controller::config::Config;
use mesh_controller::run::{Controller, Hooks};
use serde_json::Value;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint};
use trust_bundle::{Authorizer, BundleStore, SvidSource};

/// A controller config on loopback, every port 0, data in `dir`.
pub fn config(dir: &std::path::Path, extra: &str) -> Config {
    let yaml = format!(
        "cluster: cluster-a\n\
         region: eu-west\n\
         node_id: 1\n\
         data_dir: data\n\
         raft_listen: 127.0.0.1:0\n\
         grpc_listen: 127.0.0.1:0\n\
         admin_listen: 127.0.0.1:0\n\
         bundle_listen: 127.0.0.1:0\n\
         gateways:\n  - address: 127.0.0.1:15443\n\
         {extra}"
    );
    Config::from_yaml(&yaml, dir).expect("test config is valid")
}

/// Starts a controller in `dir`.
pub async fn start(dir: &std::path::Path, extra: &str) -> Controller {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let c = Controller::start(config(dir, extra), Hooks::default(), rx)
        .await
        .expect("controller starts");
    c
}

/// One admin API call: `(status, JSON body)` (`Value::String` for non-JSON).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
    token: Option<&str>,
) -> (u16, Value) {
    let tcp = TcpStream::connect(addr).await.expect("admin reachable");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let (content_type, text) = body.unwrap_or(("application/json", ""));
    let req = req
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(text.to_owned())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// A gRPC channel to the controller's TLS listener, verifying its SVID
/// against `bundles`, presenting `client` when given.
pub async fn channel(controller: &Controller, client: Option<Arc<SvidSource>>) -> Channel {
    let bundles = BundleStore::from_map(&controller.bundles().to_map());
    let config = trust_bundle::tls::client_config(client, bundles, Authorizer::Any, &[b"h2"])
        .expect("client tls config");
    let connector = TlsConnector {
        addr: controller.grpc_addr(),
        config: Arc::new(config),
    };
    Endpoint::from_static("http://controller.invalid")
        .connect_with_connector(connector)
        .await
        .expect("grpc channel")
}

#[derive(Clone)]
struct TlsConnector {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let addr = self.addr;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            let tls = connector
                .connect(trust_bundle::tls::spiffe_server_name(), tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Polls `check` until it returns true, for at most `patience`.
pub async fn eventually<F, Fut>(patience: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

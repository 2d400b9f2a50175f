//! Read-only endpoints: `/readyz`, `/metrics` and `/v1/status` (with the
//! gateways' `GET /peers` facts).

use std::collections::BTreeSet;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use super::{error, read, text, AdminState, ApiError, GATEWAY_TIMEOUT, MAX_BODY};
use crate::catalog::{rfc3339_ms, unix_ms};

pub(super) async fn status_json(state: &AdminState) -> Result<Value, ApiError> {
    let catalog = read(state).await?;
    let config = &state.config;
    let now_ms = unix_ms(SystemTime::now());
    let ca = catalog.ca.as_ref().map(|ca| {
        let left_ms = ca.active.not_after_ms.saturating_sub(now_ms);
        json!({
            "notAfter": rfc3339_ms(ca.active.not_after_ms),
            "daysLeft": left_ms / 86_400_000,
            "sequence": ca.sequence,
        })
    });
    let peers: Vec<Value> = catalog
        .peers
        .values()
        .map(|p| {
            json!({
                "cluster": p.cluster,
                "trustDomain": p.trust_domain,
                "bundleSequence": p.bundle_sequence,
                "bundleAgeSeconds": now_ms.saturating_sub(p.bundle_refreshed_ms) / 1000,
                "controllerAddress": p.controller_address,
                "gatewayAddresses": p.gateway_addresses,
                "exports": catalog.peer_export_names(&p.cluster),
            })
        })
        .collect();
    let mut gateways = Vec::new();
    for g in &config.gateways {
        let facts = match g.admin {
            Some(admin) => gateway_peers(admin).await,
            None => None,
        };
        gateways.push(json!({
            "address": g.address.to_string(),
            "admin": g.admin.map(|a| a.to_string()),
            "reachable": facts.is_some(),
            "peers": facts.unwrap_or_default(),
        }));
    }
    let imported_by: Vec<String> = catalog.peers.keys().cloned().collect();
    let exports: Vec<Value> = catalog
        .local_exports()
        .into_iter()
        .map(|(namespace, name, _)| {
            json!({ "namespace": namespace, "name": name, "importedBy": imported_by })
        })
        .collect();
    let imports: Vec<Value> = catalog
        .service_imports(&config.cluster)
        .into_iter()
        .map(|si| {
            let clusters: BTreeSet<String> = si
                .status
                .map(|s| s.clusters.into_iter().map(|c| c.cluster).collect())
                .unwrap_or_default();
            json!({
                "namespace": si.metadata.namespace,
                "name": si.metadata.name,
                "clusters": clusters,
            })
        })
        .collect();
    Ok(json!({
        "cluster": config.cluster,
        "trustDomain": config.trust_domain.as_str(),
        "raft": state.store.status(),
        "ca": ca,
        "peers": peers,
        "gateways": gateways,
        "exports": exports,
        "imports": imports,
    }))
}

/// A gateway admin's `GET /peers`, as `[{"cluster","connected","rttMs"}]`;
/// `None` when unreachable or malformed.
async fn gateway_peers(admin: std::net::SocketAddr) -> Option<Vec<Value>> {
    #[derive(Deserialize)]
    struct GatewayPeer {
        cluster: String,
        connected: bool,
        #[serde(default)]
        rtt_ms: f64,
    }
    let fetch = async {
        let tcp = TcpStream::connect(admin).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        let driver = tokio::spawn(conn);
        let req = Request::get("/peers")
            .header(header::HOST, admin.to_string())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let ok = resp.status().is_success();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .ok()?
            .to_bytes();
        driver.abort();
        if !ok {
            return None;
        }
        serde_json::from_slice::<Vec<GatewayPeer>>(&body).ok()
    };
    let peers = tokio::time::timeout(GATEWAY_TIMEOUT, fetch).await.ok()??;
    Some(
        peers
            .into_iter()
            .map(|p| json!({ "cluster": p.cluster, "connected": p.connected, "rttMs": p.rtt_ms }))
            .collect(),
    )
}

pub(super) fn readyz(state: &AdminState) -> Response<Full<Bytes>> {
    let raft = state.store.status();
    let has_ca = state.store.watch().borrow().ca.is_some();
    match (raft.leader, has_ca) {
        (None, _) => text(StatusCode::SERVICE_UNAVAILABLE, "no raft leader known\n"),
        (Some(_), false) => text(StatusCode::SERVICE_UNAVAILABLE, "no CA yet\n"),
        (Some(_), true) => text(StatusCode::OK, "ready\n"),
    }
}

pub(super) fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    use prometheus_client::metrics::gauge::Gauge;
    let catalog = state.store.watch().borrow().clone();
    let raft = state.store.status();
    let mut registry = prometheus_client::registry::Registry::with_prefix("isthmus_controller");
    let mut gauge = |name: &str, help: &str, value: u64| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, g);
    };
    gauge(
        "catalog_revision",
        "Commands applied to the catalog.",
        catalog.revision,
    );
    gauge(
        "resources",
        "Stored resources.",
        catalog.resources.len() as u64,
    );
    gauge(
        "leased_workloads",
        "Workloads registered with a live lease.",
        catalog.leased.len() as u64,
    );
    gauge("peers", "Linked peer clusters.", catalog.peers.len() as u64);
    gauge(
        "raft_is_leader",
        "1 when this node is the Raft leader.",
        u64::from(raft.leader == Some(raft.node_id)),
    );
    gauge(
        "ca_sequence",
        "The CA bundle's spiffe_sequence.",
        catalog.ca.as_ref().map_or(0, |c| c.sequence),
    );
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics");
    }
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    resp
}

//! A tiny in-test fake of the controller's admin REST API (issue 5 contract),
//! canned but stateful: apply stores, get lists, delete removes, peering
//! tokens issued by one fake are redeemed by another (they share a
//! [`World`]), and `/v1/status` reflects the peers, exports and a
//! switchable gateway tunnel state.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// One fake cluster's state.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    /// Bearer token required on /v1/* when set.
    pub(crate) token: Option<String>,
    /// (plural, namespace, name) → resource.
    pub(crate) resources: BTreeMap<(String, String, String), Value>,
    /// Linked peers' cluster names.
    pub(crate) peers: Vec<String>,
    /// Peers whose gateway tunnel is down.
    pub(crate) disconnected: Vec<String>,
    /// Requests seen, `METHOD path`.
    pub(crate) requests: Vec<String>,
}

/// Peering tokens and clusters shared by several fakes.
#[derive(Debug, Default)]
pub(crate) struct World {
    clusters: BTreeMap<String, Arc<Mutex<ClusterState>>>,
    /// token → (issuer, redeemed)
    tokens: BTreeMap<String, (String, bool)>,
    issued: u64,
}

/// A running fake controller.
pub(crate) struct FakeAdmin {
    /// Its admin address.
    pub(crate) addr: SocketAddr,
    /// Its state, for assertions and to flip gateway tunnels.
    pub(crate) state: Arc<Mutex<ClusterState>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeAdmin {
    /// Starts a fake for `cluster` on 127.0.0.1:0, registered in `world`.
    pub(crate) fn start(cluster: &str, world: &Arc<Mutex<World>>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(Mutex::new(ClusterState::default()));
        world
            .lock()
            .unwrap()
            .clusters
            .insert(cluster.to_owned(), state.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared {
            cluster: cluster.to_owned(),
            state: state.clone(),
            world: world.clone(),
        };
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            _runtime: runtime,
        }
    }

    /// `http://addr`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[derive(Clone)]
struct Shared {
    cluster: String,
    state: Arc<Mutex<ClusterState>>,
    world: Arc<Mutex<World>>,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    reply(status, json!({ "error": message.into() }))
}

const PLURALS: &[(&str, &str)] = &[
    ("ServiceExport", "serviceexports"),
    ("ServiceImport", "serviceimports"),
    ("Workload", "workloads"),
    ("MeshLink", "meshlinks"),
    ("FailoverPolicy", "failoverpolicies"),
];

impl Shared {
    async fn handle(&self, req: Request<Incoming>) -> Reply {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let auth = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        };
        {
            let mut state = self.state.lock().unwrap();
            state.requests.push(format!("{method} {path}"));
            if path.starts_with("/v1/") {
                if let Some(token) = &state.token {
                    if auth.as_deref() != Some(&format!("Bearer {token}")) {
                        return error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
                    }
                }
            }
        }
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid json: {e}")),
            }
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => reply(StatusCode::OK, json!("ok")),
            (&Method::GET, ["v1", "status"]) => reply(StatusCode::OK, self.status()),
            (&Method::POST, ["v1", "apply"]) => self.apply(body),
            (&Method::GET, ["v1", "resources", "meshlinks"]) => {
                let state = self.state.lock().unwrap();
                let items: Vec<Value> = state.peers.iter().map(|p| json!({
                    "apiVersion": "isthmus.dev/v1alpha1", "kind": "MeshLink",
                    "metadata": {"name": p, "namespace": "isthmus-system", "creationTimestamp": "2026-01-01T00:00:00Z"},
                    "spec": {"peerCluster": p, "trustDomain": format!("{p}.mesh"),
                             "bundleEndpoint": "https://127.0.0.1:1/", "gatewayAddresses": ["127.0.0.1:2"]},
                })).collect();
                reply(StatusCode::OK, json!({ "items": items }))
            }
            (&Method::POST, ["v1", "ca", "rotate"]) => {
                reply(StatusCode::ACCEPTED, json!({"sequence": 2}))
            }
            (&Method::GET, ["v1", "resources", plural]) => {
                let namespace = query.strip_prefix("namespace=");
                let state = self.state.lock().unwrap();
                let items: Vec<Value> = state
                    .resources
                    .iter()
                    .filter(|((p, ns, _), _)| p == plural && namespace.is_none_or(|n| n == ns))
                    .map(|(_, v)| v.clone())
                    .collect();
                reply(StatusCode::OK, json!({ "items": items }))
            }
            (&Method::GET, ["v1", "resources", plural, ns, name]) => {
                let key = (plural.to_string(), ns.to_string(), name.to_string());
                match self.state.lock().unwrap().resources.get(&key) {
                    Some(v) => reply(StatusCode::OK, v.clone()),
                    None => error(
                        StatusCode::NOT_FOUND,
                        format!("{plural} {ns}/{name} not found"),
                    ),
                }
            }
            (&Method::DELETE, ["v1", "resources", plural, ns, name]) => {
                if *plural == "serviceimports" {
                    return error(StatusCode::METHOD_NOT_ALLOWED, "serviceimports are derived");
                }
                let key = (plural.to_string(), ns.to_string(), name.to_string());
                match self.state.lock().unwrap().resources.remove(&key) {
                    Some(_) => reply(StatusCode::OK, json!({ "deleted": true })),
                    None => error(
                        StatusCode::NOT_FOUND,
                        format!("{plural} {ns}/{name} not found"),
                    ),
                }
            }
            (&Method::POST, ["v1", "tokens", "join"]) => {
                let (Some(ns), Some(sa), Some(ttl)) = (
                    body.get("namespace").and_then(Value::as_str),
                    body.get("serviceAccount").and_then(Value::as_str),
                    body.get("ttlSeconds").and_then(Value::as_u64),
                ) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "namespace, serviceAccount, ttlSeconds required",
                    );
                };
                reply(
                    StatusCode::OK,
                    json!({"token": format!("join.{ns}.{sa}.{ttl}"), "expiresAt": "2030-01-01T00:00:00Z"}),
                )
            }
            (&Method::POST, ["v1", "peering", "tokens"]) => {
                let mut world = self.world.lock().unwrap();
                world.issued += 1;
                let token = format!("peer.{}.{}", self.cluster, world.issued);
                world
                    .tokens
                    .insert(token.clone(), (self.cluster.clone(), false));
                reply(
                    StatusCode::OK,
                    json!({"token": token, "expiresAt": "2030-01-01T00:10:00Z"}),
                )
            }
            (&Method::POST, ["v1", "peering", "redeem"]) => self.redeem(&body),
            (&Method::DELETE, ["v1", "peering", "peers", cluster]) => {
                let world = self.world.lock().unwrap();
                let mut state = self.state.lock().unwrap();
                if !state.peers.iter().any(|p| p == cluster) {
                    return error(StatusCode::NOT_FOUND, format!("peer {cluster} not found"));
                }
                state.peers.retain(|p| p != cluster);
                if let Some(other) = world.clusters.get(*cluster) {
                    other.lock().unwrap().peers.retain(|p| *p != self.cluster);
                }
                reply(StatusCode::OK, json!({}))
            }
            _ => error(StatusCode::NOT_FOUND, format!("no route {method} {path}")),
        }
    }

    fn apply(&self, body: Value) -> Reply {
        let Value::Array(docs) = body else {
            return error(StatusCode::BAD_REQUEST, "expected a json array");
        };
        let mut staged = Vec::new();
        let mut errors = Vec::new();
        for (i, mut doc) in docs.into_iter().enumerate() {
            let kind = doc
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let Some((_, plural)) = PLURALS.iter().find(|(k, _)| *k == kind) else {
                errors.push(format!(
                    "document {}: kind: Unsupported value: {kind:?}",
                    i + 1
                ));
                continue;
            };
            if kind == "ServiceImport" || kind == "MeshLink" {
                errors.push(format!("document {}: kind: {kind} is read-only", i + 1));
                continue;
            }
            let Some(name) = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                errors.push(format!("document {}: metadata.name: Required value", i + 1));
                continue;
            };
            let ns = doc
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned();
            doc["metadata"]["namespace"] = json!(ns);
            doc["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            if kind == "ServiceExport" {
                doc["status"] = json!({"conditions": [
                    {"type": "Valid", "status": "True"},
                    {"type": "Conflict", "status": "False"}
                ]});
            }
            staged.push(((plural.to_string(), ns, name), kind, doc));
        }
        if !errors.is_empty() {
            return reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "errors": errors }),
            );
        }
        let mut state = self.state.lock().unwrap();
        let mut results = Vec::new();
        for (key, kind, doc) in staged {
            let action = match state.resources.get(&key) {
                None => "created",
                Some(old) if *old == doc => "unchanged",
                Some(_) => "configured",
            };
            results
                .push(json!({"kind": kind, "namespace": key.1, "name": key.2, "action": action}));
            state.resources.insert(key, doc);
        }
        reply(StatusCode::OK, json!({ "results": results }))
    }

    fn redeem(&self, body: &Value) -> Reply {
        let Some(token) = body.get("token").and_then(Value::as_str) else {
            return error(StatusCode::BAD_REQUEST, "token required");
        };
        let mut world = self.world.lock().unwrap();
        let issuer = match world.tokens.get_mut(token) {
            None => return error(StatusCode::BAD_REQUEST, "malformed peering token"),
            Some((_, true)) => return error(StatusCode::CONFLICT, "peering token already used"),
            Some((issuer, used)) => {
                *used = true;
                issuer.clone()
            }
        };
        if issuer == self.cluster {
            return error(StatusCode::BAD_REQUEST, "cannot link a cluster with itself");
        }
        let Some(other) = world.clusters.get(&issuer) else {
            return error(StatusCode::BAD_GATEWAY, "issuer unreachable");
        };
        other.lock().unwrap().peers.push(self.cluster.clone());
        self.state.lock().unwrap().peers.push(issuer.clone());
        reply(
            StatusCode::OK,
            json!({"peer": {"cluster": issuer, "trustDomain": format!("{issuer}.mesh")}}),
        )
    }

    fn status(&self) -> Value {
        let world = self.world.lock().unwrap();
        let state = self.state.lock().unwrap();
        let exports: Vec<(String, String)> = state
            .resources
            .keys()
            .filter(|(p, _, _)| p == "serviceexports")
            .map(|(_, ns, name)| (ns.clone(), name.clone()))
            .collect();
        let peer_exports = |cluster: &str| -> Vec<String> {
            world
                .clusters
                .get(cluster)
                .map(|c| {
                    c.lock()
                        .unwrap()
                        .resources
                        .keys()
                        .filter(|(p, _, _)| p == "serviceexports")
                        .map(|(_, ns, name)| format!("{ns}/{name}"))
                        .collect()
                })
                .unwrap_or_default()
        };
        let peers: Vec<Value> = state
            .peers
            .iter()
            .map(|p| {
                json!({
                    "cluster": p, "trustDomain": format!("{p}.mesh"), "bundleSequence": 1,
                    "bundleAgeSeconds": 12, "controllerAddress": "127.0.0.1:1",
                    "gatewayAddresses": ["127.0.0.1:2"], "exports": peer_exports(p),
                })
            })
            .collect();
        let mut imports: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in &state.peers {
            for e in peer_exports(p) {
                imports.entry(e).or_default().push(p.clone());
            }
        }
        json!({
            "cluster": self.cluster,
            "trustDomain": format!("{}.mesh", self.cluster),
            "raft": {"node_id": 1, "leader": 1, "term": 3, "voters": [[1, "127.0.0.1:15013"]], "last_applied": 7},
            "ca": {"notAfter": "2036-01-01T00:00:00Z", "daysLeft": 3000, "sequence": 1},
            "peers": peers,
            "gateways": [{
                "address": "127.0.0.1:15443", "admin": "127.0.0.1:15021", "reachable": true,
                "peers": state.peers.iter().map(|p| json!({
                    "cluster": p, "connected": !state.disconnected.contains(p), "rttMs": 0.3
                })).collect::<Vec<_>>(),
            }],
            "exports": exports.iter().map(|(ns, name)| json!({
                "namespace": ns, "name": name, "importedBy": state.peers,
            })).collect::<Vec<_>>(),
            "imports": imports.iter().map(|(id, clusters)| {
                let (ns, name) = id.split_once('/').unwrap_or(("default", id));
                json!({"namespace": ns, "name": name, "clusters": clusters})
            }).collect::<Vec<_>>(),
        })
    }
}

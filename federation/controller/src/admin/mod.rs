//! The operator HTTP API (HTTP/1.1, JSON) that `meshctl` talks to, plus
//! `/healthz`, `/readyz` and `/metrics` (docs/reference/controller.md).
//!
//! Errors are `{"error": "..."}`; validation failures are 422
//! `{"errors": ["document 1 (ServiceExport default/x): spec...: ..."]}` and
//! store nothing; a write that cannot commit is 503; with an admin token
//! configured, `/v1/*` without `Authorization: Bearer <token>` is 401.
//!
//! The peering endpoints call a [`PeeringApi`]; until the peering module is
//! wired in, [`NotWired`] answers 501.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::catalog::{
    self, ca::CaMaterial, rfc3339_ms, tokens, unix_ms, Catalog, Command, PeerRecord, ResourceKind,
};
use crate::config::{dns_label, Config};

mod status;
use crate::store::{Store, WriteError};

/// Largest accepted request body (4 MiB).
pub const MAX_BODY: usize = 4 << 20;
/// Longest join token lifetime (30 days).
pub const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);
/// How long `/v1/status` waits for a gateway's admin.
pub const GATEWAY_TIMEOUT: Duration = Duration::from_secs(1);

/// A boxed future, for the [`PeeringApi`] plug-in point.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the peering endpoints need from the peering module. The lead wires
/// the real implementation in `run_cli`; [`NotWired`] answers 501.
pub trait PeeringApi: Send + Sync + 'static {
    /// `POST /v1/peering/tokens`: a new single-use token valid for `ttl`,
    /// and when it expires.
    fn create_token(&self, ttl: Duration) -> BoxFuture<'_, Result<(String, SystemTime), ApiError>>;
    /// `POST /v1/peering/redeem`: redeem a peer's token; the new peer.
    fn redeem(&self, token: String) -> BoxFuture<'_, Result<PeerRecord, ApiError>>;
    /// `DELETE /v1/peering/peers/{cluster}`: unlink both sides.
    fn unlink(&self, cluster: String) -> BoxFuture<'_, Result<(), ApiError>>;
}

/// An error answer: HTTP status and message (`{"error": message}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status, e.g. 409 for a reused peering token.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

/// The [`PeeringApi`] before the peering module is wired: 501 everywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotWired;

impl PeeringApi for NotWired {
    fn create_token(&self, _: Duration) -> BoxFuture<'_, Result<(String, SystemTime), ApiError>> {
        Box::pin(async { Err(not_wired()) })
    }
    fn redeem(&self, _: String) -> BoxFuture<'_, Result<PeerRecord, ApiError>> {
        Box::pin(async { Err(not_wired()) })
    }
    fn unlink(&self, _: String) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async { Err(not_wired()) })
    }
}

fn not_wired() -> ApiError {
    ApiError::new(501, "peering not wired")
}

/// Everything the admin API serves from.
pub struct AdminState {
    /// The catalog store.
    pub store: Arc<Store<Catalog>>,
    /// The controller's config.
    pub config: Arc<Config>,
    /// The bearer token `/v1/*` requires, if any.
    pub token: Option<String>,
    /// The peering module's entry points.
    pub peering: Arc<dyn PeeringApi>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("cluster", &self.config.cluster)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Serves the admin API on `listener` until `shutdown` turns true (or its
/// sender is dropped). Connections in progress finish in their own tasks.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "admin connection error");
            }
        });
    }
}

/// Answers one request.
pub async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["readyz"]) => status::readyz(state),
        (&Method::GET, ["metrics"]) => status::metrics(state),
        (_, ["v1", ..]) => {
            if let Err(r) = authorize(state, &req) {
                return r;
            }
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let result = v1(state, &method, &segments[1..], &query, &content_type, &body).await;
            result.unwrap_or_else(|e| error(status(e.status), &e.message))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no route for {method} {path}"),
        ),
    }
}

async fn v1(
    state: &AdminState,
    method: &Method,
    path: &[&str],
    query: &str,
    content_type: &str,
    body: &Bytes,
) -> Result<Response<Full<Bytes>>, ApiError> {
    match (method, path) {
        (&Method::POST, ["apply"]) => apply(state, content_type, body).await,
        (&Method::GET, ["resources", plural]) => {
            let kind = kind_of(plural)?;
            let namespace = query_param(query, "namespace");
            let catalog = read(state).await?;
            let items = catalog.list(&state.config.cluster, kind, namespace.as_deref());
            Ok(ok(json!({ "items": items })))
        }
        (&Method::GET, ["resources", plural, namespace, name]) => {
            let kind = kind_of(plural)?;
            let catalog = read(state).await?;
            match catalog.get(&state.config.cluster, kind, namespace, name) {
                Some(v) => Ok(ok(v)),
                None => Err(not_found(kind, namespace, name)),
            }
        }
        (&Method::DELETE, ["resources", plural, namespace, name]) => {
            let kind = kind_of(plural)?;
            if !kind.is_stored() {
                return Err(ApiError::new(
                    405,
                    format!("{plural} are derived by the controller and read-only"),
                ));
            }
            let command = Command::DeleteResource {
                kind,
                namespace: (*namespace).to_owned(),
                name: (*name).to_owned(),
            };
            match write(state, command).await? {
                catalog::Response::Ok => Ok(ok(json!({ "deleted": true }))),
                _ => Err(not_found(kind, namespace, name)),
            }
        }
        (&Method::POST, ["tokens", "join"]) => join_token(state, body).await,
        (&Method::POST, ["peering", "tokens"]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields, rename_all = "camelCase")]
            struct Body {
                #[serde(default)]
                ttl_seconds: Option<u64>,
            }
            let b: Body = parse_json(body)?;
            let ttl = Duration::from_secs(b.ttl_seconds.unwrap_or(600));
            let (token, expires) = state.peering.create_token(ttl).await?;
            Ok(ok(
                json!({ "token": token, "expiresAt": rfc3339_ms(unix_ms(expires)) }),
            ))
        }
        (&Method::POST, ["peering", "redeem"]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                token: String,
            }
            let b: Body = parse_json(body)?;
            let peer = state.peering.redeem(b.token).await?;
            Ok(ok(json!({
                "peer": { "cluster": peer.cluster, "trustDomain": peer.trust_domain }
            })))
        }
        (&Method::DELETE, ["peering", "peers", cluster]) => {
            state.peering.unlink((*cluster).to_owned()).await?;
            Ok(ok(json!({ "unlinked": true })))
        }
        (&Method::POST, ["ca", "rotate"]) => rotate_ca(state, body).await,
        (&Method::GET, ["status"]) => Ok(ok(status::status_json(state).await?)),
        _ => Err(ApiError::new(
            404,
            format!("no route for {method} /v1/{}", path.join("/")),
        )),
    }
}

async fn apply(
    state: &AdminState,
    content_type: &str,
    body: &Bytes,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::new(400, "the body is not UTF-8"))?;
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    let parsed = match mime {
        "application/json" => mesh_resources::parse_json(text),
        "application/yaml" | "application/x-yaml" | "text/yaml" => mesh_resources::parse_yaml(text),
        _ => mesh_resources::parse(text),
    };
    let resources = match parsed {
        Ok(r) => r,
        Err(e) => {
            let errors: Vec<String> = e.errors().iter().map(ToString::to_string).collect();
            return Ok(json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({ "errors": errors }),
            ));
        }
    };
    let mut errors = Vec::new();
    let mut documents = Vec::with_capacity(resources.len());
    for (i, r) in resources.iter().enumerate() {
        if let Err(e) = catalog::resources::check_appliable(r.kind()) {
            errors.push(format!(
                "document {} ({} {}/{}): {e}",
                i + 1,
                r.kind(),
                r.namespace(),
                r.name()
            ));
        }
        match r.to_value() {
            Ok(v) => documents.push(v),
            Err(e) => errors.push(format!("document {}: {e}", i + 1)),
        }
    }
    if !errors.is_empty() {
        return Ok(json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({ "errors": errors }),
        ));
    }
    let command = Command::ApplyResources {
        documents,
        now_ms: unix_ms(SystemTime::now()),
    };
    match write(state, command).await? {
        catalog::Response::Applied(results) => Ok(ok(json!({ "results": results }))),
        catalog::Response::Refused(why) => Ok(json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({ "errors": [why] }),
        )),
        other => Err(ApiError::new(500, format!("unexpected answer {other:?}"))),
    }
}

async fn join_token(state: &AdminState, body: &Bytes) -> Result<Response<Full<Bytes>>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Body {
        namespace: String,
        service_account: String,
        #[serde(default)]
        ttl_seconds: Option<u64>,
    }
    let b: Body = parse_json(body)?;
    dns_label(&b.namespace).map_err(|e| ApiError::new(422, format!("namespace: {e}")))?;
    dns_label(&b.service_account)
        .map_err(|e| ApiError::new(422, format!("serviceAccount: {e}")))?;
    if b.namespace == crate::config::SYSTEM_NAMESPACE && b.service_account == "controller" {
        return Err(ApiError::new(
            422,
            "serviceAccount: isthmus-system/controller is reserved for the controllers",
        ));
    }
    let ttl = Duration::from_secs(b.ttl_seconds.unwrap_or(3600));
    if ttl.is_zero() || ttl > MAX_JOIN_TOKEN_TTL {
        return Err(ApiError::new(
            422,
            format!(
                "ttlSeconds: must be between 1 and {}",
                MAX_JOIN_TOKEN_TTL.as_secs()
            ),
        ));
    }
    // Whole seconds: the token expires exactly at the `expiresAt` we print
    // (RFC 3339 to the second), never after it.
    let expires_ms = unix_ms(SystemTime::now() + ttl) / 1000 * 1000;
    let (token, record) = tokens::new_join_token(&b.namespace, &b.service_account, expires_ms)
        .map_err(|e| ApiError::new(500, e.to_string()))?;
    write(state, Command::CreateJoinToken(record)).await?;
    Ok(ok(
        json!({ "token": token, "expiresAt": rfc3339_ms(expires_ms) }),
    ))
}

async fn rotate_ca(state: &AdminState, body: &Bytes) -> Result<Response<Full<Bytes>>, ApiError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Body {
        /// When the new root starts signing; default two bundle refresh
        /// hints (peers have fetched it by then).
        #[serde(default)]
        switch_after_seconds: Option<u64>,
        /// When the old root leaves the bundle after the switch; default
        /// one SVID lifetime.
        #[serde(default)]
        drop_after_seconds: Option<u64>,
    }
    let b: Body = if body.is_empty() {
        Body::default()
    } else {
        parse_json(body)?
    };
    let now = SystemTime::now();
    let switch = b
        .switch_after_seconds
        .map_or(catalog::ca::BUNDLE_REFRESH_HINT * 2, Duration::from_secs);
    let drop = b
        .drop_after_seconds
        .map_or(state.config.svid_ttl, Duration::from_secs);
    let next = CaMaterial::generate(&state.config.trust_domain, now)
        .map_err(|e| ApiError::new(500, format!("cannot generate a root: {e}")))?;
    let command = Command::StartCaRotation {
        next,
        switch_at_ms: unix_ms(now + switch),
        drop_at_ms: unix_ms(now + switch + drop),
    };
    match write(state, command).await? {
        catalog::Response::Sequence(n) => Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({ "sequence": n }),
        )),
        catalog::Response::Refused(why) => Err(ApiError::new(409, why)),
        other => Err(ApiError::new(500, format!("unexpected answer {other:?}"))),
    }
}

#[allow(clippy::result_large_err)]
fn authorize(state: &AdminState, req: &Request<Incoming>) -> Result<(), Response<Full<Bytes>>> {
    let Some(want) = &state.token else {
        return Ok(());
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let equal = presented.len() == want.len()
        && presented
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if equal {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        ))
    }
}

#[allow(clippy::result_large_err)]
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("cannot read the body (at most {MAX_BODY} bytes): {e}"),
        )),
    }
}

pub(super) async fn read(state: &AdminState) -> Result<Arc<Catalog>, ApiError> {
    state.store.read().await.map_err(write_error)
}

async fn write(state: &AdminState, command: Command) -> Result<catalog::Response, ApiError> {
    state.store.write(command).await.map_err(write_error)
}

fn write_error(e: WriteError) -> ApiError {
    ApiError::new(503, e.to_string())
}

fn kind_of(plural: &str) -> Result<ResourceKind, ApiError> {
    ResourceKind::from_plural(plural).ok_or_else(|| {
        let known: Vec<&str> = ResourceKind::ALL.iter().map(|k| k.plural()).collect();
        ApiError::new(
            404,
            format!("unknown resource {plural:?}; known: {}", known.join(", ")),
        )
    })
}

fn not_found(kind: ResourceKind, namespace: &str, name: &str) -> ApiError {
    ApiError::new(
        404,
        format!("{} {namespace}/{name} not found", kind.plural()),
    )
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, format!("malformed JSON body: {e}")))
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn ok(value: Value) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &value)
}

pub(super) fn error(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(code, &json!({ "error": message }))
}

fn json_response(code: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

pub(super) fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

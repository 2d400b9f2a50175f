//! A typed client of the controller's admin REST API (issue 5 contract,
//! "Admin REST API"): JSON over HTTP/1.1, one connection per call, an
//! optional bearer token.
//!
//! Errors say which controller could not be reached and under which context,
//! or carry the server's own error message(s) and the HTTP status, so a
//! command can print them as they are.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Largest response body read, bytes.
const MAX_BODY_BYTES: usize = 16 << 20;

/// Patience for one call (connect, request and the whole response).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The server URL of the context is not a usable `http://host:port` URL.
    #[error("context {context}: server {server:?}: {detail}")]
    BadServer {
        /// The context's name.
        context: String,
        /// The URL as configured.
        server: String,
        /// What is wrong with it.
        detail: String,
    },
    /// TCP connect or the HTTP exchange failed.
    #[error("cannot reach controller at {server} (context {context}): {detail}")]
    Unreachable {
        /// The context's name.
        context: String,
        /// The server URL.
        server: String,
        /// The I/O or protocol error.
        detail: String,
    },
    /// No complete answer within the timeout.
    #[error("controller at {server} (context {context}) did not answer {method} {path} within {timeout:?}")]
    Timeout {
        /// The context's name.
        context: String,
        /// The server URL.
        server: String,
        /// HTTP method.
        method: Method,
        /// Request path.
        path: String,
        /// The patience that ran out.
        timeout: Duration,
    },
    /// The server answered with an error status.
    #[error("{method} {path}: {status}: {}{}", messages.join("; "), hint(*status))]
    Http {
        /// HTTP method.
        method: Method,
        /// Request path.
        path: String,
        /// The status.
        status: StatusCode,
        /// The server's `error` or `errors`, or the raw body.
        messages: Vec<String>,
    },
    /// A success status whose body is not the JSON the contract promises.
    #[error("{method} {path}: unexpected response: {detail}")]
    Decode {
        /// HTTP method.
        method: Method,
        /// Request path.
        path: String,
        /// What failed to decode.
        detail: String,
    },
}

fn hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => {
            " (the context needs a valid token: meshctl config set-context NAME --server URL --token-file FILE)"
        }
        _ => "",
    }
}

impl ApiError {
    /// The HTTP status, when the server answered with an error.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Where and how to call one controller.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    context: String,
    server: String,
    authority: String,
    prefix: String,
    token: Option<String>,
    timeout: Duration,
}

/// One result of `POST /v1/apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ApplyResult {
    /// `ServiceExport`, …
    pub(crate) kind: String,
    /// Namespace.
    #[serde(default)]
    pub(crate) namespace: String,
    /// Name.
    pub(crate) name: String,
    /// `created`, `configured` or `unchanged`.
    pub(crate) action: String,
}

#[derive(Debug, Deserialize)]
struct ApplyResponse {
    results: Vec<ApplyResult>,
}

#[derive(Debug, Deserialize)]
struct ItemList {
    #[serde(default)]
    items: Vec<Value>,
}

/// A token and its expiry, as `POST /v1/tokens/join` and
/// `POST /v1/peering/tokens` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Token {
    /// The opaque token.
    pub(crate) token: String,
    /// RFC 3339 expiry.
    #[serde(default)]
    pub(crate) expires_at: String,
}

/// The peer a redeemed peering token linked us with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Peer {
    /// The peer's cluster name.
    pub(crate) cluster: String,
    /// The peer's trust domain.
    #[serde(default)]
    pub(crate) trust_domain: String,
}

#[derive(Debug, Deserialize)]
struct RedeemResponse {
    peer: Peer,
}

impl Client {
    /// A client of `server` (`http://host:port[/prefix]`) under `context`.
    ///
    /// # Errors
    /// [`ApiError::BadServer`] when the URL is not plain `http://`.
    pub(crate) fn new(
        context: &str,
        server: &str,
        token: Option<String>,
    ) -> Result<Self, ApiError> {
        let bad = |detail: &str| ApiError::BadServer {
            context: context.to_owned(),
            server: server.to_owned(),
            detail: detail.to_owned(),
        };
        let rest = server.strip_prefix("http://").ok_or_else(|| {
            bad("must start with http:// (the admin API is plain HTTP/1.1 on a private address)")
        })?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        let has_port = match authority.rsplit_once(':') {
            Some((_, port)) => !port.contains(']'),
            None => false,
        };
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            context: context.to_owned(),
            server: server.trim_end_matches('/').to_owned(),
            authority,
            prefix: prefix.to_owned(),
            token,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The context this client was made for.
    pub(crate) fn context(&self) -> &str {
        &self.context
    }

    /// The server URL.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// `GET /v1/status` as the server sent it.
    ///
    /// # Errors
    /// [`ApiError`].
    pub(crate) async fn status_value(&self) -> Result<Value, ApiError> {
        self.json(Method::GET, "/v1/status", None).await
    }

    /// `POST /v1/apply` of a JSON array of documents (all or nothing).
    ///
    /// # Errors
    /// [`ApiError`]; 422 carries one message per invalid field.
    pub(crate) async fn apply(&self, documents: &[Value]) -> Result<Vec<ApplyResult>, ApiError> {
        let response: ApplyResponse = self
            .json(Method::POST, "/v1/apply", Some(Value::from(documents)))
            .await?;
        Ok(response.results)
    }

    /// `GET /v1/resources/{plural}[?namespace=ns]`: the items.
    ///
    /// # Errors
    /// [`ApiError`].
    pub(crate) async fn list(
        &self,
        plural: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let path = match namespace {
            Some(ns) => format!("/v1/resources/{plural}?namespace={}", encode(ns)),
            None => format!("/v1/resources/{plural}"),
        };
        let list: ItemList = self.json(Method::GET, &path, None).await?;
        Ok(list.items)
    }

    /// `GET /v1/resources/{plural}/{namespace}/{name}`.
    ///
    /// # Errors
    /// [`ApiError`]; 404 when there is no such resource.
    pub(crate) async fn get(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let path = resource_path(plural, namespace, name);
        self.json(Method::GET, &path, None).await
    }

    /// `DELETE /v1/resources/{plural}/{namespace}/{name}`.
    ///
    /// # Errors
    /// [`ApiError`]; 404 when there is no such resource, 405 for derived kinds.
    pub(crate) async fn delete(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let path = resource_path(plural, namespace, name);
        self.call(Method::DELETE, &path, None).await.map(drop)
    }

    /// `POST /v1/tokens/join`: a join token for one namespace and service account.
    ///
    /// # Errors
    /// [`ApiError`].
    pub(crate) async fn create_join_token(
        &self,
        namespace: &str,
        service_account: &str,
        ttl: Duration,
    ) -> Result<Token, ApiError> {
        let body = json!({
            "namespace": namespace,
            "serviceAccount": service_account,
            "ttlSeconds": ttl.as_secs(),
        });
        self.json(Method::POST, "/v1/tokens/join", Some(body)).await
    }

    /// `POST /v1/peering/tokens`: a single-use peering token.
    ///
    /// # Errors
    /// [`ApiError`].
    pub(crate) async fn create_peering_token(&self, ttl: Duration) -> Result<Token, ApiError> {
        let body = json!({ "ttlSeconds": ttl.as_secs() });
        self.json(Method::POST, "/v1/peering/tokens", Some(body))
            .await
    }

    /// `POST /v1/peering/redeem`: links with the token's issuer.
    ///
    /// # Errors
    /// [`ApiError`]: 409 reused, 410 expired, 400 malformed, 502 issuer unreachable.
    pub(crate) async fn redeem(&self, token: &str) -> Result<Peer, ApiError> {
        let body = json!({ "token": token });
        let response: RedeemResponse = self
            .json(Method::POST, "/v1/peering/redeem", Some(body))
            .await?;
        Ok(response.peer)
    }

    /// `DELETE /v1/peering/peers/{cluster}`: unlinks on both sides.
    ///
    /// # Errors
    /// [`ApiError`].
    pub(crate) async fn unlink(&self, cluster: &str) -> Result<(), ApiError> {
        let path = format!("/v1/peering/peers/{}", encode(cluster));
        self.call(Method::DELETE, &path, None).await.map(drop)
    }

    /// `POST /v1/ca/rotate`: starts a root rotation; the new root's sequence.
    ///
    /// # Errors
    /// [`ApiError`].
    pub(crate) async fn rotate_ca(&self) -> Result<u64, ApiError> {
        #[derive(Deserialize)]
        struct Rotation {
            sequence: u64,
        }
        let r: Rotation = self.json(Method::POST, "/v1/ca/rotate", None).await?;
        Ok(r.sequence)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ApiError> {
        let bytes = self.call(method.clone(), path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            method,
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    /// One request; the body of a 2xx answer, or the error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Bytes, ApiError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange(method.clone(), path, body)).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Timeout {
                context: self.context.clone(),
                server: self.server.clone(),
                method,
                path: path.to_owned(),
                timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Bytes, ApiError> {
        let unreachable = |detail: String| ApiError::Unreachable {
            context: self.context.clone(),
            server: self.server.clone(),
            detail,
        };
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            // The connection's own error surfaces through `send_request`.
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let payload = match &body {
            Some(value) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|e| ApiError::Decode {
                method: method.clone(),
                path: path.to_owned(),
                detail: format!("cannot build the request: {e}"),
            })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| unreachable(format!("reading the response body: {e}")))?
            .to_bytes();
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(ApiError::Http {
                method,
                path: path.to_owned(),
                status,
                messages: error_messages(&bytes),
            })
        }
    }
}

/// The messages of an error body: `{"errors": [..]}`, `{"error": ".."}`, or
/// the text itself.
pub(crate) fn error_messages(body: &[u8]) -> Vec<String> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        if let Some(errors) = value.get("errors").and_then(Value::as_array) {
            let list: Vec<String> = errors
                .iter()
                .map(|e| match e.as_str() {
                    Some(s) => s.to_owned(),
                    None => e.to_string(),
                })
                .collect();
            if !list.is_empty() {
                return list;
            }
        }
        if let Some(error) = value.get("error").and_then(Value::as_str) {
            return vec![error.to_owned()];
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_owned();
    if text.is_empty() {
        Vec::new()
    } else {
        vec![text]
    }
}

fn resource_path(plural: &str, namespace: &str, name: &str) -> String {
    format!(
        "/v1/resources/{plural}/{}/{}",
        encode(namespace),
        encode(name)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let c = Client::new("a", "http://127.0.1.2:15014", None).unwrap();
        assert_eq!(c.authority, "127.0.1.2:15014");
        assert_eq!(c.prefix, "");
        let c = Client::new("a", "http://localhost/admin/", None).unwrap();
        assert_eq!(c.authority, "localhost:80");
        assert_eq!(c.prefix, "/admin");
        let c = Client::new("a", "http://[::1]:9", None).unwrap();
        assert_eq!(c.authority, "[::1]:9");
        let err = Client::new("a", "https://x:1", None).unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        assert!(Client::new("a", "http://", None).is_err());
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_messages(br#"{"errors":["document 1: a","document 2: b"]}"#),
            vec!["document 1: a", "document 2: b"]
        );
        assert_eq!(
            error_messages(br#"{"error":"no raft leader"}"#),
            vec!["no raft leader"]
        );
        assert_eq!(error_messages(b"plain\n"), vec!["plain"]);
        assert!(error_messages(b"").is_empty());
    }

    #[test]
    fn http_errors_show_status_and_messages() {
        let err = ApiError::Http {
            method: Method::DELETE,
            path: "/v1/resources/serviceexports/default/x".into(),
            status: StatusCode::NOT_FOUND,
            messages: vec!["serviceexports default/x not found".into()],
        };
        assert_eq!(
            err.to_string(),
            "DELETE /v1/resources/serviceexports/default/x: 404 Not Found: serviceexports default/x not found"
        );
        assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("default"), "default");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}

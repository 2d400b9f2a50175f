//! The few calls `dev up` makes to a controller's admin REST API
//! (docs/reference/controller.md): join tokens, peering tokens and their
//! redemption, `apply`, and reading a resource back. JSON over HTTP/1.1 on
//! loopback, one connection per call.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Time one call may take (a write waits for a Raft commit).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read, bytes.
const MAX_BODY_BYTES: usize = 4 << 20;
/// Lifetime of the join tokens `dev up` makes: the proxies need them for
/// their first SVID only (renewals are authenticated by the SVID).
const JOIN_TOKEN_TTL_SECONDS: u64 = 3600;
/// Lifetime of the peering token, redeemed at once.
const PEERING_TOKEN_TTL_SECONDS: u64 = 600;

/// One controller's admin API.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    /// Shown in errors, e.g. `cluster-a`.
    pub(crate) cluster: String,
    /// The admin listener.
    pub(crate) addr: SocketAddr,
}

impl Admin {
    /// `POST /v1/tokens/join` for `namespace/service_account`; the token.
    ///
    /// # Errors
    /// The call failed or the answer has no token.
    pub(crate) async fn join_token(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<String> {
        let answer = self
            .call(
                Method::POST,
                "/v1/tokens/join",
                Some(json!({
                    "namespace": namespace,
                    "serviceAccount": service_account,
                    "ttlSeconds": JOIN_TOKEN_TTL_SECONDS,
                })),
            )
            .await?;
        token_of(&answer).with_context(|| format!("join token for {namespace}/{service_account}"))
    }

    /// `POST /v1/peering/tokens`; the single-use peering token.
    ///
    /// # Errors
    /// The call failed or the answer has no token.
    pub(crate) async fn peering_token(&self) -> anyhow::Result<String> {
        let answer = self
            .call(
                Method::POST,
                "/v1/peering/tokens",
                Some(json!({ "ttlSeconds": PEERING_TOKEN_TTL_SECONDS })),
            )
            .await?;
        token_of(&answer).context("peering token")
    }

    /// `POST /v1/peering/redeem`; the peer's cluster name.
    ///
    /// # Errors
    /// The call failed (409 reused, 410 expired, 502 issuer unreachable…).
    pub(crate) async fn redeem(&self, token: &str) -> anyhow::Result<String> {
        let answer = self
            .call(
                Method::POST,
                "/v1/peering/redeem",
                Some(json!({ "token": token })),
            )
            .await?;
        answer["peer"]["cluster"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("redeem answered without peer.cluster: {answer}"))
    }

    /// `POST /v1/apply` of JSON documents; `kind namespace/name action` per
    /// result.
    ///
    /// # Errors
    /// The call failed; a 422 lists every invalid field.
    pub(crate) async fn apply(&self, documents: Vec<Value>) -> anyhow::Result<Vec<String>> {
        let answer = self
            .call(Method::POST, "/v1/apply", Some(Value::Array(documents)))
            .await?;
        let results = answer["results"]
            .as_array()
            .ok_or_else(|| anyhow!("apply answered without results: {answer}"))?;
        Ok(results
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or("?").to_owned();
                format!(
                    "{} {}/{} {}",
                    s("kind"),
                    s("namespace"),
                    s("name"),
                    s("action")
                )
            })
            .collect())
    }

    /// `GET /v1/resources/{plural}/{namespace}/{name}`: `None` on 404.
    ///
    /// # Errors
    /// The call failed otherwise.
    pub(crate) async fn resource(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<Value>> {
        let path = format!("/v1/resources/{plural}/{namespace}/{name}");
        match self.request(Method::GET, &path, None).await? {
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (status, body) => self.decode(&path, status, &body).map(Some),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, answer) = self.request(method, path, body).await?;
        self.decode(path, status, &answer)
    }

    fn decode(&self, path: &str, status: StatusCode, body: &Bytes) -> anyhow::Result<Value> {
        let value: Option<Value> = serde_json::from_slice(body).ok();
        if !status.is_success() {
            let detail = match &value {
                Some(v) if v.get("errors").is_some() => v["errors"].to_string(),
                Some(v) if v.get("error").is_some() => {
                    v["error"].as_str().unwrap_or_default().to_owned()
                }
                _ => String::from_utf8_lossy(body).trim().to_owned(),
            };
            bail!("{} {path}: {status}: {detail}", self.cluster);
        }
        value.ok_or_else(|| anyhow!("{} {path}: {status} without a JSON body", self.cluster))
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let what = format!("{} {method} http://{}{path}", self.cluster, self.addr);
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(method, path, body))
            .await
            .map_err(|_| anyhow!("{what}: no answer within {CALL_TIMEOUT:?}"))?
            .with_context(|| what.clone())
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let stream = TcpStream::connect(self.addr).await.context("connect")?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            // Its error reaches the caller through `send_request`.
            let _ = connection.await;
        });
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.to_string())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .context("build the request")?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow!("read the answer: {e}"))?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    }
}

fn token_of(answer: &Value) -> anyhow::Result<String> {
    answer["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("answer without a token: {answer}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_from_the_answer() {
        assert_eq!(
            token_of(&json!({"token": "abc", "expiresAt": "x"})).unwrap(),
            "abc"
        );
        assert!(token_of(&json!({"token": ""})).is_err());
        assert!(token_of(&json!({})).is_err());
    }

    #[test]
    fn errors_name_the_cluster_the_path_and_the_reason() {
        let admin = Admin {
            cluster: "cluster-b".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let err = admin
            .decode(
                "/v1/peering/redeem",
                StatusCode::CONFLICT,
                &Bytes::from_static(br#"{"error":"token already used"}"#),
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cluster-b /v1/peering/redeem: 409 Conflict: token already used"
        );
        let err = admin
            .decode(
                "/v1/apply",
                StatusCode::UNPROCESSABLE_ENTITY,
                &Bytes::from_static(br#"{"errors":["document 1: spec.x: unknown"]}"#),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.x: unknown"), "{err}");
    }
}

//! Raft RPC client: JSON over HTTP/1.1 (`POST /raft/<name>`) with a bounded
//! timeout per call, plus the openraft [`RaftNetworkFactory`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{NodeId, TypeConfig};

/// Timeout of one Raft RPC (append entries, vote, snapshot chunk).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest accepted response or request body (bytes).
pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// No connection could be made: the request was not sent.
    #[error("connect to {addr}: {message}")]
    Connect {
        /// The target.
        addr: String,
        /// What failed.
        message: String,
    },
    /// No answer within the timeout: the request may have been processed.
    #[error("{addr}{path}: no answer within {} ms", timeout.as_millis())]
    Timeout {
        /// The target.
        addr: String,
        /// The endpoint.
        path: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// Any other failure (request sent, answer missing or malformed).
    #[error("{addr}{path}: {message}")]
    Other {
        /// The target.
        addr: String,
        /// The endpoint.
        path: &'static str,
        /// What failed.
        message: String,
    },
}

/// A pooled HTTP/1.1 client posting JSON; cheap to clone.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    /// A new client (keep-alive pool, plain TCP).
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(RPC_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client }
    }

    /// `POST http://<addr><path>` with `body` as JSON; decodes the JSON
    /// answer. The whole exchange is bounded by `timeout`.
    ///
    /// # Errors
    /// [`CallError`]; only [`CallError::Connect`] guarantees the request was
    /// not delivered.
    pub(crate) async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &'static str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let other = |message: String| CallError::Other {
            addr: addr.to_string(),
            path,
            message,
        };
        let body = serde_json::to_vec(body).map_err(|e| other(format!("encode request: {e}")))?;
        let request = http::Request::post(format!("http://{addr}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| other(format!("build request: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    CallError::Connect {
                        addr: addr.to_string(),
                        message: e.to_string(),
                    }
                } else {
                    other(format!("request: {e}"))
                }
            })?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| other(format!("read answer: {e}")))?
                .to_bytes();
            if !status.is_success() {
                return Err(other(format!(
                    "status {status}: {}",
                    String::from_utf8_lossy(&bytes)
                )));
            }
            serde_json::from_slice(&bytes).map_err(|e| other(format!("decode answer: {e}")))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout {
                addr: addr.to_string(),
                path,
                timeout,
            }),
        }
    }
}

/// Makes one [`Peer`] per target node.
pub(crate) struct NetworkFactory {
    client: HttpClient,
}

impl NetworkFactory {
    /// A factory sharing `client`'s connection pool.
    pub(crate) fn new(client: HttpClient) -> Self {
        Self { client }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// The RPC client for one target node.
pub(crate) struct Peer {
    client: HttpClient,
    target: NodeId,
    addr: String,
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        path: &'static str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let timeout = option.hard_ttl().min(RPC_TIMEOUT);
        let reply: Result<Resp, RaftError<NodeId, E>> = self
            .client
            .post(&self.addr, path, request, timeout)
            .await
            .map_err(|e| match e {
                CallError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        reply.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                BasicNode::new(&self.addr),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("/raft/vote", &rpc, &option).await
    }
}

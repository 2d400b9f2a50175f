//! The Raft HTTP/1.1 endpoint on `raft_listen` and the leader-side
//! operations behind it.
//!
//! Every endpoint is `POST` with a JSON body and answers JSON:
//! - `/raft/append`, `/raft/vote`, `/raft/snapshot`: openraft's
//!   `AppendEntriesRequest`, `VoteRequest`, `InstallSnapshotRequest`,
//!   answered with `Result<response, RaftError>`.
//! - `/raft/join` ([`JoinRequest`]): adds the node as a learner, then makes
//!   it a voter; a follower forwards it to the leader (one hop, marked with
//!   the query `forwarded=1`).
//! - `/raft/write` ([`WriteRequest`]): proposes a command on the leader.
//! - `/raft/read` (any body): the leader confirms its leadership with a
//!   quorum and answers the read index a follower must apply before reading.
//!
//! The forwarding endpoints answer [`ForwardReply`]; only
//! [`ForwardReply::NotLeader`] promises nothing was done.
//!
//! Plaintext, unauthenticated: the Raft port belongs on a private network
//! between the controller replicas.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinSet;

use super::network::{HttpClient, MAX_BODY};
use super::types::{
    ForwardReply, JoinRequest, LogCommand, LogResponse, NodeId, TypeConfig, WriteRequest,
};

/// How long a forwarded join may take on the leader (adding a learner waits
/// until it caught up, which may need a snapshot).
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The query marking a join a follower forwarded to the leader.
const FORWARDED_QUERY: &str = "forwarded=1";
/// The path and query of a forwarded join.
const FORWARDED_JOIN: &str = "/raft/join?forwarded=1";

/// The outcome of an operation attempted on this node.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// Done.
    Done(T),
    /// This node is not the leader; nothing was done. The leader's Raft
    /// address when known.
    NotLeader(Option<String>),
    /// Failed; a write may or may not have been applied.
    Failed(String),
    /// Raft is shut down.
    Stopped,
}

impl<T> From<Attempt<T>> for ForwardReply<T> {
    fn from(attempt: Attempt<T>) -> Self {
        match attempt {
            Attempt::Done(value) => ForwardReply::Ok(value),
            Attempt::NotLeader(leader) => ForwardReply::NotLeader { leader },
            Attempt::Failed(message) => ForwardReply::Failed(message),
            Attempt::Stopped => ForwardReply::Failed("raft is shut down".to_string()),
        }
    }
}

/// Proposes `command` if this node is the leader and waits (at most
/// `timeout`) until it is applied here. [`Attempt::NotLeader`] only when
/// this node was not the leader when asked (nothing was proposed).
pub(crate) async fn write_here(
    raft: &Raft<TypeConfig>,
    command: serde_json::Value,
    timeout: Duration,
) -> Attempt<LogResponse> {
    let was_leader = raft.metrics().borrow().state == ServerState::Leader;
    match tokio::time::timeout(timeout, raft.client_write(LogCommand(command))).await {
        Err(_) => Attempt::Failed(format!(
            "write not committed within {} ms",
            timeout.as_millis()
        )),
        Ok(Ok(response)) => Attempt::Done(response.data),
        // openraft answers ForwardToLeader both to a proposal on a follower
        // (nothing done) and when a proposed entry is truncated on a leader
        // that lost its leadership; another node may still hold and later
        // commit that entry, so only the first case is safe to retry.
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) if was_leader => {
            Attempt::Failed(
                "leadership lost while the write was pending; it may or may not be applied"
                    .to_string(),
            )
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Attempt::NotLeader(f.leader_node.map(|n| n.addr))
        }
        Ok(Err(RaftError::APIError(e))) => Attempt::Failed(e.to_string()),
        Ok(Err(RaftError::Fatal(_))) => Attempt::Stopped,
    }
}

/// Confirms leadership with a quorum (openraft `ensure_linearizable`) and
/// answers the read index (waiting at most `timeout`).
pub(crate) async fn read_index_here(
    raft: &Raft<TypeConfig>,
    timeout: Duration,
) -> Attempt<Option<u64>> {
    match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
        Err(_) => Attempt::Failed(format!(
            "leadership not confirmed within {} ms",
            timeout.as_millis()
        )),
        Ok(Ok(read_log_id)) => Attempt::Done(read_log_id.map(|l| l.index)),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            Attempt::NotLeader(f.leader_node.map(|n| n.addr))
        }
        Ok(Err(RaftError::APIError(e))) => Attempt::Failed(e.to_string()),
        Ok(Err(RaftError::Fatal(_))) => Attempt::Stopped,
    }
}

/// What the HTTP handlers need.
pub(crate) struct ServerContext {
    /// This node's Raft.
    pub(crate) raft: Raft<TypeConfig>,
    /// The client forwarding joins to the leader.
    pub(crate) client: HttpClient,
    /// Serializes membership changes on the leader.
    pub(crate) join_lock: Mutex<()>,
}

impl ServerContext {
    /// Adds `request.node_id` as a voter, on the leader or through it.
    pub(crate) async fn join(&self, request: &JoinRequest, forward: bool) -> Attempt<()> {
        let serialized = self.join_lock.lock().await;
        let already_voter = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == request.node_id);
        if already_voter && self.raft.current_leader().await == Some(self.raft_id()) {
            return Attempt::Done(());
        }
        let node = BasicNode::new(&request.addr);
        let added = tokio::time::timeout(
            JOIN_TIMEOUT,
            self.raft.add_learner(request.node_id, node, true),
        )
        .await;
        match added {
            Err(_) => {
                return Attempt::Failed(format!(
                    "node {} did not catch up as a learner within {} s",
                    request.node_id,
                    JOIN_TIMEOUT.as_secs()
                ))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                drop(serialized);
                return match f.leader_node {
                    Some(leader) if forward => self.forward_join(&leader.addr, request).await,
                    leader => Attempt::NotLeader(leader.map(|n| n.addr)),
                };
            }
            Ok(Err(RaftError::APIError(e))) => return Attempt::Failed(format!("add learner: {e}")),
            Ok(Err(RaftError::Fatal(_))) => return Attempt::Stopped,
            Ok(Ok(_)) => {}
        }
        let voters = BTreeSet::from([request.node_id]);
        let changed = tokio::time::timeout(
            JOIN_TIMEOUT,
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(voters), false),
        )
        .await;
        match changed {
            Err(_) => Attempt::Failed(format!(
                "membership change for node {} not committed within {} s",
                request.node_id,
                JOIN_TIMEOUT.as_secs()
            )),
            Ok(Ok(_)) => Attempt::Done(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Attempt::NotLeader(f.leader_node.map(|n| n.addr))
            }
            Ok(Err(RaftError::APIError(e))) => Attempt::Failed(format!("change membership: {e}")),
            Ok(Err(RaftError::Fatal(_))) => Attempt::Stopped,
        }
    }

    fn raft_id(&self) -> NodeId {
        self.raft.metrics().borrow().id
    }

    async fn forward_join(&self, leader: &str, request: &JoinRequest) -> Attempt<()> {
        let reply = self
            .client
            .post::<_, ForwardReply<()>>(
                leader,
                FORWARDED_JOIN,
                request,
                JOIN_TIMEOUT + Duration::from_secs(5),
            )
            .await;
        match reply {
            Ok(ForwardReply::Ok(())) => Attempt::Done(()),
            Ok(ForwardReply::NotLeader { leader }) => Attempt::NotLeader(leader),
            Ok(ForwardReply::Failed(message)) => {
                Attempt::Failed(format!("leader {leader}: {message}"))
            }
            Err(e) => Attempt::Failed(e.to_string()),
        }
    }
}

/// Serves the Raft HTTP API on `listener` until `shutdown` turns true (or
/// its sender is dropped); open connections are then closed.
pub(crate) async fn serve(
    listener: TcpListener,
    context: Arc<ServerContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let context = context.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |request| handle(context.clone(), request));
                        if let Err(e) = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!(error = %e, "raft connection ended");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: let it settle.
                    tracing::warn!(error = %e, "raft listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

async fn handle(
    context: Arc<ServerContext>,
    request: http::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST {
        return Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "raft endpoints take POST".to_string(),
        ));
    }
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                format!("{path}: read body: {e}"),
            ))
        }
    };
    let raft = &context.raft;
    let response = match path.as_str() {
        "/raft/append" => match decode(&path, &body) {
            Ok(rpc) => json(&raft.append_entries(rpc).await),
            Err(message) => error(StatusCode::BAD_REQUEST, message),
        },
        "/raft/vote" => match decode(&path, &body) {
            Ok(rpc) => json(&raft.vote(rpc).await),
            Err(message) => error(StatusCode::BAD_REQUEST, message),
        },
        "/raft/snapshot" => match decode(&path, &body) {
            Ok(rpc) => json(&raft.install_snapshot(rpc).await),
            Err(message) => error(StatusCode::BAD_REQUEST, message),
        },
        "/raft/join" => match decode::<JoinRequest>(&path, &body) {
            Ok(join) => {
                // A join forwarded once is not forwarded again.
                let forward = query.as_deref() != Some(FORWARDED_QUERY);
                json(&ForwardReply::from(context.join(&join, forward).await))
            }
            Err(message) => error(StatusCode::BAD_REQUEST, message),
        },
        "/raft/write" => match decode::<WriteRequest>(&path, &body) {
            Ok(write) => json(&ForwardReply::from(
                write_here(raft, write.command, super::WRITE_TIMEOUT).await,
            )),
            Err(message) => error(StatusCode::BAD_REQUEST, message),
        },
        "/raft/read" => json(&ForwardReply::from(
            read_index_here(raft, super::READ_TIMEOUT).await,
        )),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("{path}: no such raft endpoint"),
        ),
    };
    Ok(response)
}

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("{path}: decode body: {e}"))
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(bytes) => respond(StatusCode::OK, bytes),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encode answer: {e}"),
        ),
    }
}

fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    respond(status, body.into_bytes())
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

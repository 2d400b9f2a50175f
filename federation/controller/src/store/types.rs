//! The openraft type configuration and the JSON messages of the Raft HTTP
//! API (`/raft/*`).
//!
//! Commands travel through the log as JSON values so the Raft type
//! configuration is one concrete type for every [`super::StateMachine`]; the
//! state machine decodes them when it applies an entry.

use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

/// A node id (≥ 1).
pub(crate) type NodeId = u64;

/// A command as it is stored in the Raft log: the JSON form of
/// `S::Command`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogCommand(pub(crate) serde_json::Value);

/// What applying one log entry answered: the JSON form of `S::Response`, or
/// why the command could not be decoded (then the state is unchanged).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogResponse(pub(crate) Result<serde_json::Value, String>);

openraft::declare_raft_types!(
    /// The Raft types of the store: JSON commands, `u64` node ids, nodes
    /// named by their Raft HTTP address, snapshots as in-memory bytes.
    pub(crate) TypeConfig:
        D = LogCommand,
        R = LogResponse,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Body of `POST /raft/join`: a new node asks to become a voter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    /// The new node's id.
    pub(crate) node_id: NodeId,
    /// The new node's Raft address (`host:port`).
    pub(crate) addr: String,
}

/// Body of `POST /raft/write`: a follower forwards a command to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WriteRequest {
    /// The command (JSON of `S::Command`).
    pub(crate) command: serde_json::Value,
}

/// The answer of the forwarding endpoints (`/raft/join`, `/raft/write`,
/// `/raft/read`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ForwardReply<T> {
    /// Done.
    Ok(T),
    /// The receiver is not the leader and did not act on the request
    /// (safe to retry elsewhere); the leader's address when known.
    NotLeader {
        /// The leader's Raft address, if known.
        leader: Option<String>,
    },
    /// The request failed; for a write it may or may not have been applied.
    Failed(String),
}

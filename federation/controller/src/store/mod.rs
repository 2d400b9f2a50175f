//! The replicated store: a [`StateMachine`] on a Raft log.
//!
//! SKELETON: an in-memory single-node stand-in with the final API; the store
//! helper replaces it with openraft + redb (see the contract).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Mutex};

/// A deterministic state machine replicated by the [`Store`]. `apply` must
/// depend only on `self` and the command (time travels inside commands).
pub trait StateMachine:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// A write.
    type Command: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static;
    /// What a write answers.
    type Response: Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static;
    /// Applies one committed command.
    fn apply(&mut self, command: &Self::Command) -> Self::Response;
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This node's Raft id (≥ 1, unique in the cluster's controller group).
    pub node_id: u64,
    /// Log, vote and snapshots live here (created if missing).
    pub data_dir: PathBuf,
    /// Raft RPC listener (HTTP/1.1).
    pub raft_listen: SocketAddr,
    /// The address other nodes reach `raft_listen` at (`host:port`).
    pub advertise: String,
    /// An existing member's Raft address to join through; `None` on the
    /// first node (it initializes a one-node cluster if the dir is empty).
    pub join: Option<String>,
    /// Build a snapshot and compact the log every this many entries.
    pub snapshot_every: u64,
}

/// Raft facts for `meshctl status` / `check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RaftStatus {
    /// This node.
    pub node_id: u64,
    /// The current leader, if known.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Voters: (id, raft address).
    pub voters: Vec<(u64, String)>,
    /// Index of the last applied entry.
    pub last_applied: u64,
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Disk or database failure.
    #[error("store {path}: {message}")]
    Storage {
        /// The file or directory.
        path: String,
        /// What failed.
        message: String,
    },
    /// Joining failed.
    #[error("join {target}: {message}")]
    Join {
        /// The address joined through.
        target: String,
        /// What failed.
        message: String,
    },
}

/// Why a write or a linearizable read failed. A write that failed with
/// [`WriteError::Unavailable`] may or may not have been applied.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No leader reachable (no quorum, election in progress).
    #[error("no raft leader: {0}")]
    Unavailable(String),
    /// The store is shutting down.
    #[error("store shut down")]
    Shutdown,
}

/// A replicated [`StateMachine`].
pub struct Store<S: StateMachine> {
    state: Mutex<S>,
    tx: watch::Sender<Arc<S>>,
    node_id: u64,
}

impl<S: StateMachine> Store<S> {
    /// Opens (or creates, or joins) the store.
    ///
    /// # Errors
    /// [`StoreError`] when the directory cannot be used or the join fails.
    pub async fn open(config: StoreConfig) -> Result<Arc<Self>, StoreError> {
        let (tx, _) = watch::channel(Arc::new(S::default()));
        Ok(Arc::new(Self {
            state: Mutex::new(S::default()),
            tx,
            node_id: config.node_id,
        }))
    }

    /// Proposes `command` and waits until it is committed and applied here;
    /// on a follower the command is forwarded to the leader. Linearizable.
    ///
    /// # Errors
    /// [`WriteError`].
    pub async fn write(&self, command: S::Command) -> Result<S::Response, WriteError> {
        let mut state = self.state.lock().await;
        let response = state.apply(&command);
        self.tx.send_replace(Arc::new(state.clone()));
        Ok(response)
    }

    /// The state after a linearizable read barrier (the leader confirms it
    /// is still leader; followers wait until they applied that far).
    ///
    /// # Errors
    /// [`WriteError`].
    pub async fn read(&self) -> Result<Arc<S>, WriteError> {
        Ok(self.tx.borrow().clone())
    }

    /// The locally applied state, updated after every apply (eventually
    /// consistent on followers): what xDS and peering watch.
    pub fn watch(&self) -> watch::Receiver<Arc<S>> {
        self.tx.subscribe()
    }

    /// Raft facts of this node.
    pub fn status(&self) -> RaftStatus {
        RaftStatus {
            node_id: self.node_id,
            leader: Some(self.node_id),
            term: 1,
            voters: vec![],
            last_applied: 0,
        }
    }

    /// Whether this node is the leader now.
    pub fn is_leader(&self) -> bool {
        true
    }

    /// Stops Raft and closes the database.
    pub async fn shutdown(&self) {}
}

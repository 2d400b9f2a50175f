//! The replicated store: a [`StateMachine`] on a Raft log.
//!
//! One [`Store`] per controller process. Raft is openraft 0.9 (storage v2):
//! the log, the vote, the committed/purged markers and the latest state
//! machine snapshot are persisted in a redb database
//! (`<data_dir>/raft.redb`, see `log_store` and `state_machine`); the
//! applied state itself lives in memory and is rebuilt on restart from the
//! snapshot plus the committed log after it. A snapshot is built, and the
//! log purged up to it, every [`StoreConfig::snapshot_every`] entries.
//!
//! Raft RPCs travel as JSON over plaintext HTTP/1.1 on
//! [`StoreConfig::raft_listen`] (endpoints in `server`): meant for a private
//! network between the controller replicas.
//!
//! Membership: a node started with an empty data directory and no
//! [`StoreConfig::join`] initializes a one-node cluster; a node with `join`
//! asks that member (`POST /raft/join`, forwarded to the leader), which adds
//! it as a learner and then as a voter. A restarted node (non-empty data
//! directory) recovers its log, vote, state and membership and does neither.
//!
//! Writes on a follower are forwarded to the leader (`POST /raft/write`);
//! reads ([`Store::read`]) are linearizable (openraft's
//! `ensure_linearizable` on the leader; a follower fetches the read index
//! from the leader and waits until it applied that far).
//!
//! Timing (loopback-sized): heartbeat 100 ms, election timeout 300–600 ms,
//! each RPC at most 2 s ([`RPC_TIMEOUT`]), a write at most
//! [`WRITE_TIMEOUT`], a read barrier at most [`READ_TIMEOUT`], a join at
//! most [`JOIN_PATIENCE`].

mod db;
mod log_store;
mod network;
mod server;
mod state_machine;
#[cfg(test)]
mod suite_tests;
mod types;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use redb::Database;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use network::RPC_TIMEOUT;

use log_store::LogStore;
use network::{CallError, HttpClient, NetworkFactory};
use server::{Attempt, ServerContext};
use state_machine::SmStore;
use types::{ForwardReply, JoinRequest, LogResponse, TypeConfig, WriteRequest};

/// A sensible [`StoreConfig::snapshot_every`] for the controller catalog
/// (entries).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1_000;

/// How long [`Store::write`] keeps trying (finding a leader, forwarding,
/// waiting for the commit) before it answers [`WriteError::Unavailable`].
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Store::read`] keeps trying to pass the read barrier.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Store::open`] keeps trying to join through
/// [`StoreConfig::join`].
pub const JOIN_PATIENCE: Duration = Duration::from_secs(30);

/// Raft heartbeat interval (ms).
const HEARTBEAT_MS: u64 = 100;
/// Election timeout range (ms).
const ELECTION_MIN_MS: u64 = 300;
const ELECTION_MAX_MS: u64 = 600;
/// Longest pause between two retries while no leader is known.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long [`Store::shutdown`] waits for the database to be released.
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);

/// A deterministic state machine replicated by the [`Store`]. `apply` must
/// depend only on `self` and the command (time travels inside commands).
///
/// Commands and responses travel as JSON (serde); the state is snapshotted
/// as JSON.
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
    /// Log, vote and snapshots live here (created if missing), in
    /// `raft.redb`.
    pub data_dir: PathBuf,
    /// Raft RPC listener (HTTP/1.1). Ignored by
    /// [`Store::open_with_listener`].
    pub raft_listen: SocketAddr,
    /// The address other nodes reach `raft_listen` at (`host:port`).
    pub advertise: String,
    /// An existing member's Raft address to join through; `None` on the
    /// first node (it initializes a one-node cluster if the dir is empty).
    pub join: Option<String>,
    /// Build a snapshot and compact the log every this many entries
    /// (0: never).
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

/// Log and snapshot positions of this node (log indexes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LogStatus {
    /// Index of the last entry in the log.
    pub last_log: Option<u64>,
    /// Index of the last applied entry.
    pub last_applied: Option<u64>,
    /// Last index included in the latest snapshot.
    pub snapshot: Option<u64>,
    /// Entries up to this index have been purged from the log.
    pub purged: Option<u64>,
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
    /// The Raft listener could not be bound or Raft could not start.
    #[error("raft on {addr}: {message}")]
    Raft {
        /// The Raft listen address.
        addr: String,
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
    /// The command or its response could not be encoded or decoded as JSON
    /// (a bug, or replicas of different versions). When it is the response,
    /// the command was applied.
    #[error("raft command encoding: {0}")]
    Codec(String),
}

/// A replicated [`StateMachine`].
pub struct Store<S: StateMachine> {
    raft: Raft<TypeConfig>,
    node_id: u64,
    client: HttpClient,
    state: watch::Receiver<Arc<S>>,
    stop_server: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
    db: Weak<Database>,
}

impl<S: StateMachine> Store<S> {
    /// Opens (or creates, or joins) the store, binding
    /// [`StoreConfig::raft_listen`].
    ///
    /// Returns once this node is part of a cluster: a fresh single node has
    /// initialized itself, a joining node has been made a voter, a
    /// restarted node has loaded its state (it may not know a leader yet).
    ///
    /// # Errors
    /// [`StoreError`] when the directory cannot be used, the listener cannot
    /// be bound, or the join fails within [`JOIN_PATIENCE`].
    pub async fn open(config: StoreConfig) -> Result<Arc<Self>, StoreError> {
        let listener =
            TcpListener::bind(config.raft_listen)
                .await
                .map_err(|e| StoreError::Raft {
                    addr: config.raft_listen.to_string(),
                    message: format!("bind: {e}"),
                })?;
        Self::open_with_listener(config, listener).await
    }

    /// Like [`Store::open`] on an already bound Raft listener (tests bind
    /// port 0 first to learn the address to advertise).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub async fn open_with_listener(
        config: StoreConfig,
        listener: TcpListener,
    ) -> Result<Arc<Self>, StoreError> {
        let listen = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| config.raft_listen.to_string());
        let raft_error = |message: String| StoreError::Raft {
            addr: listen.clone(),
            message,
        };
        let db = db::open(&config.data_dir, config.node_id).await?;
        let (sm, state) =
            SmStore::<S>::load(db.clone()).map_err(|message| StoreError::Storage {
                path: config.data_dir.join(db::DB_FILE).display().to_string(),
                message,
            })?;
        let log = LogStore::new(db.clone());
        let weak_db = Arc::downgrade(&db);
        drop(db);

        let raft_config = openraft::Config {
            cluster_name: "isthmus-controller".to_string(),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: ELECTION_MIN_MS,
            election_timeout_max: ELECTION_MAX_MS,
            install_snapshot_timeout: RPC_TIMEOUT.as_millis() as u64,
            snapshot_policy: if config.snapshot_every == 0 {
                SnapshotPolicy::Never
            } else {
                SnapshotPolicy::LogsSinceLast(config.snapshot_every)
            },
            // Purge everything a snapshot covers; a lagging follower gets
            // the snapshot instead.
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        }
        .validate()
        .map_err(|e| raft_error(format!("config: {e}")))?;

        let client = HttpClient::new();
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            NetworkFactory::new(client.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| raft_error(format!("start: {e}")))?;

        let (stop_server, stop_rx) = watch::channel(false);
        let context = Arc::new(ServerContext {
            raft: raft.clone(),
            client: client.clone(),
            join_lock: tokio::sync::Mutex::new(()),
        });
        let server = tokio::spawn(server::serve(listener, context, stop_rx));
        let store = Arc::new(Self {
            raft,
            node_id: config.node_id,
            client,
            state,
            stop_server,
            server: Mutex::new(Some(server)),
            db: weak_db,
        });
        if let Err(e) = store.join_cluster(&config).await {
            store.shutdown().await;
            return Err(e);
        }
        tracing::info!(
            node_id = config.node_id,
            raft_listen = %listen,
            advertise = %config.advertise,
            data_dir = %config.data_dir.display(),
            "raft store open"
        );
        Ok(store)
    }

    /// Initializes a one-node cluster or joins through `config.join`, unless
    /// this node already belongs to a cluster (restart).
    async fn join_cluster(&self, config: &StoreConfig) -> Result<(), StoreError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| StoreError::Raft {
                addr: config.advertise.clone(),
                message: e.to_string(),
            })?;
        if initialized {
            return Ok(());
        }
        let Some(target) = &config.join else {
            let members = BTreeMap::from([(config.node_id, BasicNode::new(&config.advertise))]);
            return match self.raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
                Err(e) => Err(StoreError::Raft {
                    addr: config.advertise.clone(),
                    message: format!("initialize: {e}"),
                }),
            };
        };
        let request = JoinRequest {
            node_id: config.node_id,
            addr: config.advertise.clone(),
        };
        let deadline = Instant::now() + JOIN_PATIENCE;
        loop {
            let reply = self
                .client
                .post::<_, ForwardReply<()>>(
                    target,
                    "/raft/join",
                    &request,
                    server::JOIN_TIMEOUT + Duration::from_secs(10),
                )
                .await;
            let message = match reply {
                Ok(ForwardReply::Ok(())) => return Ok(()),
                Ok(ForwardReply::NotLeader { leader }) => {
                    format!("no leader yet (last known: {leader:?})")
                }
                Ok(ForwardReply::Failed(message)) => message,
                Err(e) => e.to_string(),
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(StoreError::Join {
                    target: target.clone(),
                    message: format!("gave up after {} s: {message}", JOIN_PATIENCE.as_secs()),
                });
            }
            tracing::debug!(%target, %message, "raft join: retrying");
            // Back-off between attempts (the member may still be electing).
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Proposes `command` and waits until it is committed and applied here;
    /// on a follower the command is forwarded to the leader. Linearizable.
    ///
    /// Retries (within [`WRITE_TIMEOUT`]) only while it is certain the
    /// command was not proposed (no leader known, leader unreachable).
    ///
    /// # Errors
    /// [`WriteError::Unavailable`] (maybe applied: the leader was lost or
    /// the commit did not happen in time), [`WriteError::Shutdown`],
    /// [`WriteError::Codec`].
    pub async fn write(&self, command: S::Command) -> Result<S::Response, WriteError> {
        let command = serde_json::to_value(&command)
            .map_err(|e| WriteError::Codec(format!("encode command: {e}")))?;
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let mut last = "no leader known".to_string();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(WriteError::Unavailable(format!(
                    "gave up after {} ms: {last}",
                    WRITE_TIMEOUT.as_millis()
                )));
            }
            let leader = match server::write_here(&self.raft, command.clone(), remaining).await {
                Attempt::Done(response) => return decode_response::<S>(response),
                Attempt::Failed(message) => return Err(WriteError::Unavailable(message)),
                Attempt::Stopped => return Err(WriteError::Shutdown),
                Attempt::NotLeader(leader) => leader,
            };
            if let Some(leader) = leader {
                let request = WriteRequest {
                    command: command.clone(),
                };
                let reply = self
                    .client
                    .post::<_, ForwardReply<LogResponse>>(
                        &leader,
                        "/raft/write",
                        &request,
                        remaining,
                    )
                    .await;
                match reply {
                    Ok(ForwardReply::Ok(response)) => return decode_response::<S>(response),
                    Ok(ForwardReply::NotLeader { .. }) => {
                        last = format!("{leader} is no longer leader")
                    }
                    Ok(ForwardReply::Failed(message)) => {
                        return Err(WriteError::Unavailable(format!(
                            "leader {leader}: {message}"
                        )))
                    }
                    Err(e @ CallError::Connect { .. }) => last = e.to_string(),
                    Err(e) => return Err(WriteError::Unavailable(e.to_string())),
                }
            }
            self.await_change(deadline).await;
        }
    }

    /// The state after a linearizable read barrier (the leader confirms it
    /// is still leader; followers wait until they applied that far).
    ///
    /// # Errors
    /// [`WriteError::Unavailable`] when no leader confirmed within
    /// [`READ_TIMEOUT`]; [`WriteError::Shutdown`].
    pub async fn read(&self) -> Result<Arc<S>, WriteError> {
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut last;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match server::read_index_here(&self.raft, remaining).await {
                Attempt::Done(_) => return Ok(self.state.borrow().clone()),
                Attempt::Stopped => return Err(WriteError::Shutdown),
                Attempt::Failed(message) => last = message,
                Attempt::NotLeader(None) => last = "no leader known".to_string(),
                Attempt::NotLeader(Some(leader)) => {
                    let reply = self
                        .client
                        .post::<_, ForwardReply<Option<u64>>>(&leader, "/raft/read", &(), remaining)
                        .await;
                    match reply {
                        Ok(ForwardReply::Ok(index)) => {
                            let remaining = deadline.saturating_duration_since(Instant::now());
                            let waited = self
                                .raft
                                .wait(Some(remaining))
                                .applied_index_at_least(index, "linearizable read")
                                .await;
                            return match waited {
                                Ok(_) => Ok(self.state.borrow().clone()),
                                Err(WaitError::ShuttingDown) => Err(WriteError::Shutdown),
                                Err(e @ WaitError::Timeout(..)) => {
                                    Err(WriteError::Unavailable(e.to_string()))
                                }
                            };
                        }
                        Ok(ForwardReply::NotLeader { .. }) => {
                            last = format!("{leader} is no longer leader")
                        }
                        Ok(ForwardReply::Failed(message)) => {
                            last = format!("leader {leader}: {message}")
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(WriteError::Unavailable(format!(
                    "read barrier not passed within {} ms: {last}",
                    READ_TIMEOUT.as_millis()
                )));
            }
            self.await_change(deadline).await;
        }
    }

    /// Waits until the Raft metrics change (e.g. a leader is elected), at
    /// most [`RETRY_PAUSE`] and never past `deadline`.
    async fn await_change(&self, deadline: Instant) {
        let pause = deadline
            .saturating_duration_since(Instant::now())
            .min(RETRY_PAUSE);
        let mut metrics = self.raft.metrics();
        metrics.borrow_and_update();
        // A timeout or a closed channel both just end the wait.
        let _ = tokio::time::timeout(pause, metrics.changed()).await;
    }

    /// The locally applied state, published after every apply (one value
    /// per batch of entries openraft applies together, and after a snapshot
    /// is installed; eventually consistent on followers): what xDS and
    /// peering watch.
    pub fn watch(&self) -> watch::Receiver<Arc<S>> {
        self.state.clone()
    }

    /// Raft facts of this node.
    pub fn status(&self) -> RaftStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters = membership
            .voter_ids()
            .map(|id| {
                let addr = membership
                    .get_node(&id)
                    .map(|n| n.addr.clone())
                    .unwrap_or_default();
                (id, addr)
            })
            .collect();
        RaftStatus {
            node_id: self.node_id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            voters,
            last_applied: metrics.last_applied.map(|l| l.index).unwrap_or(0),
        }
    }

    /// Log, snapshot and purge positions of this node.
    pub fn log_status(&self) -> LogStatus {
        let metrics = self.raft.metrics().borrow().clone();
        LogStatus {
            last_log: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|l| l.index),
            snapshot: metrics.snapshot.map(|l| l.index),
            purged: metrics.purged.map(|l| l.index),
        }
    }

    /// Whether this node is the leader now.
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.node_id)
    }

    /// Asks Raft to build a snapshot now (and purge the log it covers),
    /// besides the automatic one every [`StoreConfig::snapshot_every`]
    /// entries. Returns before the snapshot is built.
    ///
    /// # Errors
    /// [`WriteError::Shutdown`] when Raft is stopped.
    pub async fn trigger_snapshot(&self) -> Result<(), WriteError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|_| WriteError::Shutdown)
    }

    /// Stops Raft and the Raft listener, and waits (at most 5 s) until the
    /// database is closed so the data directory can be opened again.
    /// Idempotent.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::debug!(error = %e, "raft shutdown");
        }
        self.stop_server.send_replace(true);
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            // The server task ends at once on the signal; a join error means
            // it panicked, which is logged by the runtime.
            let _ = server.await;
        }
        let deadline = Instant::now() + RELEASE_PATIENCE;
        while self.db.strong_count() > 0 && Instant::now() < deadline {
            // Raft's storage tasks drop their database handles as they end.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.db.strong_count() > 0 {
            tracing::warn!(
                node_id = self.node_id,
                "raft database still open after shutdown"
            );
        }
    }
}

impl<S: StateMachine> Drop for Store<S> {
    fn drop(&mut self) {
        self.stop_server.send_replace(true);
    }
}

fn decode_response<S: StateMachine>(response: LogResponse) -> Result<S::Response, WriteError> {
    let value = response.0.map_err(WriteError::Codec)?;
    serde_json::from_value(value).map_err(|e| WriteError::Codec(format!("decode response: {e}")))
}

//! The applied state and its snapshots (openraft [`RaftStateMachine`]).
//!
//! The state lives in memory; what is durable is the latest snapshot (the
//! JSON of the state, plus its [`SnapshotMeta`]: last applied log id and
//! membership) in the [`SM_META`] table. After a restart the state starts
//! from that snapshot and openraft re-applies the committed log entries
//! after it, so the state, the last applied id and the membership all come
//! back.

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::watch;

use super::types::{LogCommand, LogResponse, NodeId, TypeConfig};
use super::StateMachine;

/// State machine snapshot: `snapshot_meta` (JSON of [`SnapshotMeta`]) and
/// `snapshot_data` (JSON of the state).
pub(crate) const SM_META: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("state_machine");

const KEY_SNAPSHOT_META: &str = "snapshot_meta";
const KEY_SNAPSHOT_DATA: &str = "snapshot_data";

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// What has been applied so far.
struct Applied<S> {
    state: S,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

/// The state machine store; clones share the state (the snapshot builder is
/// a clone).
pub(crate) struct SmStore<S> {
    db: Arc<Database>,
    applied: Arc<Mutex<Applied<S>>>,
    tx: Arc<watch::Sender<Arc<S>>>,
}

impl<S> Clone for SmStore<S> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            applied: self.applied.clone(),
            tx: self.tx.clone(),
        }
    }
}

impl<S: StateMachine> SmStore<S> {
    /// Loads the latest snapshot from `db` (or starts from `S::default()`)
    /// and returns the store and a receiver of the applied state.
    ///
    /// # Errors
    /// A message when the snapshot cannot be read or decoded.
    pub(crate) fn load(db: Arc<Database>) -> Result<(Self, watch::Receiver<Arc<S>>), String> {
        let (state, last_applied, membership) = match load_snapshot(&db)? {
            Some((meta, data)) => {
                let state: S = serde_json::from_slice(&data)
                    .map_err(|e| format!("decode state machine snapshot: {e}"))?;
                (state, meta.last_log_id, meta.last_membership)
            }
            None => (S::default(), None, StoredMembership::default()),
        };
        let (tx, rx) = watch::channel(Arc::new(state.clone()));
        let store = Self {
            db,
            applied: Arc::new(Mutex::new(Applied {
                state,
                last_applied,
                membership,
            })),
            tx: Arc::new(tx),
        };
        Ok((store, rx))
    }

    fn lock(&self) -> MutexGuard<'_, Applied<S>> {
        // A panic inside `S::apply` poisons the lock; the state is still the
        // one that panicked mid-apply, which is all we have.
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn persist(&self, meta: &Meta, data: Vec<u8>) -> Result<(), StorageError<NodeId>> {
        let signature = Some(meta.signature());
        let meta_bytes = serde_json::to_vec(meta)
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), AnyError::new(&e)))?;
        let db = self.db.clone();
        let joined = tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(SM_META)?;
                table.insert(KEY_SNAPSHOT_META, meta_bytes.as_slice())?;
                table.insert(KEY_SNAPSHOT_DATA, data.as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })
        .await;
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageIOError::write_snapshot(signature, AnyError::new(&e)).into()),
            Err(e) => Err(StorageIOError::write_snapshot(signature, AnyError::new(&e)).into()),
        }
    }
}

/// Reads the stored snapshot, if any.
fn load_snapshot(db: &Database) -> Result<Option<(Meta, Vec<u8>)>, String> {
    type Raw = Option<(Vec<u8>, Vec<u8>)>;
    let read = || -> Result<Raw, redb::Error> {
        let txn = db.begin_read()?;
        let table = txn.open_table(SM_META)?;
        let meta = table.get(KEY_SNAPSHOT_META)?.map(|v| v.value().to_vec());
        let data = table.get(KEY_SNAPSHOT_DATA)?.map(|v| v.value().to_vec());
        Ok(meta.zip(data))
    };
    match read().map_err(|e| format!("read snapshot: {e}"))? {
        None => Ok(None),
        Some((meta, data)) => {
            let meta: Meta =
                serde_json::from_slice(&meta).map_err(|e| format!("decode snapshot meta: {e}"))?;
            Ok(Some((meta, data)))
        }
    }
}

impl<S: StateMachine> RaftSnapshotBuilder<TypeConfig> for SmStore<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (data, last_applied, membership) = {
            let applied = self.lock();
            let data = serde_json::to_vec(&applied.state)
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
            (data, applied.last_applied, applied.membership.clone())
        };
        // Unique per build: last index plus the wall clock in ns (ids only
        // need to differ between builds, they carry no ordering).
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let snapshot_id = format!("{}-{nanos}", last_applied.map(|l| l.index).unwrap_or(0));
        let meta = Meta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.persist(&meta, data.clone()).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<S: StateMachine> RaftStateMachine<TypeConfig> for SmStore<S> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let applied = self.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<LogResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let published = {
            let mut applied = self.lock();
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Ok(serde_json::Value::Null),
                    EntryPayload::Normal(LogCommand(value)) => {
                        match serde_json::from_value::<S::Command>(value) {
                            Ok(command) => {
                                let response = applied.state.apply(&command);
                                serde_json::to_value(&response)
                                    .map_err(|e| format!("encode response: {e}"))
                            }
                            Err(e) => Err(format!(
                                "decode command at log index {}: {e}",
                                entry.log_id.index
                            )),
                        }
                    }
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Ok(serde_json::Value::Null)
                    }
                };
                responses.push(LogResponse(response));
            }
            Arc::new(applied.state.clone())
        };
        self.tx.send_replace(published);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let state: S = serde_json::from_slice(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        self.persist(meta, data).await?;
        let published = {
            let mut applied = self.lock();
            applied.state = state;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            Arc::new(applied.state.clone())
        };
        self.tx.send_replace(published);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let loaded = load_snapshot(&self.db)
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::error(e)))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

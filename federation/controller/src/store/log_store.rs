//! The Raft log, the vote and the committed/purged markers in redb
//! (openraft [`RaftLogStorage`]).
//!
//! Tables: [`LOGS`] maps a log index to the JSON of its entry; [`RAFT_META`]
//! holds `vote`, `committed` and `last_purged` as JSON. Every write is one
//! redb transaction committed with immediate durability (fsync) before
//! openraft is told it is flushed; writes run on the blocking thread pool.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{NodeId, TypeConfig};

/// Log entries: index → JSON of `Entry<TypeConfig>`.
pub(crate) const LOGS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft metadata: `vote`, `committed`, `last_purged` → JSON.
pub(crate) const RAFT_META: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// The log store; cheap to clone (it shares the database).
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// A log store on `db` (the tables must exist, see [`super::db::open`]).
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AnyError> {
        let read = || -> Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(RAFT_META)?;
            Ok(table.get(key)?.map(|v| v.value().to_vec()))
        };
        let bytes = read().map_err(|e| AnyError::new(&e))?;
        match bytes {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| AnyError::new(&e)),
        }
    }

    /// Runs one write transaction on the blocking pool and commits it.
    async fn write_txn<F>(&self, f: F) -> Result<(), AnyError>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        let joined = tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            f(&txn)?;
            txn.commit()?;
            Ok(())
        })
        .await;
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AnyError::new(&e)),
            Err(e) => Err(AnyError::new(&e)),
        }
    }

    async fn write_meta<T: Serialize>(&self, key: &'static str, value: &T) -> Result<(), AnyError> {
        let bytes = serde_json::to_vec(value).map_err(|e| AnyError::new(&e))?;
        self.write_txn(move |txn| {
            txn.open_table(RAFT_META)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
        .await
    }
}

fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, AnyError> {
    serde_json::from_slice(bytes).map_err(|e| AnyError::new(&e))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let bounds: (Bound<u64>, Bound<u64>) =
            (range.start_bound().cloned(), range.end_bound().cloned());
        let read = || -> Result<Vec<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(LOGS)?;
            let mut out = Vec::new();
            for item in table.range::<u64>(bounds)? {
                let (_, v) = item?;
                out.push(v.value().to_vec());
            }
            Ok(out)
        };
        let raw = read().map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
        let mut entries = Vec::with_capacity(raw.len());
        for bytes in &raw {
            entries.push(decode_entry(bytes).map_err(StorageIOError::read_logs)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self
            .read_meta(KEY_PURGED)
            .map_err(StorageIOError::read_logs)?;
        let read = || -> Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(LOGS)?;
            let last = table.last()?.map(|(_, v)| v.value().to_vec());
            Ok(last)
        };
        let last = read().map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
        let last_log_id = match last {
            Some(bytes) => Some(
                decode_entry(&bytes)
                    .map_err(StorageIOError::read_logs)?
                    .log_id,
            ),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .read_meta(KEY_VOTE)
            .map_err(StorageIOError::read_vote)?)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.write_meta(KEY_COMMITTED, &committed)
            .await
            .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed = self
            .read_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED)
            .map_err(StorageIOError::read)?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry)
                .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
            encoded.push((entry.log_id.index, bytes));
        }
        let result = self
            .write_txn(move |txn| {
                let mut table = txn.open_table(LOGS)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let from = log_id.index;
        self.write_txn(move |txn| {
            txn.open_table(LOGS)?
                .retain_in::<u64, _>(from.., |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(&log_id)
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        let upto = log_id.index;
        self.write_txn(move |txn| {
            txn.open_table(RAFT_META)?
                .insert(KEY_PURGED, bytes.as_slice())?;
            txn.open_table(LOGS)?
                .retain_in::<u64, _>(..=upto, |_, _| false)?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(e).into())
    }
}

//! openraft's storage test suite (`openraft::testing::Suite`) against the
//! redb log store and state machine: log state, vote, committed marker,
//! append/truncate/purge, apply, snapshot build/install/transfer.

use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use super::log_store::LogStore;
use super::state_machine::SmStore;
use super::types::{NodeId, TypeConfig};
use super::{db, StateMachine};

/// A trivial state machine: a running sum.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Sum(u64);

impl StateMachine for Sum {
    type Command = u64;
    type Response = u64;

    fn apply(&mut self, command: &u64) -> u64 {
        self.0 += command;
        self.0
    }
}

/// Each build opens a fresh database in a new temp dir (the guard).
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, SmStore<Sum>, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, SmStore<Sum>), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let db = db::open(dir.path(), 1)
            .await
            .map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        let (sm, _state) =
            SmStore::load(db.clone()).map_err(|e| StorageIOError::read(AnyError::error(e)))?;
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

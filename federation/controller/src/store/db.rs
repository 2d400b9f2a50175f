//! Opening the redb database of a node (`<data_dir>/raft.redb`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError};

use super::log_store::{LOGS, RAFT_META};
use super::state_machine::SM_META;
use super::StoreError;

/// The database file inside the data directory.
pub(crate) const DB_FILE: &str = "raft.redb";

/// How long [`open`] waits for a database still held by a store of this
/// process that is shutting down.
const OPEN_PATIENCE: Duration = Duration::from_secs(5);

/// Creates `data_dir` if missing, opens (or creates) the database and its
/// tables.
///
/// # Errors
/// [`StoreError::Storage`] naming the path when the directory cannot be
/// created or the database cannot be opened (e.g. another process holds it).
pub(crate) async fn open(data_dir: &Path) -> Result<Arc<Database>, StoreError> {
    let storage = |path: &Path, message: String| StoreError::Storage {
        path: path.display().to_string(),
        message,
    };
    std::fs::create_dir_all(data_dir)
        .map_err(|e| storage(data_dir, format!("create directory: {e}")))?;
    let path = data_dir.join(DB_FILE);
    let deadline = Instant::now() + OPEN_PATIENCE;
    let db = loop {
        match Database::create(&path) {
            Ok(db) => break db,
            Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                // A store of this process on the same directory is still
                // releasing it (shutdown in progress): back off and retry.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(storage(&path, format!("open database: {e}"))),
        }
    };
    let create = || -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(LOGS)?;
        txn.open_table(RAFT_META)?;
        txn.open_table(SM_META)?;
        txn.commit()?;
        Ok(())
    };
    create().map_err(|e| storage(&path, format!("create tables: {e}")))?;
    Ok(Arc::new(db))
}

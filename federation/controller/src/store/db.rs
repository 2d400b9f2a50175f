//! Opening the redb database of a node (`<data_dir>/raft.redb`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableTable};

use super::log_store::{LOGS, RAFT_META};
use super::state_machine::SM_META;
use super::StoreError;

/// The database file inside the data directory.
pub(crate) const DB_FILE: &str = "raft.redb";

/// How long [`open`] waits for a database still held by a store of this
/// process that is shutting down.
const OPEN_PATIENCE: Duration = Duration::from_secs(5);

/// The [`RAFT_META`] key recording which node id owns the database.
const KEY_NODE_ID: &str = "node_id";

/// Creates `data_dir` if missing, opens (or creates) the database and its
/// tables, and checks the database belongs to `node_id` (recorded on first
/// open).
///
/// # Errors
/// [`StoreError::Storage`] naming the path when the directory cannot be
/// created, the database cannot be opened (e.g. another process holds it),
/// or it belongs to another node id.
pub(crate) async fn open(data_dir: &Path, node_id: u64) -> Result<Arc<Database>, StoreError> {
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
    // Creates the tables and records the owner on first use; answers the
    // recorded owner.
    let prepare = || -> Result<Option<Vec<u8>>, redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(LOGS)?;
        txn.open_table(SM_META)?;
        let owner = {
            let mut meta = txn.open_table(RAFT_META)?;
            let owner = meta.get(KEY_NODE_ID)?.map(|v| v.value().to_vec());
            if owner.is_none() {
                meta.insert(KEY_NODE_ID, node_id.to_string().as_bytes())?;
            }
            owner
        };
        txn.commit()?;
        Ok(owner)
    };
    let owner = prepare().map_err(|e| storage(&path, format!("create tables: {e}")))?;
    if let Some(owner) = owner {
        if owner != node_id.to_string().as_bytes() {
            return Err(storage(
                &path,
                format!(
                    "belongs to raft node {}, not to node {node_id}",
                    String::from_utf8_lossy(&owner)
                ),
            ));
        }
    }
    Ok(Arc::new(db))
}

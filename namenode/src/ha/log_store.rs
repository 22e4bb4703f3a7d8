//! The Raft log: `<data-dir>/raft.redb`, a redb file of its own beside the metadata
//! (whose store is the state machine, `state_machine.rs`). It holds the log entries by
//! index (bincode), and the vote, the committed log id and the last purged log id.
//! Every write is one transaction, fsynced before openraft is told it is durable.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::TypeConfig;
use crate::error::Result;

/// Name of the log's file inside `--data-dir`.
pub const LOG_FILE: &str = "raft.redb";

/// Log index → bincode of an openraft `Entry`.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// `"vote"`, `"committed"`, `"purged"` → bincode of the openraft value.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

type NodeId = u64;
type StoreResult<T> = std::result::Result<T, StorageError<NodeId>>;

/// The log store; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// The index openraft last saved as committed (`/readyz`, NamenodeRole).
    committed: Arc<AtomicU64>,
}

fn io(e: impl ToString) -> AnyError {
    AnyError::error(e)
}

fn encode<T: serde::Serialize>(value: &T) -> std::result::Result<Vec<u8>, AnyError> {
    bincode::serialize(value).map_err(io)
}

fn decode<T: serde::de::DeserializeOwned>(raw: &[u8]) -> std::result::Result<T, AnyError> {
    bincode::deserialize(raw).map_err(io)
}

impl LogStore {
    /// Opens (or creates) `<dir>/raft.redb`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join(LOG_FILE))?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(STATE)?;
        txn.commit()?;
        Ok(Self {
            db: Arc::new(db),
            committed: Arc::default(),
        })
    }

    /// The committed index as last saved (0 before anything was).
    pub fn committed(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// Whether this member never took part in a group: no vote, no entry, nothing
    /// purged (the bootstrap rule, `bootstrap.rs`).
    pub fn is_pristine(&self) -> Result<bool> {
        let txn = self.db.begin_read()?;
        let state = txn.open_table(STATE)?;
        let log = txn.open_table(LOG)?;
        Ok(
            state.get("vote")?.is_none()
                && state.get("purged")?.is_none()
                && log.first()?.is_none(),
        )
    }

    /// Runs `f` on the blocking pool: redb commits fsync.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> std::result::Result<T, AnyError> + Send + 'static,
        on_error: fn(AnyError) -> StorageIOError<NodeId>,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        let out = tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(io)
            .and_then(|r| r);
        out.map_err(|e| StorageError::IO {
            source: on_error(e),
        })
    }

    async fn read_state<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        name: &'static str,
        on_error: fn(AnyError) -> StorageIOError<NodeId>,
    ) -> StoreResult<Option<T>> {
        self.blocking(
            move |db| {
                let txn = db.begin_read().map_err(io)?;
                let table = txn.open_table(STATE).map_err(io)?;
                let raw = table.get(name).map_err(io)?;
                raw.map(|v| decode(v.value())).transpose()
            },
            on_error,
        )
        .await
    }

    async fn write_state<T: serde::Serialize>(
        &self,
        name: &'static str,
        value: &T,
        on_error: fn(AnyError) -> StorageIOError<NodeId>,
    ) -> StoreResult<()> {
        let raw = encode(value).map_err(|e| StorageError::IO {
            source: on_error(e),
        })?;
        self.blocking(
            move |db| {
                let txn = db.begin_write().map_err(io)?;
                txn.open_table(STATE)
                    .map_err(io)?
                    .insert(name, raw.as_slice())
                    .map_err(io)?;
                txn.commit().map_err(io)
            },
            on_error,
        )
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(n) => *n,
            Bound::Excluded(n) => n + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(n) => Some(n + 1),
            Bound::Excluded(n) => Some(*n),
            Bound::Unbounded => None,
        };
        self.blocking(
            move |db| {
                let txn = db.begin_read().map_err(io)?;
                let table = txn.open_table(LOG).map_err(io)?;
                let rows = match end {
                    Some(end) => table.range(start..end),
                    None => table.range(start..),
                }
                .map_err(io)?;
                let mut out = Vec::new();
                for row in rows {
                    let (_, v) = row.map_err(io)?;
                    out.push(decode(v.value())?);
                }
                Ok(out)
            },
            StorageIOError::read_logs,
        )
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let purged: Option<LogId<NodeId>> =
            self.read_state("purged", StorageIOError::read_logs).await?;
        let last = self
            .blocking(
                |db| {
                    let txn = db.begin_read().map_err(io)?;
                    let table = txn.open_table(LOG).map_err(io)?;
                    let last = table.last().map_err(io)?;
                    last.map(|(_, v)| decode::<Entry<TypeConfig>>(v.value()))
                        .transpose()
                },
                StorageIOError::read_logs,
            )
            .await?;
        let last_log_id = last.map(|e| e.log_id).or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        self.write_state("vote", vote, StorageIOError::write_vote)
            .await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.read_state("vote", StorageIOError::read_vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        let index = committed.map_or(0, |c| c.index);
        self.committed.fetch_max(index, Ordering::Relaxed);
        self.write_state("committed", &committed, StorageIOError::write_logs)
            .await
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(self
            .read_state::<Option<LogId<NodeId>>>("committed", StorageIOError::read_logs)
            .await?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let rows = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, encode(&e)?)))
            .collect::<std::result::Result<Vec<_>, AnyError>>()
            .map_err(|e| StorageError::IO {
                source: StorageIOError::write_logs(e),
            })?;
        let result = self
            .blocking(
                move |db| {
                    let txn = db.begin_write().map_err(io)?;
                    {
                        let mut table = txn.open_table(LOG).map_err(io)?;
                        for (index, raw) in &rows {
                            table.insert(index, raw.as_slice()).map_err(io)?;
                        }
                    }
                    txn.commit().map_err(io)
                },
                StorageIOError::write_logs,
            )
            .await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.blocking(
            move |db| {
                let txn = db.begin_write().map_err(io)?;
                txn.open_table(LOG)
                    .map_err(io)?
                    .retain_in(log_id.index.., |_, _| false)
                    .map_err(io)?;
                txn.commit().map_err(io)
            },
            StorageIOError::write_logs,
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let raw = encode(&log_id).map_err(|e| StorageError::IO {
            source: StorageIOError::write_logs(e),
        })?;
        self.blocking(
            move |db| {
                let txn = db.begin_write().map_err(io)?;
                txn.open_table(STATE)
                    .map_err(io)?
                    .insert("purged", raw.as_slice())
                    .map_err(io)?;
                txn.open_table(LOG)
                    .map_err(io)?
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(io)?;
                txn.commit().map_err(io)
            },
            StorageIOError::write_logs,
        )
        .await
    }
}

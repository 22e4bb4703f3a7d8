//! The Raft state machine: the namenode's metadata store (`namenode.redb`). Committed
//! entries are applied on every member through the same op code a single namenode's
//! writer uses, one transaction and fsync per `apply` call (so followers group-commit
//! too), with the last applied log id and membership written in that transaction
//! (`meta::apply_entries`). On the leader, the entries its current leadership instance
//! proposed also reach memory and their callers ([`Hook`]).
//!
//! A snapshot is the whole store dumped from one MVCC read (`meta::dump`), kept in
//! memory; a member installs one by replacing every table in one transaction.

// The helpers return openraft's `StorageError`, the error type its traits require.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};

use super::TypeConfig;
use super::propose::Applier;
use crate::meta::{self, Op, Store};

type NodeId = u64;
type StoreResult<T> = std::result::Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";

/// The answer of an applied entry: nothing; callers are answered by the [`Hook`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Applied;

fn io(e: impl ToString) -> AnyError {
    AnyError::error(e)
}

fn sm_error(e: impl ToString) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::write_state_machine(io(e)),
    }
}

fn encode<T: serde::Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    bincode::serialize(value).map_err(sm_error)
}

/// The last built snapshot: its metadata and bytes.
type Built = (SnapshotMeta<NodeId, BasicNode>, Arc<Vec<u8>>);

/// The state machine over the metadata store.
pub struct StateMachine {
    store: Arc<Store>,
    applier: Arc<Applier>,
    snapshot: Arc<Mutex<Option<Built>>>,
}

impl StateMachine {
    pub fn new(store: Arc<Store>, applier: Arc<Applier>) -> Self {
        Self {
            store,
            applier,
            snapshot: Arc::default(),
        }
    }
}

/// Reads the applied log id and membership from the store's Raft rows.
fn applied_rows(store: &Store) -> StoreResult<(Option<LogId<NodeId>>, Membership)> {
    let rows = meta::raft_rows(store, &[APPLIED, MEMBERSHIP]).map_err(sm_error)?;
    decode_rows(&rows)
}

fn decode_rows(rows: &[Option<Vec<u8>>]) -> StoreResult<(Option<LogId<NodeId>>, Membership)> {
    let applied = match &rows[0] {
        Some(raw) => bincode::deserialize(raw).map_err(sm_error)?,
        None => None,
    };
    let membership = match &rows[1] {
        Some(raw) => bincode::deserialize(raw).map_err(sm_error)?,
        None => Membership::default(),
    };
    Ok((applied, membership))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StoreResult<(Option<LogId<NodeId>>, Membership)> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || applied_rows(&store))
            .await
            .map_err(sm_error)?
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let mut rows = vec![(APPLIED, encode(&Some(last))?)];
        if let Some(m) = entries.iter().rev().find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(Membership::new(Some(e.log_id), m.clone())),
            _ => None,
        }) {
            rows.push((MEMBERSHIP, encode(&m)?));
        }
        let hook = self.applier.current();
        let ours = |e: &Entry<TypeConfig>| match (&e.payload, &hook) {
            (EntryPayload::Normal(b), Some(h)) => b.instance == h.instance,
            _ => false,
        };
        let any_ours = entries.iter().any(ours);
        let foreign = hook.is_some()
            && entries
                .iter()
                .any(|e| matches!(e.payload, EntryPayload::Normal(_)) && !ours(e));
        if any_ours && let Some(h) = &hook {
            h.begin();
        }
        let store = self.store.clone();
        let (entries, results) = tokio::task::spawn_blocking(move || {
            let batches: Vec<&[Op]> = entries
                .iter()
                .map(|e| match &e.payload {
                    EntryPayload::Normal(b) => b.ops.as_slice(),
                    _ => &[],
                })
                .collect();
            let results = meta::apply_entries(&store, &batches, &rows);
            (entries, results)
        })
        .await
        .map_err(sm_error)?;
        let results = results.map_err(|e| StorageError::IO {
            source: StorageIOError::apply(last, io(e)),
        })?;
        let applied = vec![Applied; entries.len()];
        if let Some(h) = hook.filter(|_| any_ours) {
            for (entry, results) in entries.iter().zip(results) {
                if let EntryPayload::Normal(b) = &entry.payload
                    && b.instance == h.instance
                {
                    h.applied(b.seq, &b.ops, results);
                }
            }
            h.end();
        }
        if foreign {
            self.applier.mark_stale();
        }
        Ok(applied)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            built: self.snapshot.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let data = snapshot.into_inner();
        let rows = vec![
            (APPLIED, encode(&meta.last_log_id)?),
            (MEMBERSHIP, encode(&meta.last_membership)?),
        ];
        let store = self.store.clone();
        let data = Arc::new(data);
        let restored = data.clone();
        tokio::task::spawn_blocking(move || meta::restore(&store, &restored, &rows))
            .await
            .map_err(sm_error)?
            .map_err(|e| StorageError::IO {
                source: StorageIOError::write_snapshot(Some(meta.signature()), io(e)),
            })?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "snapshot installed");
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let built = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((meta, data)) = built {
            return Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data.as_ref().clone())),
            }));
        }
        // None built since this process started: the store as it stands is one.
        let (applied, _) = self.applied_state().await?;
        if applied.is_none() {
            return Ok(None);
        }
        let mut builder = self.get_snapshot_builder().await;
        builder.build_snapshot().await.map(Some)
    }
}

/// Builds a snapshot of the store as it stands.
pub struct SnapshotBuilder {
    store: Arc<Store>,
    built: Arc<Mutex<Option<Built>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let store = self.store.clone();
        let dump = tokio::task::spawn_blocking(move || meta::dump(&store, &[APPLIED, MEMBERSHIP]))
            .await
            .map_err(sm_error)?
            .map_err(|e| StorageError::IO {
                source: StorageIOError::read_state_machine(io(e)),
            })?;
        let (last_log_id, last_membership) = decode_rows(&dump.rows)?;
        let snapshot_id = match &last_log_id {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let data = Arc::new(dump.data);
        tracing::info!(snapshot = %meta, bytes = data.len(), "snapshot built");
        *self.built.lock().unwrap_or_else(|p| p.into_inner()) = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.as_ref().clone())),
        })
    }
}

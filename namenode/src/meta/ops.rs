//! The changes to the durable state ([`Op`]), what each did ([`Effect`]), and how one
//! is applied inside a group commit's transaction ([`apply`]).
//!
//! An op checks before it changes anything where it can fail on its own (an unknown
//! file), so such a failure leaves the transaction as it was and fails that op alone.

use kdfs_core::{BlockId, FileId};
use redb::ReadableTable;

use super::object_ops::{self, ObjectEffect, ObjectOp, first_referrer};
use super::records::{
    FileRecord, Lease, decode_block_key, encode_block_key, encode_tombstone, tombstone_time,
};
use super::tables::Tables;
use crate::blockmap::NodeIdx;
use crate::error::{Error, Result};

/// A change to the durable state.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// Store a file record (idempotent: existing content keeps its first record). A
    /// live record of the same id with other blocks is a conflict ([`Error::Conflict`],
    /// nothing changed, the lease left open), unless it still holds exactly the blocks
    /// of `replaces`: it is then replaced ([`Effect::Replaced`]).
    Commit {
        record: FileRecord,
        /// The blocks of a record of this id that the committer proved false (their
        /// bytes do not hash to the id): a compare-and-swap, see `commit`.
        replaces: Option<Vec<(BlockId, u64)>>,
        /// Trusted pipeline acks per block (interned nodes), applied to the block map
        /// once durable.
        replicas: Vec<Vec<NodeIdx>>,
        /// The lease, ended in the same transaction. Several commits of one batch
        /// may name it: the first removes its row, the others find none.
        upload_id: String,
        /// Stored for the bucket/key namespace only: a new file is then held only by
        /// its referrers (`object_ops.rs`); without it, the file is the hash API's.
        object_content: bool,
    },
    /// Tombstone a live file; refused ([`Error::InUse`]) while a key or a multipart
    /// part refers to it.
    Delete {
        id: FileId,
        now_ms: u64,
    },
    PutLease(Lease),
    EndLease(String),
    PurgeTombstones {
        before_ms: u64,
    },
    /// A change to the bucket/key namespace.
    Objects(ObjectOp),
    /// With HA: the cluster id the first leader chose (kept if one is stored).
    SetClusterId(String),
    /// With HA: a new block key every namenode signs with once it leads; keys expired
    /// by `made_ms` are dropped.
    PutBlockKey(StoredKey),
}

/// A block key as the store keeps it (`crate::block_keys`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredKey {
    pub id: u64,
    pub made_ms: u64,
    pub expires_ms: u64,
    pub secret: [u8; 32],
}

impl Op {
    /// The lease id this op writes or ends, if any: `(id, true)` for a write.
    pub(super) fn lease(&self) -> Option<(&str, bool)> {
        match self {
            Op::PutLease(l) => Some((l.id.as_str(), true)),
            Op::Commit { upload_id, .. } => Some((upload_id.as_str(), false)),
            Op::EndLease(id) => Some((id.as_str(), false)),
            _ => None,
        }
    }
}

/// What a durable change did; applied to the in-memory state in commit order.
#[derive(Debug, Clone)]
pub enum Effect {
    Committed {
        record: FileRecord,
        existed: bool,
    },
    /// `record` took the place of `old`, a record of the same id proven false.
    Replaced {
        record: FileRecord,
        old: FileRecord,
    },
    /// `record` is `None` when the file was already deleted.
    Deleted {
        record: Option<FileRecord>,
        deleted_ms: u64,
    },
    Purged(Vec<FileId>),
    Objects(ObjectEffect),
    Done,
}

/// Applies one op inside a group commit's transaction. `skip_lease`: the op's lease
/// is written and ended within the same batch, so the lease table is left alone (see
/// `writer::transient_leases`).
pub(super) fn apply(t: &mut Tables<'_>, op: &Op, skip_lease: bool) -> Result<Effect> {
    match op {
        Op::Commit {
            record,
            replaces,
            upload_id,
            object_content,
            ..
        } => {
            // First, so that a conflict leaves the lease open for a commit that replaces.
            let effect = commit(t, record, replaces.as_deref())?;
            // The submitted record's time is this commit's (an existing record keeps
            // its first commit's).
            pin(t, &effect, *object_content, record.created_ms)?;
            if !skip_lease {
                t.leases.remove(upload_id.as_str())?;
            }
            Ok(effect)
        }
        Op::Delete { id, now_ms } => delete(t, id, *now_ms),
        Op::Objects(op) => Ok(Effect::Objects(object_ops::apply(t, op)?)),
        Op::PutLease(lease) => {
            if !skip_lease {
                t.leases
                    .insert(lease.id.as_str(), lease.encode().as_slice())?;
            }
            Ok(Effect::Done)
        }
        Op::EndLease(id) => {
            if !skip_lease {
                t.leases.remove(id.as_str())?;
            }
            Ok(Effect::Done)
        }
        Op::SetClusterId(id) => {
            if t.meta.get("cluster_id")?.is_none() {
                t.meta.insert("cluster_id", id.as_str())?;
            }
            Ok(Effect::Done)
        }
        Op::PutBlockKey(key) => {
            t.block_keys.retain(|_, v| {
                decode_block_key(0, v).is_some_and(|k| k.expires_ms > key.made_ms)
            })?;
            t.block_keys
                .insert(key.id, encode_block_key(key).as_slice())?;
            Ok(Effect::Done)
        }
        Op::PurgeTombstones { before_ms } => {
            let mut purged = Vec::new();
            t.tombstones.retain(|k, v| {
                let old = tombstone_time(v).is_some_and(|deleted| deleted < *before_ms);
                if old {
                    purged.push(k);
                }
                !old
            })?;
            let ids = purged
                .into_iter()
                .filter_map(|k| FileId::from_slice(&k).ok())
                .collect();
            Ok(Effect::Purged(ids))
        }
    }
}

/// Records who holds a committed file: the hash API (`object_content` false), which
/// then keeps it whatever keys do, or only the namespace's referrers. A new
/// namespace-only file is unclaimed until a key or part refers to it; committing such
/// content again restarts that wait.
fn pin(t: &mut Tables<'_>, effect: &Effect, object_content: bool, now_ms: i64) -> Result<()> {
    let (id, fresh) = match effect {
        Effect::Committed { record, existed } => (record.id, !existed),
        Effect::Replaced { record, .. } => (record.id, false),
        _ => return Ok(()),
    };
    let at = now_ms.max(0) as u64;
    if !object_content {
        t.unpinned.remove(id.as_bytes())?;
        t.unclaimed.remove(id.as_bytes())?;
    } else if fresh {
        t.unpinned.insert(id.as_bytes(), ())?;
        t.unclaimed.insert(id.as_bytes(), at)?;
    } else if t.unpinned.get(id.as_bytes())?.is_some() && first_referrer(t, &id)?.is_none() {
        t.unclaimed.insert(id.as_bytes(), at)?;
    }
    Ok(())
}

/// Stores a new file and counts its blocks' references. A file already stored with
/// the same blocks keeps its first record; with other blocks it is a conflict, unless
/// its blocks are still exactly `replaces` (the caller proved them false), when the
/// new record takes its place.
pub(super) fn commit(
    t: &mut Tables<'_>,
    record: &FileRecord,
    replaces: Option<&[(BlockId, u64)]>,
) -> Result<Effect> {
    let mut old = None;
    if let Some(v) = t.files.get(record.id.as_bytes())? {
        let existing = FileRecord::decode(record.id, v.value())?;
        drop(v);
        if existing.blocks == record.blocks {
            return Ok(Effect::Committed {
                record: existing,
                existed: true,
            });
        }
        if replaces != Some(existing.blocks.as_slice()) {
            return Err(Error::Conflict(Box::new(existing)));
        }
        old = Some(existing);
    }
    t.files
        .insert(record.id.as_bytes(), record.encode().as_slice())?;
    t.tombstones.remove(record.id.as_bytes())?;
    // The new record's references first, so a block both records hold never drops to 0.
    add_refs(t, record)?;
    let Some(old) = old else {
        t.by_time.insert(record.time_key(), ())?;
        return Ok(Effect::Committed {
            record: record.clone(),
            existed: false,
        });
    };
    t.by_time.remove(old.time_key())?;
    t.by_time.insert(record.time_key(), ())?;
    release_refs(t, &old)?;
    Ok(Effect::Replaced {
        record: record.clone(),
        old,
    })
}

/// Counts one more reference to each distinct block of `record`.
fn add_refs(t: &mut Tables<'_>, record: &FileRecord) -> Result<()> {
    for (b, len) in record.distinct_blocks() {
        let (n, _, repl) = t
            .refs
            .get(b.as_bytes())?
            .map(|v| v.value())
            .unwrap_or((0, len, 0));
        t.refs
            .insert(b.as_bytes(), (n + 1, len, repl.max(record.replication)))?;
    }
    Ok(())
}

/// Drops one reference to each distinct block of `record` (the last one removes the row).
fn release_refs(t: &mut Tables<'_>, record: &FileRecord) -> Result<()> {
    for (b, _) in record.distinct_blocks() {
        let cur = t.refs.get(b.as_bytes())?.map(|v| v.value());
        match cur {
            Some((n, len, repl)) if n > 1 => {
                t.refs.insert(b.as_bytes(), (n - 1, len, repl))?;
            }
            _ => {
                t.refs.remove(b.as_bytes())?;
            }
        }
    }
    Ok(())
}

/// The hash API's delete: turns a live file into a tombstone and drops its blocks'
/// references. Deleting a tombstoned file again succeeds with no record; an unknown
/// file is `NotFound`; a file a key or part refers to is [`Error::InUse`].
fn delete(t: &mut Tables<'_>, id: &FileId, now_ms: u64) -> Result<Effect> {
    if let Some(r) = first_referrer(t, id)? {
        return Err(Error::InUse(format!(
            "file {id} is the content of {r}: delete that first (the file is kept)"
        )));
    }
    if t.files.get(id.as_bytes())?.is_none() {
        if t.tombstones.get(id.as_bytes())?.is_some() {
            return Ok(Effect::Deleted {
                record: None,
                deleted_ms: now_ms,
            });
        }
        return Err(Error::NotFound(format!("file {id} not found")));
    }
    t.unpinned.remove(id.as_bytes())?;
    t.unclaimed.remove(id.as_bytes())?;
    Ok(Effect::Deleted {
        record: tombstone(t, id, now_ms)?,
        deleted_ms: now_ms,
    })
}

/// Tombstones a live file and drops its blocks' references; `None` if it is not live.
pub(super) fn tombstone(
    t: &mut Tables<'_>,
    id: &FileId,
    now_ms: u64,
) -> Result<Option<FileRecord>> {
    let Some(v) = t.files.remove(id.as_bytes())? else {
        return Ok(None);
    };
    let record = FileRecord::decode(*id, v.value())?;
    drop(v);
    t.by_time.remove(record.time_key())?;
    t.tombstones
        .insert(id.as_bytes(), encode_tombstone(now_ms, &record).as_slice())?;
    release_refs(t, &record)?;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::super::store::Store;
    use super::super::tables::REFS;
    use super::*;

    fn commit(record: FileRecord) -> Op {
        Op::Commit {
            record,
            replaces: None,
            object_content: false,
            replicas: vec![],
            upload_id: String::new(),
        }
    }

    fn delete(n: u8, now_ms: u64) -> Op {
        Op::Delete {
            id: FileRecord::test(n, &[]).id,
            now_ms,
        }
    }

    /// Applies `ops` in one transaction, committed whatever their results.
    fn apply_all(store: &Store, ops: &[Op]) -> Vec<Result<Effect>> {
        let txn = store.begin_write().unwrap();
        let out = {
            let mut t = Tables::open(&txn).unwrap();
            ops.iter().map(|op| apply(&mut t, op, false)).collect()
        };
        txn.commit().unwrap();
        out
    }

    /// The `refs` table as (first byte of the block id, files, replication).
    fn refs(store: &Store) -> Vec<(u8, u64, u32)> {
        let txn = store.read().unwrap();
        let table = txn.open_table(REFS).unwrap();
        let mut out: Vec<_> = table
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                let (n, _, repl) = v.value();
                (k.value()[0], n, repl)
            })
            .collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn reference_counts_follow_commits_and_deletes() {
        let wide = FileRecord {
            replication: 5,
            ..FileRecord::test(3, &[2])
        };
        let check = |ops: Vec<Op>, expected: &[(u8, u64, u32)]| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            apply_all(&store, &ops);
            assert_eq!(refs(&store), expected, "{ops:?}");
        };
        check(vec![], &[]);
        check(
            vec![commit(FileRecord::test(1, &[1, 2, 1]))],
            &[(1, 1, 3), (2, 1, 3)],
        );
        check(
            vec![
                commit(FileRecord::test(1, &[1, 2])),
                commit(FileRecord::test(2, &[2, 3])),
            ],
            &[(1, 1, 3), (2, 2, 3), (3, 1, 3)],
        );
        // The same file again counts nothing.
        check(
            vec![
                commit(FileRecord::test(1, &[1])),
                commit(FileRecord::test(1, &[1])),
            ],
            &[(1, 1, 3)],
        );
        check(
            vec![
                commit(FileRecord::test(1, &[1, 2])),
                commit(FileRecord::test(2, &[2, 3])),
                delete(1, 10),
            ],
            &[(2, 1, 3), (3, 1, 3)],
        );
        // The largest replication asked for wins, and stays after that file goes.
        check(
            vec![commit(FileRecord::test(1, &[2])), commit(wide.clone())],
            &[(2, 2, 5)],
        );
        check(
            vec![
                commit(FileRecord::test(1, &[2])),
                commit(wide),
                delete(3, 10),
            ],
            &[(2, 1, 5)],
        );
    }

    #[test]
    fn deletes_tombstone_once_and_purges_by_deletion_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = FileRecord::test(1, &[1]).id;
        let out = apply_all(
            &store,
            &[
                commit(FileRecord::test(1, &[1])),
                delete(1, 5000),
                delete(1, 6000),
                delete(9, 6000),
                Op::PurgeTombstones { before_ms: 5000 },
            ],
        );
        assert!(matches!(
            out[1],
            Ok(Effect::Deleted {
                record: Some(_),
                deleted_ms: 5000
            })
        ));
        assert!(matches!(out[2], Ok(Effect::Deleted { record: None, .. })));
        assert!(matches!(out[3], Err(Error::NotFound(_))));
        assert!(matches!(&out[4], Ok(Effect::Purged(ids)) if ids.is_empty()));
        assert_eq!(store.counts().unwrap(), (0, 1));
        let out = apply_all(&store, &[Op::PurgeTombstones { before_ms: 5001 }]);
        assert!(matches!(&out[0], Ok(Effect::Purged(ids)) if ids == &[id]));
        assert_eq!(store.counts().unwrap(), (0, 0));
        // A purged file is unknown; committing it again brings it back.
        assert!(matches!(
            apply_all(&store, &[delete(1, 7000)])[0],
            Err(Error::NotFound(_))
        ));
        apply_all(&store, &[commit(FileRecord::test(1, &[1]))]);
        assert_eq!(store.counts().unwrap(), (1, 0));
    }
}

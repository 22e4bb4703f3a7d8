//! The store as the replicated state machine of an HA group (`crate::ha`): applying
//! committed log entries, each a group commit's batch of [`Op`]s, in one transaction
//! with the Raft rows that say how far it got; and the whole store as one snapshot
//! (dumped on a leader, restored on a follower that is too far behind).
//!
//! The Raft rows are opaque bytes here (`crate::ha` encodes them): this module knows
//! nothing of Raft but that its rows and the ops they cover land in one transaction.

use redb::{
    Key, ReadTransaction, ReadableTable, TableDefinition, TableHandle, Value, WriteTransaction,
};

use super::ops::{Effect, Op};
use super::store::Store;
use super::tables::{
    BLOCK_KEYS, BUCKETS, BY_TIME, FILES, LEASES, META, OBJECTS, PARTS, RAFT_STATE, REFERRERS, REFS,
    TOMBSTONES, UNCLAIMED, UNPINNED, UPLOAD_KEYS, UPLOADS,
};
use super::writer::apply_batch;
use crate::error::{Error, Result};

/// Every table of the metadata (all but the Raft rows), by name: what a snapshot holds.
macro_rules! for_each_table {
    ($f:ident, $($arg:expr),*) => {{
        $f(META, $($arg),*)?;
        $f(FILES, $($arg),*)?;
        $f(BY_TIME, $($arg),*)?;
        $f(TOMBSTONES, $($arg),*)?;
        $f(REFS, $($arg),*)?;
        $f(LEASES, $($arg),*)?;
        $f(BUCKETS, $($arg),*)?;
        $f(OBJECTS, $($arg),*)?;
        $f(UPLOADS, $($arg),*)?;
        $f(UPLOAD_KEYS, $($arg),*)?;
        $f(PARTS, $($arg),*)?;
        $f(REFERRERS, $($arg),*)?;
        $f(UNPINNED, $($arg),*)?;
        $f(UNCLAIMED, $($arg),*)?;
        $f(BLOCK_KEYS, $($arg),*)?;
    }};
}

/// Applies committed entries in one transaction: each batch of ops as one group
/// commit would (one result per op), then `rows` into the Raft table, then one commit
/// and fsync. An entry without ops (Raft's own) is an empty batch.
pub fn apply_entries(
    store: &Store,
    batches: &[&[Op]],
    rows: &[(&str, Vec<u8>)],
) -> Result<Vec<Vec<Result<Effect>>>> {
    let txn = store.begin_write()?;
    let mut out = Vec::with_capacity(batches.len());
    for ops in batches {
        out.push(apply_batch(&txn, ops.iter())?);
    }
    put_rows(&txn, rows)?;
    txn.commit()?;
    Ok(out)
}

fn put_rows(txn: &WriteTransaction, rows: &[(&str, Vec<u8>)]) -> Result<()> {
    let mut table = txn.open_table(RAFT_STATE)?;
    for (name, value) in rows {
        table.insert(*name, value.as_slice())?;
    }
    Ok(())
}

/// The Raft rows named `names`, as last committed.
pub fn raft_rows(store: &Store, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
    let txn = store.read()?;
    read_rows(&txn, names)
}

fn read_rows(txn: &ReadTransaction, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
    let table = txn.open_table(RAFT_STATE)?;
    names
        .iter()
        .map(|n| Ok(table.get(*n)?.map(|v| v.value().to_vec())))
        .collect()
}

/// The whole metadata at one moment, with the Raft rows of that same moment.
pub struct Dump {
    /// Every table's rows (see [`restore`]).
    pub data: Vec<u8>,
    /// The Raft rows asked for, as in [`raft_rows`].
    pub rows: Vec<Option<Vec<u8>>>,
}

/// One table's rows as raw key and value bytes.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads every table in one MVCC snapshot (never blocks the writer).
pub fn dump(store: &Store, names: &[&str]) -> Result<Dump> {
    let txn = store.read()?;
    let mut tables: Vec<(String, Rows)> = Vec::new();
    for_each_table!(dump_table, &txn, &mut tables);
    let data = bincode::serialize(&tables).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok(Dump {
        data,
        rows: read_rows(&txn, names)?,
    })
}

fn dump_table<K: Key + 'static, V: Value + 'static>(
    def: TableDefinition<K, V>,
    txn: &ReadTransaction,
    out: &mut Vec<(String, Rows)>,
) -> Result<()> {
    let table = txn.open_table(def)?;
    let mut rows = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        rows.push((
            K::as_bytes(&k.value()).as_ref().to_vec(),
            V::as_bytes(&v.value()).as_ref().to_vec(),
        ));
    }
    out.push((def.name().to_owned(), rows));
    Ok(())
}

/// Replaces every table with a [`dump`]'s `data` and writes `rows`, in one
/// transaction: a failure leaves the store as it was.
pub fn restore(store: &Store, data: &[u8], rows: &[(&str, Vec<u8>)]) -> Result<()> {
    let tables: Vec<(String, Rows)> =
        bincode::deserialize(data).map_err(|e| Error::Corrupt(format!("snapshot: {e}")))?;
    let txn = store.begin_write()?;
    for_each_table!(restore_table, &txn, &tables);
    put_rows(&txn, rows)?;
    txn.commit()?;
    Ok(())
}

fn restore_table<K: Key + 'static, V: Value + 'static>(
    def: TableDefinition<K, V>,
    txn: &WriteTransaction,
    tables: &[(String, Rows)],
) -> Result<()> {
    txn.delete_table(def)?;
    let mut table = txn.open_table(def)?;
    let rows = tables
        .iter()
        .find(|(name, _)| name == def.name())
        .map(|(_, rows)| rows.as_slice())
        .unwrap_or_default();
    for (k, v) in rows {
        table.insert(K::from_bytes(k), V::from_bytes(v))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::records::FileRecord;
    use super::*;

    fn commit(n: u8) -> Op {
        Op::Commit {
            record: FileRecord::test(n, &[n]),
            replaces: None,
            object_content: false,
            replicas: vec![],
            upload_id: String::new(),
        }
    }

    #[test]
    fn entries_apply_with_their_rows_and_a_dump_restores_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_replica(dir.path()).unwrap();
        assert_eq!(
            store.cluster_id().unwrap(),
            None,
            "chosen by the first leader"
        );
        let first = [Op::SetClusterId("c-1".into()), commit(1)];
        let second = [commit(2), Op::SetClusterId("c-2".into())];
        let out = apply_entries(
            &store,
            &[&first, &[], &second],
            &[("applied", b"3".to_vec())],
        )
        .unwrap();
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [2, 0, 2]);
        assert_eq!(store.cluster_id().unwrap().as_deref(), Some("c-1"), "kept");
        assert_eq!(
            raft_rows(&store, &["applied", "membership"]).unwrap(),
            [Some(b"3".to_vec()), None]
        );

        let snap = dump(&store, &["applied"]).unwrap();
        assert_eq!(snap.rows, [Some(b"3".to_vec())]);
        let other_dir = tempfile::tempdir().unwrap();
        let other = Store::open_replica(other_dir.path()).unwrap();
        apply_entries(&other, &[&[commit(9)]], &[]).unwrap();
        restore(&other, &snap.data, &[("applied", b"3".to_vec())]).unwrap();
        assert_eq!(
            other.counts().unwrap(),
            (2, 0),
            "file 9 is gone, 1 and 2 came"
        );
        assert_eq!(other.cluster_id().unwrap().as_deref(), Some("c-1"));
        assert_eq!(other.load().unwrap().refs.len(), 2);
    }
}

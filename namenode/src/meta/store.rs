//! [`Store`]: the redb database. Opening it (creating every table and the cluster id),
//! loading what memory is rebuilt from at start, and reads from MVCC snapshots that
//! never block the writer. Every change goes through `writer.rs`.

use std::collections::HashMap;
use std::path::Path;

use kdfs_core::{BlockId, FileId};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    WriteTransaction,
};

use super::ops::StoredKey;
use super::records::decode_block_key;
use super::records::{FileRecord, Lease, block_key, decode_tombstone, file_key};
use super::tables::{BLOCK_KEYS, BY_TIME, FILES, LEASES, META, RAFT_STATE, REFS, TOMBSTONES};
use crate::error::{Error, Result};

/// Name of the database file inside `--data-dir`.
pub const DB_FILE: &str = "namenode.redb";

/// A file as `GetFile` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Live(FileRecord),
    Deleted { record: FileRecord, deleted_ms: u64 },
}

/// Everything the namenode loads into memory at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub cluster_id: String,
    /// Referenced blocks: id, reference count, length, wanted replication.
    pub refs: Vec<(BlockId, u64, u64, u32)>,
    pub leases: Vec<Lease>,
    /// Blocks of tombstoned files that no live file references, with the deletion time.
    pub dead_blocks: Vec<(BlockId, u64, u64)>,
    pub files: u64,
    pub bytes: u64,
}

/// The redb database.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database in `dir` and makes sure every table exists.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, true)
    }

    /// As [`Store::open`] for a member of an HA group: no cluster id is made here, the
    /// first leader proposes one through the log (`Op::SetClusterId`).
    pub fn open_replica(dir: &Path) -> Result<Self> {
        Self::open_with(dir, false)
    }

    fn open_with(dir: &Path, make_cluster_id: bool) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join(DB_FILE))?;
        let txn = db.begin_write()?;
        {
            txn.open_table(FILES)?;
            txn.open_table(BY_TIME)?;
            txn.open_table(TOMBSTONES)?;
            txn.open_table(REFS)?;
            txn.open_table(LEASES)?;
            super::tables::Tables::open(&txn)?;
            let mut meta = txn.open_table(META)?;
            txn.open_table(RAFT_STATE)?;
            if make_cluster_id && meta.get("cluster_id")?.is_none() {
                let id = uuid::Uuid::new_v4().hyphenated().to_string();
                meta.insert("cluster_id", id.as_str())?;
            }
        }
        txn.commit()?;
        Ok(Self { db })
    }

    /// Reads what the in-memory state is rebuilt from.
    pub fn load(&self) -> Result<Loaded> {
        let txn = self.db.begin_read()?;
        let mut out = Loaded {
            cluster_id: txn
                .open_table(META)?
                .get("cluster_id")?
                .map(|v| v.value().to_owned())
                .ok_or_else(|| Error::Corrupt("no cluster id".into()))?,
            ..Loaded::default()
        };
        let refs = txn.open_table(REFS)?;
        for entry in refs.iter()? {
            let (k, v) = entry?;
            let (n, len, repl) = v.value();
            out.refs.push((block_key(k.value())?, n, len, repl));
        }
        for entry in txn.open_table(LEASES)?.iter()? {
            let (k, v) = entry?;
            out.leases.push(Lease::decode(k.value(), v.value())?);
        }
        for entry in txn.open_table(FILES)?.iter()? {
            let (k, v) = entry?;
            let rec = FileRecord::decode(file_key(&k.value())?, v.value())?;
            out.files += 1;
            out.bytes += rec.size;
        }
        let mut dead = HashMap::new();
        for entry in txn.open_table(TOMBSTONES)?.iter()? {
            let (k, v) = entry?;
            let (deleted_ms, rec) = decode_tombstone(file_key(&k.value())?, v.value())?;
            for (b, len) in rec.blocks {
                if refs.get(b.as_bytes())?.is_none() {
                    let e = dead.entry(b).or_insert((deleted_ms, len));
                    e.0 = e.0.max(deleted_ms);
                }
            }
        }
        out.dead_blocks = dead.into_iter().map(|(b, (t, l))| (b, t, l)).collect();
        Ok(out)
    }

    /// The cluster id, if one was chosen yet (HA: by the first leader).
    pub fn cluster_id(&self) -> Result<Option<String>> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get("cluster_id")?.map(|v| v.value().to_owned()))
    }

    /// The stored block keys (HA), oldest first.
    pub fn block_keys(&self) -> Result<Vec<StoredKey>> {
        let txn = self.db.begin_read()?;
        let mut keys = Vec::new();
        for entry in txn.open_table(BLOCK_KEYS)?.iter()? {
            let (k, v) = entry?;
            let id = k.value();
            keys.push(
                decode_block_key(id, v.value())
                    .ok_or_else(|| Error::Corrupt(format!("block key {id}")))?,
            );
        }
        keys.sort_by_key(|k| k.made_ms);
        Ok(keys)
    }

    /// A consistent snapshot for reads (MVCC: never blocks the writer).
    pub fn read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    /// The one write transaction of a group commit (only the writer thread calls it,
    /// so writes never wait for each other here).
    pub(crate) fn begin_write(&self) -> Result<WriteTransaction> {
        Ok(self.db.begin_write()?)
    }

    /// A file, live or tombstoned.
    pub fn lookup(&self, id: &FileId) -> Result<Option<Lookup>> {
        let txn = self.read()?;
        if let Some(v) = txn.open_table(FILES)?.get(id.as_bytes())? {
            return Ok(Some(Lookup::Live(FileRecord::decode(*id, v.value())?)));
        }
        if let Some(v) = txn.open_table(TOMBSTONES)?.get(id.as_bytes())? {
            let (deleted_ms, record) = decode_tombstone(*id, v.value())?;
            return Ok(Some(Lookup::Deleted { record, deleted_ms }));
        }
        Ok(None)
    }

    /// Newest-first page of live files strictly older than `before` (a time key),
    /// keeping those `keep` accepts. Scans at most `max_scan` entries so that a rare
    /// filter cannot make one call walk the whole table; the returned cursor then
    /// continues where the scan stopped.
    pub fn list(
        &self,
        before: Option<[u8; 40]>,
        limit: usize,
        max_scan: usize,
        mut keep: impl FnMut(&FileRecord) -> bool,
    ) -> Result<(Vec<FileRecord>, Option<[u8; 40]>)> {
        let txn = self.read()?;
        let by_time = txn.open_table(BY_TIME)?;
        let files = txn.open_table(FILES)?;
        let range = match before {
            Some(k) => by_time.range(..k)?,
            None => by_time.range::<[u8; 40]>(..)?,
        };
        let mut out = Vec::new();
        let mut last = None;
        for (scanned, entry) in range.rev().enumerate() {
            if out.len() == limit || scanned == max_scan {
                return Ok((out, last));
            }
            let (k, _) = entry?;
            let key = k.value();
            last = Some(key);
            let id = file_key(&key[8..])?;
            let Some(v) = files.get(id.as_bytes())? else {
                continue;
            };
            let rec = FileRecord::decode(id, v.value())?;
            if keep(&rec) {
                out.push(rec);
            }
        }
        Ok((out, None))
    }

    /// Counts for tests and `/info`: live files and tombstones.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let txn = self.read()?;
        Ok((
            txn.open_table(FILES)?.len()?,
            txn.open_table(TOMBSTONES)?.len()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tables::Tables;
    use super::*;

    /// A store holding files 1..=n, file k created at `1000 + k` ms. The rows are
    /// written directly: how ops change them is `ops.rs`'s concern.
    fn store_with(n: u8) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let txn = store.begin_write().unwrap();
        {
            let mut t = Tables::open(&txn).unwrap();
            for k in 1..=n {
                let record = FileRecord::test(k, &[k]);
                t.files
                    .insert(record.id.as_bytes(), record.encode().as_slice())
                    .unwrap();
                t.by_time.insert(record.time_key(), ()).unwrap();
            }
        }
        txn.commit().unwrap();
        (dir, store)
    }

    fn names(page: &[FileRecord]) -> Vec<String> {
        page.iter().map(|r| r.name.clone()).collect()
    }

    #[test]
    fn listing_pages_newest_first_and_bounds_each_scan() {
        let (_dir, store) = store_with(5);
        let (page, next) = store.list(None, 2, 100, |_| true).unwrap();
        assert_eq!(names(&page), ["f5", "f4"]);
        let next = next.expect("more to come");
        assert_eq!(next, FileRecord::test(4, &[]).time_key());
        let (page, next) = store.list(Some(next), 10, 100, |_| true).unwrap();
        assert_eq!(names(&page), ["f3", "f2", "f1"]);
        assert!(next.is_none(), "the end");

        // A rare filter: the scan stops after `max_scan` entries with a cursor.
        let odd = |r: &FileRecord| r.name != "f4" && r.name != "f5" && r.name != "f3";
        let (page, next) = store.list(None, 10, 2, odd).unwrap();
        assert!(page.is_empty());
        let (page, next) = store.list(next, 10, 2, odd).unwrap();
        assert_eq!(names(&page), ["f2"]);
        let (page, next) = store.list(next, 10, 2, odd).unwrap();
        assert_eq!(names(&page), ["f1"]);
        assert!(next.is_none());
    }

    #[test]
    fn open_creates_one_cluster_id_and_lookups_tell_live_from_unknown() {
        let (dir, store) = store_with(1);
        let id = store.load().unwrap().cluster_id;
        assert!(!id.is_empty());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.cluster_id, id, "kept across restarts");
        assert_eq!((loaded.files, loaded.bytes), (1, 10));
        assert!(matches!(
            store.lookup(&FileRecord::test(1, &[]).id).unwrap(),
            Some(Lookup::Live(r)) if r.name == "f1"
        ));
        assert_eq!(store.lookup(&FileRecord::test(2, &[]).id).unwrap(), None);
    }
}

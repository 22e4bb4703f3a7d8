//! The redb table definitions (the on-disk schema) and [`Tables`], every table a
//! write needs, opened once per group commit rather than once per op.

use redb::{Table, TableDefinition, WriteTransaction};

use crate::error::Result;

/// `"cluster_id"` → the cluster's UUID.
pub(super) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// File id → encoded [`FileRecord`](super::FileRecord).
pub(super) const FILES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("files");
/// [`time_key`](super::records::time_key) of every live file, for newest-first listings.
pub(super) const BY_TIME: TableDefinition<[u8; 40], ()> = TableDefinition::new("by_time");
/// File id → deletion time and encoded record (see `records::encode_tombstone`).
pub(super) const TOMBSTONES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("tombstones");
/// Block id → (live files referencing it, length, largest replication wanted).
pub(super) const REFS: TableDefinition<[u8; 32], (u64, u64, u32)> = TableDefinition::new("refs");
/// Upload id → encoded [`Lease`](super::Lease).
pub(super) const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");

/// Every table an [`Op`](super::Op) may change, open in one write transaction.
pub(super) struct Tables<'txn> {
    pub files: Table<'txn, [u8; 32], &'static [u8]>,
    pub by_time: Table<'txn, [u8; 40], ()>,
    pub tombstones: Table<'txn, [u8; 32], &'static [u8]>,
    pub refs: Table<'txn, [u8; 32], (u64, u64, u32)>,
    pub leases: Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(Self {
            files: txn.open_table(FILES)?,
            by_time: txn.open_table(BY_TIME)?,
            tombstones: txn.open_table(TOMBSTONES)?,
            refs: txn.open_table(REFS)?,
            leases: txn.open_table(LEASES)?,
        })
    }
}

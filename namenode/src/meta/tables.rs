//! The redb table definitions (the on-disk schema) and [`Tables`], every table a
//! write needs, opened once per group commit rather than once per op.

use redb::{Table, TableDefinition, WriteTransaction};

use crate::error::Result;

/// `"cluster_id"` → the cluster's UUID.
pub(super) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Block key id → its creation and expiry times and secret (see
/// `records::encode_block_key`); written only with HA, where every namenode must sign
/// and hand out the same keys (`crate::block_keys`).
pub(super) const BLOCK_KEYS: TableDefinition<u64, &[u8]> = TableDefinition::new("block_keys");
/// With HA: the Raft state machine's own rows (`"applied"`: the last applied log id,
/// `"membership"`: the last membership), written in the transaction of the entries they
/// describe (`replica.rs`).
pub(super) const RAFT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");
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

/// Bucket name → creation time (ms).
pub(super) const BUCKETS: TableDefinition<&str, u64> = TableDefinition::new("buckets");
/// `bucket 0x00 key` → encoded [`ObjectRow`](super::ObjectRow) (see `object_rows.rs`).
pub(super) const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
/// Upload id → encoded [`UploadRow`](super::UploadRow).
pub(super) const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// `bucket 0x00 key 0x00 upload id`, for listings of a bucket's uploads by key.
pub(super) const UPLOAD_KEYS: TableDefinition<&[u8], ()> = TableDefinition::new("upload_keys");
/// `upload id ++ part number` → encoded [`PartRow`](super::PartRow).
pub(super) const PARTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("parts");
/// `file id ++ referrer`: every key and part that refers to a file.
pub(super) const REFERRERS: TableDefinition<&[u8], ()> = TableDefinition::new("referrers");
/// Files committed for the namespace only (no hash-API reference): deleted with their
/// last referrer.
pub(super) const UNPINNED: TableDefinition<[u8; 32], ()> = TableDefinition::new("unpinned");
/// Unpinned files no referrer has claimed yet → their commit time (ms).
pub(super) const UNCLAIMED: TableDefinition<[u8; 32], u64> = TableDefinition::new("unclaimed");

/// Every table an [`Op`](super::Op) may change, open in one write transaction.
pub(super) struct Tables<'txn> {
    pub meta: Table<'txn, &'static str, &'static str>,
    pub block_keys: Table<'txn, u64, &'static [u8]>,
    pub files: Table<'txn, [u8; 32], &'static [u8]>,
    pub by_time: Table<'txn, [u8; 40], ()>,
    pub tombstones: Table<'txn, [u8; 32], &'static [u8]>,
    pub refs: Table<'txn, [u8; 32], (u64, u64, u32)>,
    pub leases: Table<'txn, &'static str, &'static [u8]>,
    pub buckets: Table<'txn, &'static str, u64>,
    pub objects: Table<'txn, &'static [u8], &'static [u8]>,
    pub uploads: Table<'txn, &'static str, &'static [u8]>,
    pub upload_keys: Table<'txn, &'static [u8], ()>,
    pub parts: Table<'txn, &'static [u8], &'static [u8]>,
    pub referrers: Table<'txn, &'static [u8], ()>,
    pub unpinned: Table<'txn, [u8; 32], ()>,
    pub unclaimed: Table<'txn, [u8; 32], u64>,
}

impl<'txn> Tables<'txn> {
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(Self {
            meta: txn.open_table(META)?,
            block_keys: txn.open_table(BLOCK_KEYS)?,
            files: txn.open_table(FILES)?,
            by_time: txn.open_table(BY_TIME)?,
            tombstones: txn.open_table(TOMBSTONES)?,
            refs: txn.open_table(REFS)?,
            leases: txn.open_table(LEASES)?,
            buckets: txn.open_table(BUCKETS)?,
            objects: txn.open_table(OBJECTS)?,
            uploads: txn.open_table(UPLOADS)?,
            upload_keys: txn.open_table(UPLOAD_KEYS)?,
            parts: txn.open_table(PARTS)?,
            referrers: txn.open_table(REFERRERS)?,
            unpinned: txn.open_table(UNPINNED)?,
            unclaimed: txn.open_table(UNCLAIMED)?,
        })
    }
}

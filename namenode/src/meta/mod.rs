//! Durable metadata: the namenode's embedded ACID store (redb) behind one
//! group-commit writer.
//!
//! What is persisted, one table each (`tables.rs`):
//! - `meta`: the cluster id, generated at first start.
//! - `files`: live file records by file id.
//! - `by_time`: `(created_ms, file id)` for newest-first listings.
//! - `tombstones`: deleted file records with their deletion time, purged after the
//!   retention.
//! - `refs`: per block, how many live files reference it, its length and the largest
//!   replication any of them asked for (dedup: one block, many files).
//! - `leases`: open uploads (id, name, content type, replication, start, expiry).
//! - the bucket/key namespace: `buckets`, `objects` (by bucket then key), `uploads`
//!   and `upload_keys` (multipart uploads in progress), `parts`, `referrers` (which
//!   keys and parts point to each file), `unpinned` (files stored for the namespace
//!   only) and `unclaimed` (those nothing points to yet); see `object_rows.rs`.
//!
//! Block *locations* are never persisted: they come back from datanode reports.
//!
//! The parts, each depending only on those above it:
//! - `records.rs`: the row types ([`FileRecord`], [`Lease`]) and their byte encoding.
//! - `tables.rs`: the table definitions, opened together once per transaction.
//! - `ops.rs`: the changes ([`Op`]) and how one is applied inside a transaction;
//!   `object_rows.rs`, `object_ops.rs` and `object_reads.rs` the same for the
//!   bucket/key namespace (rows and keys, changes, listings).
//! - `store.rs`: [`Store`], opening the database, loading at start and every read.
//! - `writer.rs`: [`Writer`], the group commit: one thread drains every waiting
//!   request into one transaction and one fsync, applies the in-memory effects in the
//!   same order and only then answers. A change is durable before it is acknowledged
//!   and memory never runs ahead of the disk. Why redb and why a group commit:
//!   docs/decisions/0001-redb-namenode-metadata.md.

mod object_ops;
mod object_reads;
mod object_rows;
mod ops;
mod records;
mod replica;
mod store;
mod tables;
mod writer;

pub use object_ops::{Answer, Completion, ObjectEffect, ObjectOp};
pub use object_reads::{Listing, ListingStart, decode_token, encode_token};
pub use object_rows::{ObjectRow, PartRow, UploadRow, UserMetadata};
pub use ops::{Effect, Op, StoredKey};
pub use records::{FileRecord, Lease};
pub use replica::{apply_entries, dump, raft_rows, restore};
pub use store::{Lookup, Store};
pub use writer::{OnDurable, Replicate, Reply, Writer};

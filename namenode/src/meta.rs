//! Durable metadata: the namenode's embedded ACID store (redb) and its group-commit writer.
//!
//! What is persisted, one table each:
//! - `meta`: the cluster id, generated at first start.
//! - `files`: live file records by file id.
//! - `by_time`: `(created_ms, file id)` for newest-first listings.
//! - `tombstones`: deleted file records with their deletion time, purged after the
//!   retention.
//! - `refs`: per block, how many live files reference it, its length and the largest
//!   replication any of them asked for (dedup: one block, many files).
//! - `leases`: open uploads (id, name, content type, replication, start, expiry).
//!
//! Block *locations* are never persisted: they come back from datanode reports.
//!
//! All writes go through one writer thread ([`Writer`]) that drains every request
//! waiting in its queue into one redb transaction and one fsync ("group commit"), then
//! applies the in-memory effects in the same order and only then answers the callers.
//! So a commit or delete is durable before it is acknowledged, the in-memory state
//! never runs ahead of the disk, and thousands of small commits per second share a
//! handful of fsyncs. Lease rows nobody waits for ride along with the next change
//! somebody waits for, and a lease row written and ended within one batch is not
//! written at all (see [`gather`]).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdfs_core::{BlockId, FileId};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};
use smallvec::{SmallVec, smallvec};
use tokio::sync::{mpsc, oneshot, watch};

use crate::blockmap::NodeIdx;
use crate::error::{Error, Result};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const FILES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("files");
const BY_TIME: TableDefinition<[u8; 40], ()> = TableDefinition::new("by_time");
const TOMBSTONES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("tombstones");
const REFS: TableDefinition<[u8; 32], (u64, u64, u32)> = TableDefinition::new("refs");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");

/// Name of the database file inside `--data-dir`.
pub const DB_FILE: &str = "namenode.redb";
/// Most requests one group commit carries: bounds the latency of the first one. A
/// submission of several ops ([`Writer::submit_all`]) is taken whole, so a batch can
/// pass it by that submission's size less one.
pub const MAX_BATCH: usize = 2048;
/// Submissions that may wait for the writer before callers are slowed down.
pub const WRITER_QUEUE: usize = 8192;
/// Longest a change nobody waits for (a lease row of [`Writer::enqueue`]) is held back
/// so that it rides along with the next change somebody waits for, instead of costing
/// a transaction and an fsync of its own.
pub const LAZY_WAIT: Duration = Duration::from_millis(20);

/// A file's durable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub id: FileId,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub created_ms: i64,
    pub replication: u32,
    /// Blocks in file order with their lengths.
    pub blocks: Vec<(BlockId, u64)>,
}

impl FileRecord {
    /// Each distinct block once, with its length: references are counted per file.
    pub fn distinct_blocks(&self) -> Vec<(BlockId, u64)> {
        let mut seen = BTreeSet::new();
        self.blocks
            .iter()
            .filter(|(b, _)| seen.insert(*b))
            .copied()
            .collect()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.name.len() + self.blocks.len() * 40);
        out.push(1u8);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.replication.to_le_bytes());
        put_str(&mut out, &self.name);
        put_str(&mut out, &self.content_type);
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for (b, len) in &self.blocks {
            out.extend_from_slice(b.as_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        out
    }

    fn decode(id: FileId, raw: &[u8]) -> Result<Self> {
        let mut r = Reader(raw);
        if r.u8()? != 1 {
            return Err(Error::Corrupt(format!("file {id}: unknown record version")));
        }
        let created_ms = r.u64()? as i64;
        let size = r.u64()?;
        let replication = r.u32()?;
        let name = r.str()?;
        let content_type = r.str()?;
        let n = r.u32()? as usize;
        let mut blocks = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            let b = BlockId::from_slice(r.take(32)?)
                .map_err(|e| Error::Corrupt(format!("file {id}: {e}")))?;
            blocks.push((b, r.u64()?));
        }
        Ok(Self {
            id,
            name,
            size,
            content_type,
            created_ms,
            replication,
            blocks,
        })
    }

    fn time_key(&self) -> [u8; 40] {
        time_key(self.created_ms, &self.id)
    }
}

/// The listing key: big-endian creation time then id, so byte order is time order.
pub fn time_key(created_ms: i64, id: &FileId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&(created_ms.max(0) as u64).to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

/// An open upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub replication: u32,
    /// When the upload began (ms since the epoch): deletes delivered after this may
    /// have hit blocks it wrote (see `gc.rs`).
    pub begin_ms: u64,
    pub expires_ms: u64,
}

impl Lease {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(1u8);
        out.extend_from_slice(&self.begin_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        out.extend_from_slice(&self.replication.to_le_bytes());
        put_str(&mut out, &self.name);
        put_str(&mut out, &self.content_type);
        out
    }

    fn decode(id: &str, raw: &[u8]) -> Result<Self> {
        let mut r = Reader(raw);
        if r.u8()? != 1 {
            return Err(Error::Corrupt(format!("lease {id}: unknown version")));
        }
        Ok(Self {
            id: id.to_owned(),
            begin_ms: r.u64()?,
            expires_ms: r.u64()?,
            replication: r.u32()?,
            name: r.str()?,
            content_type: r.str()?,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::Corrupt("record truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| Error::Corrupt("string is not UTF-8".into()))
    }
}

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
        std::fs::create_dir_all(dir)?;
        let db = Database::create(dir.join(DB_FILE))?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            txn.open_table(FILES)?;
            txn.open_table(BY_TIME)?;
            txn.open_table(TOMBSTONES)?;
            txn.open_table(REFS)?;
            txn.open_table(LEASES)?;
            if meta.get("cluster_id")?.is_none() {
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

    /// A consistent snapshot for reads (MVCC: never blocks the writer).
    pub fn read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
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

    /// Applies one op inside a group commit's transaction. `skip_lease`: the op's
    /// lease is written and ended within this batch, so the lease table is left alone
    /// (see [`transient_leases`]).
    fn apply(t: &mut Tables<'_>, op: &Op, skip_lease: bool) -> Result<Effect> {
        match op {
            Op::Commit {
                record, upload_id, ..
            } => {
                if !skip_lease {
                    t.leases.remove(upload_id.as_str())?;
                }
                if let Some(v) = t.files.get(record.id.as_bytes())? {
                    let existing = FileRecord::decode(record.id, v.value())?;
                    return Ok(Effect::Committed {
                        record: existing,
                        existed: true,
                    });
                }
                t.files
                    .insert(record.id.as_bytes(), record.encode().as_slice())?;
                t.by_time.insert(record.time_key(), ())?;
                t.tombstones.remove(record.id.as_bytes())?;
                for (b, len) in record.distinct_blocks() {
                    let (n, _, repl) = t
                        .refs
                        .get(b.as_bytes())?
                        .map(|v| v.value())
                        .unwrap_or((0, len, 0));
                    t.refs
                        .insert(b.as_bytes(), (n + 1, len, repl.max(record.replication)))?;
                }
                Ok(Effect::Committed {
                    record: record.clone(),
                    existed: false,
                })
            }
            Op::Delete { id, now_ms } => {
                let Some(v) = t.files.remove(id.as_bytes())? else {
                    if t.tombstones.get(id.as_bytes())?.is_some() {
                        return Ok(Effect::Deleted {
                            record: None,
                            deleted_ms: *now_ms,
                        });
                    }
                    return Err(Error::NotFound(format!("file {id} not found")));
                };
                let record = FileRecord::decode(*id, v.value())?;
                drop(v);
                t.by_time.remove(record.time_key())?;
                let mut stone = now_ms.to_le_bytes().to_vec();
                stone.extend_from_slice(&record.encode());
                t.tombstones.insert(id.as_bytes(), stone.as_slice())?;
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
                Ok(Effect::Deleted {
                    record: Some(record),
                    deleted_ms: *now_ms,
                })
            }
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
            Op::PurgeTombstones { before_ms } => {
                let mut purged = Vec::new();
                t.tombstones.retain(|k, v| {
                    let old = v.len() >= 8
                        && u64::from_le_bytes(v[..8].try_into().expect("8 bytes")) < *before_ms;
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

    /// Counts for tests and `/info`: live files and tombstones.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let txn = self.read()?;
        Ok((
            txn.open_table(FILES)?.len()?,
            txn.open_table(TOMBSTONES)?.len()?,
        ))
    }
}

fn decode_tombstone(id: FileId, raw: &[u8]) -> Result<(u64, FileRecord)> {
    if raw.len() < 8 {
        return Err(Error::Corrupt(format!("tombstone {id} truncated")));
    }
    let deleted_ms = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
    Ok((deleted_ms, FileRecord::decode(id, &raw[8..])?))
}

fn block_key(k: [u8; 32]) -> Result<BlockId> {
    BlockId::from_slice(&k).map_err(|e| Error::Corrupt(e.to_string()))
}

fn file_key(k: &[u8]) -> Result<FileId> {
    FileId::from_slice(k).map_err(|e| Error::Corrupt(e.to_string()))
}

/// A change to the durable state.
#[derive(Debug, Clone)]
pub enum Op {
    /// Store a file record (idempotent: existing content keeps its first record).
    Commit {
        record: FileRecord,
        /// Trusted pipeline acks per block (interned nodes), applied to the block map
        /// once durable.
        replicas: Vec<Vec<NodeIdx>>,
        /// The lease, ended in the same transaction. Several commits of one batch
        /// may name it: the first removes its row, the others find none.
        upload_id: String,
    },
    /// Tombstone a live file.
    Delete {
        id: FileId,
        now_ms: u64,
    },
    PutLease(Lease),
    EndLease(String),
    PurgeTombstones {
        before_ms: u64,
    },
}

/// What a durable change did; applied to the in-memory state in commit order.
#[derive(Debug, Clone)]
pub enum Effect {
    Committed {
        record: FileRecord,
        existed: bool,
    },
    /// `record` is `None` when the file was already deleted.
    Deleted {
        record: Option<FileRecord>,
        deleted_ms: u64,
    },
    Purged(Vec<FileId>),
    Done,
}

struct Request {
    op: Op,
    /// Somebody waits for this change to be durable ([`Writer::submit`]).
    waited_for: bool,
    reply: oneshot::Sender<Result<Effect>>,
}

/// One entry of the writer's queue: the requests of one submission, which the writer
/// takes whole, so they land in the same group commit.
type Submission = SmallVec<[Request; 1]>;

/// The handle callers use to submit durable changes to the group-commit writer.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Submission>,
    /// The writer's progress as a sequence number: odd from the moment a batch starts
    /// being written until every change of it has been applied to memory
    /// ([`OnDurable`]), even in between. See [`Writer::settled`].
    progress: Arc<watch::Sender<u64>>,
}

/// Called on the writer thread, in commit order, once a batch is durable.
pub type OnDurable = Box<dyn Fn(&Op, &Effect) + Send + 'static>;

impl Writer {
    /// Starts the writer thread. It stops when every `Writer` handle is dropped, after
    /// finishing what was queued; the returned receiver fires then (the database is
    /// closed once it fired and every other `Arc<Store>` is gone).
    pub fn spawn(store: Arc<Store>, on_durable: OnDurable) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        let progress = Arc::new(watch::Sender::new(0));
        let writer_progress = progress.clone();
        std::thread::Builder::new()
            .name("kdfs-meta-writer".into())
            .spawn(move || {
                writer_loop(store, rx, on_durable, &writer_progress);
                let _ = done_tx.send(());
            })
            .expect("spawning the metadata writer thread");
        (Self { tx, progress }, done_rx)
    }

    /// Waits (at most `limit`) until the batch being written when it was called, if
    /// any, has been applied to memory. A change is visible in the store a moment
    /// before it is applied to memory; a reader that found the two disagreeing (a live
    /// record whose blocks are not in the block map) calls this and reads again, and
    /// then sees both agree. Returns whether it settled within `limit`.
    pub async fn settled(&self, limit: Duration) -> bool {
        let mut rx = self.progress.subscribe();
        let now = *rx.borrow_and_update();
        if now.is_multiple_of(2) {
            return true;
        }
        matches!(
            tokio::time::timeout(limit, rx.wait_for(|s| *s > now)).await,
            Ok(Ok(_))
        )
    }

    /// Submits `op` and waits until it is durable and applied. Cancellation-safe in
    /// the sense that matters: once submitted, the change is made (or fails) whether
    /// or not this future is still polled.
    pub async fn submit(&self, op: Op) -> Result<Effect> {
        self.submit_all(vec![op])
            .await?
            .pop()
            .expect("one result per op")
    }

    /// Submits `ops` together and waits until they are durable and applied: they go
    /// into one group commit, in this order, so a batch of commits costs one
    /// transaction and one fsync. One result per op; the outer error only if the
    /// writer stopped. Cancellation-safe as [`Writer::submit`].
    pub async fn submit_all(&self, ops: Vec<Op>) -> Result<Vec<Result<Effect>>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let (submission, replies): (Submission, Vec<_>) = ops
            .into_iter()
            .map(|op| {
                let (reply, rx) = oneshot::channel();
                let req = Request {
                    op,
                    waited_for: true,
                    reply,
                };
                (req, rx)
            })
            .unzip();
        self.send(submission).await?;
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(rx.await.map_err(|_| stopped())?);
        }
        Ok(out)
    }

    async fn send(&self, submission: Submission) -> Result<()> {
        self.tx.send(submission).await.map_err(|_| stopped())
    }
}

fn stopped() -> Error {
    Error::Unavailable("metadata writer stopped".into())
}

impl Writer {
    /// Queues `op` without waiting for it to be durable: it lands in a group commit
    /// within [`LAZY_WAIT`], in queue order (so no later than any later change that
    /// depends on it). Only waits for queue space, which is the back-pressure.
    pub async fn enqueue(&self, op: Op) -> Result<()> {
        let (reply, _) = oneshot::channel();
        self.send(smallvec![Request {
            op,
            waited_for: false,
            reply,
        }])
        .await
    }
}

fn writer_loop(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<Submission>,
    on_durable: OnDurable,
    progress: &watch::Sender<u64>,
) {
    // Only for timed receives; every other wait of this thread is a plain block.
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a timer for the metadata writer thread");
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut open = true;
    while open {
        match rx.blocking_recv() {
            Some(first) => batch.extend(first),
            None => break,
        }
        open = gather(&timer, &mut rx, &mut batch);
        let size = batch.len();
        progress.send_modify(|s| *s += 1); // Odd: the store may now run ahead of memory.
        match write_batch(&store, &batch) {
            Ok(results) => {
                metrics::counter!("kdfs_namenode_group_commits_total").increment(1);
                metrics::histogram!("kdfs_namenode_group_commit_size").record(size as f64);
                for (req, res) in batch.drain(..).zip(results) {
                    if let Ok(effect) = &res {
                        on_durable(&req.op, effect);
                    }
                    let _ = req.reply.send(res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = size, "metadata commit failed");
                let msg = e.to_string();
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(Error::Unavailable(format!(
                        "metadata commit failed: {msg}"
                    ))));
                }
            }
        }
        progress.send_modify(|s| *s += 1); // Even: memory has caught up.
    }
}

/// Moves every queued submission into `batch` (until it holds [`MAX_BATCH`]
/// requests); `false` once every sender is gone.
fn drain(rx: &mut mpsc::Receiver<Submission>, batch: &mut Vec<Request>) -> bool {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(s) => batch.extend(s),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

/// Completes a group commit's batch, which holds its first request: everything queued
/// and, while nobody in the batch waits for it (lease rows only), whatever arrives
/// within [`LAZY_WAIT`] until a request somebody waits for does. A small upload's
/// lease row then lands in the same batch as its commit, where neither is written
/// ([`transient_leases`]), and a lone client pays one fsync per file instead of two
/// (`kdfs bench --scenarios namenode --concurrency 1`: 0.5 -> 1.0 creates per fsync,
/// writer CPU per create 360 -> 270 µs). Returns `false` once every sender is gone
/// (the batch is then the last one).
///
/// Lingering for more requests once somebody waits was tried too: with 64 clients it
/// doubled the creates per fsync but did not lower the writer's CPU per create (its
/// cost is the B-tree pages each create dirties, not the fsync count), so it is not
/// done.
fn gather(
    timer: &tokio::runtime::Runtime,
    rx: &mut mpsc::Receiver<Submission>,
    batch: &mut Vec<Request>,
) -> bool {
    let start = Instant::now();
    if !drain(rx, batch) {
        return false;
    }
    while batch.len() < MAX_BATCH && !batch.iter().any(|r| r.waited_for) {
        let Some(left) = LAZY_WAIT.checked_sub(start.elapsed()) else {
            return true;
        };
        // The timeout is made inside `block_on`: a timer needs the runtime's context.
        match timer.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
            Ok(Some(s)) => batch.extend(s),
            Ok(None) => return false,
            Err(_) => return true,
        }
        if !drain(rx, batch) {
            return false;
        }
    }
    true
}

/// Every table, opened once per group commit rather than once per op.
struct Tables<'txn> {
    files: Table<'txn, [u8; 32], &'static [u8]>,
    by_time: Table<'txn, [u8; 40], ()>,
    tombstones: Table<'txn, [u8; 32], &'static [u8]>,
    refs: Table<'txn, [u8; 32], (u64, u64, u32)>,
    leases: Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(Self {
            files: txn.open_table(FILES)?,
            by_time: txn.open_table(BY_TIME)?,
            tombstones: txn.open_table(TOMBSTONES)?,
            refs: txn.open_table(REFS)?,
            leases: txn.open_table(LEASES)?,
        })
    }
}

/// The lease id an op writes or ends, if any: `(id, true)` for a write.
fn lease_of(op: &Op) -> Option<(&str, bool)> {
    match op {
        Op::PutLease(l) => Some((l.id.as_str(), true)),
        Op::Commit { upload_id, .. } => Some((upload_id.as_str(), false)),
        Op::EndLease(id) => Some((id.as_str(), false)),
        _ => None,
    }
}

/// Which ops of a batch need no lease-table work: a lease written and ended within
/// the same batch (the usual small upload: BeginUpload's row and CommitFile land in
/// one group commit) never reaches the disk, as both happen in one transaction.
/// Lease ids are fresh UUIDs, so such a row cannot have existed before the batch.
fn transient_leases(batch: &[Request]) -> Vec<bool> {
    let mut put: HashMap<&str, usize> = HashMap::new();
    let mut skip = vec![false; batch.len()];
    for (i, r) in batch.iter().enumerate() {
        match lease_of(&r.op) {
            Some((id, true)) => {
                put.insert(id, i);
            }
            Some((id, false)) => {
                if let Some(p) = put.remove(id) {
                    skip[p] = true;
                    skip[i] = true;
                }
            }
            None => {}
        }
    }
    skip
}

/// Applies every request of a batch in one transaction. A request that fails on its
/// own (unknown file) fails alone: ops check before they change anything.
fn write_batch(store: &Store, batch: &[Request]) -> Result<Vec<Result<Effect>>> {
    let txn = store.db.begin_write()?;
    let skip = transient_leases(batch);
    let results = {
        let mut tables = Tables::open(&txn)?;
        batch
            .iter()
            .zip(skip)
            .map(|(r, skip)| Store::apply(&mut tables, &r.op, skip))
            .collect::<Vec<_>>()
    };
    // Only "not found" is decided before an op changes anything; any other failure
    // may have left an op half-applied, so it aborts the whole batch.
    if let Some(Err(e)) = results
        .iter()
        .find(|r| matches!(r, Err(e) if !matches!(e, Error::NotFound(_))))
    {
        return Err(Error::Corrupt(e.to_string()));
    }
    txn.commit()?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8, blocks: &[u8]) -> FileRecord {
        FileRecord {
            id: FileId::from_slice(&[n; 32]).unwrap(),
            name: format!("f{n}"),
            size: blocks.len() as u64 * 10,
            content_type: "text/plain".into(),
            created_ms: 1000 + n as i64,
            replication: 3,
            blocks: blocks
                .iter()
                .map(|b| (BlockId::from_slice(&[*b; 32]).unwrap(), 10))
                .collect(),
        }
    }

    #[test]
    fn records_round_trip() {
        let r = record(7, &[1, 2, 1]);
        assert_eq!(FileRecord::decode(r.id, &r.encode()).unwrap(), r);
        assert!(FileRecord::decode(r.id, &r.encode()[..10]).is_err());
        assert_eq!(r.distinct_blocks().len(), 2);
    }

    #[test]
    fn a_lease_written_and_ended_in_one_batch_leaves_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = |id: &str| Lease {
            id: id.into(),
            name: "n".into(),
            content_type: "text/plain".into(),
            replication: 3,
            begin_ms: 1,
            expires_ms: 2,
        };
        let req = |op| Request {
            op,
            waited_for: true,
            reply: oneshot::channel().0,
        };
        let leases = |s: &Store| -> Vec<String> {
            s.load().unwrap().leases.into_iter().map(|l| l.id).collect()
        };
        let batch = [
            req(Op::PutLease(lease("a"))),
            req(Op::PutLease(lease("b"))),
            req(Op::Commit {
                record: record(1, &[1]),
                replicas: vec![],
                upload_id: "a".into(),
            }),
        ];
        let out = write_batch(&store, &batch).unwrap();
        assert!(matches!(
            out[2],
            Ok(Effect::Committed { existed: false, .. })
        ));
        assert_eq!(leases(&store), vec!["b"]);
        assert_eq!(store.load().unwrap().files, 1);
        // A lease written by an earlier batch is removed from the table.
        write_batch(&store, &[req(Op::EndLease("b".into()))]).unwrap();
        assert!(leases(&store).is_empty());
    }

    #[tokio::test]
    async fn ops_submitted_together_share_one_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (w, done) = Writer::spawn(store.clone(), Box::new(|_, _| {}));
        let commit = |r: FileRecord| Op::Commit {
            record: r,
            replicas: vec![],
            upload_id: "u".into(),
        };
        let mut ops: Vec<Op> = (1..=100).map(|n| commit(record(n, &[n]))).collect();
        ops.push(commit(record(7, &[7])));
        let out = w.submit_all(ops).await.unwrap();
        assert_eq!(out.len(), 101);
        assert!(
            out[..100]
                .iter()
                .all(|e| matches!(e, Ok(Effect::Committed { existed: false, .. })))
        );
        assert!(
            matches!(out[100], Ok(Effect::Committed { existed: true, .. })),
            "the same file twice in one batch: the second finds the first"
        );
        // Every batch moves the progress counter by two, the second step just after
        // the replies.
        assert!(w.settled(Duration::from_secs(5)).await);
        assert_eq!(*w.progress.borrow(), 2, "one group commit");
        assert!(w.submit_all(Vec::new()).await.unwrap().is_empty());
        assert_eq!(store.load().unwrap().files, 100);
        drop((w, store));
        done.await.unwrap();
    }

    #[tokio::test]
    async fn commit_delete_and_refcounts_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cluster_id;
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            cluster_id = store.load().unwrap().cluster_id;
            let (w, done) = Writer::spawn(store.clone(), Box::new(|_, _| {}));
            let commit = |r: FileRecord| Op::Commit {
                record: r,
                replicas: vec![],
                upload_id: String::new(),
            };
            w.submit(commit(record(1, &[1, 2]))).await.unwrap();
            w.submit(commit(record(2, &[2, 3]))).await.unwrap();
            let again = w.submit(commit(record(1, &[1, 2]))).await.unwrap();
            assert!(matches!(again, Effect::Committed { existed: true, .. }));
            w.submit(Op::Delete {
                id: record(1, &[]).id,
                now_ms: 5000,
            })
            .await
            .unwrap();
            let twice = w
                .submit(Op::Delete {
                    id: record(1, &[]).id,
                    now_ms: 6000,
                })
                .await
                .unwrap();
            assert!(matches!(twice, Effect::Deleted { record: None, .. }));
            let unknown = w
                .submit(Op::Delete {
                    id: record(9, &[]).id,
                    now_ms: 6000,
                })
                .await;
            assert!(matches!(unknown, Err(Error::NotFound(_))));
            drop((w, store));
            done.await.unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.cluster_id, cluster_id);
        assert_eq!(loaded.files, 1);
        let mut refs: Vec<_> = loaded
            .refs
            .iter()
            .map(|r| (r.0.as_bytes()[0], r.1))
            .collect();
        refs.sort();
        assert_eq!(refs, vec![(2, 1), (3, 1)]);
        assert_eq!(
            loaded.dead_blocks.len(),
            1,
            "block 1 is only in the tombstone"
        );
        assert!(matches!(
            store.lookup(&record(1, &[]).id).unwrap(),
            Some(Lookup::Deleted {
                deleted_ms: 5000,
                ..
            })
        ));
        let (page, next) = store.list(None, 10, 1000, |_| true).unwrap();
        assert_eq!(page.len(), 1);
        assert!(next.is_none());
    }
}

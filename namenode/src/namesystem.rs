//! The namesystem: every namenode operation on domain types, tying together the
//! durable store (`meta.rs`), membership (`cluster.rs`), the block map
//! (`blockmap.rs`), garbage collection (`gc.rs`), re-replication (`replication.rs`)
//! and safe mode. The gRPC layer (`service.rs`) only converts messages.
//!
//! Locks, always taken in this order and never held across an `.await`:
//! `cluster` → block-map shard → `gc` → `repl`; `leases` alone. The metadata writer
//! thread takes block-map shards, `gc` and `repl` (never `cluster`) to apply durable
//! changes in commit order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kdfs_core::{BlockId, DatanodeId, FileId};
use kdfs_proto::transport::MAX_BATCH_FILES;
use tokio::time::Instant;

use crate::blockmap::{BlockMap, IdBuild, NodeIdx, Stats};
use crate::cluster::{Beat, Cluster, Cmd, Load, Node, NodeState, Registration};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::gc::Gc;
use crate::meta::{Effect, FileRecord, Lease, Lookup, Op, Store, Writer};
use crate::placement;
use crate::replication::{QueueStats, Replication};

/// Largest file name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 1024;
/// Largest content type, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;
/// Default and largest page of a listing.
pub const DEFAULT_LIST_LIMIT: usize = 100;
pub const MAX_LIST_LIMIT: usize = 1000;
/// Entries one listing call may scan while filtering by name.
pub const MAX_LIST_SCAN: usize = 100_000;
/// Queued commands (copies, trims) handed out per heartbeat reply, at most.
pub const MAX_COMMANDS_PER_REPLY: usize = 5_000;
/// Datanodes to exclude per allocation request, at most.
pub const MAX_EXCLUDE: usize = 64;
/// Longest a file read waits for the metadata writer to apply a change the store
/// already shows (`NameSystem::get_file`); a batch is applied within microseconds of
/// being durable, so this only bounds a writer that stopped.
const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// Settings derived from [`Config`], in the units the code uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub replication: u32,
    pub min_replicas: u32,
    pub block_size: u64,
    pub heartbeat_interval: Duration,
    pub stale_after: Duration,
    pub dead_after: Duration,
    pub block_report_interval: Duration,
    pub lease_ttl: Duration,
    pub tombstone_retention: Duration,
    pub delete_grace: Duration,
    pub safe_mode_threshold: f64,
    pub safe_mode_timeout: Duration,
    pub safe_mode_extension: Duration,
    pub replication_streams: u32,
    pub replication_timeout: Duration,
}

impl From<&Config> for Settings {
    fn from(c: &Config) -> Self {
        Self {
            replication: c.replication,
            min_replicas: c.min_replicas(),
            block_size: c.block_size.bytes().max(1),
            heartbeat_interval: c.heartbeat_interval.get(),
            stale_after: c.stale_after(),
            dead_after: c.dead_after.get(),
            block_report_interval: c.block_report_interval.get(),
            lease_ttl: c.lease_ttl.get(),
            tombstone_retention: c.tombstone_retention.get(),
            delete_grace: c.delete_grace.get(),
            safe_mode_threshold: c.safe_mode_threshold,
            safe_mode_timeout: c.safe_mode_timeout.get(),
            safe_mode_extension: c.safe_mode_extension(),
            replication_streams: c.replication_streams,
            replication_timeout: c.replication_timeout.get(),
        }
    }
}

/// Wall-clock milliseconds that advance with tokio's clock, so paused-time tests move
/// leases and tombstones along with heartbeats.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_ms: u64,
}

impl Clock {
    pub fn new() -> Self {
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            start: Instant::now(),
            start_ms,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.start_ms + self.start.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// State the metadata writer thread updates after each durable change.
struct Shared {
    blocks: BlockMap,
    gc: Mutex<Gc>,
    repl: Mutex<Replication>,
    files: AtomicU64,
    bytes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its structure consistent between statements that
    // can panic, so a poisoned lock is taken over.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Applies a durable change to memory (runs on the writer thread, in commit order).
    fn on_durable(&self, op: &Op, effect: &Effect) {
        match (op, effect) {
            (
                Op::Commit {
                    record: submitted,
                    replicas,
                    ..
                },
                Effect::Committed { record, existed },
            ) => {
                let mut dirty = Vec::with_capacity(record.blocks.len());
                if !existed {
                    self.files.fetch_add(1, Ordering::Relaxed);
                    self.bytes.fetch_add(record.size, Ordering::Relaxed);
                    for (b, len) in record.distinct_blocks() {
                        self.blocks.add_ref(b, len, record.replication);
                        let adopted = lock(&self.gc).referenced(&b);
                        for n in adopted {
                            self.blocks.add_location(&b, n);
                        }
                    }
                }
                // The acks belong to the blocks as submitted (an existing record of the
                // same content may have been cut into blocks of another size).
                for ((b, _), acks) in submitted.blocks.iter().zip(replicas) {
                    for n in acks {
                        self.blocks.add_location(b, *n);
                    }
                    dirty.push(*b);
                }
                metrics::counter!("kdfs_namenode_commits_total").increment(1);
                lock(&self.repl).mark_dirty(dirty);
            }
            (
                Op::Delete { .. },
                Effect::Deleted {
                    record: Some(record),
                    deleted_ms,
                },
            ) => {
                self.files.fetch_sub(1, Ordering::Relaxed);
                self.bytes.fetch_sub(record.size, Ordering::Relaxed);
                metrics::counter!("kdfs_namenode_deletes_total").increment(1);
                for (b, _) in record.distinct_blocks() {
                    if let Some((_, locs)) = self.blocks.release(&b) {
                        lock(&self.gc).block_dead(b, &locs, *deleted_ms);
                    }
                }
            }
            _ => {}
        }
    }
}

/// A datanode's location for replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub id: DatanodeId,
    pub address: String,
}

/// A command resolved for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Delete(Vec<BlockId>),
    Replicate {
        block: BlockId,
        length: u64,
        targets: Vec<Location>,
    },
}

/// A replication a datanode reports as failed (with its heartbeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCopy {
    pub block: BlockId,
    /// Targets that hold no new replica.
    pub targets: Vec<DatanodeId>,
    /// The transfer failed as a whole (the source could not send it).
    pub whole: bool,
}

/// One file of a batch commit ([`NameSystem::commit_files`]).
#[derive(Debug, Clone)]
pub struct FileToCommit {
    pub name: String,
    /// Empty means `application/octet-stream`.
    pub content_type: String,
    pub id: FileId,
    /// Bytes; the sum of the block lengths.
    pub size: u64,
    pub blocks: Vec<CommittedBlock>,
}

/// A block acknowledged by an upload's pipeline.
#[derive(Debug, Clone)]
pub struct CommittedBlock {
    pub id: BlockId,
    pub length: u64,
    pub replicas: Vec<DatanodeId>,
}

/// A block of a file with its live replicas, best first.
#[derive(Debug, Clone)]
pub struct LocatedBlock {
    pub id: BlockId,
    pub length: u64,
    pub offset: u64,
    pub replicas: Vec<Location>,
}

/// `GetFile`'s answer.
#[derive(Debug, Clone)]
pub enum FileView {
    Live {
        record: FileRecord,
        blocks: Vec<LocatedBlock>,
    },
    Deleted {
        record: FileRecord,
        deleted_ms: u64,
    },
}

/// A datanode that runs as a given Kubernetes pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDatanode {
    pub id: DatanodeId,
    pub zone: String,
    /// When it last registered, in Unix milliseconds.
    pub registered_ms: u64,
}

/// One datanode in `ClusterInfo`.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub node: Node,
    pub blocks: u64,
    pub since_heartbeat: Duration,
}

/// `ClusterInfo`'s answer.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub cluster_id: String,
    pub safe_mode: bool,
    pub reported_fraction: f64,
    pub files: u64,
    pub bytes: u64,
    pub stats: Stats,
    pub nodes: Vec<NodeStatus>,
    pub queues: QueueStats,
}

/// The namenode's state and operations.
pub struct NameSystem {
    pub settings: Settings,
    pub clock: Clock,
    cluster_id: String,
    store: Arc<Store>,
    writer: Writer,
    shared: Arc<Shared>,
    cluster: Mutex<Cluster>,
    leases: Mutex<HashMap<String, Lease>>,
    /// Blocks of commits in progress, with how many commits hold each.
    committing: Mutex<HashMap<BlockId, u32, IdBuild>>,
    safe_mode: AtomicBool,
    /// When the reported fraction first reached the threshold (safe-mode extension).
    threshold_reached: Mutex<Option<Instant>>,
    started: Instant,
    writer_done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl NameSystem {
    /// Opens the store in `data_dir`, loads it and starts the metadata writer.
    pub fn open(config: &Config) -> Result<Arc<Self>> {
        let settings = Settings::from(config);
        let clock = Clock::new();
        let store = Arc::new(Store::open(&config.data_dir)?);
        let loaded = store.load()?;
        let shared = Arc::new(Shared {
            blocks: BlockMap::new(),
            gc: Mutex::new(Gc::new(settings.delete_grace.as_millis() as u64)),
            repl: Mutex::new(Replication::new(
                settings.replication_streams,
                settings.replication_timeout.as_millis() as u64,
            )),
            files: AtomicU64::new(loaded.files),
            bytes: AtomicU64::new(loaded.bytes),
        });
        for (b, refs, len, repl) in &loaded.refs {
            shared.blocks.load(*b, *refs, *len, *repl);
        }
        {
            let mut gc = lock(&shared.gc);
            for (b, deleted_ms, _) in &loaded.dead_blocks {
                gc.load_dead(*b, *deleted_ms);
            }
        }
        // Leases survive a restart; their clients get a fresh TTL to come back in.
        let now = clock.now_ms();
        let ttl = settings.lease_ttl.as_millis() as u64;
        let leases = loaded
            .leases
            .into_iter()
            .map(|mut l| {
                l.expires_ms = l.expires_ms.max(now + ttl);
                (l.id.clone(), l)
            })
            .collect::<HashMap<_, _>>();
        let s2 = shared.clone();
        let (writer, writer_done) =
            Writer::spawn(store.clone(), Box::new(move |op, e| s2.on_durable(op, e)));
        if loaded.refs.is_empty() {
            tracing::info!("no blocks known: not entering safe mode");
        } else {
            tracing::info!(
                blocks = loaded.refs.len(),
                "in safe mode until the known blocks are reported"
            );
        }
        tracing::info!(
            cluster_id = %loaded.cluster_id,
            files = loaded.files,
            blocks = loaded.refs.len(),
            leases = leases.len(),
            dead_blocks = loaded.dead_blocks.len(),
            "metadata loaded"
        );
        Ok(Arc::new(Self {
            cluster_id: loaded.cluster_id.clone(),
            cluster: Mutex::new(Cluster::new(loaded.cluster_id)),
            settings,
            clock,
            store,
            writer,
            shared,
            leases: Mutex::new(leases),
            committing: Mutex::new(HashMap::default()),
            // With no known blocks there is nothing to wait for.
            safe_mode: AtomicBool::new(!loaded.refs.is_empty()),
            threshold_reached: Mutex::new(None),
            started: Instant::now(),
            writer_done: Mutex::new(Some(writer_done)),
        }))
    }

    /// Fires once the metadata writer thread has stopped (after the last handle to
    /// this namesystem is dropped). Taken once, by `run`.
    pub fn writer_done(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        lock(&self.writer_done).take()
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn blocks(&self) -> &BlockMap {
        &self.shared.blocks
    }

    pub fn in_safe_mode(&self) -> bool {
        self.safe_mode.load(Ordering::Relaxed)
    }

    fn cluster(&self) -> MutexGuard<'_, Cluster> {
        lock(&self.cluster)
    }

    // ---------------------------------------------------------------- datanodes

    /// Registers a datanode; returns the cluster id it must persist.
    pub fn register(&self, id: DatanodeId, reg: &Registration) -> Result<String> {
        let idx = {
            let mut cluster = self.cluster();
            let known = cluster.index_of(&id);
            let idx = cluster.register(reg, id, Instant::now())?;
            drop(cluster);
            if known.is_some() {
                // A restarted datanode forgot the copies it was asked to make or
                // receive: reschedule them now rather than after their timeout.
                lock(&self.shared.repl).node_dead(idx);
            }
            idx
        };
        tracing::info!(node = %id, idx, address = %reg.address, zone = %reg.zone, "datanode registered");
        Ok(self.cluster_id.clone())
    }

    /// Records a heartbeat and hands out the node's commands; `None` means it must
    /// register again.
    pub fn heartbeat(&self, id: &DatanodeId, load: Load) -> Option<Vec<Outgoing>> {
        let now_ms = self.clock.now_ms();
        let mut cluster = self.cluster();
        let Beat::Known(idx) = cluster.heartbeat(id, load, Instant::now()) else {
            return None;
        };
        // Bounded per reply so a node back from a long pause gets its backlog over
        // several heartbeats rather than in one oversized message.
        let cmds: Vec<Cmd> = cluster
            .node_mut(idx)
            .map(|n| {
                let k = n.commands.len().min(MAX_COMMANDS_PER_REPLY);
                n.commands.drain(..k).collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut trims = Vec::new();
        let mut corrupt = Vec::new();
        for c in cmds {
            match c {
                Cmd::Replicate {
                    block,
                    length,
                    targets,
                } => out.push(Outgoing::Replicate {
                    block,
                    length,
                    targets: targets
                        .iter()
                        .filter_map(|t| cluster.node(*t).map(location))
                        .collect(),
                }),
                Cmd::Trim(ids) => trims.extend(ids),
                Cmd::DropCorrupt(ids) => corrupt.extend(ids),
            }
        }
        drop(cluster);
        let blocks = &self.shared.blocks;
        trims.retain(|b| match blocks.get(b) {
            Some(info) if info.locs.len() >= (info.target as usize).max(1) => true,
            Some(_) => {
                // Another replica was lost since the trim was planned: keep this one.
                blocks.add_location(b, idx);
                false
            }
            None => false,
        });
        trims.extend(corrupt);
        let mut deletes = self.take_deletes(idx, now_ms);
        if !trims.is_empty() {
            let mut gc = lock(&self.shared.gc);
            for b in &trims {
                gc.log_delivery(*b, idx, now_ms);
            }
            deletes.extend(trims);
        }
        if !deletes.is_empty() {
            out.insert(0, Outgoing::Delete(deletes));
        }
        Some(out)
    }

    /// Replications that `id` (their source) reports as failed: the failed targets (and
    /// the source, when the whole transfer failed) are tried last for that block, and a
    /// copy with no target left is planned again after a short, growing delay instead
    /// of after its timeout (`Replication::copy_failed`). Reports about copies no
    /// longer outstanding change nothing.
    pub fn copies_failed(&self, id: &DatanodeId, failed: &[FailedCopy]) {
        if failed.is_empty() {
            return;
        }
        let (source, targets): (NodeIdx, Vec<Vec<NodeIdx>>) = {
            let cluster = self.cluster();
            let Some(source) = cluster.live_index(id) else {
                return;
            };
            let targets = failed
                .iter()
                .map(|f| {
                    f.targets
                        .iter()
                        .filter_map(|t| cluster.index_of(t))
                        .collect()
                })
                .collect();
            (source, targets)
        };
        let now_ms = self.clock.now_ms();
        let mut repl = lock(&self.shared.repl);
        for (f, targets) in failed.iter().zip(&targets) {
            tracing::info!(block = %f.block, source = %id, targets = f.targets.len(), whole = f.whole, "replication failed; planning it again shortly");
            repl.copy_failed(now_ms, &f.block, source, targets, f.whole);
        }
    }

    fn take_deletes(&self, idx: NodeIdx, now_ms: u64) -> Vec<BlockId> {
        if self.in_safe_mode() {
            return Vec::new();
        }
        let blocks = &self.shared.blocks;
        let committing = &self.committing;
        lock(&self.shared.gc).take_deletes(idx, now_ms, |b| {
            blocks.contains(b) || lock(committing).contains_key(b)
        })
    }

    fn reporting_node(&self, id: &DatanodeId) -> Result<NodeIdx> {
        self.cluster().live_index(id).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "datanode {id} is not registered (or was declared dead): register first"
            ))
        })
    }

    /// Applies a complete full block report. Returns the replicas accepted and the
    /// resulting delete commands.
    pub fn full_report(
        &self,
        id: &DatanodeId,
        blocks: Vec<(BlockId, u64)>,
    ) -> Result<(u64, Vec<BlockId>)> {
        let idx = self.reporting_node(id)?;
        let now_ms = self.clock.now_ms();
        let started = std::time::Instant::now();
        let reported = blocks.len();
        let outcome = self.shared.blocks.apply_full_report(idx, blocks);
        {
            let mut gc = lock(&self.shared.gc);
            for (b, len) in &outcome.unknown {
                gc.unreferenced_replica(idx, *b, *len, now_ms, false);
            }
        }
        {
            let mut repl = lock(&self.shared.repl);
            repl.confirm_from(&self.shared.blocks, idx);
            repl.mark_dirty(outcome.dirty.iter().copied());
        }
        let deletes = self.take_deletes(idx, now_ms);
        tracing::info!(
            node = %id,
            reported,
            accepted = outcome.accepted,
            unknown = outcome.unknown.len(),
            dropped = outcome.dropped,
            deletes = deletes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "full block report applied"
        );
        Ok((outcome.accepted, deletes))
    }

    /// Applies an incremental report; returns delete commands for the node.
    pub fn incremental_report(
        &self,
        id: &DatanodeId,
        added: &[(BlockId, u64)],
        removed: &[BlockId],
        corrupt: &[BlockId],
    ) -> Result<Vec<BlockId>> {
        let idx = self.reporting_node(id)?;
        let now_ms = self.clock.now_ms();
        let blocks = &self.shared.blocks;
        let mut dirty = Vec::new();
        let mut unknown = Vec::new();
        for (b, len) in added {
            match blocks.add_location(b, idx) {
                Some(over) => {
                    if over {
                        dirty.push(*b);
                    }
                }
                None => unknown.push((*b, *len)),
            }
        }
        for b in removed.iter().chain(corrupt) {
            if blocks.remove_location(b, idx) {
                dirty.push(*b);
            }
        }
        {
            let mut gc = lock(&self.shared.gc);
            for (b, len) in unknown {
                gc.unreferenced_replica(idx, b, len, now_ms, true);
            }
            for b in removed.iter().chain(corrupt) {
                gc.replica_gone(idx, b);
            }
        }
        {
            let mut repl = lock(&self.shared.repl);
            for (b, _) in added {
                repl.replica_added(b, idx);
            }
            for b in removed.iter().chain(corrupt) {
                repl.replica_lost(b, idx);
            }
            for b in corrupt {
                if blocks.contains(b) {
                    repl.mark_corrupt(*b, idx);
                }
            }
            repl.mark_dirty(dirty);
        }
        if !corrupt.is_empty() {
            metrics::counter!("kdfs_namenode_corrupt_replicas_total")
                .increment(corrupt.len() as u64);
        }
        Ok(self.take_deletes(idx, now_ms))
    }

    /// A reader found a bad replica: it leaves the map, the block is healed, and the
    /// bad copy is deleted once enough good ones exist.
    pub fn bad_replica(&self, block: &BlockId, node: &DatanodeId, reason: &str) {
        let Some(idx) = self.cluster().index_of(node) else {
            return;
        };
        tracing::info!(block = %block, node = %node, reason, "bad replica reported");
        metrics::counter!("kdfs_namenode_corrupt_replicas_total").increment(1);
        let removed = self.shared.blocks.remove_location(block, idx);
        let mut repl = lock(&self.shared.repl);
        // A copy planned from this replica before the report cannot succeed.
        repl.replica_lost(block, idx);
        if removed {
            repl.mark_corrupt(*block, idx);
        }
    }

    // ------------------------------------------------------------------ uploads

    /// Opens an upload lease.
    pub async fn begin_upload(
        &self,
        name: &str,
        content_type: &str,
        replication: u32,
    ) -> Result<Lease> {
        check_name(name)?;
        check_content_type(content_type)?;
        let replication = match replication {
            0 => self.settings.replication,
            r if r > 16 => {
                return Err(Error::InvalidArgument(format!(
                    "replication {r} is more than the largest supported, 16"
                )));
            }
            r => r,
        };
        let now = self.clock.now_ms();
        let lease = Lease {
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            name: name.to_owned(),
            content_type: content_type_or_default(content_type.to_owned()),
            replication,
            begin_ms: now,
            expires_ms: now + self.settings.lease_ttl.as_millis() as u64,
        };
        lock(&self.leases).insert(lease.id.clone(), lease.clone());
        // The in-memory lease is authoritative while this process lives; the row only
        // lets an upload survive a namenode restart. So it is not waited for: it is
        // written by the next group commit, before the upload's own commit (queue
        // order), and a create costs one fsync wait instead of two.
        if let Err(e) = self.writer.enqueue(Op::PutLease(lease.clone())).await {
            lock(&self.leases).remove(&lease.id);
            return Err(e);
        }
        Ok(lease)
    }

    /// Extends a lease; returns it.
    pub fn renew(&self, upload_id: &str) -> Result<Lease> {
        let now = self.clock.now_ms();
        let mut leases = lock(&self.leases);
        let l = leases
            .get_mut(upload_id)
            .filter(|l| l.expires_ms > now)
            .ok_or_else(|| unknown_upload(upload_id))?;
        l.expires_ms = now + self.settings.lease_ttl.as_millis() as u64;
        Ok(l.clone())
    }

    /// A pipeline for the next block of an upload, of nodes with room for
    /// `max_length` bytes (0, or more than a block: a whole block).
    pub fn allocate(
        &self,
        upload_id: &str,
        exclude: &[DatanodeId],
        replicas: u32,
        max_length: u64,
    ) -> Result<Vec<Location>> {
        let lease = self.renew(upload_id)?;
        if exclude.len() > MAX_EXCLUDE {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_EXCLUDE} datanodes may be excluded"
            )));
        }
        let wanted = match replicas {
            0 => lease.replication,
            r => r.min(lease.replication),
        } as usize;
        let mut cluster = self.cluster();
        let request = placement::Request {
            wanted,
            min: (self.settings.min_replicas.min(lease.replication) as usize).min(wanted),
            room: match max_length {
                0 => self.settings.block_size,
                n => n.min(self.settings.block_size),
            },
            exclude: exclude.iter().filter_map(|d| cluster.index_of(d)).collect(),
        };
        let pipeline = placement::check(&cluster.candidates(), &request)?;
        let mut out = Vec::with_capacity(pipeline.len());
        for idx in pipeline {
            if let Some(n) = cluster.node_mut(idx) {
                n.allocated += 1;
                out.push(location(n));
            }
        }
        metrics::counter!("kdfs_namenode_blocks_allocated_total").increment(1);
        Ok(out)
    }

    /// Makes an upload's file visible (durable before it returns).
    pub async fn commit(
        &self,
        upload_id: &str,
        file_id: FileId,
        size: u64,
        blocks: Vec<CommittedBlock>,
    ) -> Result<(FileRecord, bool)> {
        let lease = self.open_lease(upload_id)?;
        // From the ack check until the commit is durable, no delete of these blocks
        // may go out (they are not referenced yet, so GC would still think them
        // garbage).
        let _committing = CommitGuard::new(&self.committing, blocks.iter().map(|b| b.id));
        let op = self.commit_op(
            &lease,
            FileToCommit {
                name: lease.name.clone(),
                content_type: lease.content_type.clone(),
                id: file_id,
                size,
                blocks,
            },
        )?;
        let effect = self.writer.submit(op).await?;
        lock(&self.leases).remove(upload_id);
        committed(effect)
    }

    /// Commits a batch of files written under one lease, each checked and committed
    /// as [`NameSystem::commit`] commits one, with its own name and content type and
    /// the lease's replication. The commits go to the metadata writer together (one
    /// group commit) and are durable before it returns; one file's failure leaves the
    /// others alone. One result per file, in order. Fails as a whole, committing
    /// nothing and leaving the lease open, for more than [`MAX_BATCH_FILES`] files, an
    /// unknown or expired lease, or a metadata writer failure. The lease ends with it.
    pub async fn commit_files(
        &self,
        upload_id: &str,
        files: Vec<FileToCommit>,
    ) -> Result<Vec<Result<(FileRecord, bool)>>> {
        if files.len() > MAX_BATCH_FILES {
            return Err(Error::InvalidArgument(format!(
                "{} files, at most {MAX_BATCH_FILES} in one batch",
                files.len()
            )));
        }
        let lease = self.open_lease(upload_id)?;
        // As in `commit`: no delete of the batch's blocks goes out until it is durable.
        let _committing = CommitGuard::new(
            &self.committing,
            files.iter().flat_map(|f| f.blocks.iter().map(|b| b.id)),
        );
        // Per file, the error that refused it, or `None` for a commit submitted.
        let mut refused = Vec::with_capacity(files.len());
        let mut ops = Vec::with_capacity(files.len());
        for f in files {
            match self.commit_op(&lease, f) {
                Ok(op) => {
                    ops.push(op);
                    refused.push(None);
                }
                Err(e) => refused.push(Some(e)),
            }
        }
        let effects = if ops.is_empty() {
            // Nothing to commit: the lease row is ended on its own.
            self.writer
                .submit(Op::EndLease(upload_id.to_owned()))
                .await?;
            Vec::new()
        } else {
            // One group commit: either every op of it is durable or none is.
            self.writer
                .submit_all(ops)
                .await?
                .into_iter()
                .map(|e| e.and_then(committed))
                .collect::<Result<Vec<_>>>()?
        };
        lock(&self.leases).remove(upload_id);
        let mut effects = effects.into_iter();
        Ok(refused
            .into_iter()
            .map(|r| match r {
                Some(e) => Err(e),
                None => Ok(effects.next().expect("an effect per op submitted")),
            })
            .collect())
    }

    /// An upload's lease, if it is open.
    fn open_lease(&self, upload_id: &str) -> Result<Lease> {
        let now = self.clock.now_ms();
        lock(&self.leases)
            .get(upload_id)
            .filter(|l| l.expires_ms > now)
            .cloned()
            .ok_or_else(|| unknown_upload(upload_id))
    }

    /// A file's commit under `lease`, checked: name and content type, block lengths
    /// against the block size and the file's size, enough trusted acks per block. The
    /// caller holds a [`CommitGuard`] on its blocks.
    fn commit_op(&self, lease: &Lease, file: FileToCommit) -> Result<Op> {
        check_name(&file.name)?;
        check_content_type(&file.content_type)?;
        let FileToCommit {
            name,
            content_type,
            id,
            size,
            blocks,
        } = file;
        let mut total: u64 = 0;
        for (i, b) in blocks.iter().enumerate() {
            if b.length > self.settings.block_size {
                return Err(Error::InvalidArgument(format!(
                    "block {i} is {} bytes, more than the block size {}",
                    b.length, self.settings.block_size
                )));
            }
            total = total
                .checked_add(b.length)
                .ok_or_else(|| Error::InvalidArgument("block lengths overflow".into()))?;
        }
        if total != size {
            return Err(Error::InvalidArgument(format!(
                "size {size} is not the sum of the block lengths {total}"
            )));
        }
        let need = self.settings.min_replicas.min(lease.replication) as usize;
        let acks = self.trusted_acks(lease, &blocks, need)?;
        let record = FileRecord {
            id,
            name,
            size,
            content_type: content_type_or_default(content_type),
            created_ms: self.clock.now_ms() as i64,
            replication: lease.replication,
            blocks: blocks.iter().map(|b| (b.id, b.length)).collect(),
        };
        Ok(Op::Commit {
            record,
            replicas: acks,
            upload_id: lease.id.clone(),
        })
    }

    /// The pipeline acks that count (known nodes, not fenced off by a delete delivered
    /// during the upload), checked against `need` together with replicas already known.
    fn trusted_acks(
        &self,
        lease: &Lease,
        blocks: &[CommittedBlock],
        need: usize,
    ) -> Result<Vec<Vec<NodeIdx>>> {
        let cluster = self.cluster();
        let gc = lock(&self.shared.gc);
        let mut out = Vec::with_capacity(blocks.len());
        for (i, b) in blocks.iter().enumerate() {
            let mut known: HashSet<NodeIdx> = HashSet::new();
            if let Some(info) = self.shared.blocks.get(&b.id) {
                known.extend(info.locs.iter().copied());
            }
            if let Some(o) = gc.orphan(&b.id) {
                known.extend(o.locs.iter().copied());
            }
            let mut acks = Vec::new();
            let mut fenced = 0;
            for d in &b.replicas {
                let Some(idx) = cluster.live_index(d) else {
                    continue;
                };
                if gc.ack_trusted(&b.id, idx, lease.begin_ms) {
                    acks.push(idx);
                    known.insert(idx);
                } else {
                    fenced += 1;
                }
            }
            if known.len() < need {
                return Err(Error::FailedPrecondition(format!(
                    "block {i} ({}) has {} confirmed replicas, {need} needed{}",
                    b.id,
                    known.len(),
                    if fenced > 0 {
                        " (a delete of the same content raced with this upload: retry it)"
                    } else {
                        ""
                    }
                )));
            }
            out.push(acks);
        }
        Ok(out)
    }

    /// Gives up an upload: its lease ends now; its blocks become orphans.
    pub async fn abandon(&self, upload_id: &str) -> Result<()> {
        if lock(&self.leases).remove(upload_id).is_none() {
            return Err(unknown_upload(upload_id));
        }
        self.writer
            .submit(Op::EndLease(upload_id.to_owned()))
            .await?;
        Ok(())
    }

    /// Oldest open upload's start, for the garbage collector.
    fn oldest_lease_begin(&self) -> Option<u64> {
        lock(&self.leases).values().map(|l| l.begin_ms).min()
    }

    pub fn lease_count(&self) -> usize {
        lock(&self.leases).len()
    }

    // -------------------------------------------------------------------- files

    /// A file with its located blocks, or its tombstone.
    ///
    /// A commit or a delete is visible in the store a moment before the writer applies
    /// it to the block map. A live record read in that moment has blocks the map does
    /// not hold (a new file's not yet added, a deleted one's already released): then
    /// the read waits for the writer to catch up and is made again, so a file being
    /// deleted reads as live with its replicas or as deleted, never as a live file
    /// without replicas.
    pub async fn get_file(&self, id: &FileId) -> Result<FileView> {
        self.read_settled(|| async move { self.read_file(id) })
            .await
    }

    /// Reads with `read`, which also says whether the block map held every block of
    /// what it read; a read that was not (a commit or delete between the store and the
    /// map) is made again once the writer has caught up, waiting at most
    /// [`SETTLE_LIMIT`].
    async fn read_settled<T, Fut>(&self, read: impl Fn() -> Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<(T, bool)>>,
    {
        let (value, consistent) = read().await?;
        if consistent || !self.writer.settled(SETTLE_LIMIT).await {
            return Ok(value);
        }
        Ok(read().await?.0)
    }

    /// [`NameSystem::get_file`]'s read, and whether the block map held every block of
    /// a live record.
    fn read_file(&self, id: &FileId) -> Result<(FileView, bool)> {
        let mut consistent = true;
        let view = match self.store.lookup(id)? {
            None => return Err(Error::NotFound(format!("file {id} not found"))),
            Some(Lookup::Deleted { record, deleted_ms }) => {
                FileView::Deleted { record, deleted_ms }
            }
            Some(Lookup::Live(record)) => {
                let cluster = self.cluster();
                let mut offset = 0;
                let mut blocks = Vec::with_capacity(record.blocks.len());
                for (b, len) in &record.blocks {
                    let mut nodes: Vec<&Node> = match self.shared.blocks.get(b) {
                        Some(i) => i.locs.iter().filter_map(|n| cluster.node(*n)).collect(),
                        None => {
                            consistent = false;
                            Vec::new()
                        }
                    };
                    nodes.retain(|n| n.state != NodeState::Dead);
                    nodes.sort_by_key(|n| (n.state != NodeState::Live, n.load.in_flight));
                    blocks.push(LocatedBlock {
                        id: *b,
                        length: *len,
                        offset,
                        replicas: nodes.into_iter().map(location).collect(),
                    });
                    offset += len;
                }
                FileView::Live { record, blocks }
            }
        };
        Ok((view, consistent))
    }

    /// Fewest live replicas over a file's blocks; `None` if the block map lacks one of
    /// them (a commit or delete between the store and the map: see
    /// [`NameSystem::get_file`]).
    fn min_live_replicas(&self, record: &FileRecord) -> Option<u32> {
        let mut min = None::<u32>;
        for (b, _) in &record.blocks {
            let n = self.shared.blocks.get(b)?.locs.len() as u32;
            min = Some(min.map_or(n, |m| m.min(n)));
        }
        Some(min.unwrap_or(0))
    }

    /// A newest-first page of live files ([`NameSystem::list`]), each with the fewest
    /// live replicas over its blocks. As in [`NameSystem::get_file`], a page read while
    /// a commit or a delete was between the store and the block map is read again once
    /// the writer has caught up ([`NameSystem::read_settled`]): a file being deleted is listed with its replicas or
    /// not at all, never with none.
    pub async fn list_with_replicas(
        self: &Arc<Self>,
        limit: u32,
        after: &str,
        name_contains: &str,
    ) -> Result<(Vec<(FileRecord, u32)>, String)> {
        self.read_settled(|| self.read_page(limit, after, name_contains))
            .await
    }

    /// [`NameSystem::list_with_replicas`]'s read (off the runtime: it reads the store),
    /// and whether the block map held every block of every file listed.
    async fn read_page(
        self: &Arc<Self>,
        limit: u32,
        after: &str,
        name_contains: &str,
    ) -> Result<((Vec<(FileRecord, u32)>, String), bool)> {
        let ns = self.clone();
        let (after, name_contains) = (after.to_owned(), name_contains.to_owned());
        tokio::task::spawn_blocking(move || {
            let (files, next) = ns.list(limit, &after, &name_contains)?;
            let mut consistent = true;
            let files = files
                .into_iter()
                .map(|f| {
                    let n = ns.min_live_replicas(&f);
                    consistent &= n.is_some();
                    (f, n.unwrap_or(0))
                })
                .collect();
            Ok(((files, next), consistent))
        })
        .await
        .map_err(|e| Error::Unavailable(format!("listing task failed: {e}")))?
    }

    /// A newest-first page of live files; `after` is the opaque cursor.
    pub fn list(
        &self,
        limit: u32,
        after: &str,
        name_contains: &str,
    ) -> Result<(Vec<FileRecord>, String)> {
        let limit = match limit as usize {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        let before = if after.is_empty() {
            None
        } else {
            let raw = hex::decode(after)
                .ok()
                .and_then(|v| <[u8; 40]>::try_from(v).ok())
                .ok_or_else(|| {
                    Error::InvalidArgument("after: not a cursor this server issued".into())
                })?;
            Some(raw)
        };
        if name_contains.len() > MAX_NAME_LEN {
            return Err(Error::InvalidArgument("name_contains is too long".into()));
        }
        let needle = name_contains.to_lowercase();
        let (files, next) = self.store.list(before, limit, MAX_LIST_SCAN, |r| {
            needle.is_empty() || r.name.to_lowercase().contains(&needle)
        })?;
        Ok((files, next.map(hex::encode).unwrap_or_default()))
    }

    /// Tombstones a file (durable before it returns). False if already deleted.
    pub async fn delete(&self, id: FileId) -> Result<bool> {
        let now_ms = self.clock.now_ms();
        match self.writer.submit(Op::Delete { id, now_ms }).await? {
            Effect::Deleted { record, .. } => Ok(record.is_some()),
            other => Err(Error::Corrupt(format!(
                "unexpected delete effect {other:?}"
            ))),
        }
    }

    // ------------------------------------------------------------------- status

    pub fn status(&self) -> ClusterStatus {
        // The map scan runs without the cluster lock so heartbeats are not held up.
        let count = self.cluster().len();
        let stats = self.shared.blocks.stats(count);
        let now = Instant::now();
        let nodes = self
            .cluster()
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| NodeStatus {
                node: n.clone(),
                blocks: stats.per_node.get(i).copied().unwrap_or(0),
                since_heartbeat: now.saturating_duration_since(n.last_heartbeat),
            })
            .collect();
        ClusterStatus {
            cluster_id: self.cluster_id.clone(),
            safe_mode: self.in_safe_mode(),
            reported_fraction: fraction(&stats),
            files: self.shared.files.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            queues: lock(&self.shared.repl).stats(),
            stats,
            nodes,
        }
    }

    /// Live (incl. stale) and dead datanodes.
    pub fn node_counts(&self) -> (usize, usize) {
        self.cluster().counts()
    }

    // ------------------------------------------------------------------ workers

    /// Liveness: moves nodes to stale and dead; a dead node's replicas leave the map
    /// and its blocks are queued for re-replication. Returns whether a node died.
    pub fn liveness_tick(&self) -> bool {
        let died = self.cluster().tick(
            Instant::now(),
            self.settings.stale_after,
            self.settings.dead_after,
        );
        for idx in &died {
            self.node_died(*idx, "missed heartbeats");
        }
        !died.is_empty()
    }

    /// A dead node's replicas leave the map and its blocks are queued for copies.
    fn node_died(&self, idx: NodeIdx, reason: &str) {
        let lost = self.shared.blocks.remove_node(idx);
        tracing::warn!(idx, blocks = lost.len(), reason, "datanode declared dead");
        lock(&self.shared.gc).node_dead(idx);
        let mut repl = lock(&self.shared.repl);
        repl.node_dead(idx);
        repl.mark_dirty(lost);
    }

    /// Declares a datanode dead at once, without waiting for `--dead-after` (for an
    /// orchestrator that knows its pod is gone). Returns false if it was unknown or
    /// already dead. The caller should kick the replication worker.
    pub fn declare_dead(&self, id: &DatanodeId, reason: &str) -> bool {
        let idx = {
            let mut cluster = self.cluster();
            match cluster.index_of(id) {
                Some(idx) if cluster.declare_dead(idx) => idx,
                _ => return false,
            }
        };
        self.node_died(idx, reason);
        true
    }

    /// Starts decommissioning a datanode (e.g. its pod is terminating): it gets no
    /// new writes, and its replicas are copied elsewhere while it still serves reads.
    /// Returns false if it was unknown, dead or already leaving.
    pub fn decommission(&self, id: &DatanodeId) -> bool {
        let idx = {
            let mut cluster = self.cluster();
            match cluster.index_of(id) {
                Some(idx) if cluster.decommission(idx) => idx,
                _ => return false,
            }
        };
        let held = self.shared.blocks.blocks_on(idx);
        tracing::info!(node = %id, blocks = held.len(), "datanode decommissioning");
        lock(&self.shared.repl).mark_dirty(held);
        true
    }

    /// The datanodes (any state) that run as this Kubernetes pod, with their zones:
    /// those that registered with its `pod_name`, or whose advertise address is the
    /// pod's stable DNS name (`<pod>.<service>...`).
    pub fn datanodes_of_pod(&self, pod: &str) -> Vec<PodDatanode> {
        if pod.is_empty() {
            return Vec::new();
        }
        let now_ms = self.clock.now_ms();
        self.cluster()
            .nodes()
            .iter()
            .filter(|n| {
                n.pod_name == pod
                    || (n.pod_name.is_empty()
                        && n.address
                            .strip_prefix(pod)
                            .is_some_and(|rest| rest.starts_with('.')))
            })
            .map(|n| PodDatanode {
                id: n.id,
                zone: n.zone.clone(),
                registered_ms: now_ms.saturating_sub(n.registered_at.elapsed().as_millis() as u64),
            })
            .collect()
    }

    /// Sets a datanode's failure domain (e.g. from its Kubernetes node's zone label).
    pub fn set_zone(&self, id: &DatanodeId, zone: &str) -> bool {
        let mut cluster = self.cluster();
        let Some(idx) = cluster.index_of(id) else {
            return false;
        };
        match cluster.node_mut(idx) {
            Some(n) => {
                n.zone = zone.to_owned();
                true
            }
            None => false,
        }
    }

    /// Safe mode: leaves it once enough known blocks have been reported or the timeout
    /// passed. Returns whether it is still on.
    pub fn safe_mode_tick(&self) -> bool {
        if !self.in_safe_mode() {
            return false;
        }
        let stats = self.shared.blocks.stats(0);
        let frac = fraction(&stats);
        let elapsed = self.started.elapsed();
        // Once the threshold is reached, wait the extension too, so the datanodes
        // that report a moment later are in the map before re-replication judges
        // what is missing (otherwise every restart would copy blocks needlessly).
        let reached = {
            let mut at = lock(&self.threshold_reached);
            if frac >= self.settings.safe_mode_threshold {
                *at.get_or_insert_with(Instant::now)
            } else {
                *at = None;
                Instant::now() + Duration::from_secs(3600)
            }
        };
        let reason = if stats.blocks == 0 {
            Some("no blocks known")
        } else if reached.elapsed() >= self.settings.safe_mode_extension {
            Some("enough blocks reported")
        } else if elapsed >= self.settings.safe_mode_timeout {
            Some("timeout")
        } else {
            None
        };
        let Some(reason) = reason else {
            return true;
        };
        self.safe_mode.store(false, Ordering::Relaxed);
        tracing::info!(
            reason,
            reported_fraction = frac,
            blocks = stats.blocks,
            "leaving safe mode"
        );
        lock(&self.shared.repl).mark_dirty(self.shared.blocks.misreplicated());
        false
    }

    /// Re-replication round: schedules copies and trims onto the nodes' command queues.
    pub fn replication_tick(&self) -> usize {
        if self.in_safe_mode() {
            return 0;
        }
        let now_ms = self.clock.now_ms();
        let (candidates, retiring): (Vec<_>, _) = {
            let cluster = self.cluster();
            let candidates = cluster
                .candidates()
                .into_iter()
                .filter(|c| {
                    cluster
                        .node(c.node)
                        .is_some_and(|n| n.state != NodeState::Dead)
                })
                .collect();
            (candidates, cluster.retiring())
        };
        // Scheduling looks up blocks; it runs without the cluster lock. A node that
        // dies meanwhile has its new copies cancelled by `node_dead` or timed out.
        let mut repl = lock(&self.shared.repl);
        repl.set_retiring(retiring);
        let cmds = repl.tick(
            now_ms,
            &self.shared.blocks,
            &candidates,
            self.settings.block_size,
        );
        drop(repl);
        let mut cluster = self.cluster();
        let n = cmds.len();
        for (idx, cmd) in cmds {
            if let Some(node) = cluster.node_mut(idx) {
                node.commands.push_back(cmd);
            }
        }
        if n > 0 {
            tracing::debug!(commands = n, "re-replication scheduled");
            metrics::counter!("kdfs_namenode_replication_commands_total").increment(n as u64);
        }
        n
    }

    /// Rechecks every block's replica count (a safety net behind the events).
    pub fn rescan(&self) {
        lock(&self.shared.repl).mark_dirty(self.shared.blocks.misreplicated());
    }

    /// Leases, orphans and tombstones: expires leases, queues deletes of orphans no
    /// upload can claim, forgets old delete deliveries, purges old tombstones.
    pub async fn gc_tick(&self, purge: bool) -> Result<()> {
        let now = self.clock.now_ms();
        let expired: Vec<String> = {
            let mut leases = lock(&self.leases);
            let ids: Vec<String> = leases
                .values()
                .filter(|l| l.expires_ms <= now)
                .map(|l| l.id.clone())
                .collect();
            for id in &ids {
                leases.remove(id);
            }
            ids
        };
        for id in expired {
            tracing::info!(upload = %id, "upload lease expired");
            self.writer.enqueue(Op::EndLease(id)).await?;
        }
        let retention = self.settings.tombstone_retention.as_millis() as u64;
        let before = now.saturating_sub(retention);
        let oldest = self.oldest_lease_begin();
        {
            let mut gc = lock(&self.shared.gc);
            if !self.in_safe_mode() {
                let n = gc.sweep_orphans(now, self.settings.lease_ttl.as_millis() as u64, oldest);
                if n > 0 {
                    tracing::info!(blocks = n, "unreferenced replicas queued for deletion");
                }
            }
            gc.prune(now, oldest, before);
        }
        if purge
            && let Effect::Purged(ids) = self
                .writer
                .submit(Op::PurgeTombstones { before_ms: before })
                .await?
            && !ids.is_empty()
        {
            tracing::info!(tombstones = ids.len(), "tombstones purged");
        }
        Ok(())
    }

    /// Gauges for `/metrics`.
    pub fn export_metrics(&self) {
        let st = self.status();
        let (live, dead) = self.node_counts();
        metrics::gauge!("kdfs_namenode_datanodes", "state" => "live").set(live as f64);
        metrics::gauge!("kdfs_namenode_datanodes", "state" => "dead").set(dead as f64);
        metrics::gauge!("kdfs_namenode_blocks").set(st.stats.blocks as f64);
        metrics::gauge!("kdfs_namenode_replicas").set(st.stats.replicas as f64);
        metrics::gauge!("kdfs_namenode_under_replicated_blocks")
            .set(st.stats.under_replicated as f64);
        metrics::gauge!("kdfs_namenode_missing_blocks").set(st.stats.missing as f64);
        metrics::gauge!("kdfs_namenode_files").set(st.files as f64);
        metrics::gauge!("kdfs_namenode_bytes").set(st.bytes as f64);
        metrics::gauge!("kdfs_namenode_safe_mode").set(if st.safe_mode { 1.0 } else { 0.0 });
        metrics::gauge!("kdfs_namenode_open_leases").set(self.lease_count() as f64);
        metrics::gauge!("kdfs_namenode_replication_pending").set(st.queues.pending as f64);
        let (dead_blocks, orphans, pending_deletes) = lock(&self.shared.gc).counts();
        metrics::gauge!("kdfs_namenode_dead_blocks").set(dead_blocks as f64);
        metrics::gauge!("kdfs_namenode_orphan_blocks").set(orphans as f64);
        metrics::gauge!("kdfs_namenode_pending_deletes").set(pending_deletes as f64);
    }

    /// Store counts (live files, tombstones), for tests.
    pub fn store_counts(&self) -> Result<(u64, u64)> {
        self.store.counts()
    }
}

/// Marks blocks as being committed for as long as it lives.
struct CommitGuard<'a> {
    set: &'a Mutex<HashMap<BlockId, u32, IdBuild>>,
    ids: Vec<BlockId>,
}

impl<'a> CommitGuard<'a> {
    fn new(
        set: &'a Mutex<HashMap<BlockId, u32, IdBuild>>,
        ids: impl IntoIterator<Item = BlockId>,
    ) -> Self {
        let ids: Vec<BlockId> = ids.into_iter().collect();
        let mut m = lock(set);
        for id in &ids {
            *m.entry(*id).or_default() += 1;
        }
        Self { set, ids }
    }
}

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        let mut m = lock(self.set);
        for id in &self.ids {
            if let Some(n) = m.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    m.remove(id);
                }
            }
        }
    }
}

fn fraction(st: &Stats) -> f64 {
    if st.blocks == 0 {
        1.0
    } else {
        st.reported as f64 / st.blocks as f64
    }
}

fn location(n: &Node) -> Location {
    Location {
        id: n.id,
        address: n.address.clone(),
    }
}

fn unknown_upload(id: &str) -> Error {
    Error::FailedPrecondition(format!(
        "upload {id:?} is unknown or its lease expired: begin the upload again"
    ))
}

/// A file name: at most [`MAX_NAME_LEN`] bytes, no control characters.
pub fn check_name(name: &str) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument(format!(
            "name is {} bytes, at most {MAX_NAME_LEN} allowed",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(
            "name contains control characters".into(),
        ));
    }
    Ok(())
}

/// A commit's answer from its durable effect.
fn committed(effect: Effect) -> Result<(FileRecord, bool)> {
    match effect {
        Effect::Committed { record, existed } => Ok((record, existed)),
        other => Err(Error::Corrupt(format!(
            "unexpected commit effect {other:?}"
        ))),
    }
}

/// A content type as stored: none given means `application/octet-stream`.
fn content_type_or_default(ct: String) -> String {
    if ct.is_empty() {
        "application/octet-stream".into()
    } else {
        ct
    }
}

fn check_content_type(ct: &str) -> Result<()> {
    if ct.len() > MAX_CONTENT_TYPE_LEN || ct.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidArgument(
            "content_type must be at most 255 bytes without control characters".into(),
        ));
    }
    Ok(())
}

//! The namesystem: every namenode operation on domain types, tying together the
//! durable store ([`crate::meta`]), membership ([`crate::cluster`]), the block map
//! ([`crate::blockmap`]), garbage collection ([`crate::gc`]), re-replication
//! ([`crate::replication`]) and safe mode. The gRPC layer ([`crate::service`]) only
//! converts messages.
//!
//! [`NameSystem`] and the state it owns live here; its operations are split by concern,
//! one `impl NameSystem` block per file (each file imports from this one; this one
//! imports none of them, and outside tests none imports a sibling):
//! - [`membership`]: registration, heartbeats and the commands they carry, a node's death;
//! - [`reports`]: full and incremental block reports, bad replicas, failed copies;
//! - [`uploads`]: leases, pipeline allocation, commits (one file or a batch);
//! - [`reads`]: a file with its located blocks, listings;
//! - [`deletes`]: tombstoning a file, handing replica deletes to datanodes;
//! - [`objects`]: the bucket/key namespace (buckets, keys, multipart uploads);
//! - [`kubernetes_hooks`]: what the pod watch may do (zones, declare dead);
//! - [`leaving`]: maintenance and decommission, a stopping datanode's verdict, an
//!   operator's decommission;
//! - [`ticks`]: one round of each background worker (liveness, safe mode, replication, gc);
//! - [`status`]: `ClusterInfo`'s answer and the `/metrics` gauges.
//!
//! Locks, always taken in this order and never held across an `.await`:
//! `cluster` → block-map shard → `gc` → `repl` → `usage`; `leases` alone. The metadata
//! writer thread takes block-map shards, `gc`, `repl` and `usage` (never `cluster`) to
//! apply durable changes in commit order; so the storage a commit adds is kept in
//! `usage` (a leaf) rather than on the cluster's nodes.

pub(crate) mod deletes;
pub(crate) mod kubernetes_hooks;
pub(crate) mod leaving;
pub(crate) mod membership;
pub(crate) mod objects;
pub(crate) mod reads;
pub(crate) mod reports;
pub(crate) mod status;
pub(crate) mod ticks;
pub(crate) mod uploads;

#[cfg(test)]
mod test_fixtures;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kdfs_core::{BlockId, DatanodeId};
use tokio::time::Instant;

use crate::blockmap::{BlockMap, IdBuild, NodeIdx, Stats};
use crate::cluster::{Cluster, Node};
use crate::config::Config;
use crate::error::Result;
use crate::gc::Gc;
use crate::meta::{Effect, FileRecord, Lease, OnDurable, Op, Store, Writer};
use crate::replication::Replication;
use crate::usage::Usage;

/// Largest file name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 1024;

/// Largest content type, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;

/// Settings derived from [`Config`], in the units the code uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub replication: u32,
    pub min_replicas: u32,
    pub block_size: u64,
    pub heartbeat_interval: Duration,
    pub stale_after: Duration,
    pub dead_after: Duration,
    pub maintenance_timeout: Duration,
    pub block_report_interval: Duration,
    pub lease_ttl: Duration,
    pub tombstone_retention: Duration,
    pub delete_grace: Duration,
    pub multipart_expiry: Duration,
    pub object_claim_grace: Duration,
    pub safe_mode_threshold: f64,
    pub safe_mode_timeout: Duration,
    pub safe_mode_extension: Duration,
    pub replication_streams: u32,
    pub replication_timeout: Duration,
    pub block_key_rotation: Duration,
    pub block_token_lifetime: Duration,
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
            maintenance_timeout: c.maintenance_timeout.get(),
            block_report_interval: c.block_report_interval.get(),
            lease_ttl: c.lease_ttl.get(),
            tombstone_retention: c.tombstone_retention.get(),
            delete_grace: c.delete_grace.get(),
            multipart_expiry: c.multipart_expiry.get(),
            object_claim_grace: c.object_claim_grace.get(),
            safe_mode_threshold: c.safe_mode_threshold,
            safe_mode_timeout: c.safe_mode_timeout.get(),
            safe_mode_extension: c.safe_mode_extension(),
            replication_streams: c.replication_streams,
            replication_timeout: c.replication_timeout.get(),
            block_key_rotation: c.block_key_rotation.get(),
            block_token_lifetime: c.block_token_lifetime.get(),
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
    /// Replica bytes each node gained or lost since its last heartbeat.
    usage: Mutex<Usage>,
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
                if !existed {
                    self.files.fetch_add(1, Ordering::Relaxed);
                    self.bytes.fetch_add(record.size, Ordering::Relaxed);
                    self.referenced(record);
                }
                // The acks belong to the blocks as submitted (an existing record of the
                // same content may have been cut into blocks of another size).
                self.acked(submitted, replicas);
            }
            (Op::Commit { replicas, .. }, Effect::Replaced { record, old }) => {
                self.bytes.fetch_add(record.size, Ordering::Relaxed);
                self.bytes.fetch_sub(old.size, Ordering::Relaxed);
                // The new blocks are referenced before the old are released, so a
                // block both hold is never dead in between.
                self.referenced(record);
                self.acked(record, replicas);
                // Released as of the commit (the new record's creation time).
                self.released(old, record.created_ms.max(0) as u64);
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
                self.released(record, *deleted_ms);
            }
            (Op::Objects(_), Effect::Objects(fx)) => {
                // A completed multipart upload's file is counted before the parts'
                // files it shares every block with are released.
                if let Some(record) = &fx.created {
                    self.files.fetch_add(1, Ordering::Relaxed);
                    self.bytes.fetch_add(record.size, Ordering::Relaxed);
                    self.referenced(record);
                }
                for record in &fx.tombstoned {
                    self.files.fetch_sub(1, Ordering::Relaxed);
                    self.bytes.fetch_sub(record.size, Ordering::Relaxed);
                    self.released(record, fx.now_ms);
                }
            }
            _ => {}
        }
    }

    /// Counts a committed record's references to its blocks (adopting their orphans).
    fn referenced(&self, record: &FileRecord) {
        for (b, len) in record.distinct_blocks() {
            self.blocks.add_ref(b, len, record.replication);
            // Orphans the commit adopts are reports like any other: the pipeline's
            // own replicas, reported before the commit, are confirmed by the acks;
            // others stay unconfirmed.
            let adopted = lock(&self.gc).referenced(&b);
            for n in adopted {
                self.blocks.report_replica(&b, n);
            }
        }
    }

    /// Maps a commit's pipeline acks onto the blocks they acknowledged.
    fn acked(&self, submitted: &FileRecord, replicas: &[Vec<NodeIdx>]) {
        let mut dirty = Vec::with_capacity(submitted.blocks.len());
        for ((b, _), acks) in submitted.blocks.iter().zip(replicas) {
            for n in acks {
                self.located(b, *n);
            }
            dirty.push(*b);
        }
        metrics::counter!("kdfs_namenode_commits_total").increment(1);
        lock(&self.repl).mark_dirty(dirty);
    }

    /// Drops a record's references to its blocks; a block no file holds any more goes
    /// to the garbage collector.
    fn released(&self, record: &FileRecord, now_ms: u64) {
        for (b, _) in record.distinct_blocks() {
            if let Some((_, locs)) = self.blocks.release(&b) {
                lock(&self.gc).block_dead(b, &locs, now_ms);
            }
        }
    }

    /// Maps a replica of `block` on `node` and, if the map did not have it, counts its
    /// bytes towards the node's storage until its next heartbeat.
    fn located(&self, block: &BlockId, node: NodeIdx) {
        if let Some(a) = self.blocks.add_location(block, node)
            && a.new
        {
            lock(&self.usage).gained(node, a.length);
        }
    }
}

/// A datanode's location for replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub id: DatanodeId,
    pub address: String,
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
    /// The Kubernetes pod watch runs: it decides whether a stopping datanode leaves
    /// for good ([`leaving`]).
    pods_watched: AtomicBool,
    /// When the reported fraction first reached the threshold (safe-mode extension).
    threshold_reached: Mutex<Option<Instant>>,
    started: Instant,
    writer_done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl NameSystem {
    /// Opens the store in `data_dir`, loads it and starts the metadata writer.
    pub fn open(config: &Config) -> Result<Arc<Self>> {
        let store = Arc::new(Store::open(&config.data_dir)?);
        Self::build(config, store, |store, on_durable| {
            let (writer, done) = Writer::spawn(store, on_durable);
            (writer, Some(done))
        })
    }

    /// With HA: the namesystem of one leadership instance, loaded from the replicated
    /// store as it stands. `replicated` makes its writer, which proposes batches to
    /// the Raft group; whoever applies them calls the `OnDurable` it is given, in log
    /// order (`crate::ha`).
    pub fn open_replicated(
        config: &Config,
        store: Arc<Store>,
        replicated: impl FnOnce(OnDurable) -> Writer,
    ) -> Result<Arc<Self>> {
        Self::build(config, store, |_, on_durable| {
            (replicated(on_durable), None)
        })
    }

    fn build(
        config: &Config,
        store: Arc<Store>,
        writer: impl FnOnce(
            Arc<Store>,
            OnDurable,
        ) -> (Writer, Option<tokio::sync::oneshot::Receiver<()>>),
    ) -> Result<Arc<Self>> {
        let settings = Settings::from(config);
        let clock = Clock::new();
        let loaded = store.load()?;
        let shared = Arc::new(Shared {
            blocks: BlockMap::new(),
            gc: Mutex::new(Gc::new(settings.delete_grace.as_millis() as u64)),
            repl: Mutex::new(Replication::new(
                settings.replication_streams,
                settings.replication_timeout.as_millis() as u64,
            )),
            usage: Mutex::new(Usage::new()),
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
                // Older than every datanode report this process will see, even if the
                // wall clock went back: no delete may name a generation reported after
                // it began (`crate::gc`).
                l.begin_ms = l.begin_ms.min(now);
                (l.id.clone(), l)
            })
            .collect::<HashMap<_, _>>();
        let s2 = shared.clone();
        let (writer, writer_done) =
            writer(store.clone(), Box::new(move |op, e| s2.on_durable(op, e)));
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
            pods_watched: AtomicBool::new(false),
            threshold_reached: Mutex::new(None),
            started: Instant::now(),
            writer_done: Mutex::new(writer_done),
        }))
    }

    /// Fires once the metadata writer thread has stopped (after the last handle to
    /// this namesystem is dropped). Taken once, by `run`.
    pub fn writer_done(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        lock(&self.writer_done).take()
    }

    /// With HA: stores a new block key through the log (`crate::ha`'s rotation).
    pub async fn store_block_key(&self, key: crate::meta::StoredKey) -> Result<()> {
        self.writer.submit(Op::PutBlockKey(key)).await.map(|_| ())
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    #[cfg(test)]
    pub fn blocks(&self) -> &BlockMap {
        &self.shared.blocks
    }

    pub fn in_safe_mode(&self) -> bool {
        self.safe_mode.load(Ordering::Relaxed)
    }

    fn cluster(&self) -> MutexGuard<'_, Cluster> {
        lock(&self.cluster)
    }

    /// Store counts (live files, tombstones), for tests.
    #[cfg(test)]
    pub fn store_counts(&self) -> Result<(u64, u64)> {
        self.store.counts()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::test_fixtures::*;

    #[tokio::test(start_paused = true)]
    async fn reopening_loads_files_and_leases_and_waits_for_reports_in_safe_mode() {
        let sim = Sim::new(&["--lease-ttl", "10s"]).with_nodes(2);
        sim.tick();
        sim.upload(b"kept", &[0, 1]).await;
        let open = sim.ns.begin_upload("later", "", 0).await.unwrap();
        let record = sim.record(b"kept").await;

        tokio::time::advance(Duration::from_secs(8)).await;
        let sim = sim.restart().await;
        assert_eq!(sim.record(b"kept").await, record, "files survive");
        assert!(sim.ns.in_safe_mode(), "a known block waits for its report");
        // The open upload's lease came back with a fresh TTL: still alive after the
        // first TTL would have ended.
        tokio::time::advance(Duration::from_secs(5)).await;
        sim.ns.renew(&open.id).expect("lease survived the restart");
        assert_eq!(sim.ns.lease_count(), 1);
    }
}

//! The block store: verified, content-addressed block files on local disk.
//!
//! This file holds the [`Store`] itself: opening it, its in-memory index of blocks,
//! its locks, and deletes. The rest of it, one concern per file:
//!
//! - `layout`: the directories on disk, and the startup scan of `blocks/`.
//! - `sidecar`: the CRC32C sidecar beside a block and the CRC arithmetic.
//! - `reservation`: room reserved for writes in flight.
//! - `tmp`: temp files of writes in progress, named or unnamed, and how they are put
//!   into place.
//! - `write`: [`BlockWriter`], streaming a block into its temp file.
//! - `commit`: the commit state machine that makes a temp file a visible block.
//! - `async_writer`: [`AsyncBlockWriter`], the write path driven from async code.
//! - `batch`: batches of small blocks, their journal and the shared `syncfs`.
//! - `read`: [`RangeReader`], verified reads, direct or buffered.
//! - `quarantine`: replicas that failed verification, and their pruning.
//! - `events`: the change log feeding the namenode's incremental reports.
//! - `generation`: the write generation of each replica, which makes a namenode's
//!   delete unable to destroy a replica written after it was decided.
//!
//! Invariants:
//! - A block becomes visible only when its temp file is put into place atomically (an
//!   unnamed file linked, or a named one renamed), after its SHA-256 equalled the
//!   expected id and the file was fsynced; the sidecar is put into place *before* the
//!   block and the directory is fsynced after both, so a visible block always has its
//!   sidecar. An orphan sidecar (crash between the two) is removed at startup.
//!   A batched block is put into place (renamed, nothing fsynced) once its bytes are
//!   in the journal, `fdatasync`ed; the journal keeps them until a checkpoint's
//!   `syncfs` covers the block, and the next start puts back whatever a crash lost.
//! - A block of at most [`CHECKSUM_CHUNK`] bytes has no sidecar: its one CRC would cover
//!   the same bytes as its SHA-256, so every read of it, whole or a range, reads the
//!   whole block and checks the SHA-256 instead. That saves a small block a file
//!   creation, an fsync and a rename per replica, most of what a small upload costs a
//!   datanode. Sidecars written beside small blocks by earlier versions are ignored and
//!   removed with their block.
//! - Every byte served is verified (see `read`); a failed check quarantines the replica
//!   and yields [`Error::Corrupt`].
//! - Commits, deletes and quarantines of one id are serialised by a striped lock, so
//!   concurrent writers of the same block end with one intact file (the first commit
//!   wins, later ones are no-op successes that report the replica again).
//! - Every completed write of a block, new or not, gives its replica a new write
//!   generation under that lock, and a namenode's delete removes a replica only if
//!   its generation is below the one the command names (`generation`): a write and a
//!   delete of one block are ordered by the lock, and the later write always survives.
//! - Every change is logged as an [`Event`] for the namenode's incremental reports.
//!
//! All functions here do blocking file I/O: async callers run them on
//! `spawn_blocking` ([`AsyncBlockWriter`] wraps a write in a dedicated blocking task;
//! [`BatchWriter`] commits the blocks of a batch held in memory by one blocking call).

mod async_writer;
mod batch;
mod commit;
mod events;
mod generation;
mod layout;
mod quarantine;
mod read;
mod reservation;
mod sidecar;
mod tmp;
mod write;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kdfs_core::BlockId;
use kdfs_core::cas::Sharding;

pub use self::async_writer::{AsyncBlockWriter, WRITE_QUEUE_DEPTH};
pub use self::batch::journal::{CHECKPOINT_AGE, CHECKPOINT_BYTES};
pub use self::batch::{BatchWriter, JOURNAL_TICK, run_journal_checkpoints};
pub use self::events::{Drained, Event, EventLog, MAX_PENDING_EVENTS};
pub use self::generation::{GENERATION_FILE, delete_allowed};
pub use self::quarantine::{Pruned, run_quarantine_pruning};
pub use self::read::{Piece, READ_PIECE, RangeReader};
pub use self::sidecar::CHECKSUM_CHUNK;
pub use self::write::BlockWriter;

use self::batch::journal::Journal;
use self::batch::syncfs::SyncfsGroup;
use self::generation::Generations;
use self::layout::{clean_dir, lock_dir, scan_blocks};
use self::sidecar::sidecar_of;
use crate::capacity::{self, CapacitySource, Space};
use crate::error::{Error, IoContext, Result};
use crate::sys::sync_dir;

/// Striped commit locks: commits of different blocks rarely wait for each other.
const COMMIT_STRIPES: usize = 64;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory.
    pub root: PathBuf,
    /// Shard layout of `blocks/`.
    pub sharding: Sharding,
    /// Bytes of the filesystem never used for blocks.
    pub reserved: u64,
    /// At most this many bytes of blocks, whatever the filesystem's size (`--capacity`).
    pub capacity_cap: Option<u64>,
    /// Where capacity figures come from (statvfs, or a fixed size in tests).
    pub capacity: CapacitySource,
    /// Write blocks into unnamed temp files (`O_TMPFILE`) linked into place, where the
    /// file system takes them; `false` (the default) uses named temp files renamed
    /// into place. Unnamed files are for journaled file systems only: their fdatasync
    /// writes the inode with a link count of 0, and on ext4 without a journal the
    /// directory fsync after the link does not write the inode again, so a crash can
    /// leave the block's name on an inode fsck must repair (`--unnamed-tmp`).
    pub unnamed_tmp: bool,
}

impl StoreConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            sharding: Sharding::default(),
            reserved: 0,
            capacity_cap: None,
            capacity: CapacitySource::Statvfs,
            unnamed_tmp: false,
        }
    }
}

/// What opening the store found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub blocks: usize,
    pub bytes: u64,
    /// Leftover in-progress writes removed from `tmp/`.
    pub tmp_removed: usize,
    /// Blocks of acknowledged batches a crash had lost, put back from the journal.
    pub journal_restored: usize,
    /// Sidecars without a block (a crash between the two renames), removed.
    pub orphans_removed: usize,
    /// Blocks without a sidecar, quarantined.
    pub quarantined: usize,
    pub took: Duration,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Bytes of blocks committed (new replicas only; dedup no-ops are not counted).
    pub bytes_written: AtomicU64,
    /// Verified bytes handed to readers (including the scanner and transfers).
    pub bytes_read: AtomicU64,
    pub blocks_committed: AtomicU64,
    pub corrupt_found: AtomicU64,
}

/// What a batch delete did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOutcome {
    pub deleted: usize,
    /// Kept: written since the namenode decided the delete (a generation at or above
    /// the one the command named). Reported again, so the namenode decides anew.
    pub kept: Vec<BlockId>,
    /// Not attempted: the deadline passed first. Reported again too.
    pub skipped: Vec<BlockId>,
}

/// What deleting one replica under a generation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unlinked {
    Removed,
    Absent,
    /// Written since the delete was decided.
    Kept,
}

/// A committed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub id: BlockId,
    pub length: u64,
    /// The block was already stored: nothing new was written.
    pub existed: bool,
}

/// The block store; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What every clone of a [`Store`] shares: its directories and settings, the index of
/// stored blocks with their lengths, the room reserved by writes in flight, the commit
/// stripes, the journal, and the event log.
#[derive(Debug)]
struct Inner {
    root: PathBuf,
    blocks: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    sharding: Sharding,
    limits: capacity::Limits,
    capacity: CapacitySource,
    index: RwLock<HashMap<BlockId, u64>>,
    used: AtomicU64,
    /// Bytes reserved by writes in flight; the mutex also serialises admission.
    in_flight: Mutex<u64>,
    stripes: Vec<Mutex<()>>,
    /// `syncfs` of the store's file system (journal checkpoints), calls shared
    /// ([`batch::syncfs::SyncfsGroup`]).
    syncfs: SyncfsGroup,
    /// What makes a batch durable before its blocks are ([`Store::commit_batch`]).
    journal: Journal,
    tmp_seq: AtomicU64,
    /// `tmp/` takes unnamed temp files (`O_TMPFILE`) that can be linked into place
    /// (probed at open; see [`tmp::create_tmp`]).
    unnamed_tmp: bool,
    events: EventLog,
    /// The write generation of every replica ([`generation`]).
    generations: Generations,
    stats: StoreStats,
    /// Held for the store's lifetime: a second datanode on the same directory fails.
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the store: locks the directory, empties `tmp/`, and
    /// scans `blocks/` into the in-memory index.
    pub fn open(cfg: StoreConfig) -> Result<(Self, OpenReport)> {
        let started = Instant::now();
        let root = cfg.root;
        let blocks = root.join("blocks");
        let tmp = root.join("tmp");
        let quarantine = root.join("quarantine");
        for d in [&root, &blocks, &tmp, &quarantine] {
            fs::create_dir_all(d).ctx(|| format!("create {}", d.display()))?;
        }
        let lock = lock_dir(&root)?;
        let generations = Generations::open(&root)?;
        let mut report = OpenReport {
            tmp_removed: clean_dir(&tmp)?,
            ..OpenReport::default()
        };
        let unnamed_tmp = cfg.unnamed_tmp && tmp::probe_unnamed_tmp(&tmp);
        let syncfs = SyncfsGroup::new(&tmp)?;
        // Before the scan: what a crash lost of acknowledged batches goes back first.
        let (journal, restored) = Journal::open(&root.join("journal"), |id, data| {
            batch::restore_block(&blocks, &tmp, &cfg.sharding, &id, data)
        })?;
        report.journal_restored = restored;
        let scan = scan_blocks(&blocks, cfg.sharding.levels())?;
        report.orphans_removed = scan.orphans_removed;
        let inner = Arc::new(Inner {
            root,
            blocks,
            tmp,
            quarantine,
            sharding: cfg.sharding,
            limits: capacity::Limits {
                reserved: cfg.reserved,
                cap: cfg.capacity_cap,
            },
            capacity: cfg.capacity,
            used: AtomicU64::new(scan.index.values().sum()),
            index: RwLock::new(scan.index),
            in_flight: Mutex::new(0),
            stripes: (0..COMMIT_STRIPES).map(|_| Mutex::new(())).collect(),
            syncfs,
            journal,
            tmp_seq: AtomicU64::new(0),
            unnamed_tmp,
            events: EventLog::default(),
            generations,
            stats: StoreStats::default(),
            _lock: lock,
        });
        let store = Self { inner };
        for id in scan.without_sidecar {
            let path = store.inner.sharding.path(&store.inner.blocks, &id);
            tracing::warn!(block = %id, "block has no checksum sidecar: quarantining");
            store.quarantine_file(&id, &path, "missing checksum sidecar");
            report.quarantined += 1;
        }
        report.blocks = store.block_count();
        report.bytes = store.inner.used.load(Ordering::Relaxed);
        report.took = started.elapsed();
        Ok((store, report))
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The path a block has (or would have) on disk.
    pub fn block_path(&self, id: &BlockId) -> PathBuf {
        self.inner.sharding.path(&self.inner.blocks, id)
    }

    /// Whether writes go to unnamed temp files (see [`StoreConfig::unnamed_tmp`]).
    pub fn unnamed_tmp(&self) -> bool {
        self.inner.unnamed_tmp
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.inner.tmp
    }

    pub fn quarantine_dir(&self) -> &Path {
        &self.inner.quarantine
    }

    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    pub fn contains(&self, id: &BlockId) -> bool {
        self.index().contains_key(id)
    }

    /// Length of a stored block.
    pub fn length(&self, id: &BlockId) -> Option<u64> {
        self.index().get(id).copied()
    }

    pub fn block_count(&self) -> usize {
        self.index().len()
    }

    /// Every stored block and its length (for full block reports and the scanner).
    pub fn snapshot(&self) -> Vec<(BlockId, u64)> {
        self.index().iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, HashMap<BlockId, u64>> {
        self.inner.index.read().expect("index lock poisoned")
    }

    /// Capacity, used and available bytes (one statvfs call).
    pub fn space(&self) -> Result<Space> {
        let in_flight = *self
            .inner
            .in_flight
            .lock()
            .expect("reservation lock poisoned");
        self.space_with(in_flight)
    }

    fn space_with(&self, in_flight: u64) -> Result<Space> {
        let used = self.inner.used.load(Ordering::Relaxed);
        let (total, free) = self
            .inner
            .capacity
            .total_and_free(&self.inner.root, used)
            .ctx(|| format!("statvfs {}", self.inner.root.display()))?;
        Ok(capacity::space(
            total,
            free,
            self.inner.limits,
            used,
            in_flight,
        ))
    }

    /// Removes a block whatever its generation (tests and tools; the namenode's deletes
    /// go through [`Store::delete_many`]). Returns whether it was stored.
    pub fn delete(&self, id: &BlockId) -> Result<bool> {
        let removed = self.unlink(id, u64::MAX)? == Unlinked::Removed;
        if removed {
            sync_dir(
                self.block_path(id)
                    .parent()
                    .expect("block paths have a parent"),
            )?;
        }
        Ok(removed)
    }

    /// The node's write generation now: every replica's is below it, and every write
    /// that completes later gets one at least as high. Sent with registrations and
    /// heartbeats; the namenode names such a value in its deletes.
    pub fn write_generation(&self) -> u64 {
        self.inner.generations.current()
    }

    /// The write generation of the replica of `id`, if it is stored.
    pub fn generation(&self, id: &BlockId) -> Option<u64> {
        let _g = self.stripe(id);
        self.contains(id).then(|| self.inner.generations.of(id))
    }

    /// Removes the replicas of `ids` whose write generation is below `below` (a
    /// namenode delete command), fsyncing each shard directory once at the end rather
    /// than once per block. A replica written since the namenode decided (at or above
    /// `below`) is kept, and so is every id not reached before `deadline`; both are
    /// reported again as held ([`Event::Added`]), so the namenode decides anew.
    pub fn delete_many(
        &self,
        ids: &[BlockId],
        below: u64,
        deadline: Instant,
    ) -> Result<DeleteOutcome> {
        let mut out = DeleteOutcome::default();
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            if Instant::now() >= deadline {
                out.skipped = ids[i..].to_vec();
                break;
            }
            match self.unlink(id, below)? {
                Unlinked::Removed => {
                    out.deleted += 1;
                    if let Some(d) = self.block_path(id).parent() {
                        dirs.insert(d.to_path_buf());
                    }
                }
                Unlinked::Kept => out.kept.push(*id),
                Unlinked::Absent => {}
            }
        }
        for id in &out.skipped {
            self.report_again(id);
        }
        for d in dirs {
            sync_dir(&d)?;
        }
        Ok(out)
    }

    /// Drops a block from the index and unlinks its files (no fsync), if its write
    /// generation is below `below`; otherwise reports it again.
    fn unlink(&self, id: &BlockId, below: u64) -> Result<Unlinked> {
        let _g = self.stripe(id);
        if !self.contains(id) {
            return Ok(Unlinked::Absent);
        }
        let generation = self.inner.generations.of(id);
        if !delete_allowed(generation, below) {
            self.push_added(id, generation);
            return Ok(Unlinked::Kept);
        }
        let Some(len) = self
            .inner
            .index
            .write()
            .expect("index lock poisoned")
            .remove(id)
        else {
            return Ok(Unlinked::Absent);
        };
        self.inner.generations.forget(id);
        self.inner.used.fetch_sub(len, Ordering::Relaxed);
        let path = self.block_path(id);
        // The block first, then its sidecar: a visible block always has its sidecar.
        for p in [path.clone(), sidecar_of(&path)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", p.display()), e)),
            }
        }
        self.inner.events.push(Event::Removed(*id));
        Ok(Unlinked::Removed)
    }

    /// Reports a stored replica again, at its current generation (nothing written).
    fn report_again(&self, id: &BlockId) {
        let _g = self.stripe(id);
        if self.contains(id) {
            self.push_added(id, self.inner.generations.of(id));
        }
    }

    /// Logs the replica of `id` as held, at `generation`. The caller holds its stripe.
    fn push_added(&self, id: &BlockId, generation: u64) {
        if let Some(length) = self.length(id) {
            self.inner.events.push(Event::Added {
                id: *id,
                length,
                generation,
            });
        }
    }

    /// The lock serialising commits, deletes and quarantines of `id`.
    pub(crate) fn stripe(&self, id: &BlockId) -> std::sync::MutexGuard<'_, ()> {
        let i = usize::from(id.as_bytes()[0]) % COMMIT_STRIPES;
        self.inner.stripes[i].lock().expect("stripe lock poisoned")
    }
}

/// A blocking task that panicked or was cancelled, as a store error.
pub(crate) fn task_error(e: tokio::task::JoinError) -> Error {
    Error::io("writer task", io::Error::other(e))
}

/// A store in `dir` with the default settings, for unit tests.
#[cfg(test)]
fn open_for_test(dir: &Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open a store").0
}

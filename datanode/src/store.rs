//! The block store: verified, content-addressed block files on local disk.
//!
//! Layout under the data directory:
//!
//! ```text
//! <data>/VERSION            node id + cluster id (see `version.rs`)
//! <data>/LOCK               flock'ed while a datanode uses the directory
//! <data>/tmp/               writes in progress (named files, or unnamed ones with
//!                           `--unnamed-tmp`); emptied at every start
//! <data>/blocks/ab/cd/<id>  a block: exactly its bytes (`sha256sum` equals its name)
//! <data>/blocks/ab/cd/<id>.crc   its sidecar: CRC32C of every 64 KiB chunk (none for
//!                                 a block of at most one chunk, see below)
//! <data>/journal/           the batch journal: batched blocks until a checkpoint
//!                           (see `journal.rs`)
//! <data>/quarantine/        replicas that failed verification, kept for inspection
//! <data>/scanner.state      when the block scanner last finished a pass
//! ```
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
//!   creation, an fsync and a rename per replica: most of what a small upload costs a
//!   datanode (BENCHMARKS.md). Sidecars written beside small blocks by earlier versions
//!   are ignored and removed with their block.
//! - Every byte served is verified: each covering 64 KiB chunk against its CRC32C, and a
//!   read of the whole block also against the SHA-256 (the last piece is held back until
//!   the hash matched), unless the reader takes that check over
//!   ([`RangeReader::without_block_hash`], used by `ReadBlock`, whose clients hash whole
//!   blocks themselves). A failed check quarantines the replica and yields
//!   [`Error::Corrupt`].
//! - Commits, deletes and quarantines of one id are serialised by a striped lock, so
//!   concurrent writers of the same block end with one intact file (the first commit
//!   wins, later ones are no-op successes that report the replica again).
//! - Every change is logged as an [`Event`] for the namenode's incremental reports.
//!
//! All functions here do blocking file I/O: async callers run them on
//! `spawn_blocking` ([`AsyncBlockWriter`] wraps a write in a dedicated blocking task;
//! [`BatchWriter`] commits the blocks of a batch held in memory by one blocking call).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kdfs_core::BlockId;
use kdfs_core::cas::Sharding;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};

use crate::capacity::{self, CapacitySource, Space};
use crate::error::{Error, IoContext, Result};
use crate::journal::Journal;

/// Bytes covered by one CRC32C in a sidecar.
pub const CHECKSUM_CHUNK: usize = 64 << 10;
/// Reads are served in pieces of at most this many bytes, ending on multiples of it
/// (so every piece but the first and last covers 16 whole checksum chunks).
pub const READ_PIECE: usize = kdfs_proto::transport::CHUNK_SIZE;
/// Data messages queued between a network task and its blocking writer: the bound that
/// makes a slow disk slow the sender down (back-pressure) instead of growing memory.
pub const WRITE_QUEUE_DEPTH: usize = 2;
/// A write asks the kernel to start writing back every this many bytes.
const SYNC_BEHIND: u64 = 8 << 20;
/// Alignment of direct-I/O writes: offsets, lengths and buffer addresses (the logical
/// block size of every disk we expect is 512 or 4096).
const DIRECT_ALIGN: usize = 4096;
/// Bytes a direct-I/O writer stages before each write.
const DIRECT_STAGE: usize = 1 << 20;
/// Striped commit locks: commits of different blocks rarely wait for each other.
const COMMIT_STRIPES: usize = 64;
/// Events kept for the incremental reporter before the log declares an overflow (the
/// reporter then sends a full report instead): bounds memory while a namenode is down.
pub const MAX_PENDING_EVENTS: usize = 1_000_000;

const SIDECAR_SUFFIX: &str = ".crc";
const SIDECAR_MAGIC: &[u8; 8] = b"KDFSCRC1";
const SIDECAR_HEADER: u64 = 16;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory.
    pub root: PathBuf,
    /// Shard layout of `blocks/`.
    pub sharding: Sharding,
    /// Bytes of the filesystem never used for blocks.
    pub reserved: u64,
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

/// A change of the store's content, for the namenode's incremental block reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Added { id: BlockId, length: u64 },
    Removed(BlockId),
    Corrupt(BlockId),
}

/// Events since the reporter last drained; `overflowed` means some were dropped and only
/// a full report restores the namenode's view.
#[derive(Debug, Default)]
pub struct Drained {
    pub events: Vec<Event>,
    pub overflowed: bool,
}

/// A single-consumer, bounded log of [`Event`]s with an async wake-up.
#[derive(Debug, Default)]
pub struct EventLog {
    queue: Mutex<Drained>,
    notify: Notify,
}

impl EventLog {
    fn push(&self, e: Event) {
        {
            let mut q = self.queue.lock().expect("event log lock poisoned");
            if q.events.len() >= MAX_PENDING_EVENTS {
                q.overflowed = true;
            } else {
                q.events.push(e);
            }
        }
        self.notify.notify_one();
    }

    /// Takes every pending event.
    pub fn drain(&self) -> Drained {
        std::mem::take(&mut *self.queue.lock().expect("event log lock poisoned"))
    }

    /// Puts events back at the front (a report that failed is retried later).
    pub fn requeue(&self, mut d: Drained) {
        let mut q = self.queue.lock().expect("event log lock poisoned");
        d.events.append(&mut q.events);
        if d.events.len() > MAX_PENDING_EVENTS {
            d.events.truncate(MAX_PENDING_EVENTS);
            d.overflowed = true;
        }
        q.overflowed |= d.overflowed;
        q.events = d.events;
    }

    /// Waits until an event was pushed since the last wait (cancellation-safe).
    pub async fn wait(&self) {
        self.notify.notified().await
    }
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
    /// Not attempted: the deadline passed first.
    pub skipped: Vec<BlockId>,
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

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    blocks: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    sharding: Sharding,
    reserved: u64,
    capacity: CapacitySource,
    index: RwLock<HashMap<BlockId, u64>>,
    used: AtomicU64,
    /// Bytes reserved by writes in flight; the mutex also serialises admission.
    in_flight: Mutex<u64>,
    stripes: Vec<Mutex<()>>,
    /// `syncfs` of the store's file system (journal checkpoints), calls shared
    /// ([`SyncfsGroup`]).
    syncfs: SyncfsGroup,
    /// What makes a batch durable before its blocks are ([`Store::commit_batch`]).
    journal: Journal,
    tmp_seq: AtomicU64,
    /// `tmp/` takes unnamed temp files (`O_TMPFILE`) that can be linked into place
    /// (probed at open; see [`create_tmp`]).
    unnamed_tmp: bool,
    events: EventLog,
    stats: StoreStats,
    /// Held for the store's lifetime: a second datanode on the same directory fails.
    _lock: File,
}

/// fsyncs a directory, making renames and creations inside it durable.
/// What [`Store::prune_quarantine`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Files: replicas and sidecars.
    pub files: usize,
    pub bytes: u64,
}

/// The quarantine time of a file named `<block id>.<unix ms>` or
/// `<block id>.<unix ms>.crc` (its sidecar); `None` for any other name.
fn quarantined_at(name: &str) -> Option<u64> {
    let name = name.strip_suffix(SIDECAR_SUFFIX).unwrap_or(name);
    let (id, ms) = name.split_once('.')?;
    BlockId::parse(id).ok()?;
    if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ms.parse().ok()
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync directory {}", dir.display()))
}

/// Creates the temp file of a write, with `O_DIRECT` where asked and the file system
/// takes it (see [`BlockWriter`]); returns the file and whether it is direct.
///
/// With `unnamed` the file is an unnamed inode in `tmp` (`O_TMPFILE`), given its name
/// at commit by [`link_into_place`]: no directory entry is added to `tmp/` and removed
/// again, and on ext4 without a journal the fsync of a new named file also writes out
/// its directory, so a replica costs one directory write less (BENCHMARKS.md); but
/// see [`StoreConfig::unnamed_tmp`] for where it is safe (off by default). An
/// abandoned write leaves nothing behind: the file system frees an unnamed file when
/// it is closed, or after a crash when it mounts (journaled file systems; ext4 without
/// a journal leaves that to fsck, which it needs after a crash anyway). Otherwise the
/// file is created at `path` (inside `tmp`) and renamed into place.
fn create_tmp(tmp: &Path, path: &Path, unnamed: bool, direct: bool) -> Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |flags: i32| {
        if unnamed {
            create_unnamed(tmp, flags)
        } else {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(flags)
                .open(path)
        }
    };
    if !direct {
        return open(0)
            .map(|f| (f, false))
            .ctx(|| format!("create {}", path.display()));
    }
    match open(libc::O_DIRECT) {
        Ok(f) => Ok((f, true)),
        // tmpfs and a few others refuse O_DIRECT: buffered writes there.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(0)
            .map(|f| (f, false))
            .ctx(|| format!("create {}", path.display())),
        Err(e) => Err(e).ctx(|| format!("create {}", path.display())),
    }
}

/// Opens a new unnamed file in `dir` for writing (`O_TMPFILE`, plus `flags` such as
/// `O_DIRECT`): it has no name until [`link_into_place`] gives it one, and vanishes
/// when closed without one.
pub fn create_unnamed(dir: &Path, flags: i32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_TMPFILE | flags)
        .open(dir)
}

/// Gives an unnamed temp file (see [`create_unnamed`]) the name `dest`, atomically: `dest`
/// appears whole or not at all. Through `/proc/self/fd`, which needs no privilege
/// (`AT_EMPTY_PATH` would need `CAP_DAC_READ_SEARCH`). A file already at `dest` is
/// removed first (not atomically, unlike a rename's replacement): callers hold the
/// id's commit stripe and have checked the index, so it can only be the leftover of a
/// commit that failed after its link.
pub fn link_into_place(file: &File, dest: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let src = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("no NUL in a formatted number");
    let dst = CString::new(dest.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let link = || {
        // SAFETY: both arguments are NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                src.as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    match link() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(dest)?;
            link()
        }
        r => r,
    }
}

/// Whether `tmp` takes unnamed temp files that [`link_into_place`] can name (kernel
/// and file system support `O_TMPFILE`, `/proc` is mounted). Leaves nothing behind.
fn probe_unnamed_tmp(tmp: &Path) -> bool {
    let probe = tmp.join("probe-unnamed");
    let ok = create_tmp(tmp, &probe, true, false)
        .map_err(|e| e.to_string())
        .and_then(|(mut f, _)| {
            f.write_all(b"kdfs")
                .and_then(|_| link_into_place(&f, &probe))
                .map_err(|e| e.to_string())
        });
    let _ = fs::remove_file(&probe);
    match ok {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(dir = %tmp.display(), error = %e, "no unnamed temp files here: block writes use named temp files and renames");
            false
        }
    }
}

/// Bytes waiting for an aligned direct write, in a buffer whose start is aligned
/// (over-allocated by `DIRECT_ALIGN` and used from its first aligned byte).
#[derive(Debug)]
struct Stage {
    /// The most the block can hold: a smaller block gets a smaller buffer.
    max_len: u64,
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Stage {
    fn new(max_len: u64) -> Self {
        Self {
            max_len,
            buf: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    /// The aligned region: `DIRECT_STAGE` bytes, or the block's most rounded up to
    /// the alignment if that is less (allocated at the first use).
    fn region(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            let cap = (self.max_len.min(DIRECT_STAGE as u64) as usize)
                .div_ceil(DIRECT_ALIGN)
                .max(1)
                * DIRECT_ALIGN;
            self.buf = vec![0u8; cap + DIRECT_ALIGN];
            self.start = self.buf.as_ptr().align_offset(DIRECT_ALIGN);
        }
        let cap = self.buf.len() - DIRECT_ALIGN;
        &mut self.buf[self.start..self.start + cap]
    }
}

/// Tells the kernel a range of more than one piece is about to be read from start to
/// end: it reads ahead further and starts on the whole range now. Blocks are written past the page cache
/// (see [`BlockWriter`]), so a read usually starts from the disk. Advice only: a
/// failure changes nothing but speed.
fn advise_read(file: &File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    for advice in [libc::POSIX_FADV_SEQUENTIAL, libc::POSIX_FADV_WILLNEED] {
        // SAFETY: plain syscall on a file descriptor we own.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                advice,
            );
        }
    }
}

/// Whether a block of `len` bytes is read past the page cache: the blocks that were
/// written past it (more than one direct stage, see [`BlockWriter`]). On this kind of
/// VM a buffered read of data not in the page cache cost 2.09 s of system CPU per GiB
/// (filling fresh page-cache pages), a direct read 0.13 s (BENCHMARKS.md); such a
/// block is rarely in the cache anyway, since it was written past it.
fn reads_direct(len: u64) -> bool {
    len > DIRECT_STAGE as u64
}

/// Opens a block file for reading, with `O_DIRECT` if `direct` and the file system
/// takes it (tmpfs refuses it: buffered there). Returns the file and whether it is
/// direct.
fn open_block(path: &Path, direct: bool) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    if direct {
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    File::open(path).map(|f| (f, false))
}

/// Reads `len` bytes at `at` (a multiple of [`DIRECT_ALIGN`]) from a file opened with
/// `O_DIRECT`: into an aligned buffer, asking for whole aligned blocks (the last one
/// may run past the end of the file, where the read stops short). Returns the bytes
/// and how many of the `len` the file held. The buffer is not zeroed first (the read
/// fills it; zeroing was 1.6% of a download's samples).
fn read_direct(file: &File, at: u64, len: usize) -> io::Result<(Bytes, usize)> {
    use std::os::unix::io::AsRawFd;
    debug_assert_eq!(at % DIRECT_ALIGN as u64, 0, "direct reads start aligned");
    let want = len.div_ceil(DIRECT_ALIGN).max(1) * DIRECT_ALIGN;
    let mut buf: Vec<u8> = Vec::with_capacity(want + DIRECT_ALIGN);
    let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
    assert!(start < DIRECT_ALIGN, "a byte pointer can always be aligned");
    let mut got = 0;
    while got < len {
        // Every read but one that hits the end of the file ends aligned, so `got` stays
        // a multiple of the alignment until the loop ends.
        // SAFETY: `start + want <= capacity`, so the kernel writes at most `want - got`
        // bytes inside the allocation; nothing reads them before they are written.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(start + got).cast(),
                want - got,
                (at + got as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    // SAFETY: `..start` is zeroed here and `start..start + got` was written by the reads,
    // so every byte below the new length is initialised.
    unsafe {
        std::ptr::write_bytes(buf.as_mut_ptr(), 0, start);
        buf.set_len(start + got);
    }
    let got = got.min(len);
    Ok((Bytes::from(buf).slice(start..start + got), got))
}

/// Whether a block of `len` bytes keeps a checksum sidecar (see the module docs).
fn needs_sidecar(len: u64) -> bool {
    len > CHECKSUM_CHUNK as u64
}

fn sidecar_of(block: &Path) -> PathBuf {
    let mut s = block.as_os_str().to_owned();
    s.push(SIDECAR_SUFFIX);
    PathBuf::from(s)
}

fn lock_dir(root: &Path) -> Result<File> {
    use std::os::unix::io::AsRawFd;
    let p = root.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .ctx(|| format!("open {}", p.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::DataDir {
            dir: root.display().to_string(),
            reason: format!(
                "locked by another datanode process ({})",
                io::Error::last_os_error()
            ),
        });
    }
    Ok(f)
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
        let mut report = OpenReport {
            tmp_removed: clean_dir(&tmp)?,
            ..OpenReport::default()
        };
        let unnamed_tmp = cfg.unnamed_tmp && probe_unnamed_tmp(&tmp);
        let syncfs = SyncfsGroup::new(&tmp)?;
        // Before the scan: what a crash lost of acknowledged batches goes back first.
        let (journal, restored) = Journal::open(&root.join("journal"), |id, data| {
            restore_block(&blocks, &tmp, &cfg.sharding, &id, data)
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
            reserved: cfg.reserved,
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

    /// Deletes the replicas (and their sidecars) quarantined before `cutoff_ms`, Unix
    /// milliseconds: their names end in the time they were quarantined (see
    /// `quarantine_locked`). A file whose name does not have that form was not put
    /// there by a store and is left alone. Kept replicas are for inspection only
    /// (nothing reads them), so the pass needs no lock.
    pub fn prune_quarantine(&self, cutoff_ms: u64) -> Result<Pruned> {
        let dir = &self.inner.quarantine;
        let mut pruned = Pruned::default();
        let entries = fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.ctx(|| format!("list {}", dir.display()))?;
            let name = entry.file_name();
            let Some(at_ms) = name.to_str().and_then(quarantined_at) else {
                continue;
            };
            if at_ms >= cutoff_ms {
                continue;
            }
            let path = entry.path();
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(&path) {
                Ok(()) => {
                    pruned.files += 1;
                    pruned.bytes += len;
                }
                // Removed meanwhile (another pass, an operator): nothing to do.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(format!("remove {}", path.display()), e));
                }
            }
        }
        Ok(pruned)
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
            self.inner.reserved,
            used,
            in_flight,
        ))
    }

    /// Starts a write of at most `max_len` bytes: reserves the room (refusing with
    /// [`Error::OutOfSpace`] if it cannot fit) and creates the temp file.
    pub fn begin_write(&self, max_len: u64) -> Result<BlockWriter> {
        let reservation = self.reserve(max_len)?;
        self.begin_reserved(reservation, true)
    }

    /// Reserves room for a write of at most `max_len` bytes (one statvfs, no file).
    fn reserve(&self, max_len: u64) -> Result<Reservation> {
        let mut in_flight = self
            .inner
            .in_flight
            .lock()
            .expect("reservation lock poisoned");
        let space = self.space_with(*in_flight)?;
        if max_len > space.available {
            return Err(Error::OutOfSpace {
                needed: max_len,
                available: space.available,
            });
        }
        *in_flight += max_len;
        Ok(Reservation {
            inner: self.inner.clone(),
            bytes: max_len,
        })
    }

    /// Creates the temp file of a write whose room is reserved; `direct` asks for
    /// `O_DIRECT` (see [`BlockWriter`]).
    fn begin_reserved(&self, reservation: Reservation, direct: bool) -> Result<BlockWriter> {
        let max_len = reservation.bytes;
        let seq = self.inner.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.inner.tmp.join(format!("w{seq:08}"));
        let unnamed = self.inner.unnamed_tmp;
        let (file, direct) = create_tmp(&self.inner.tmp, &path, unnamed, direct)?;
        Ok(BlockWriter {
            inner: self.inner.clone(),
            file: Some(file),
            direct: direct.then(|| Stage::new(max_len)),
            path,
            unnamed,
            hasher: Some(Sha256::new()),
            crcs: Vec::new(),
            chunk_crc: 0,
            chunk_fill: 0,
            len: 0,
            synced: 0,
            max_len,
            _reservation: reservation,
            done: false,
        })
    }

    /// Writes a whole block from memory (tests, small tools).
    pub fn put(&self, data: &[u8]) -> Result<Commit> {
        let mut w = self.begin_write(data.len() as u64)?;
        w.write(data)?;
        w.commit(BlockId::of(data))
    }

    /// Starts a batch of blocks of at most `max_len` bytes in all (see [`BatchWriter`]):
    /// reserves the room, refusing with [`Error::OutOfSpace`] as
    /// [`Store::begin_write`] does. One statvfs under the reservation lock: short
    /// enough for a runtime thread.
    pub fn begin_batch(&self, max_len: u64) -> Result<BatchWriter> {
        Ok(BatchWriter {
            store: self.clone(),
            room: self.reserve(max_len)?,
        })
    }

    /// Opens a verified reader of `length` bytes at `offset` (`length` 0: to the end).
    pub fn read_range(&self, id: &BlockId, offset: u64, length: u64) -> Result<RangeReader> {
        let block_len = self.length(id).ok_or(Error::NotFound(*id))?;
        let end = if length == 0 {
            block_len
        } else {
            offset.saturating_add(length)
        };
        if offset > block_len || end > block_len {
            return Err(Error::Range {
                offset,
                length,
                block_len,
            });
        }
        let path = self.block_path(id);
        let (file, direct) = match open_block(&path, reads_direct(block_len)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Deleted or quarantined since the index lookup.
                return Err(Error::NotFound(*id));
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let meta = file.metadata().ctx(|| format!("stat {}", path.display()))?;
        if !direct && end - offset > READ_PIECE as u64 {
            advise_read(&file, offset, end - offset);
        }
        let reader = RangeReader {
            store: self.clone(),
            id: *id,
            ino: meta.ino(),
            path: path.clone(),
            file,
            direct,
            sidecar: None,
            block_len,
            pos: offset,
            end,
            full: (offset == 0 && end == block_len).then(Sha256::new),
        };
        if meta.len() != block_len {
            return Err(reader.corrupt(format!(
                "file holds {} bytes, index says {block_len}",
                meta.len()
            )));
        }
        if block_len == 0 && *id != BlockId::of(b"") {
            return Err(reader.corrupt("empty file under a non-empty block's id".into()));
        }
        if !needs_sidecar(block_len) {
            // Verified by its SHA-256 on every read (`read_small`).
            return Ok(reader);
        }
        let sidecar_path = sidecar_of(&path);
        let sidecar = match File::open(&sidecar_path) {
            Ok(f) => f,
            Err(e) => return Err(reader.corrupt(format!("checksum sidecar unreadable: {e}"))),
        };
        let mut header = [0u8; SIDECAR_HEADER as usize];
        let want_len = SIDECAR_HEADER + 4 * block_len.div_ceil(CHECKSUM_CHUNK as u64);
        let sidecar_ok = sidecar.read_exact_at(&mut header, 0).is_ok()
            && &header[..8] == SIDECAR_MAGIC
            && header[8..] == block_len.to_le_bytes()
            && sidecar.metadata().map(|m| m.len()).ok() == Some(want_len);
        if !sidecar_ok {
            return Err(reader.corrupt("checksum sidecar is malformed".into()));
        }
        Ok(RangeReader {
            sidecar: Some(sidecar),
            ..reader
        })
    }

    /// Reads a whole block into memory, verified (tests and small tools only).
    pub fn get(&self, id: &BlockId) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for piece in self.read_range(id, 0, 0)? {
            out.extend_from_slice(&piece?.data);
        }
        Ok(out)
    }

    /// Removes a block (namenode's delete command). Returns whether it was stored.
    pub fn delete(&self, id: &BlockId) -> Result<bool> {
        let removed = self.unlink(id)?;
        if removed {
            sync_dir(
                self.block_path(id)
                    .parent()
                    .expect("block paths have a parent"),
            )?;
        }
        Ok(removed)
    }

    /// Removes many blocks (a namenode delete command), fsyncing each shard directory
    /// once at the end rather than once per block. Ids not reached before `deadline`
    /// are skipped and returned: the namenode assumes a delivered delete runs promptly
    /// (its fence against deleting a re-upload of the same content relies on it), and
    /// reconciliation at the next full report re-issues whatever is still unwanted.
    pub fn delete_many(&self, ids: &[BlockId], deadline: Instant) -> Result<DeleteOutcome> {
        let mut out = DeleteOutcome::default();
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            if Instant::now() >= deadline {
                out.skipped = ids[i..].to_vec();
                break;
            }
            if self.unlink(id)? {
                out.deleted += 1;
                if let Some(d) = self.block_path(id).parent() {
                    dirs.insert(d.to_path_buf());
                }
            }
        }
        for d in dirs {
            sync_dir(&d)?;
        }
        Ok(out)
    }

    /// Drops a block from the index and unlinks its files (no fsync).
    fn unlink(&self, id: &BlockId) -> Result<bool> {
        let _g = self.stripe(id);
        let Some(len) = self
            .inner
            .index
            .write()
            .expect("index lock poisoned")
            .remove(id)
        else {
            return Ok(false);
        };
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
        Ok(true)
    }

    /// Moves a replica to `quarantine/` because it failed verification. `ino` guards
    /// against quarantining a fresh, good copy written after the reader opened the bad
    /// one. Logs, counts and records the event.
    fn quarantine_checked(&self, id: &BlockId, ino: Option<u64>, reason: &str) {
        let path = self.block_path(id);
        let _g = self.stripe(id);
        if let Some(ino) = ino
            && fs::metadata(&path).map(|m| m.ino()).ok() != Some(ino)
        {
            return;
        }
        self.quarantine_locked(id, &path, reason);
    }

    fn quarantine_file(&self, id: &BlockId, path: &Path, reason: &str) {
        let _g = self.stripe(id);
        self.quarantine_locked(id, path, reason);
    }

    fn quarantine_locked(&self, id: &BlockId, path: &Path, reason: &str) {
        if let Some(len) = self
            .inner
            .index
            .write()
            .expect("index lock poisoned")
            .remove(id)
        {
            self.inner.used.fetch_sub(len, Ordering::Relaxed);
        }
        let dest = self
            .inner
            .quarantine
            .join(format!("{id}.{}", crate::version::now_ms()));
        if let Err(e) = fs::rename(path, &dest) {
            tracing::error!(block = %id, error = %e, "cannot move corrupt replica to quarantine; removing it");
            let _ = fs::remove_file(path);
        }
        let _ = fs::rename(sidecar_of(path), sidecar_of(&dest));
        if let Some(dir) = path.parent() {
            let _ = sync_dir(dir);
        }
        tracing::warn!(block = %id, reason, quarantine = %dest.display(), "corrupt replica quarantined");
        self.inner
            .stats
            .corrupt_found
            .fetch_add(1, Ordering::Relaxed);
        self.inner.events.push(Event::Corrupt(*id));
    }

    /// A commit of a block this store already holds: nothing is written, but the
    /// replica is reported again (an [`Event::Added`]). The namenode may have dropped
    /// it meanwhile (a late bad-replica report, a lost report), and a copy it sent
    /// here is only complete when this node reports the block: without the event it
    /// would wait for its timeout and be sent again, until the next full report.
    /// `None` if the block is not here. Takes the block's stripe lock, so no delete
    /// slips in between the check and the event.
    fn recommit(&self, id: &BlockId) -> Option<Commit> {
        let _g = self.stripe(id);
        self.recommit_locked(id)
    }

    /// [`Store::recommit`] for a caller holding the block's stripe lock.
    fn recommit_locked(&self, id: &BlockId) -> Option<Commit> {
        let length = self.length(id)?;
        self.inner.events.push(Event::Added { id: *id, length });
        Some(Commit {
            id: *id,
            length,
            existed: true,
        })
    }

    fn stripe(&self, id: &BlockId) -> std::sync::MutexGuard<'_, ()> {
        let i = usize::from(id.as_bytes()[0]) % COMMIT_STRIPES;
        self.inner.stripes[i].lock().expect("stripe lock poisoned")
    }

    /// Runs `put` (a rename or link to `dest`); if `dest`'s shard directory is missing,
    /// makes it ([`Store::ensure_parent`]) and runs `put` again. Trying first saves a
    /// `stat` of the directory per block: once a store has filled, it nearly always
    /// exists.
    fn move_into_place(
        &self,
        dest: &Path,
        sync: Sync,
        put: impl Fn() -> io::Result<()>,
    ) -> io::Result<Result<()>> {
        match put() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.ensure_parent(dest, sync) {
                Ok(()) => put().map(Ok),
                Err(e) => Ok(Err(e)),
            },
            r => r.map(Ok),
        }
    }

    /// Makes sure the shard directory of `path` exists ([`make_shard_dirs`]).
    fn ensure_parent(&self, path: &Path, sync: Sync) -> Result<()> {
        make_shard_dirs(&self.inner.blocks, path, sync)
    }
}

/// Makes sure the shard directory of block path `path` under `blocks` exists,
/// fsyncing (with [`Sync::Now`]) the parent of each directory it created, and only
/// those: once the first-level shards exist, a new shard costs one directory fsync,
/// not one per level.
fn make_shard_dirs(blocks: &Path, path: &Path, sync: Sync) -> Result<()> {
    let dir = path.parent().expect("block paths have a parent");
    if dir.is_dir() {
        return Ok(());
    }
    // The missing levels, deepest first, up to the first one that exists.
    let mut missing = vec![dir];
    let mut d = dir;
    while let Some(parent) = d.parent() {
        if parent == blocks || parent.is_dir() {
            break;
        }
        missing.push(parent);
        d = parent;
    }
    for m in missing.iter().rev() {
        match fs::create_dir(m) {
            Ok(()) => {}
            // Made meanwhile by another writer: fsync its parent all the same.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx(|| format!("create {}", m.display())),
        }
        if sync == Sync::Now {
            sync_dir(m.parent().expect("shard directories have a parent"))?;
        }
    }
    Ok(())
}

/// Bytes reserved for a write in flight; released when the write ends either way.
#[derive(Debug)]
struct Reservation {
    inner: Arc<Inner>,
    bytes: u64,
}

impl Reservation {
    /// Moves up to `bytes` of this reservation into a new one: the room reserved in all
    /// does not change.
    fn split(&mut self, bytes: u64) -> Reservation {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Reservation {
            inner: self.inner.clone(),
            bytes,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut r = self
            .inner
            .in_flight
            .lock()
            .expect("reservation lock poisoned");
        *r = r.saturating_sub(self.bytes);
    }
}

/// A write in progress: hashes and checksums the bytes as they stream to `tmp/`.
/// Dropping it without [`BlockWriter::commit`] removes the temp file.
#[derive(Debug)]
pub struct BlockWriter {
    inner: Arc<Inner>,
    file: Option<File>,
    /// `Some` when the file is open with `O_DIRECT`: bytes are staged in an aligned
    /// buffer and written in aligned pieces, bypassing the page cache. On this kind of
    /// VM a buffered write of new data cost ~2 ns/byte of CPU (page-cache pages
    /// allocated and charged), 15× the copy itself (BENCHMARKS.md); reads stay buffered.
    /// [`AsyncBlockWriter`] writes blocks of at most 1 MiB buffered, so that small files
    /// stay in the page cache for the reads that usually follow.
    direct: Option<Stage>,
    /// The temp file's path in `tmp/`; when `unnamed`, only the name used in messages
    /// (the file is an unnamed inode, see [`create_tmp`]).
    path: PathBuf,
    unnamed: bool,
    /// `None` when the caller hashes the bytes itself (on another thread).
    hasher: Option<Sha256>,
    crcs: Vec<u32>,
    chunk_crc: u32,
    chunk_fill: usize,
    len: u64,
    /// Buffered: bytes whose writeback was already started (see `start_writeback`).
    /// Direct: bytes written to the file (the staged rest is not).
    synced: u64,
    max_len: u64,
    _reservation: Reservation,
    done: bool,
}

impl BlockWriter {
    /// Appends bytes. Refuses to grow past the declared `max_len`.
    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        if self.len + data.len() as u64 > self.max_len {
            return Err(Error::TooLong { max: self.max_len });
        }
        self.write_out(data)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
        }
        self.len += data.len() as u64;
        if self.direct.is_none() && self.len - self.synced >= SYNC_BEHIND {
            self.start_writeback();
        }
        while !data.is_empty() {
            let take = (CHECKSUM_CHUNK - self.chunk_fill).min(data.len());
            self.chunk_crc = crc32c::crc32c_append(self.chunk_crc, &data[..take]);
            self.chunk_fill += take;
            data = &data[take..];
            if self.chunk_fill == CHECKSUM_CHUNK {
                self.crcs.push(self.chunk_crc);
                self.chunk_crc = 0;
                self.chunk_fill = 0;
            }
        }
        Ok(())
    }

    /// Hands `data` to the file: staged and written in aligned pieces when direct,
    /// else written through the page cache.
    fn write_out(&mut self, mut data: &[u8]) -> Result<()> {
        if self.direct.is_none() {
            let file = self.file.as_mut().expect("file is present until commit");
            return file
                .write_all(data)
                .ctx(|| format!("write {}", self.path.display()));
        }
        while !data.is_empty() {
            let stage = self.direct.as_mut().expect("checked above");
            let filled = stage.len;
            let region = stage.region();
            let cap = region.len();
            let take = (cap - filled).min(data.len());
            region[filled..filled + take].copy_from_slice(&data[..take]);
            stage.len += take;
            data = &data[take..];
            if filled + take == cap {
                self.flush_stage()?;
            }
        }
        Ok(())
    }

    /// Writes the staged bytes at the end of what is on disk, padded with zeros to the
    /// alignment (the commit cuts the file back to its length).
    fn flush_stage(&mut self) -> Result<()> {
        let stage = self.direct.as_mut().expect("only direct writers stage");
        if stage.len == 0 {
            return Ok(());
        }
        let padded = stage.len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        let len = stage.len;
        let region = stage.region();
        region[len..padded].fill(0);
        let file = self.file.as_ref().expect("file is present until commit");
        // Everything before this piece was written in whole stages, so `synced`
        // (the bytes on disk) is aligned.
        file.write_all_at(&region[..padded], self.synced)
            .ctx(|| format!("write {}", self.path.display()))?;
        self.synced += len as u64;
        stage.len = 0;
        Ok(())
    }

    /// Starts the kernel's writeback of everything written since the last call without
    /// waiting for it ("sync behind writes", as HDFS datanodes do), so the fsync at
    /// commit only waits for the tail of the block instead of all of it.
    fn start_writeback(&mut self) {
        use std::os::unix::io::AsRawFd;
        let file = self.file.as_ref().expect("file is present until commit");
        // SAFETY: plain syscall on a file descriptor we own; a failure only loses the
        // optimisation (the commit's fsync still makes the data durable).
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                self.synced as libc::off64_t,
                (self.len - self.synced) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.synced = self.len;
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Verifies the SHA-256 against `expected` and, if it matches, makes the block
    /// durable and visible. A mismatch removes the temp file.
    pub fn commit(mut self, expected: BlockId) -> Result<Commit> {
        let hasher = self
            .hasher
            .take()
            .expect("commit without a digest needs inline hashing");
        let actual = BlockId::from_bytes(hasher.finalize().into());
        self.commit_digest(expected, actual)
    }

    /// Stops hashing inline: the caller computes the SHA-256 of exactly the bytes it
    /// writes and passes it to `commit_digest`. Private: only [`AsyncBlockWriter`], which
    /// hashes on its own thread, may vouch for a digest.
    fn without_hashing(mut self) -> Self {
        self.hasher = None;
        self
    }

    /// Commits with a digest computed over the same bytes (see `without_hashing`);
    /// otherwise as [`BlockWriter::commit`].
    fn commit_digest(self, expected: BlockId, actual: BlockId) -> Result<Commit> {
        match self.stage(expected, actual, Sync::Now)? {
            Staged::Existing(c) => Ok(c),
            Staged::New(s) => {
                let store = s.store.clone();
                let _g = store.stripe(&expected);
                match (*s).place_locked(Sync::Now)? {
                    Placed::Existing(c) => Ok(c),
                    Placed::New(p) => Ok(p.publish_locked()),
                }
            }
        }
    }

    /// The first step of a commit: the digest checked, the file (and its sidecar, in
    /// its own temp file) complete, fsynced with [`Sync::Now`]. A block already stored
    /// ends here.
    fn stage(mut self, expected: BlockId, actual: BlockId, sync: Sync) -> Result<Staged> {
        if actual != expected {
            return Err(Error::HashMismatch { expected, actual });
        }
        let store = Store {
            inner: self.inner.clone(),
        };
        let length = self.len;
        // The lock-free check first: most blocks are new.
        if store.contains(&expected)
            && let Some(c) = store.recommit(&expected)
        {
            return Ok(Staged::Existing(c)); // Cheap: dropping `self` removes the temp file.
        }
        if self.chunk_fill > 0 {
            self.crcs.push(self.chunk_crc);
        }
        if self.direct.is_some() {
            self.flush_stage()?;
            // The last piece was padded to the alignment.
            let file = self.file.as_ref().expect("file is present until commit");
            file.set_len(length)
                .ctx(|| format!("truncate {}", self.path.display()))?;
        }
        let file = self.file.take().expect("file is present until commit");
        if sync == Sync::Now {
            file.sync_data()
                .ctx(|| format!("fsync {}", self.path.display()))?;
        }
        // An unnamed file stays open until it is linked into place.
        let file = self.unnamed.then_some(file);
        let tmp_sidecar = needs_sidecar(length).then(|| sidecar_of(&self.path));
        let mut sidecar_file = None;
        if let Some(tmp_sidecar) = &tmp_sidecar {
            let side = sidecar_bytes(length, &self.crcs);
            let (mut sf, _) = create_tmp(&self.inner.tmp, tmp_sidecar, self.unnamed, false)?;
            sf.write_all(&side)
                .and_then(|_| match sync {
                    Sync::Now => sf.sync_data(),
                    Sync::Later => Ok(()),
                })
                .ctx(|| format!("write {}", tmp_sidecar.display()))?;
            sidecar_file = self.unnamed.then_some(sf);
        }
        Ok(Staged::New(Box::new(StagedBlock {
            writer: self,
            store,
            id: expected,
            file,
            tmp_sidecar,
            sidecar_file,
        })))
    }
}

/// Whether a commit step makes what it wrote durable itself (`Now`: fsyncs of the
/// file, sidecar and directories) or leaves that to the caller's `syncfs` of the
/// whole file system ([`Store::commit_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    Now,
    Later,
}

enum Staged {
    /// The block was already stored: the commit is a no-op success.
    Existing(Commit),
    New(Box<StagedBlock>),
}

/// A block whose bytes and sidecar are complete in their temp files.
struct StagedBlock {
    writer: BlockWriter,
    store: Store,
    id: BlockId,
    /// The unnamed temp file, linked into place by `place`.
    file: Option<File>,
    tmp_sidecar: Option<PathBuf>,
    sidecar_file: Option<File>,
}

enum Placed {
    Existing(Commit),
    New(PlacedBlock),
}

/// A block under its name, not yet in the index: nobody reads it or acks it yet.
struct PlacedBlock {
    store: Store,
    id: BlockId,
    length: u64,
}

impl StagedBlock {
    /// Puts the sidecar, then the block, into place, with [`Sync::Now`] fsyncing the
    /// shard directory after. The caller holds the block's stripe lock.
    fn place_locked(mut self, sync: Sync) -> Result<Placed> {
        let store = &self.store;
        let expected = self.id;
        let dest = store.block_path(&expected);
        if let Some(c) = store.recommit_locked(&expected) {
            return Ok(Placed::Existing(c)); // Another writer won the race.
        }
        if let Some(tmp_sidecar) = &self.tmp_sidecar {
            let side_dest = sidecar_of(&dest);
            store
                .move_into_place(&dest, sync, || match &self.sidecar_file {
                    Some(sf) => link_into_place(sf, &side_dest),
                    None => fs::rename(tmp_sidecar, &side_dest),
                })
                .ctx(|| format!("put {} into place", tmp_sidecar.display()))??;
        }
        let path = &self.writer.path;
        store
            .move_into_place(&dest, sync, || match &self.file {
                Some(f) => link_into_place(f, &dest),
                None => fs::rename(path, &dest),
            })
            .ctx(|| format!("put {} into place", path.display()))??;
        self.writer.done = true;
        if sync == Sync::Now {
            sync_dir(dest.parent().expect("block paths have a parent"))?;
        }
        Ok(Placed::New(PlacedBlock {
            store: self.store.clone(),
            id: expected,
            length: self.writer.len,
        }))
    }
}

impl PlacedBlock {
    /// Makes the durable block visible: the index, the counters, the event for the
    /// incremental report. The caller holds the block's stripe lock.
    fn publish_locked(self) -> Commit {
        let Self { store, id, length } = self;
        let new = store
            .inner
            .index
            .write()
            .expect("index lock poisoned")
            .insert(id, length)
            .is_none();
        // Not new: the same block twice in one batch, put into place twice.
        if new {
            store.inner.used.fetch_add(length, Ordering::Relaxed);
            let stats = &store.inner.stats;
            stats.bytes_written.fetch_add(length, Ordering::Relaxed);
            stats.blocks_committed.fetch_add(1, Ordering::Relaxed);
        }
        store.inner.events.push(Event::Added { id, length });
        Commit {
            id,
            length,
            existed: !new,
        }
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        if !self.done && !self.unnamed {
            self.file = None;
            let _ = fs::remove_file(&self.path);
            let _ = fs::remove_file(sidecar_of(&self.path));
        }
    }
}

/// A verified piece of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Offset of `data[0]` within the block.
    pub offset: u64,
    pub data: Bytes,
    /// CRC32C of `data`, for the reader to check what reaches it (`ReadBlock` sends it).
    pub crc32c: u32,
}

/// A GF(2) 32×32 matrix acting on CRC32C registers, one `u32` per column.
type Gf2Matrix = [u32; 32];

fn gf2_times(mat: &Gf2Matrix, mut vec: u32) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 != 0 {
            sum ^= mat[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

/// The operator that feeds [`CHECKSUM_CHUNK`] zero bytes through a CRC32C register
/// (zlib's `crc32_combine` construction, done once instead of per call).
fn chunk_shift() -> &'static Gf2Matrix {
    static SHIFT: std::sync::OnceLock<Gf2Matrix> = std::sync::OnceLock::new();
    SHIFT.get_or_init(|| {
        // One zero bit: the reflected polynomial, then a shift by one.
        let mut op: Gf2Matrix = [0; 32];
        op[0] = 0x82F6_3B78;
        for (n, col) in op.iter_mut().enumerate().skip(1) {
            *col = 1 << (n - 1);
        }
        // Squaring doubles the zero bits: 2^k bits after k squarings.
        let bits = (CHECKSUM_CHUNK * 8).trailing_zeros();
        debug_assert!((CHECKSUM_CHUNK * 8).is_power_of_two());
        for _ in 0..bits {
            let mut sq: Gf2Matrix = [0; 32];
            for (n, col) in sq.iter_mut().enumerate() {
                *col = gf2_times(&op, op[n]);
            }
            op = sq;
        }
        op
    })
}

/// CRC32C of `a` followed by `b`, from `crc32c(a)`, `crc32c(b)` and `b.len()`: a few
/// dozen operations for a whole checksum chunk, instead of a second pass over the
/// bytes whose chunk CRCs were just checked.
fn crc32c_concat(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    if len_b == CHECKSUM_CHUNK {
        gf2_times(chunk_shift(), crc_a) ^ crc_b
    } else {
        crc32c::crc32c_combine(crc_a, crc_b, len_b)
    }
}

/// Verified pieces of a byte range, at most [`READ_PIECE`] bytes each, ending on
/// multiples of it. Each `next()` does blocking I/O.
#[derive(Debug)]
pub struct RangeReader {
    store: Store,
    id: BlockId,
    ino: u64,
    path: PathBuf,
    file: File,
    /// `file` is open with `O_DIRECT` (see [`reads_direct`]).
    direct: bool,
    sidecar: Option<File>,
    block_len: u64,
    pos: u64,
    end: u64,
    /// Present when the range is the whole block: its SHA-256 is checked too.
    full: Option<Sha256>,
}

impl RangeReader {
    pub fn block_len(&self) -> u64 {
        self.block_len
    }

    /// Leaves the whole-block SHA-256 to the reader: for `ReadBlock`, whose clients hash
    /// every whole block they read (the gateway does, and reports a mismatch as a bad
    /// replica), so checking it here too would hash every byte served twice. Every
    /// chunk's CRC32C is still checked before it is handed out.
    pub fn without_block_hash(mut self) -> Self {
        self.full = None;
        self
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    fn corrupt(&self, reason: String) -> Error {
        self.store
            .quarantine_checked(&self.id, Some(self.ino), &reason);
        Error::Corrupt {
            id: self.id,
            reason,
        }
    }

    fn read_piece(&mut self) -> Result<Piece> {
        if !needs_sidecar(self.block_len) {
            return self.read_small();
        }
        let chunk = CHECKSUM_CHUNK as u64;
        let piece_end = ((self.pos / READ_PIECE as u64 + 1) * READ_PIECE as u64).min(self.end);
        let span_start = self.pos / chunk * chunk;
        let span_end = (piece_end.div_ceil(chunk) * chunk).min(self.block_len);
        let span_len = (span_end - span_start) as usize;
        let buf = self.read_at(span_start, span_len)?;
        let first_chunk = span_start / chunk;
        let n_chunks = span_len.div_ceil(CHECKSUM_CHUNK);
        let mut crc_raw = vec![0u8; 4 * n_chunks];
        let sidecar = self
            .sidecar
            .as_ref()
            .expect("sidecar opened with the reader");
        if let Err(e) = sidecar.read_exact_at(&mut crc_raw, SIDECAR_HEADER + 4 * first_chunk) {
            return Err(self.corrupt(format!("checksum sidecar unreadable: {e}")));
        }
        // The piece's own CRC comes from its chunks' when it covers them exactly (every
        // piece of an aligned read but a block's last); otherwise from its bytes.
        let whole_span = self.pos == span_start && piece_end == span_end;
        let mut piece_crc = 0u32;
        for (i, (data, want)) in buf
            .chunks(CHECKSUM_CHUNK)
            .zip(crc_raw.chunks_exact(4))
            .enumerate()
        {
            let want = u32::from_le_bytes(want.try_into().expect("chunks_exact(4)"));
            if crc32c::crc32c(data) != want {
                let at = (first_chunk + i as u64) * chunk;
                return Err(self.corrupt(format!("checksum mismatch in the chunk at offset {at}")));
            }
            if whole_span {
                piece_crc = if i == 0 {
                    want
                } else {
                    crc32c_concat(piece_crc, want, data.len())
                };
            }
        }
        let data = buf.slice((self.pos - span_start) as usize..(piece_end - span_start) as usize);
        if !whole_span {
            piece_crc = crc32c::crc32c(&data);
        }
        if let Some(h) = self.full.as_mut() {
            h.update(&data);
            if piece_end == self.block_len {
                let actual = BlockId::from_bytes(std::mem::take(h).finalize().into());
                if actual != self.id {
                    return Err(self.corrupt(format!("content hashes to {actual}")));
                }
            }
        }
        Ok(self.hand_out(data, piece_crc, piece_end))
    }

    /// `len` bytes of the block file at `at`; a file shorter than its length is corrupt.
    fn read_at(&self, at: u64, len: usize) -> Result<Bytes> {
        let short = || self.corrupt("file is shorter than its length".into());
        let failed = |e| Error::io(format!("read {}", self.path.display()), e);
        if self.direct {
            return match read_direct(&self.file, at, len) {
                Ok((data, got)) if got == len => Ok(data),
                Ok(_) => Err(short()),
                Err(e) => Err(failed(e)),
            };
        }
        let mut buf = BytesMut::zeroed(len);
        match self.file.read_exact_at(&mut buf, at) {
            Ok(()) => Ok(buf.freeze()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(short()),
            Err(e) => Err(failed(e)),
        }
    }

    /// A block without a sidecar (at most one checksum chunk): the whole block is read
    /// and checked against its SHA-256, whatever the range.
    fn read_small(&mut self) -> Result<Piece> {
        let buf = self.read_at(0, self.block_len as usize)?;
        let actual = BlockId::of(&buf);
        if actual != self.id {
            return Err(self.corrupt(format!("content hashes to {actual}")));
        }
        let end = self.end;
        let data = buf.slice(self.pos as usize..end as usize);
        let crc = crc32c::crc32c(&data);
        Ok(self.hand_out(data, crc, end))
    }

    /// Counts a verified piece ending at `piece_end` and moves past it.
    fn hand_out(&mut self, data: Bytes, crc32c: u32, piece_end: u64) -> Piece {
        let piece = Piece {
            offset: self.pos,
            data,
            crc32c,
        };
        self.pos = piece_end;
        self.store
            .inner
            .stats
            .bytes_read
            .fetch_add(piece.data.len() as u64, Ordering::Relaxed);
        piece
    }
}

impl Iterator for RangeReader {
    type Item = Result<Piece>;

    fn next(&mut self) -> Option<Result<Piece>> {
        if self.pos >= self.end {
            return None;
        }
        let r = self.read_piece();
        if r.is_err() {
            self.pos = self.end; // Fused after an error.
        }
        Some(r)
    }
}

/// Removes everything inside `dir` (leftovers of interrupted writes).
fn clean_dir(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let entry = entry.ctx(|| format!("list {}", dir.display()))?;
        let p = entry.path();
        let r = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.ctx(|| format!("remove {}", p.display()))?;
        n += 1;
    }
    if n > 0 {
        tracing::info!(removed = n, dir = %dir.display(), "removed leftovers of interrupted writes");
    }
    Ok(n)
}

#[derive(Default)]
struct Scan {
    index: HashMap<BlockId, u64>,
    without_sidecar: Vec<BlockId>,
    orphans_removed: usize,
}

/// Walks `blocks/` (`levels` shard directories deep) in parallel over the top-level
/// shards. Costs one readdir per directory and one `fstatat` per block.
fn scan_blocks(blocks: &Path, levels: u8) -> Result<Scan> {
    if levels == 0 {
        let mut s = Scan::default();
        scan_leaf(blocks, &mut s)?;
        return Ok(s);
    }
    let mut tops: Vec<PathBuf> = Vec::new();
    for e in fs::read_dir(blocks).ctx(|| format!("list {}", blocks.display()))? {
        let e = e.ctx(|| format!("list {}", blocks.display()))?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            tops.push(e.path());
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        * 2;
    let next = AtomicUsize::new(0);
    let results: Vec<Result<Scan>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(tops.len().max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut acc = Scan::default();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(top) = tops.get(i) else { break };
                        scan_tree(top, levels - 1, &mut acc)?;
                    }
                    Ok(acc)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("scan thread does not panic"))
            .collect()
    });
    let mut all = Scan::default();
    for r in results {
        let r = r?;
        if all.index.is_empty() {
            all.index = r.index;
        } else {
            all.index.extend(r.index);
        }
        all.without_sidecar.extend(r.without_sidecar);
        all.orphans_removed += r.orphans_removed;
    }
    Ok(all)
}

fn scan_tree(dir: &Path, levels_left: u8, acc: &mut Scan) -> Result<()> {
    if levels_left == 0 {
        return scan_leaf(dir, acc);
    }
    for e in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let e = e.ctx(|| format!("list {}", dir.display()))?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            scan_tree(&e.path(), levels_left - 1, acc)?;
        }
    }
    Ok(())
}

fn scan_leaf(dir: &Path, acc: &mut Scan) -> Result<()> {
    let mut blocks: Vec<(BlockId, fs::DirEntry)> = Vec::new();
    let mut sidecars: HashSet<BlockId> = HashSet::new();
    for e in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let e = e.ctx(|| format!("list {}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(SIDECAR_SUFFIX) {
            if let Ok(id) = BlockId::parse(stem) {
                sidecars.insert(id);
                continue;
            }
        } else if let Ok(id) = BlockId::parse(name) {
            blocks.push((id, e));
            continue;
        }
        tracing::warn!(path = %e.path().display(), "unexpected file in the block store, ignored");
    }
    for (id, e) in blocks {
        let len = e
            .metadata()
            .ctx(|| format!("stat {}", e.path().display()))?
            .len();
        // A small block's sidecar (from an earlier version) stays and goes with it.
        if !sidecars.remove(&id) && needs_sidecar(len) {
            acc.without_sidecar.push(id);
            continue;
        }
        acc.index.insert(id, len);
    }
    for orphan in sidecars {
        let p = dir.join(format!("{orphan}{SIDECAR_SUFFIX}"));
        fs::remove_file(&p).ctx(|| format!("remove orphan sidecar {}", p.display()))?;
        acc.orphans_removed += 1;
    }
    Ok(())
}

enum WriteMsg {
    Data(Bytes),
    /// Expected id and the digest the hasher computed.
    Commit(BlockId, BlockId),
}

/// Bytes an [`AsyncBlockWriter`] holds in memory before it starts its blocking tasks:
/// a block that ends within them (a small file) is written, hashed and committed by one
/// blocking call instead of through queues to two threads.
const LAZY_BYTES: usize = 1 << 20;

/// A [`BlockWriter`] driven from async code. The first [`LAZY_BYTES`] are held in
/// memory; a block that ends there is written and committed by one blocking call.
/// Past them the bytes go through bounded queues to two blocking tasks, one writing and
/// checksumming them and one computing their SHA-256, so the runtime's threads never
/// wait on the disk, hashing overlaps the writes, and a slow disk slows the sender.
///
/// Room is reserved at [`AsyncBlockWriter::start`], so a block that cannot fit is
/// refused before any byte is accepted. Dropping the writer without
/// [`AsyncBlockWriter::commit`] aborts the write (temp file removed, room released).
/// Once `commit` has handed the digest to the writer, the commit finishes even if the
/// awaiting future is dropped.
#[derive(Debug)]
pub struct AsyncBlockWriter {
    store: Store,
    state: WriterState,
}

#[derive(Debug)]
enum WriterState {
    /// Nothing on disk yet.
    Held {
        reservation: Reservation,
        held: Vec<Bytes>,
        len: usize,
    },
    Streaming {
        tx: mpsc::Sender<WriteMsg>,
        task: tokio::task::JoinHandle<Result<Commit>>,
        hash_tx: mpsc::Sender<Bytes>,
        hash_task: tokio::task::JoinHandle<BlockId>,
    },
    /// Between the two, or after a failure.
    Broken,
}

impl std::fmt::Debug for WriteMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Data(b) => write!(f, "Data({} bytes)", b.len()),
            Self::Commit(id, _) => write!(f, "Commit({id})"),
        }
    }
}

fn task_error(e: tokio::task::JoinError) -> Error {
    Error::io("writer task", io::Error::other(e))
}

async fn task_failure(task: &mut tokio::task::JoinHandle<Result<Commit>>) -> Error {
    match task.await {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => Error::Aborted,
        Err(e) => task_error(e),
    }
}

impl AsyncBlockWriter {
    /// Reserves room; refuses before any byte is accepted if the block cannot fit.
    pub async fn start(store: &Store, max_len: u64) -> Result<Self> {
        // One statvfs under the reservation lock: short enough for a runtime thread.
        let reservation = store.reserve(max_len)?;
        Ok(Self {
            store: store.clone(),
            state: WriterState::Held {
                reservation,
                held: Vec::new(),
                len: 0,
            },
        })
    }

    /// Queues bytes; waits while a queue is full. On a failed write returns its error.
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        if let WriterState::Held {
            reservation,
            held,
            len,
        } = &mut self.state
        {
            if (*len + data.len()) as u64 > reservation.bytes {
                return Err(Error::TooLong {
                    max: reservation.bytes,
                });
            }
            if *len + data.len() <= LAZY_BYTES {
                *len += data.len();
                held.push(data);
                return Ok(());
            }
            self.stream().await?;
        }
        self.send(data).await
    }

    /// Hands bytes to the writer and hasher tasks (once streaming).
    async fn send(&mut self, data: Bytes) -> Result<()> {
        let WriterState::Streaming {
            tx, task, hash_tx, ..
        } = &mut self.state
        else {
            return Err(Error::Aborted);
        };
        // The writer first: it may refuse (too long, disk error) before anything is hashed.
        if tx.send(WriteMsg::Data(data.clone())).await.is_err() {
            return Err(task_failure(task).await);
        }
        if hash_tx.send(data).await.is_err() {
            return Err(Error::io("hasher task", io::Error::other("hasher stopped")));
        }
        Ok(())
    }

    /// Creates the temp file and starts the writer and hasher tasks, handing them the
    /// bytes held so far.
    async fn stream(&mut self) -> Result<()> {
        let WriterState::Held {
            reservation, held, ..
        } = std::mem::replace(&mut self.state, WriterState::Broken)
        else {
            return Ok(());
        };
        let s = self.store.clone();
        let mut writer = tokio::task::spawn_blocking(move || s.begin_reserved(reservation, true))
            .await
            .map_err(task_error)??
            .without_hashing();
        let (tx, mut rx) = mpsc::channel::<WriteMsg>(WRITE_QUEUE_DEPTH);
        let task = tokio::task::spawn_blocking(move || {
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    WriteMsg::Data(b) => writer.write(&b)?,
                    WriteMsg::Commit(expected, actual) => {
                        return writer.commit_digest(expected, actual);
                    }
                }
            }
            Err(Error::Aborted)
        });
        let (hash_tx, mut hash_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE_DEPTH);
        let hash_task = tokio::task::spawn_blocking(move || {
            let mut h = Sha256::new();
            while let Some(b) = hash_rx.blocking_recv() {
                h.update(&b);
            }
            BlockId::from_bytes(h.finalize().into())
        });
        self.state = WriterState::Streaming {
            tx,
            task,
            hash_tx,
            hash_task,
        };
        for b in held {
            self.send(b).await?;
        }
        Ok(())
    }

    /// Verifies and commits everything queued so far.
    pub async fn commit(self, expected: BlockId) -> Result<Commit> {
        match self.state {
            WriterState::Held {
                reservation, held, ..
            } => {
                let store = self.store;
                // Buffered: a small block stays in the page cache for the reads that
                // usually follow, and its page-cache cost is small.
                tokio::task::spawn_blocking(move || {
                    let mut w = store.begin_reserved(reservation, false)?;
                    for b in &held {
                        w.write(b)?;
                    }
                    w.commit(expected)
                })
                .await
                .map_err(task_error)?
            }
            WriterState::Streaming {
                tx,
                mut task,
                hash_tx,
                hash_task,
            } => {
                drop(hash_tx); // The hasher finishes once it has consumed everything queued.
                let actual = hash_task.await.map_err(task_error)?;
                if tx.send(WriteMsg::Commit(expected, actual)).await.is_err() {
                    return Err(task_failure(&mut task).await);
                }
                task.await.map_err(task_error)?
            }
            WriterState::Broken => Err(Error::Aborted),
        }
    }
}

/// Room reserved for a batch of small blocks (`WriteBlocks`), whose caller holds the
/// blocks whole in memory and hands them to [`BatchWriter::commit_all`]: written
/// buffered, verified and committed by one blocking call with one durability step for
/// all. Each block takes its length out of the batch's room; what no block took is
/// released with the writer.
#[derive(Debug)]
pub struct BatchWriter {
    store: Store,
    room: Reservation,
}

impl BatchWriter {
    /// Verifies and commits every block of `blocks` (each its bytes, in order, and its
    /// expected id) on one blocking thread, with one durability step for all of them
    /// ([`Store::commit_batch`]). One result per block, in order; a block that fails
    /// (its hash, no room left, a disk error) fails alone.
    pub async fn commit_all(mut self, blocks: Vec<(Vec<Bytes>, BlockId)>) -> Vec<Result<Commit>> {
        let n = blocks.len();
        let writes: Vec<(Reservation, Vec<Bytes>, BlockId)> = blocks
            .into_iter()
            .map(|(held, id)| {
                let len = held.iter().map(|b| b.len() as u64).sum();
                (self.room.split(len), held, id)
            })
            .collect();
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.commit_batch(writes)).await {
            Ok(results) => results,
            Err(e) => fail_all((0..n).map(|_| None).collect(), &task_error(e)),
        }
    }
}

impl Store {
    /// Writes and commits a batch of small blocks with one durability step for all:
    /// every block's file (and sidecar) is written to `tmp/` unsynced; the blocks are
    /// appended to the journal, which is `fdatasync`ed ([`Journal::append`]); each is
    /// put into place (shard directories made, nothing fsynced), then indexed,
    /// reported and acknowledged. The journal keeps the blocks until a checkpoint's
    /// `syncfs` covers them ([`Store::checkpoint_journal`]); after a crash the next
    /// start puts back from it whatever did not reach the disk. One `fdatasync` of one
    /// file on the batch's path, where it took a `syncfs` before the renames and one
    /// after, or two or three fsyncs per block before that (BENCHMARKS.md). A block
    /// that fails (its hash, no room) fails alone; a failed journal write fails the
    /// batch.
    fn commit_batch(&self, writes: Vec<(Reservation, Vec<Bytes>, BlockId)>) -> Vec<Result<Commit>> {
        let mut results: Vec<Option<Result<Commit>>> = writes.iter().map(|_| None).collect();
        let mut staged = Vec::with_capacity(writes.len());
        for (i, (reservation, held, expected)) in writes.into_iter().enumerate() {
            let step = self.begin_reserved(reservation, false).and_then(|mut w| {
                for b in &held {
                    w.write(b)?;
                }
                let hasher = w.hasher.take().expect("a new writer hashes inline");
                let actual = BlockId::from_bytes(hasher.finalize().into());
                w.stage(expected, actual, Sync::Later)
            });
            match step {
                Ok(Staged::Existing(c)) => results[i] = Some(Ok(c)),
                Ok(Staged::New(s)) => staged.push((i, s, held)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        if !staged.is_empty() {
            let journal = &self.inner.journal;
            // Held until the blocks are in place: a checkpoint's syncfs covers them.
            let hold = journal.hold();
            let records: Vec<(BlockId, &[Bytes])> = staged
                .iter()
                .map(|(_, s, held)| (s.id, held.as_slice()))
                .collect();
            if let Err(e) = journal.append(&hold, &records) {
                return fail_all(results, &e);
            }
            for (i, s, _) in staged {
                let id = s.id;
                let _g = self.stripe(&id);
                results[i] = Some(match (*s).place_locked(Sync::Later) {
                    Ok(Placed::Existing(c)) => Ok(c),
                    Ok(Placed::New(p)) => Ok(p.publish_locked()),
                    Err(e) => Err(e),
                });
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every block answered"))
            .collect()
    }

    /// A journal checkpoint if one is due ([`Journal::due`]): a new journal file, one
    /// `syncfs` (which makes every block put into place so far durable), and the older
    /// journal files removed. Returns whether one ran.
    pub fn checkpoint_journal(&self) -> Result<bool> {
        let journal = &self.inner.journal;
        if !journal.due() {
            return Ok(false);
        }
        journal.checkpoint(|| self.inner.syncfs.sync())
    }

    /// A journal checkpoint now, if the journal holds anything (tests).
    pub fn checkpoint_journal_now(&self) -> Result<bool> {
        self.inner.journal.checkpoint(|| self.inner.syncfs.sync())
    }

    /// Bytes in the active journal file.
    pub fn journal_bytes(&self) -> u64 {
        self.inner.journal.bytes()
    }

    /// Journal checkpoints done since the store was opened.
    pub fn journal_checkpoints(&self) -> u64 {
        self.inner.journal.checkpoints()
    }
}

/// Puts block `id` (its bytes `data`, checked against `id` by the caller) back at its
/// place under `blocks` if it is not there intact, durably: a temp file in `tmp` with
/// its sidecar, both fsynced, renamed into place (sidecar first), the directory
/// fsynced. Returns whether it wrote anything. For the journal's replay at start.
fn restore_block(
    blocks: &Path,
    tmp: &Path,
    sharding: &Sharding,
    id: &BlockId,
    data: &[u8],
) -> Result<bool> {
    let dest = sharding.path(blocks, id);
    let intact = fs::read(&dest).is_ok_and(|d| BlockId::of(&d) == *id)
        && (!needs_sidecar(data.len() as u64) || sidecar_of(&dest).exists());
    if intact {
        return Ok(false);
    }
    let tmp_path = tmp.join(format!("restore-{id}"));
    let write = |path: &Path, bytes: &[u8]| -> Result<()> {
        let mut f = File::create(path).ctx(|| format!("create {}", path.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .ctx(|| format!("write {}", path.display()))
    };
    write(&tmp_path, data)?;
    make_shard_dirs(blocks, &dest, Sync::Now)?;
    if needs_sidecar(data.len() as u64) {
        let crcs: Vec<u32> = data.chunks(CHECKSUM_CHUNK).map(crc32c::crc32c).collect();
        let tmp_side = sidecar_of(&tmp_path);
        write(&tmp_side, &sidecar_bytes(data.len() as u64, &crcs))?;
        fs::rename(&tmp_side, sidecar_of(&dest))
            .ctx(|| format!("put {} into place", tmp_side.display()))?;
    }
    fs::rename(&tmp_path, &dest).ctx(|| format!("put {} into place", tmp_path.display()))?;
    sync_dir(dest.parent().expect("block paths have a parent"))?;
    Ok(true)
}

/// A sidecar's bytes: its header (magic, block length), then one CRC32C per chunk.
fn sidecar_bytes(length: u64, crcs: &[u32]) -> Vec<u8> {
    let mut side = Vec::with_capacity(SIDECAR_HEADER as usize + 4 * crcs.len());
    side.extend_from_slice(SIDECAR_MAGIC);
    side.extend_from_slice(&length.to_le_bytes());
    for c in crcs {
        side.extend_from_slice(&c.to_le_bytes());
    }
    side
}

/// Fails every block of a batch not answered yet with `e`.
fn fail_all(results: Vec<Option<Result<Commit>>>, e: &Error) -> Vec<Result<Commit>> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Err(Error::io("batch commit", io::Error::other(e.to_string()))))
        })
        .collect()
}

/// `syncfs` calls shared by the batches committing at once (a group commit of the file
/// system): a caller is answered by the first `syncfs` that *started* after it asked,
/// so everything it wrote before asking is covered; a caller arriving while one runs
/// waits for the next one, which it shares with every caller arriving meanwhile. Two
/// batches at once (several gateways) then cost about one `syncfs` per step instead of
/// two. The descriptor lives as long as the store, so a write-back error of the file
/// system since the last call fails the call that reports it, and every sharer of it.
#[derive(Debug)]
struct SyncfsGroup {
    dir: File,
    path: PathBuf,
    state: Mutex<SyncfsState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct SyncfsState {
    /// Calls started and finished; one runs while `started > finished`.
    started: u64,
    finished: u64,
    /// The last finished call's failure.
    failed: Option<String>,
}

impl SyncfsGroup {
    fn new(dir: &Path) -> Result<Self> {
        Ok(Self {
            dir: File::open(dir).ctx(|| format!("open {}", dir.display()))?,
            path: dir.to_owned(),
            state: Mutex::new(SyncfsState::default()),
            done: std::sync::Condvar::new(),
        })
    }

    /// Returns once a `syncfs` that started after this call began has finished.
    fn sync(&self) -> Result<()> {
        let lock = || self.state.lock().expect("syncfs lock poisoned");
        let mut s = lock();
        // A call running now may have started before our writes: the one after it.
        let want = s.started + 1;
        loop {
            if s.finished >= want {
                // `finished` is the call that covers us, or one after it; either
                // way its outcome covers everything we wrote.
                return match &s.failed {
                    Some(e) => Err(Error::io(
                        format!("syncfs {}", self.path.display()),
                        io::Error::other(e.clone()),
                    )),
                    None => Ok(()),
                };
            }
            if s.started == s.finished {
                s.started += 1;
                let call = s.started;
                drop(s);
                let r = syncfs(&self.dir, &self.path);
                s = lock();
                s.finished = call;
                s.failed = r.as_ref().err().map(ToString::to_string);
                self.done.notify_all();
                continue;
            }
            s = self.done.wait(s).expect("syncfs lock poisoned");
        }
    }
}

/// `syncfs(2)` of the file system holding `file` (opened at `path`).
fn syncfs(file: &File, path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; syncfs reads nothing from user memory.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(Error::io(
            format!("syncfs {}", path.display()),
            io::Error::last_os_error(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers arriving together share `syncfs` calls: each is answered, and fewer
    /// calls run than were asked for (one runs while the others queue for the next).
    #[test]
    fn concurrent_syncfs_callers_share_calls() {
        let dir = tempfile::tempdir().unwrap();
        let group = Arc::new(SyncfsGroup::new(dir.path()).unwrap());
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (group, barrier) = (group.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..20 {
                        group.sync().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = group.state.lock().unwrap();
        assert_eq!(s.started, s.finished);
        assert!(
            s.started >= 20,
            "every caller needs a call of its own at least"
        );
        assert!(s.started < 8 * 20, "no call was shared: {}", s.started);
    }

    fn open(dir: &Path) -> Store {
        Store::open(StoreConfig::new(dir)).unwrap().0
    }

    #[test]
    fn pieces_end_on_read_piece_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let data: Vec<u8> = (0..(READ_PIECE * 2 + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        let c = store.put(&data).unwrap();
        let pieces: Vec<Piece> = store
            .read_range(&c.id, 10, 0)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        let offsets: Vec<u64> = pieces.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![10, READ_PIECE as u64, 2 * READ_PIECE as u64]);
        assert_eq!(pieces[0].data.len(), READ_PIECE - 10);
        assert_eq!(&pieces[2].data[..], &data[2 * READ_PIECE..]);
    }

    #[test]
    fn direct_and_buffered_writers_store_exact_bytes() {
        // /tmp takes O_DIRECT here; tmpfs may refuse it (then writes are buffered).
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        if let Ok(d) = tempfile::tempdir_in("/dev/shm") {
            dirs.push(d);
        }
        for dir in &dirs {
            let store = open(dir.path());
            for len in [
                0,
                1,
                DIRECT_ALIGN - 1,
                DIRECT_ALIGN,
                DIRECT_STAGE + 17,
                3 * DIRECT_STAGE,
            ] {
                let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
                let mut w = store.begin_write(len as u64).unwrap();
                // Odd pieces, so staging crosses region boundaries mid-piece.
                for piece in data.chunks(100_003) {
                    w.write(piece).unwrap();
                }
                let c = w.commit(BlockId::of(&data)).unwrap();
                let path = store.block_path(&c.id);
                assert_eq!(std::fs::read(&path).unwrap(), data, "len {len}");
                assert_eq!(store.get(&c.id).unwrap(), data, "len {len}");
            }
        }
    }

    #[test]
    fn direct_reads_serve_exact_ranges_and_catch_short_and_flipped_files() {
        // /tmp (ext4 here) takes O_DIRECT; tmpfs takes it on newer kernels only (else
        // reads there are buffered): both paths must serve the same bytes.
        let mut dirs = vec![(tempfile::tempdir().unwrap(), Some(true))];
        if let Ok(d) = tempfile::tempdir_in("/dev/shm") {
            dirs.push((d, None));
        }
        let piece = READ_PIECE as u64;
        for (dir, direct_here) in &dirs {
            let store = open(dir.path());
            for len in [
                DIRECT_STAGE as u64 + 1,
                DIRECT_STAGE as u64 + DIRECT_ALIGN as u64 + 3,
                3 * piece - 5,
                3 * piece,
            ] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let c = store.put(&data).unwrap();
                let r = store.read_range(&c.id, 0, 0).unwrap();
                if let Some(direct) = direct_here {
                    assert_eq!(r.direct, *direct, "len {len} in {:?}", dir.path());
                }
                // Whole block (SHA-256 checked too) and ranges that start and end off
                // every alignment, within a chunk, across pieces, up to the last byte.
                for (off, n) in [
                    (0, 0),
                    (1, 1),
                    (4095, 2),
                    (65_535, 65_538),
                    (piece - 1, 2),
                    (len / 2 + 1, len - len / 2 - 1),
                    (len - 1, 1),
                ] {
                    let got: Vec<u8> = store
                        .read_range(&c.id, off, n)
                        .unwrap()
                        .map(|p| p.unwrap().data)
                        .fold(Vec::new(), |mut acc, d| {
                            acc.extend_from_slice(&d);
                            acc
                        });
                    let end = if n == 0 { len } else { off + n };
                    assert_eq!(
                        got,
                        data[off as usize..end as usize],
                        "len {len} range {off}+{n}"
                    );
                }
            }
            // A flipped byte fails its chunk's CRC; the replica is quarantined.
            let data: Vec<u8> = (0..2 * piece).map(|i| (i % 249) as u8).collect();
            let c = store.put(&data).unwrap();
            let path = store.block_path(&c.id);
            let mut bad = data.clone();
            bad[piece as usize + 10] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            let err = store
                .read_range(&c.id, 0, 0)
                .unwrap()
                .collect::<Result<Vec<_>>>()
                .unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
            assert!(!path.exists(), "quarantined");
            // A file cut short after the reader checked its length is corrupt too.
            let c = store.put(&data[..(piece + 100) as usize]).unwrap();
            let path = store.block_path(&c.id);
            let mut r = store.read_range(&c.id, 0, 0).unwrap();
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(piece + 50).unwrap();
            assert!(r.next().unwrap().is_ok(), "the first piece is whole");
            let err = r.next().unwrap().unwrap_err();
            assert!(err.to_string().contains("shorter than its length"), "{err}");
        }
    }

    #[test]
    fn piece_crcs_equal_the_crc_of_their_bytes() {
        // The combination shortcut agrees with crc32c's own, for whole and short chunks.
        let a: Vec<u8> = (0..3 * CHECKSUM_CHUNK)
            .map(|i| (i * 31 % 256) as u8)
            .collect();
        for (len_a, len_b) in [
            (1, CHECKSUM_CHUNK),
            (CHECKSUM_CHUNK, CHECKSUM_CHUNK),
            (5, 17),
            (CHECKSUM_CHUNK, 1000),
        ] {
            let (x, y) = (&a[..len_a], &a[len_a..len_a + len_b]);
            let want = crc32c::crc32c(&a[..len_a + len_b]);
            let got = crc32c_concat(crc32c::crc32c(x), crc32c::crc32c(y), len_b);
            assert_eq!(got, want, "{len_a} + {len_b}");
        }
        // Every piece a reader hands out carries the CRC32C of exactly its bytes: aligned
        // and unaligned ranges, a short last chunk, a block without a sidecar.
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let piece = READ_PIECE as u64;
        for len in [
            100,
            CHECKSUM_CHUNK as u64 + 1,
            2 * piece + 12_345,
            3 * piece,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 241) as u8).collect();
            let c = store.put(&data).unwrap();
            for (off, n) in [
                (0, 0),
                (3, 0),
                ((piece - 1).min(len - 1), 0),
                (0, len / 2),
                (len - 1, 1),
            ] {
                for p in store.read_range(&c.id, off, n).unwrap() {
                    let p = p.unwrap();
                    assert_eq!(
                        p.crc32c,
                        crc32c::crc32c(&p.data),
                        "len {len} range {off}+{n}"
                    );
                }
            }
        }
    }

    #[test]
    fn event_log_requeues_in_order() {
        let log = EventLog::default();
        let a = Event::Removed(BlockId::of(b"a"));
        let b = Event::Removed(BlockId::of(b"b"));
        log.push(a);
        let d = log.drain();
        log.push(b);
        log.requeue(d);
        assert_eq!(log.drain().events, vec![a, b]);
    }
}

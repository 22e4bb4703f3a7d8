//! The batch journal: what makes a batch of small blocks durable before it is
//! acknowledged, with one `fdatasync` of one file.
//!
//! ```text
//! <data>/journal/<generation>.log   records: magic, length, block id, CRC32C, bytes
//! ```
//!
//! A batch (`Store::commit_batch`, in the parent module) writes its blocks' temp files
//! unsynced, appends every block to the active journal file and `fdatasync`s it, then
//! renames the blocks into place (unsynced) and acknowledges them. The bytes and the
//! names in place reach the disk later: a checkpoint ([`Journal::checkpoint`], about
//! once a second while batches come, or once the active file holds
//! [`CHECKPOINT_BYTES`]) starts a new journal file, runs one `syncfs` of the store's
//! file system, and removes the older journal files that `syncfs` covered. A batch
//! holds the journal ([`Journal::hold`]) from its append until its blocks are in
//! place, so a checkpoint's `syncfs` never starts before the names it must cover
//! exist.
//!
//! At start, before the blocks are scanned, every record of every journal file is
//! replayed in order ([`Journal::open`]): a block whose file in place is missing or
//! does not hash to its id is written again from the record (durably: fsynced, then
//! renamed, then its directory fsynced). A torn tail (a crash mid-append, which was
//! never acknowledged) ends a file's replay: its CRC32C does not match.
//!
//! One `fdatasync` of one file on a batch's path instead of a `syncfs` of the whole
//! file system, whose calls wait for every other writer's write-back on a shared disk
//! (docs/decisions/0004-batch-journal.md). A block deleted after its batch but before the
//! next checkpoint can come back after a crash (its record is replayed); it is then a
//! replica no file references, which the namenode's reconciliation of the next full
//! report deletes again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kdfs_core::BlockId;

use crate::error::{Error, IoContext, Result};

/// A checkpoint is due once the active journal file holds this many bytes, whatever
/// its age.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
/// A checkpoint is due once the oldest record of the active file is this old.
pub const CHECKPOINT_AGE: Duration = Duration::from_secs(1);

const MAGIC: &[u8; 4] = b"KJB1";
/// Magic, length (u32), block id, CRC32C (u32) of the length, id and bytes.
const HEADER: usize = 4 + 4 + 32 + 4;
/// Records longer than this are torn or foreign: a batched block is at most 1 MiB.
const MAX_RECORD: u32 = 16 << 20;

/// The journal of a store's batches.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// Batches hold it shared from their append until their blocks are in place; a
    /// checkpoint takes it exclusively to switch files.
    gate: RwLock<()>,
    active: Mutex<Active>,
    /// Checkpoints done.
    checkpoints: AtomicU64,
    /// Bytes in the active file: written under `active`'s lock, read without it (a
    /// metrics scrape never waits for an append's `fdatasync`).
    active_bytes: AtomicU64,
}

#[derive(Debug)]
struct Active {
    file: File,
    generation: u64,
    /// When the first record of the active file was appended.
    since: Option<Instant>,
    /// A write or `fdatasync` of this file failed: what follows the failure may not
    /// be replayable (a torn record, or pages the kernel dropped), so nothing more is
    /// appended to it; the next checkpoint starts a new file.
    broken: bool,
}

/// A batch's hold on the journal (see [`Journal::hold`]).
pub struct Hold<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

impl Journal {
    /// Opens `dir` (made if missing) and replays every record of its files, oldest
    /// first, through `restore(id, bytes)` (which puts the block into place durably if
    /// it is not there intact, returning whether it did); then starts a new, empty
    /// journal file and removes the replayed ones. Returns the journal and how many
    /// blocks `restore` put back.
    pub fn open(
        dir: &Path,
        mut restore: impl FnMut(BlockId, &[u8]) -> Result<bool>,
    ) -> Result<(Self, usize)> {
        fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
        let old = journal_files(dir)?;
        let mut restored = 0;
        for (_, path) in &old {
            restored += replay(path, &mut restore)?;
        }
        let generation = old.last().map_or(1, |(g, _)| g + 1);
        let file = new_file(dir, generation)?;
        for (_, path) in &old {
            fs::remove_file(path).ctx(|| format!("remove {}", path.display()))?;
        }
        if !old.is_empty() {
            crate::sys::sync_dir(dir)?;
        }
        if restored > 0 {
            tracing::warn!(
                blocks = restored,
                "blocks of batches acknowledged before a crash put back from the journal"
            );
        }
        Ok((
            Self {
                dir: dir.to_owned(),
                gate: RwLock::new(()),
                active: Mutex::new(Active {
                    file,
                    generation,
                    since: None,
                    broken: false,
                }),
                checkpoints: AtomicU64::new(0),
                active_bytes: AtomicU64::new(0),
            },
            restored,
        ))
    }

    /// A batch holds this from before its append until its blocks are in place, so a
    /// checkpoint's `syncfs` starts only after their names exist.
    pub fn hold(&self) -> Hold<'_> {
        Hold(self.gate.read().expect("journal gate poisoned"))
    }

    /// Appends one record per block (its id and bytes, in pieces) and `fdatasync`s the
    /// journal: once this returns, every block can be put back after a crash. The
    /// caller holds the journal ([`Journal::hold`]).
    pub fn append(&self, _hold: &Hold<'_>, blocks: &[(BlockId, &[Bytes])]) -> Result<()> {
        let len: usize = blocks
            .iter()
            .map(|(_, pieces)| HEADER + pieces.iter().map(Bytes::len).sum::<usize>())
            .sum();
        let mut buf = Vec::with_capacity(len);
        for (id, pieces) in blocks {
            let n: usize = pieces.iter().map(Bytes::len).sum();
            let n = u32::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_RECORD)
                .ok_or_else(|| {
                    Error::io(
                        "journal append",
                        io::Error::other(format!("a batched block of {n} bytes")),
                    )
                })?;
            let mut crc = crc32c::crc32c(&n.to_le_bytes());
            crc = crc32c::crc32c_append(crc, id.as_bytes());
            for p in *pieces {
                crc = crc32c::crc32c_append(crc, p);
            }
            buf.extend_from_slice(MAGIC);
            buf.extend_from_slice(&n.to_le_bytes());
            buf.extend_from_slice(id.as_bytes());
            buf.extend_from_slice(&crc.to_le_bytes());
            for p in *pieces {
                buf.extend_from_slice(p);
            }
        }
        // Write and fdatasync under the lock: a batch is answered only by an fdatasync
        // that covered every record before its own, and none runs after a failure.
        let mut a = self.active.lock().expect("journal lock poisoned");
        if a.broken {
            return Err(Error::io(
                "journal append",
                io::Error::other("the journal file failed a write; waiting for a checkpoint"),
            ));
        }
        let written = (&a.file).write_all(&buf).and_then(|()| a.file.sync_data());
        if let Err(e) = written {
            a.broken = true;
            return Err(Error::io(
                format!("append to the journal in {}", self.dir.display()),
                e,
            ));
        }
        self.active_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        a.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Whether a checkpoint is due: the active file's oldest record is
    /// [`CHECKPOINT_AGE`] old, or it holds [`CHECKPOINT_BYTES`].
    pub fn due(&self) -> bool {
        let a = self.active.lock().expect("journal lock poisoned");
        a.broken
            || self.bytes() >= CHECKPOINT_BYTES
            || a.since.is_some_and(|t| t.elapsed() >= CHECKPOINT_AGE)
    }

    /// Checkpoints done since the journal was opened.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// Bytes in the active journal file; never waits for an append's `fdatasync`
    /// (metrics read it).
    pub fn bytes(&self) -> u64 {
        self.active_bytes.load(Ordering::Relaxed)
    }

    /// Starts a new journal file, runs `syncfs` (which must make every block put into
    /// place so far durable: the store's `syncfs`), then removes the older files.
    /// Returns whether there was anything to checkpoint.
    pub fn checkpoint(&self, syncfs: impl FnOnce() -> Result<()>) -> Result<bool> {
        let old_generation = {
            // Waits for the batches between their append and their last rename.
            let _switch = self.gate.write().expect("journal gate poisoned");
            let mut a = self.active.lock().expect("journal lock poisoned");
            if self.bytes() == 0 && !a.broken {
                return Ok(false);
            }
            let generation = a.generation + 1;
            let file = new_file(&self.dir, generation)?;
            let old = a.generation;
            self.active_bytes.store(0, Ordering::Relaxed);
            *a = Active {
                file,
                generation,
                since: None,
                broken: false,
            };
            old
        };
        syncfs()?;
        for (generation, path) in journal_files(&self.dir)? {
            if generation <= old_generation {
                fs::remove_file(&path).ctx(|| format!("remove {}", path.display()))?;
            }
        }
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}

/// The journal files in `dir`, oldest first.
fn journal_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for e in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let e = e.ctx(|| format!("list {}", dir.display()))?;
        let name = e.file_name();
        let generation = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|g| g.parse::<u64>().ok());
        match generation {
            Some(g) => files.push((g, e.path())),
            None => tracing::warn!(path = %e.path().display(), "not a journal file: left alone"),
        }
    }
    files.sort();
    Ok(files)
}

/// Creates journal file `generation` and makes its name durable.
fn new_file(dir: &Path, generation: u64) -> Result<File> {
    let path = dir.join(format!("{generation:020}.log"));
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .ctx(|| format!("create {}", path.display()))?;
    crate::sys::sync_dir(dir)?;
    Ok(file)
}

/// Replays the records of `path` through `restore` until its end or a torn record.
fn replay(path: &Path, restore: &mut impl FnMut(BlockId, &[u8]) -> Result<bool>) -> Result<usize> {
    let mut file = io::BufReader::new(File::open(path).ctx(|| format!("open {}", path.display()))?);
    let mut restored = 0;
    let mut header = [0u8; HEADER];
    let mut data = Vec::new();
    loop {
        match read_full(&mut file, &mut header).ctx(|| format!("read {}", path.display()))? {
            0 => break,
            n if n < HEADER => {
                tracing::warn!(path = %path.display(), "journal ends in a torn record header");
                break;
            }
            _ => {}
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let id = BlockId::from_bytes(header[8..40].try_into().expect("32 bytes"));
        let crc = u32::from_le_bytes(header[40..44].try_into().expect("4 bytes"));
        if &header[..4] != MAGIC || len > MAX_RECORD {
            tracing::warn!(path = %path.display(), "journal ends in a record that is not one");
            break;
        }
        data.resize(len as usize, 0);
        if read_full(&mut file, &mut data).ctx(|| format!("read {}", path.display()))? < data.len()
        {
            tracing::warn!(path = %path.display(), "journal ends in a torn record");
            break;
        }
        let mut want = crc32c::crc32c(&len.to_le_bytes());
        want = crc32c::crc32c_append(want, id.as_bytes());
        want = crc32c::crc32c_append(want, &data);
        if want != crc || BlockId::of(&data) != id {
            tracing::warn!(path = %path.display(), block = %id, "journal ends in a damaged record");
            break;
        }
        if restore(id, &data)? {
            restored += 1;
        }
    }
    Ok(restored)
}

/// Reads until `buf` is full or the end; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(seed: u8) -> (BlockId, Vec<Bytes>) {
        let data: Vec<u8> = (0..1000u32).map(|i| (i as u8).wrapping_add(seed)).collect();
        (BlockId::of(&data), vec![Bytes::from(data)])
    }

    fn append(j: &Journal, seeds: &[u8]) -> Result<()> {
        let blocks: Vec<_> = seeds.iter().map(|&s| block(s)).collect();
        let records: Vec<(BlockId, &[Bytes])> =
            blocks.iter().map(|(id, p)| (*id, p.as_slice())).collect();
        let hold = j.hold();
        j.append(&hold, &records)
    }

    /// After a failed write, nothing more goes into that file (what follows a torn
    /// record would never be replayed): appends fail until a checkpoint has started a
    /// new file; the records before the failure and after the checkpoint are replayed.
    #[test]
    fn a_failed_write_stops_appends_until_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (j, restored) = Journal::open(dir.path(), |_, _| Ok(true)).unwrap();
        assert_eq!(restored, 0);
        append(&j, &[1, 2]).unwrap();
        let good = {
            let mut a = j.active.lock().unwrap();
            let read_only = File::open(dir.path().join(format!("{:020}.log", a.generation)));
            std::mem::replace(&mut a.file, read_only.unwrap())
        };
        assert!(append(&j, &[3]).is_err());
        assert!(j.due());
        // Still refused, even with a file that would take it.
        j.active.lock().unwrap().file = good;
        assert!(append(&j, &[4]).is_err());
        let mut synced = 0;
        assert!(
            j.checkpoint(|| {
                synced += 1;
                Ok(())
            })
            .unwrap()
        );
        assert_eq!(synced, 1);
        append(&j, &[5]).unwrap();
        drop(j);
        let mut replayed = Vec::new();
        let (_, restored) = Journal::open(dir.path(), |id, _| {
            replayed.push(id);
            Ok(true)
        })
        .unwrap();
        // The checkpoint removed the first file: only what came after it.
        assert_eq!(replayed, vec![block(5).0]);
        assert_eq!(restored, 1);
    }

    /// Files are replayed oldest first, each to its end; a file that is not a journal
    /// file is left alone.
    #[test]
    fn replay_runs_oldest_first_and_skips_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path(), |_, _| Ok(true)).unwrap();
        append(&j, &[1, 2]).unwrap();
        // A checkpoint whose syncfs failed keeps the older file.
        assert!(j.checkpoint(|| Err(Error::Aborted)).is_err());
        append(&j, &[3]).unwrap();
        drop(j);
        fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let mut replayed = Vec::new();
        let (j, restored) = Journal::open(dir.path(), |id, _| {
            replayed.push(id);
            Ok(false)
        })
        .unwrap();
        assert_eq!(replayed, vec![block(1).0, block(2).0, block(3).0]);
        assert_eq!(restored, 0, "restore put nothing back");
        assert_eq!(j.bytes(), 0);
        assert!(dir.path().join("notes.txt").exists());
    }
}

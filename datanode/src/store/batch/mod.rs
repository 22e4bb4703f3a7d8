//! Batches of small blocks (`WriteBlocks`): held whole in memory, committed together by
//! one blocking call, made durable by one `fdatasync` of the batch journal
//! ([`journal`]) instead of fsyncs per block. Journal checkpoints, run by
//! [`run_journal_checkpoints`], make the blocks themselves durable with one `syncfs`
//! ([`syncfs`]) and let the journal go (docs/decisions/0004-batch-journal.md).

pub(crate) mod journal;
pub(crate) mod syncfs;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kdfs_core::BlockId;
use kdfs_core::cas::Sharding;
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use super::commit::{Placed, Staged};
use super::layout::{Durability, make_shard_dirs};
use super::reservation::Reservation;
use super::sidecar::{CHECKSUM_CHUNK, needs_sidecar, sidecar_bytes, sidecar_of};
use super::{Commit, Store, task_error};
use crate::error::{Error, IoContext, Result};
use crate::sys::sync_dir;

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
    /// (`Store::commit_batch`). One result per block, in order; a block that fails
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

    /// Writes and commits a batch of small blocks with one durability step for all:
    /// every block's file (and sidecar) is written to `tmp/` unsynced; the blocks are
    /// appended to the journal, which is `fdatasync`ed ([`journal::Journal::append`]); each is
    /// put into place (shard directories made, nothing fsynced), then indexed,
    /// reported and acknowledged. The journal keeps the blocks until a checkpoint's
    /// `syncfs` covers them ([`Store::checkpoint_journal`]); after a crash the next
    /// start puts back from it whatever did not reach the disk. One `fdatasync` of one
    /// file on the batch's path (docs/decisions/0004-batch-journal.md). A block that
    /// fails (its hash, no room) fails alone; a failed journal write fails the batch.
    pub(crate) fn commit_batch(
        &self,
        writes: Vec<(Reservation, Vec<Bytes>, BlockId)>,
    ) -> Vec<Result<Commit>> {
        let mut results: Vec<Option<Result<Commit>>> = writes.iter().map(|_| None).collect();
        let mut staged = Vec::with_capacity(writes.len());
        for (i, (reservation, held, expected)) in writes.into_iter().enumerate() {
            let step = self.begin_reserved(reservation, false).and_then(|mut w| {
                for b in &held {
                    w.write(b)?;
                }
                let hasher = w.hasher.take().expect("a new writer hashes inline");
                let actual = BlockId::from_bytes(hasher.finalize().into());
                w.stage(expected, actual, Durability::Later)
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
                results[i] = Some(match (*s).place_locked(Durability::Later) {
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

    /// A journal checkpoint if one is due (`Journal::due`): a new journal file, one
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
pub(crate) fn restore_block(
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
    make_shard_dirs(blocks, &dest, Durability::Now)?;
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

/// Fails every block of a batch not answered yet with `e`.
fn fail_all(results: Vec<Option<Result<Commit>>>, e: &Error) -> Vec<Result<Commit>> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Err(Error::io("batch commit", io::Error::other(e.to_string()))))
        })
        .collect()
}

/// How often [`run_journal_checkpoints`] looks whether a checkpoint is due.
pub const JOURNAL_TICK: Duration = Duration::from_millis(250);

/// Runs the store's journal checkpoints ([`Store::checkpoint_journal`]) until `cancel`:
/// whenever one is due (the active journal file's oldest record is a second old, or
/// the file is large), one `syncfs` off every batch's path, and the journal files it
/// covered go.
pub async fn run_journal_checkpoints(store: Store, cancel: CancellationToken) -> Result<()> {
    loop {
        checkpoint_tick(&store).await?;
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(JOURNAL_TICK) => {}
        }
    }
}

/// One look of [`run_journal_checkpoints`]: fails only if its blocking task does.
#[tracing::instrument(name = "journal_checkpoint", level = "debug", skip_all)]
async fn checkpoint_tick(store: &Store) -> Result<()> {
    let s = store.clone();
    let r = tokio::task::spawn_blocking(move || s.checkpoint_journal())
        .await
        .map_err(|e| Error::io("journal task", std::io::Error::other(e)))?;
    if let Err(e) = r {
        // The journal stays as it is (it only grows): tried again at the next tick.
        tracing::warn!(error = %e, "journal checkpoint failed");
    }
    Ok(())
}

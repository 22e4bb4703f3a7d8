//! The write path's second half: the commit state machine that turns a complete temp
//! file into a visible block.
//!
//! A commit goes through three steps, each a type:
//! 1. [`BlockWriter::stage`]: the SHA-256 checked against the expected id, the file and
//!    its sidecar (in its own temp file) complete, fsynced with [`Durability::Now`]
//!    (a [`StagedBlock`]). A block already stored ends here, as a no-op success.
//! 2. [`StagedBlock::place_locked`]: the sidecar, then the block, put into place (a
//!    rename, or a link of an unnamed file), the shard directory fsynced with
//!    [`Durability::Now`] (a [`PlacedBlock`]): durable, but nobody reads or acks it.
//! 3. [`PlacedBlock::publish_locked`]: indexed, counted, given a new write generation,
//!    and reported.
//!
//! Steps 2 and 3 run under the block's stripe lock, so concurrent writers of one block
//! end with one intact file: the first commit wins, later ones report the replica
//! again. A single write runs the steps back to back; a batch (`batch`) stages all its
//! blocks, makes them durable through its journal, then places and publishes each.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use kdfs_core::BlockId;
use sha2::Digest;

use super::events::Event;
use super::layout::{Durability, make_shard_dirs};
use super::sidecar::{needs_sidecar, sidecar_bytes, sidecar_of};
use super::tmp::{create_tmp, link_into_place};
use super::write::BlockWriter;
use super::{Commit, Store};
use crate::error::{Error, IoContext, Result};
use crate::sys::sync_dir;

impl BlockWriter {
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
    /// writes and passes it to `commit_digest`. Only [`super::AsyncBlockWriter`], which
    /// hashes on its own thread, may vouch for a digest.
    pub(crate) fn without_hashing(mut self) -> Self {
        self.hasher = None;
        self
    }

    /// Commits with a digest computed over the same bytes (see `without_hashing`);
    /// otherwise as [`BlockWriter::commit`].
    pub(crate) fn commit_digest(self, expected: BlockId, actual: BlockId) -> Result<Commit> {
        match self.stage(expected, actual, Durability::Now)? {
            Staged::Existing(c) => Ok(c),
            Staged::New(s) => {
                let store = s.store.clone();
                let _g = store.stripe(&expected);
                match (*s).place_locked(Durability::Now)? {
                    Placed::Existing(c) => Ok(c),
                    Placed::New(p) => Ok(p.publish_locked()),
                }
            }
        }
    }

    /// The first step of a commit: the digest checked, the file (and its sidecar, in
    /// its own temp file) complete, fsynced with [`Durability::Now`]. A block already stored
    /// ends here.
    pub(crate) fn stage(
        mut self,
        expected: BlockId,
        actual: BlockId,
        sync: Durability,
    ) -> Result<Staged> {
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
        if sync == Durability::Now {
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
                    Durability::Now => sf.sync_data(),
                    Durability::Later => Ok(()),
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

pub(crate) enum Staged {
    /// The block was already stored: the commit is a no-op success.
    Existing(Commit),
    New(Box<StagedBlock>),
}

/// A block whose bytes and sidecar are complete in their temp files.
pub(crate) struct StagedBlock {
    writer: BlockWriter,
    store: Store,
    pub(crate) id: BlockId,
    /// The unnamed temp file, linked into place by `place`.
    file: Option<File>,
    tmp_sidecar: Option<PathBuf>,
    sidecar_file: Option<File>,
}

pub(crate) enum Placed {
    Existing(Commit),
    New(PlacedBlock),
}

/// A block under its name, not yet in the index: nobody reads it or acks it yet.
pub(crate) struct PlacedBlock {
    store: Store,
    pub(crate) id: BlockId,
    length: u64,
}

impl StagedBlock {
    /// Puts the sidecar, then the block, into place, with [`Durability::Now`] fsyncing the
    /// shard directory after. The caller holds the block's stripe lock.
    pub(crate) fn place_locked(mut self, sync: Durability) -> Result<Placed> {
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
        if sync == Durability::Now {
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
    pub(crate) fn publish_locked(self) -> Commit {
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
        let generation = store.inner.generations.bump(&id);
        store.inner.events.push(Event::Added {
            id,
            length,
            generation,
        });
        Commit {
            id,
            length,
            existed: !new,
        }
    }
}

impl Store {
    /// A commit of a block this store already holds: nothing is written, but the
    /// replica gets a new write generation (a delete decided before this write must
    /// not remove it) and is reported again (an [`Event::Added`]). The namenode may have dropped
    /// it meanwhile (a late bad-replica report, a lost report), and a copy it sent
    /// here is only complete when this node reports the block: without the event it
    /// would wait for its timeout and be sent again, until the next full report.
    /// `None` if the block is not here. Takes the block's stripe lock, so no delete
    /// slips in between the check and the event.
    pub(crate) fn recommit(&self, id: &BlockId) -> Option<Commit> {
        let _g = self.stripe(id);
        self.recommit_locked(id)
    }

    /// [`Store::recommit`] for a caller holding the block's stripe lock.
    pub(crate) fn recommit_locked(&self, id: &BlockId) -> Option<Commit> {
        let length = self.length(id)?;
        let generation = self.inner.generations.bump(id);
        self.inner.events.push(Event::Added {
            id: *id,
            length,
            generation,
        });
        Some(Commit {
            id: *id,
            length,
            existed: true,
        })
    }

    /// Runs `put` (a rename or link to `dest`); if `dest`'s shard directory is missing,
    /// makes it ([`Store::ensure_parent`]) and runs `put` again. Trying first saves a
    /// `stat` of the directory per block: once a store has filled, it nearly always
    /// exists.
    fn move_into_place(
        &self,
        dest: &Path,
        sync: Durability,
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

    /// Makes sure the shard directory of `path` exists ([`super::layout::make_shard_dirs`]).
    fn ensure_parent(&self, path: &Path, sync: Durability) -> Result<()> {
        make_shard_dirs(&self.inner.blocks, path, sync)
    }
}

//! The write path's first half: a [`BlockWriter`] streams a block's bytes to its temp
//! file, hashing them and computing the CRC32C of every checksum chunk as they pass.
//! Committing it (checking the hash, putting the block into place) is `commit`'s part.
//!
//! Blocks larger than one stage are written with `O_DIRECT`, past the page cache
//! (docs/decisions/0003-o-direct-large-blocks.md); smaller ones buffered, with the
//! kernel's writeback started every [`SYNC_BEHIND`] bytes so the fsync at commit waits
//! only for the tail.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kdfs_core::BlockId;
use sha2::{Digest, Sha256};

use super::reservation::Reservation;
use super::sidecar::{CHECKSUM_CHUNK, sidecar_of};
use super::tmp::create_tmp;
use super::{Commit, Inner, Store};
use crate::error::{Error, IoContext, Result};
use crate::sys;

/// A write asks the kernel to start writing back every this many bytes.
const SYNC_BEHIND: u64 = 8 << 20;
/// Alignment of direct-I/O writes and reads: offsets, lengths and buffer addresses (the
/// logical block size of every disk we expect is 512 or 4096).
pub(crate) const DIRECT_ALIGN: usize = 4096;
/// Bytes a direct-I/O writer stages before each write.
pub(crate) const DIRECT_STAGE: usize = 1 << 20;

/// Bytes waiting for an aligned direct write, in a buffer whose start is aligned
/// (over-allocated by `DIRECT_ALIGN` and used from its first aligned byte).
#[derive(Debug)]
pub(super) struct Stage {
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

/// A write in progress: hashes and checksums the bytes as they stream to `tmp/`.
/// Dropping it without [`BlockWriter::commit`] removes the temp file.
#[derive(Debug)]
pub struct BlockWriter {
    pub(super) inner: Arc<Inner>,
    pub(super) file: Option<File>,
    /// `Some` when the file is open with `O_DIRECT`: bytes are staged in an aligned
    /// buffer and written in aligned pieces, bypassing the page cache, whose pages cost
    /// far more CPU than the copy itself (docs/decisions/0003-o-direct-large-blocks.md).
    /// [`super::AsyncBlockWriter`] writes blocks of at most 1 MiB buffered, so that
    /// small files stay in the page cache for the reads that usually follow.
    pub(super) direct: Option<Stage>,
    /// The temp file's path in `tmp/`; when `unnamed`, only the name used in messages
    /// (the file is an unnamed inode, see [`super::tmp::create_tmp`]).
    pub(super) path: PathBuf,
    pub(super) unnamed: bool,
    /// `None` when the caller hashes the bytes itself (on another thread).
    pub(super) hasher: Option<Sha256>,
    pub(super) crcs: Vec<u32>,
    pub(super) chunk_crc: u32,
    pub(super) chunk_fill: usize,
    pub(super) len: u64,
    /// Buffered: bytes whose writeback was already started (see `start_writeback`).
    /// Direct: bytes written to the file (the staged rest is not).
    pub(super) synced: u64,
    pub(super) max_len: u64,
    pub(super) _reservation: Reservation,
    pub(super) done: bool,
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
    pub(super) fn flush_stage(&mut self) -> Result<()> {
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
        let file = self.file.as_ref().expect("file is present until commit");
        sys::start_writeback(file, self.synced, self.len - self.synced);
        self.synced = self.len;
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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

impl Store {
    /// Starts a write of at most `max_len` bytes: reserves the room (refusing with
    /// [`Error::OutOfSpace`] if it cannot fit) and creates the temp file.
    pub fn begin_write(&self, max_len: u64) -> Result<BlockWriter> {
        let reservation = self.reserve(max_len)?;
        self.begin_reserved(reservation, true)
    }

    /// Creates the temp file of a write whose room is reserved; `direct` asks for
    /// `O_DIRECT` (see [`BlockWriter`]).
    pub(crate) fn begin_reserved(
        &self,
        reservation: Reservation,
        direct: bool,
    ) -> Result<BlockWriter> {
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
}

#[cfg(test)]
mod tests {
    use super::super::open_for_test as open;
    use super::*;

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
}

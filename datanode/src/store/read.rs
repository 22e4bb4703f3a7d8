//! The read path: a [`RangeReader`] hands out verified pieces of a block.
//!
//! Every byte served is verified: each covering checksum chunk against its CRC32C from
//! the sidecar, and a read of the whole block also against the SHA-256 (the last piece
//! is held back until the hash matched), unless the reader takes that check over
//! ([`RangeReader::without_block_hash`], used by `ReadBlock`, whose clients hash whole
//! blocks themselves). A block without a sidecar is read whole and checked against its
//! SHA-256 whatever the range. A failed check quarantines the replica and yields
//! [`Error::Corrupt`].
//!
//! Blocks written past the page cache are read past it too (`O_DIRECT`), into aligned
//! buffers (docs/decisions/0003-o-direct-large-blocks.md).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use kdfs_core::BlockId;
use sha2::{Digest, Sha256};

use super::Store;
use super::sidecar::{
    CHECKSUM_CHUNK, SIDECAR_HEADER, crc32c_concat, needs_sidecar, sidecar_fits, sidecar_of,
};
use super::write::{DIRECT_ALIGN, DIRECT_STAGE};
use crate::error::{Error, IoContext, Result};
use crate::sys;

/// Reads are served in pieces of at most this many bytes, ending on multiples of it
/// (so every piece but the first and last covers 16 whole checksum chunks).
pub const READ_PIECE: usize = kdfs_proto::transport::CHUNK_SIZE;

/// A verified piece of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Offset of `data[0]` within the block.
    pub offset: u64,
    pub data: Bytes,
    /// CRC32C of `data`, for the reader to check what reaches it (`ReadBlock` sends it).
    pub crc32c: u32,
}

/// Whether a block of `len` bytes is read past the page cache: the blocks that were
/// written past it (more than one direct stage, see [`super::BlockWriter`]). Such a
/// block is rarely in the cache anyway, and a buffered read of it costs far more CPU
/// (docs/decisions/0003-o-direct-large-blocks.md).
fn reads_direct(len: u64) -> bool {
    len > DIRECT_STAGE as u64
}

/// Opens a block file for reading, with `O_DIRECT` if `direct` and the file system
/// takes it (tmpfs refuses it: buffered there). Returns the file and whether it is
/// direct.
fn open_block(path: &Path, direct: bool) -> io::Result<(File, bool)> {
    if direct {
        match sys::open_direct(path) {
            Ok(f) => return Ok((f, true)),
            Err(e) if sys::refuses_direct(&e) => {}
            Err(e) => return Err(e),
        }
    }
    File::open(path).map(|f| (f, false))
}

/// Reads `len` bytes at `at` (a multiple of [`DIRECT_ALIGN`]) from a file opened with
/// `O_DIRECT`: into an aligned buffer, asking for whole aligned blocks (the last one
/// may run past the end of the file, where the read stops short). Returns the bytes
/// and how many of the `len` the file held. The buffer is not zeroed first: the read
/// fills it.
fn read_direct(file: &File, at: u64, len: usize) -> io::Result<(Bytes, usize)> {
    debug_assert_eq!(at % DIRECT_ALIGN as u64, 0, "direct reads start aligned");
    let want = len.div_ceil(DIRECT_ALIGN).max(1) * DIRECT_ALIGN;
    let mut buf: Vec<u8> = Vec::with_capacity(want + DIRECT_ALIGN);
    let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
    assert!(start < DIRECT_ALIGN, "a byte pointer can always be aligned");
    // Within the capacity: the buffer does not move, and the reads start aligned.
    buf.resize(start, 0);
    let mut got = 0;
    while got < len {
        // Every read but one that hits the end of the file ends aligned, so `got` stays
        // a multiple of the alignment until the loop ends.
        let n = sys::pread_append(file, &mut buf, want - got, at + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let got = got.min(len);
    Ok((Bytes::from(buf).slice(start..start + got), got))
}

impl Store {
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
            // Blocks are written past the page cache, so a read usually starts from the
            // disk: the kernel reads ahead further and starts on the whole range now.
            sys::advise_sequential_read(&file, offset, end - offset);
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
        if !sidecar_fits(&sidecar, block_len) {
            return Err(reader.corrupt("checksum sidecar is malformed".into()));
        }
        Ok(RangeReader {
            sidecar: Some(sidecar),
            ..reader
        })
    }

    /// Re-reads a whole replica and checks it as the scanner does (every chunk CRC and
    /// the SHA-256): `Ok(false)` if it is corrupt (it is then quarantined and an
    /// [`super::Event::Corrupt`] recorded). Blocking; memory is one piece at a time.
    pub fn verify(&self, id: &BlockId) -> Result<bool> {
        let reader = match self.read_range(id, 0, 0) {
            Ok(r) => r,
            Err(Error::Corrupt { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        for piece in reader {
            match piece {
                Ok(_) => {}
                Err(Error::Corrupt { .. }) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads a whole block into memory, verified (tests and small tools only).
    pub fn get(&self, id: &BlockId) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for piece in self.read_range(id, 0, 0)? {
            out.extend_from_slice(&piece?.data);
        }
        Ok(out)
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
    /// `file` is open with `O_DIRECT` (see `reads_direct`).
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

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::super::open_for_test as open;
    use super::*;

    /// `VerifyBlocks` (a reader's bad-replica report): a good replica passes and stays,
    /// a flipped byte is found, quarantined and reported corrupt.
    #[test]
    fn verify_passes_good_replicas_and_quarantines_corrupt_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let data: Vec<u8> = (0..(READ_PIECE + 777)).map(|i| (i % 253) as u8).collect();
        let c = store.put(&data).unwrap();
        let _ = store.events().drain();
        assert!(store.verify(&c.id).unwrap());
        assert!(store.contains(&c.id));
        let path = store.block_path(&c.id);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[READ_PIECE / 2] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        assert!(!store.verify(&c.id).unwrap());
        assert!(!store.contains(&c.id), "quarantined");
        let events = store.events().drain().events;
        assert_eq!(events, vec![crate::store::Event::Corrupt(c.id)]);
        assert!(matches!(store.verify(&c.id), Err(Error::NotFound(_))));
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
}

//! Files this gateway has proven: their block list hashes, in order, to their id.
//!
//! A multi-block file's id is taken on trust at commit (no single block proves it), so
//! a whole-file download hashes everything beside the stream. That second pass costs
//! about a sixth of download throughput on a 2-core machine, and it proves the same
//! thing every time for the same block list: once this process has seen a block list
//! hash to the id (it uploaded those bytes itself, or a download verified them), later
//! whole-file reads of that exact list skip it. Each block is still verified against its
//! own id on every read, so a hit can only ever serve the proven bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use kdfs_core::{BlockId, FileId};
use sha2::{Digest, Sha256};

/// Proven files remembered at most (about 100 bytes each); the oldest go first.
pub(crate) const CAPACITY: usize = 65_536;

/// A bounded set of (file id, block list) pairs this process proved.
pub(crate) struct ProvenFiles {
    inner: Mutex<Remembered>,
    capacity: usize,
}

#[derive(Default)]
struct Remembered {
    by_file: HashMap<FileId, [u8; 32]>,
    order: VecDeque<FileId>,
}

/// One digest for an ordered block list: ids and lengths.
fn digest<'a>(blocks: impl IntoIterator<Item = (&'a BlockId, u64)>) -> [u8; 32] {
    let mut h = Sha256::new();
    for (id, length) in blocks {
        h.update(id.as_bytes());
        h.update(length.to_le_bytes());
    }
    h.finalize().into()
}

impl ProvenFiles {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Remembered::default()),
            capacity: capacity.max(1),
        }
    }

    /// Remembers that `blocks`, in order, hold the content whose SHA-256 is `file`.
    pub(crate) fn prove<'a>(
        &self,
        file: FileId,
        blocks: impl IntoIterator<Item = (&'a BlockId, u64)>,
    ) {
        let digest = digest(blocks);
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if r.by_file.insert(file, digest).is_none() {
            r.order.push_back(file);
        }
        while r.order.len() > self.capacity {
            if let Some(old) = r.order.pop_front() {
                r.by_file.remove(&old);
            }
        }
    }

    /// Whether exactly this block list was proven to be `file`'s content.
    pub(crate) fn is_proven<'a>(
        &self,
        file: FileId,
        blocks: impl IntoIterator<Item = (&'a BlockId, u64)>,
    ) -> bool {
        let digest = digest(blocks);
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.by_file.get(&file) == Some(&digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: u8) -> BlockId {
        BlockId::from_bytes([n; 32])
    }

    #[test]
    fn only_the_exact_block_list_is_proven_and_the_oldest_are_forgotten() {
        let proven = ProvenFiles::new(2);
        let (a, b, c) = (FileId::of(b"a"), FileId::of(b"b"), FileId::of(b"c"));
        let list = [(block(1), 10), (block(2), 5)];
        let refs = || list.iter().map(|(id, len)| (id, *len));
        proven.prove(a, refs());
        assert!(proven.is_proven(a, refs()));
        // Another order, another length, another block: not proven.
        assert!(!proven.is_proven(a, [(&block(2), 5), (&block(1), 10)]));
        assert!(!proven.is_proven(a, [(&block(1), 10), (&block(2), 4)]));
        assert!(!proven.is_proven(a, [(&block(1), 10), (&block(3), 5)]));
        assert!(!proven.is_proven(b, refs()));
        // A replaced record's new list replaces the old one.
        proven.prove(a, [(&block(3), 15)]);
        assert!(!proven.is_proven(a, refs()));
        assert!(proven.is_proven(a, [(&block(3), 15)]));
        proven.prove(b, refs());
        proven.prove(c, refs());
        assert!(!proven.is_proven(a, [(&block(3), 15)]), "the oldest went");
        assert!(proven.is_proven(b, refs()) && proven.is_proven(c, refs()));
    }
}

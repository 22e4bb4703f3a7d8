//! An upload whose file id the namenode already holds with other blocks (a conflict,
//! issue 24 finding 3): which of the two records is the content its id names.
//!
//! A file of several blocks' id is the SHA-256 of all its bytes, which the namenode
//! cannot check, so anyone allowed to commit could claim a content's id for other
//! bytes before that content is uploaded ("hash squatting"). The uploader has just
//! hashed the real content, so it settles the conflict: the stored record is kept
//! (the upload answers `existed`) only if its blocks' bytes, read and hashed in
//! order, are this content (e.g. the same bytes cut at another block size); otherwise
//! the upload commits again naming the stored record's blocks (`replaces`), and the
//! namenode swaps the records if nothing changed meanwhile. A stored record of
//! another size, or cut the same way with other block ids, is disproved without
//! reading it. One that cannot be read whole is not kept either: the new record is
//! proven, the old one is not.

use futures::StreamExt;
use kdfs_core::FileId;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::Client;
use super::block::Committed;
use super::download::ByteRange;
use super::model::{BlockRef, FileRecord};
use crate::error::{Error, Result};

/// What an upload does about the record it met.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The stored record is this content: keep it (the upload answers `existed`).
    Keep(FileRecord),
    /// The stored record is not this content: replace it, if it still holds these blocks.
    Replace(Vec<BlockRef>),
}

impl Client {
    /// Settles a conflict between the blocks just written (`written`, `size` bytes in
    /// all, hashing to `id`) and `existing`, the record the namenode holds under `id`.
    /// Memory stays bounded: the stored content is streamed through a hasher.
    pub(crate) async fn settle_conflict(
        &self,
        id: FileId,
        size: u64,
        written: &[Committed],
        existing: FileRecord,
    ) -> Result<Verdict> {
        if disproves(written, size, &existing) {
            warn!(file = %id, stored_size = existing.size, size, "the record stored under this content's id is not this content; replacing it");
            return Ok(Verdict::Replace(existing.blocks));
        }
        // The same size cut otherwise: only its bytes can tell.
        let info = match self.get(id).await {
            Ok(info) => info,
            // Deleted since: a commit naming the old blocks creates the record anew.
            Err(Error::NotFound(_) | Error::Deleted(_)) => {
                return Ok(Verdict::Replace(existing.blocks));
            }
            Err(e) => return Err(e),
        };
        let whole = ByteRange {
            start: 0,
            end: info.record.size,
        };
        let mut stored = self.stream(&info, whole, None);
        let mut hasher = Sha256::new();
        let mut read = 0u64;
        while let Some(piece) = stored.next().await {
            match piece {
                Ok(b) => {
                    read += b.len() as u64;
                    hasher.update(&b);
                }
                Err(e) => {
                    warn!(file = %id, error = %e, "the record stored under this content's id cannot be read whole; replacing it");
                    return Ok(Verdict::Replace(info.record.blocks));
                }
            }
        }
        let content = FileId::from_bytes(hasher.finalize().into());
        if read == size && content == id {
            info!(file = %id, "the record stored under this content's id is this content cut otherwise; keeping it");
            return Ok(Verdict::Keep(info.record));
        }
        warn!(file = %id, %content, "the record stored under this content's id holds other bytes; replacing it");
        Ok(Verdict::Replace(info.record.blocks))
    }
}

/// Whether the bytes just written (`blocks`, `size` in all) prove that `existing`, a
/// record of their id, is not their content without reading it: another size, or the
/// same cut into blocks with other block ids (a block id is its bytes' SHA-256). A cut
/// of other lengths (a record from another block size) proves nothing.
pub(crate) fn disproves(blocks: &[Committed], size: u64, existing: &FileRecord) -> bool {
    let same_cut = blocks.len() == existing.blocks.len()
        && blocks
            .iter()
            .zip(&existing.blocks)
            .all(|(b, e)| b.length == e.length);
    existing.size != size
        || (same_cut
            && blocks
                .iter()
                .zip(&existing.blocks)
                .any(|(b, e)| b.id != e.id))
}

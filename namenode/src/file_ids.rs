//! The checks a commit's file id and block list must pass before the namenode
//! records them, so that no caller claims another content's id for its own bytes
//! ("hash squatting", docs/security.md): the namenode holds no file bytes, so it checks
//! what block ids (each the SHA-256 of its block's bytes) can prove.

use kdfs_core::{BlockId, FileId};

use crate::error::{Error, Result};

/// The file ids the namenode can check from the blocks alone (a caller must
/// not claim another content's id for its own bytes: "hash squatting", docs/security.md).
/// A one-block file is its block's bytes, so its id is that block's id (and its size
/// the block's length, which the sum check already holds); an empty file, of no
/// blocks, is the SHA-256 of nothing. A longer file's id, the SHA-256 of every block's
/// bytes in order, cannot be checked without reading them and is taken on trust (see
/// docs/security.md).
pub(crate) fn check_content_id(id: &FileId, blocks: &[(BlockId, u64)]) -> Result<()> {
    match blocks {
        [] if *id != FileId::of(&[]) => Err(Error::InvalidArgument(format!(
            "file id {id} is not the SHA-256 of an empty file, which a file of no blocks is"
        ))),
        [(b, _)] if id.as_bytes() != b.as_bytes() => Err(Error::InvalidArgument(format!(
            "file id {id} is not its only block's id {}: a one-block file's id is the \
             SHA-256 of its bytes",
            b
        ))),
        _ => Ok(()),
    }
}

/// A file of several blocks is cut as uploads cut it: every block but the last is
/// whole, the last is not empty. So such a file is longer than a block, and its
/// unchecked id cannot claim the id of content that fits in one block, which the same
/// content's upload would commit as a one-block file (hash squatting; docs/security.md).
pub(crate) fn check_split(blocks: &[(BlockId, u64)], block_size: u64) -> Result<()> {
    let Some((last, whole)) = blocks.split_last() else {
        return Ok(());
    };
    if whole.is_empty() {
        return Ok(());
    }
    if let Some(i) = whole.iter().position(|b| b.1 != block_size) {
        return Err(Error::InvalidArgument(format!(
            "block {i} of {} is {} bytes: every block but the last must be whole ({block_size} bytes)",
            blocks.len(),
            whole[i].1
        )));
    }
    if last.1 == 0 {
        return Err(Error::InvalidArgument(
            "the last block of a file of several blocks is empty".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kdfs_core::{BlockId, FileId};

    /// Which ids a commit may claim for its blocks.
    #[test]
    fn a_file_id_must_be_what_its_blocks_can_prove() {
        fn check(id: &[u8], blocks: &[&[u8]], ok: bool) {
            let blocks: Vec<(BlockId, u64)> = blocks
                .iter()
                .map(|c| (BlockId::of(c), c.len() as u64))
                .collect();
            let got = super::check_content_id(&FileId::of(id), &blocks);
            assert_eq!(got.is_ok(), ok, "{id:?} for {blocks:?}: {got:?}");
        }
        check(b"", &[], true);
        check(b"victim", &[], false);
        check(b"mine", &[b"mine"], true);
        check(b"victim", &[b"mine"], false);
        // A longer file's id is not checked here.
        check(b"victim", &[b"mi", b"ne"], true);
    }

    /// How a file of several blocks must be cut: whole blocks, then a non-empty last.
    #[test]
    fn a_file_of_several_blocks_is_cut_into_whole_blocks() {
        fn check(lengths: &[u64], ok: bool) {
            let blocks: Vec<(BlockId, u64)> =
                lengths.iter().map(|&l| (BlockId::of(b""), l)).collect();
            let got = super::check_split(&blocks, 4);
            assert_eq!(got.is_ok(), ok, "{lengths:?}: {got:?}");
        }
        check(&[], true);
        check(&[0], true);
        check(&[3], true);
        check(&[4, 4], true);
        check(&[4, 4, 1], true);
        // Shorter than a block in several pieces: could claim a one-block file's id.
        check(&[2, 2], false);
        check(&[4, 2, 4], false);
        check(&[4, 0], false);
    }
}

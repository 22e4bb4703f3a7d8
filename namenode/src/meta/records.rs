//! The rows of the metadata store and their byte encoding: [`FileRecord`] (a live or
//! tombstoned file) and [`Lease`] (an open upload).
//!
//! Every encoding starts with a version byte (1), then little-endian integers and
//! length-prefixed UTF-8 strings, so a record written by this version can be told
//! apart from one a later version writes.

use std::collections::BTreeSet;

use kdfs_core::{BlockId, FileId};

use super::ops::StoredKey;
use crate::error::{Error, Result};

/// A file's durable record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    pub id: FileId,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub created_ms: i64,
    pub replication: u32,
    /// Blocks in file order with their lengths.
    pub blocks: Vec<(BlockId, u64)>,
}

impl FileRecord {
    /// Each distinct block once, with its length: references are counted per file.
    pub fn distinct_blocks(&self) -> Vec<(BlockId, u64)> {
        let mut seen = BTreeSet::new();
        self.blocks
            .iter()
            .filter(|(b, _)| seen.insert(*b))
            .copied()
            .collect()
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.name.len() + self.blocks.len() * 40);
        out.push(1u8);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.replication.to_le_bytes());
        put_str(&mut out, &self.name);
        put_str(&mut out, &self.content_type);
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for (b, len) in &self.blocks {
            out.extend_from_slice(b.as_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        out
    }

    pub(super) fn decode(id: FileId, raw: &[u8]) -> Result<Self> {
        let mut r = Reader(raw);
        if r.u8()? != 1 {
            return Err(Error::Corrupt(format!("file {id}: unknown record version")));
        }
        let created_ms = r.u64()? as i64;
        let size = r.u64()?;
        let replication = r.u32()?;
        let name = r.str()?;
        let content_type = r.str()?;
        let n = r.u32()? as usize;
        let mut blocks = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            let b = BlockId::from_slice(r.take(32)?)
                .map_err(|e| Error::Corrupt(format!("file {id}: {e}")))?;
            blocks.push((b, r.u64()?));
        }
        Ok(Self {
            id,
            name,
            size,
            content_type,
            created_ms,
            replication,
            blocks,
        })
    }

    pub(super) fn time_key(&self) -> [u8; 40] {
        time_key(self.created_ms, &self.id)
    }
}

/// The listing key: big-endian creation time then id, so byte order is time order.
pub fn time_key(created_ms: i64, id: &FileId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&(created_ms.max(0) as u64).to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

/// A tombstone's value: the deletion time (ms since the epoch, little-endian) followed
/// by the file's record.
pub(super) fn encode_tombstone(deleted_ms: u64, record: &FileRecord) -> Vec<u8> {
    let mut stone = deleted_ms.to_le_bytes().to_vec();
    stone.extend_from_slice(&record.encode());
    stone
}

pub(super) fn decode_tombstone(id: FileId, raw: &[u8]) -> Result<(u64, FileRecord)> {
    let deleted_ms =
        tombstone_time(raw).ok_or_else(|| Error::Corrupt(format!("tombstone {id} truncated")))?;
    Ok((deleted_ms, FileRecord::decode(id, &raw[8..])?))
}

/// A tombstone's deletion time, without decoding the record (`None`: truncated).
pub(super) fn tombstone_time(raw: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(
        raw.get(..8)?.try_into().expect("8 bytes"),
    ))
}

/// An open upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub replication: u32,
    /// When the upload began (ms since the epoch): deletes delivered after this may
    /// have hit blocks it wrote (see `gc.rs`, the fence).
    pub begin_ms: u64,
    pub expires_ms: u64,
}

impl Lease {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(1u8);
        out.extend_from_slice(&self.begin_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        out.extend_from_slice(&self.replication.to_le_bytes());
        put_str(&mut out, &self.name);
        put_str(&mut out, &self.content_type);
        out
    }

    pub(super) fn decode(id: &str, raw: &[u8]) -> Result<Self> {
        let mut r = Reader(raw);
        if r.u8()? != 1 {
            return Err(Error::Corrupt(format!("lease {id}: unknown version")));
        }
        Ok(Self {
            id: id.to_owned(),
            begin_ms: r.u64()?,
            expires_ms: r.u64()?,
            replication: r.u32()?,
            name: r.str()?,
            content_type: r.str()?,
        })
    }
}

/// A block key's row: creation time, expiry (little-endian ms) and its 32-byte secret.
pub(super) fn encode_block_key(k: &StoredKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(&k.made_ms.to_le_bytes());
    out.extend_from_slice(&k.expires_ms.to_le_bytes());
    out.extend_from_slice(&k.secret);
    out
}

/// A block key's row back (`None`: not 48 bytes).
pub(super) fn decode_block_key(id: u64, raw: &[u8]) -> Option<StoredKey> {
    let mut r = Reader(raw);
    let (made_ms, expires_ms) = (r.u64().ok()?, r.u64().ok()?);
    let secret = r.take(32).ok()?.try_into().ok()?;
    r.0.is_empty().then_some(StoredKey {
        id,
        made_ms,
        expires_ms,
        secret,
    })
}

/// A table key back into a block id (keys are written from valid ids only).
pub(super) fn block_key(k: [u8; 32]) -> Result<BlockId> {
    BlockId::from_slice(&k).map_err(|e| Error::Corrupt(e.to_string()))
}

/// A table key back into a file id.
pub(super) fn file_key(k: &[u8]) -> Result<FileId> {
    FileId::from_slice(k).map_err(|e| Error::Corrupt(e.to_string()))
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads an encoded record front to back; running out of bytes is corruption.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::Corrupt("record truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(super) fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| Error::Corrupt("string is not UTF-8".into()))
    }
}

#[cfg(test)]
impl FileRecord {
    /// A test file: id and name from `n`, one 10-byte block per entry of `blocks`
    /// (block ids from those bytes), replication 3, created at `1000 + n` ms.
    pub(crate) fn test(n: u8, blocks: &[u8]) -> Self {
        Self {
            id: FileId::from_slice(&[n; 32]).unwrap(),
            name: format!("f{n}"),
            size: blocks.len() as u64 * 10,
            content_type: "text/plain".into(),
            created_ms: 1000 + n as i64,
            replication: 3,
            blocks: blocks
                .iter()
                .map(|b| (BlockId::from_slice(&[*b; 32]).unwrap(), 10))
                .collect(),
        }
    }
}

#[cfg(test)]
impl Lease {
    /// A test lease named `id`, begun at 1 ms and expiring at 2 ms.
    pub(crate) fn test(id: &str) -> Self {
        Self {
            id: id.into(),
            name: "n".into(),
            content_type: "text/plain".into(),
            replication: 3,
            begin_ms: 1,
            expires_ms: 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = FileRecord::test(7, &[1, 2, 1]);
        assert_eq!(FileRecord::decode(r.id, &r.encode()).unwrap(), r);
        assert!(FileRecord::decode(r.id, &r.encode()[..10]).is_err());
        assert_eq!(r.distinct_blocks().len(), 2);
    }

    #[test]
    fn leases_round_trip_and_reject_what_they_cannot_read() {
        let l = Lease::test("up-1");
        let raw = l.encode();
        assert_eq!(Lease::decode("up-1", &raw).unwrap(), l);
        for (what, bad) in [
            ("truncated", raw[..raw.len() - 1].to_vec()),
            ("unknown version", [&[2u8][..], &raw[1..]].concat()),
            ("empty", Vec::new()),
        ] {
            assert!(
                matches!(Lease::decode("up-1", &bad), Err(Error::Corrupt(_))),
                "{what}"
            );
        }
    }

    #[test]
    fn tombstones_carry_their_deletion_time() {
        let r = FileRecord::test(3, &[4]);
        let stone = encode_tombstone(5000, &r);
        assert_eq!(tombstone_time(&stone), Some(5000));
        assert_eq!(decode_tombstone(r.id, &stone).unwrap(), (5000, r.clone()));
        assert_eq!(tombstone_time(&stone[..7]), None);
        assert!(decode_tombstone(r.id, &stone[..7]).is_err());
    }

    #[test]
    fn time_keys_sort_by_time_then_id() {
        let (a, b) = (FileRecord::test(1, &[]), FileRecord::test(2, &[]));
        for (what, left, right) in [
            ("earlier first", time_key(5, &b.id), time_key(6, &a.id)),
            ("same time: by id", time_key(5, &a.id), time_key(5, &b.id)),
            ("negative as zero", time_key(-1, &a.id), time_key(1, &a.id)),
        ] {
            assert!(left < right, "{what}");
        }
        assert_eq!(time_key(-5, &a.id), time_key(0, &a.id));
    }
}

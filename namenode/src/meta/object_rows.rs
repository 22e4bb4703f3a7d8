//! The rows of the bucket/key namespace and their table keys: [`ObjectRow`] (an
//! object), [`UploadRow`] (a multipart upload in progress), [`PartRow`] (one of its
//! parts), and the byte layouts that make listings range scans.
//!
//! Keys: an object is `bucket 0x00 key`, so byte order is (bucket, key) order and one
//! bucket's objects are one contiguous range (a bucket name holds no 0x00). An upload
//! is indexed by `bucket 0x00 key 0x00 upload id` for listings by key; a part is
//! `upload id ++ part number (big-endian u32)`. A file's referrers are
//! `file id ++ referrer` with the referrer `'o' bucket 0x00 key` or
//! `'p' upload id ++ part number`, so "does anything refer to this file" is one seek.
//! Encodings start with a version byte (1), as `records.rs`.

use kdfs_core::FileId;

use super::records::{Reader, put_str};
use crate::error::{Error, Result};

/// User metadata entries: (name, value), in the order given.
pub type UserMetadata = Vec<(String, String)>;

/// An object: the file a key points to and the object's own metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRow {
    pub file_id: FileId,
    pub size: u64,
    pub content_type: String,
    pub user_metadata: UserMetadata,
    pub etag: String,
    pub last_modified_ms: u64,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadRow {
    pub bucket: String,
    pub key: String,
    pub content_type: String,
    pub user_metadata: UserMetadata,
    pub initiated_ms: u64,
}

/// A registered part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRow {
    pub file_id: FileId,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: u64,
}

fn put_metadata(out: &mut Vec<u8>, m: &UserMetadata) {
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    for (name, value) in m {
        put_str(out, name);
        put_str(out, value);
    }
}

fn metadata(r: &mut Reader<'_>) -> Result<UserMetadata> {
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        out.push((r.str()?, r.str()?));
    }
    Ok(out)
}

fn version(r: &mut Reader<'_>, what: &str) -> Result<()> {
    if r.u8()? != 1 {
        return Err(Error::Corrupt(format!("{what}: unknown record version")));
    }
    Ok(())
}

fn file_id(r: &mut Reader<'_>) -> Result<FileId> {
    FileId::from_slice(r.take(32)?).map_err(|e| Error::Corrupt(e.to_string()))
}

impl ObjectRow {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.content_type.len() + self.etag.len());
        out.push(1u8);
        out.extend_from_slice(self.file_id.as_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.last_modified_ms.to_le_bytes());
        put_str(&mut out, &self.content_type);
        put_str(&mut out, &self.etag);
        put_metadata(&mut out, &self.user_metadata);
        out
    }

    pub(super) fn decode(raw: &[u8]) -> Result<Self> {
        let mut r = Reader(raw);
        version(&mut r, "object")?;
        Ok(Self {
            file_id: file_id(&mut r)?,
            size: r.u64()?,
            last_modified_ms: r.u64()?,
            content_type: r.str()?,
            etag: r.str()?,
            user_metadata: metadata(&mut r)?,
        })
    }
}

impl UploadRow {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(1u8);
        out.extend_from_slice(&self.initiated_ms.to_le_bytes());
        put_str(&mut out, &self.bucket);
        put_str(&mut out, &self.key);
        put_str(&mut out, &self.content_type);
        put_metadata(&mut out, &self.user_metadata);
        out
    }

    pub(super) fn decode(raw: &[u8]) -> Result<Self> {
        let mut r = Reader(raw);
        version(&mut r, "multipart upload")?;
        Ok(Self {
            initiated_ms: r.u64()?,
            bucket: r.str()?,
            key: r.str()?,
            content_type: r.str()?,
            user_metadata: metadata(&mut r)?,
        })
    }
}

impl PartRow {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.etag.len());
        out.push(1u8);
        out.extend_from_slice(self.file_id.as_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.last_modified_ms.to_le_bytes());
        put_str(&mut out, &self.etag);
        out
    }

    pub(super) fn decode(raw: &[u8]) -> Result<Self> {
        let mut r = Reader(raw);
        version(&mut r, "part")?;
        Ok(Self {
            file_id: file_id(&mut r)?,
            size: r.u64()?,
            last_modified_ms: r.u64()?,
            etag: r.str()?,
        })
    }
}

/// `bucket 0x00`: the start of a bucket's range of objects.
pub(super) fn bucket_prefix(bucket: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1);
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k
}

/// `bucket 0x00 key`.
pub(super) fn object_key(bucket: &str, key: &[u8]) -> Vec<u8> {
    let mut k = bucket_prefix(bucket);
    k.extend_from_slice(key);
    k
}

/// `bucket 0x00 key 0x00 upload id`.
pub(super) fn upload_key(bucket: &str, key: &str, upload_id: &str) -> Vec<u8> {
    let mut k = object_key(bucket, key.as_bytes());
    k.push(0);
    k.extend_from_slice(upload_id.as_bytes());
    k
}

/// An upload index key back into (key, upload id), given its bucket's prefix length.
pub(super) fn split_upload_key(raw: &[u8], prefix_len: usize) -> Result<(String, String)> {
    let bad = || Error::Corrupt("malformed upload index key".into());
    let rest = raw.get(prefix_len..).ok_or_else(bad)?;
    if rest.len() < 33 || rest[rest.len() - 33] != 0 {
        return Err(bad());
    }
    let (key, id) = rest.split_at(rest.len() - 33);
    Ok((
        String::from_utf8(key.to_vec()).map_err(|_| bad())?,
        String::from_utf8(id[1..].to_vec()).map_err(|_| bad())?,
    ))
}

/// `upload id ++ part number`.
pub(super) fn part_key(upload_id: &str, part: u32) -> Vec<u8> {
    let mut k = upload_id.as_bytes().to_vec();
    k.extend_from_slice(&part.to_be_bytes());
    k
}

/// Who refers to a file: a key or a multipart part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Referrer {
    Object { bucket: String, key: String },
    Part { upload_id: String, part: u32 },
}

impl Referrer {
    /// `file id ++ referrer`.
    pub(super) fn entry(&self, file: &FileId) -> Vec<u8> {
        let mut k = file.as_bytes().to_vec();
        match self {
            Referrer::Object { bucket, key } => {
                k.push(b'o');
                k.extend_from_slice(&object_key(bucket, key.as_bytes()));
            }
            Referrer::Part { upload_id, part } => {
                k.push(b'p');
                k.extend_from_slice(&part_key(upload_id, *part));
            }
        }
        k
    }

    pub(super) fn decode(raw: &[u8]) -> Result<Self> {
        let bad = || Error::Corrupt("malformed referrer".into());
        match raw.get(32..).and_then(|r| r.split_first()) {
            Some((b'o', rest)) => {
                let at = rest.iter().position(|b| *b == 0).ok_or_else(bad)?;
                Ok(Referrer::Object {
                    bucket: String::from_utf8(rest[..at].to_vec()).map_err(|_| bad())?,
                    key: String::from_utf8(rest[at + 1..].to_vec()).map_err(|_| bad())?,
                })
            }
            Some((b'p', rest)) if rest.len() == 36 => Ok(Referrer::Part {
                upload_id: String::from_utf8(rest[..32].to_vec()).map_err(|_| bad())?,
                part: u32::from_be_bytes(rest[32..].try_into().expect("4 bytes")),
            }),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Referrer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Referrer::Object { bucket, key } => write!(f, "bucket {bucket:?} key {key:?}"),
            Referrer::Part { upload_id, part } => {
                write!(f, "part {part} of multipart upload {upload_id}")
            }
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix`
/// (`None`: there is none, the prefix is all 0xFF).
pub(super) fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xFF {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let id = FileId::of(b"x");
        let o = ObjectRow {
            file_id: id,
            size: 7,
            content_type: "text/plain".into(),
            user_metadata: vec![("a".into(), "1".into()), ("b".into(), "".into())],
            etag: "\"e\"".into(),
            last_modified_ms: 99,
        };
        assert_eq!(ObjectRow::decode(&o.encode()).unwrap(), o);
        assert!(ObjectRow::decode(&o.encode()[..20]).is_err());
        let u = UploadRow {
            bucket: "b".into(),
            key: "k/ü".into(),
            content_type: String::new(),
            user_metadata: vec![],
            initiated_ms: 5,
        };
        assert_eq!(UploadRow::decode(&u.encode()).unwrap(), u);
        let p = PartRow {
            file_id: id,
            size: 3,
            etag: "p".into(),
            last_modified_ms: 4,
        };
        assert_eq!(PartRow::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn keys_sort_by_bucket_then_key_and_split_back() {
        assert!(
            object_key("ab", b"z") < object_key("abc", b"a"),
            "bucket first"
        );
        assert!(object_key("a", b"a/b") < object_key("a", b"a0"));
        let up = "0123456789abcdef0123456789abcdef";
        let k = upload_key("bkt", "some/key", up);
        assert_eq!(
            split_upload_key(&k, 4).unwrap(),
            ("some/key".into(), up.into())
        );
        assert!(split_upload_key(b"bkt\0x", 4).is_err());
        let id = FileId::of(b"c");
        for r in [
            Referrer::Object {
                bucket: "b".into(),
                key: "k\0with nul".into(),
            },
            Referrer::Part {
                upload_id: up.into(),
                part: 10_000,
            },
        ] {
            assert_eq!(Referrer::decode(&r.entry(&id)).unwrap(), r);
        }
        assert_eq!(successor(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(successor(&[b'a', 0xFF]), Some(b"b".to_vec()));
        assert_eq!(successor(&[0xFF]), None);
    }
}

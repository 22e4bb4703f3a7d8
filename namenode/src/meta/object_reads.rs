//! Reads of the bucket/key namespace from MVCC snapshots: buckets, one object, key
//! listings with prefix and delimiter, multipart uploads and their parts.
//!
//! A listing is a range scan in key order that, on meeting a key that rolls up into a
//! common prefix, seeks past every key under that prefix instead of walking them, so a
//! page costs one seek per entry whatever the bucket holds.

use kdfs_proto::objects::{Code, MAX_KEY_LEN, Refusal};
use redb::{ReadTransaction, ReadableTable};

use super::object_rows::{
    ObjectRow, PartRow, UploadRow, bucket_prefix, object_key, part_key, split_upload_key, successor,
};
use super::store::Store;
use super::tables::{BUCKETS, OBJECTS, PARTS, UPLOAD_KEYS, UPLOADS};
use crate::error::{Error, Result};

/// Where a listing starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListingStart {
    First,
    /// After this key or common prefix (a continuation token's, or StartAfter).
    After(String),
}

/// One page of a key listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub objects: Vec<(String, ObjectRow)>,
    pub common_prefixes: Vec<String>,
    /// When truncated: the last key or common prefix of the page.
    pub next: Option<String>,
}

/// A continuation token: opaque to clients, the last entry of a page in hex.
pub fn encode_token(last: &str) -> String {
    let mut out = String::with_capacity(1 + last.len() * 2);
    out.push('1');
    for b in last.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A continuation token back into the entry it continues after.
pub fn decode_token(token: &str) -> std::result::Result<String, Refusal> {
    let bad = || Refusal::new(Code::InvalidArgument, "the continuation token is invalid");
    let hex = token.strip_prefix('1').ok_or_else(bad)?;
    if !hex.len().is_multiple_of(2) || hex.len() > 2 * MAX_KEY_LEN {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<std::result::Result<Vec<u8>, _>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

fn refuse<T>(code: Code, message: String) -> Result<T> {
    Err(Error::Namespace(Refusal::new(code, message)))
}

fn need_bucket(txn: &ReadTransaction, bucket: &str) -> Result<u64> {
    match txn.open_table(BUCKETS)?.get(bucket)? {
        Some(v) => Ok(v.value()),
        None => refuse(Code::NoSuchBucket, format!("no bucket {bucket:?}")),
    }
}

fn utf8(raw: &[u8]) -> Result<String> {
    String::from_utf8(raw.to_vec()).map_err(|_| Error::Corrupt("a key is not UTF-8".into()))
}

impl Store {
    /// A bucket's creation time; `NoSuchBucket`.
    pub fn bucket(&self, bucket: &str) -> Result<u64> {
        need_bucket(&self.read()?, bucket)
    }

    /// Every bucket with its creation time, by name.
    pub fn buckets(&self) -> Result<Vec<(String, u64)>> {
        let txn = self.read()?;
        let table = txn.open_table(BUCKETS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_owned(), v.value()));
        }
        Ok(out)
    }

    /// An object; `NoSuchBucket`, `NoSuchKey`.
    pub fn object(&self, bucket: &str, key: &str) -> Result<ObjectRow> {
        let txn = self.read()?;
        need_bucket(&txn, bucket)?;
        match txn
            .open_table(OBJECTS)?
            .get(object_key(bucket, key.as_bytes()).as_slice())?
        {
            Some(v) => ObjectRow::decode(v.value()),
            None => refuse(
                Code::NoSuchKey,
                format!("no key {key:?} in bucket {bucket:?}"),
            ),
        }
    }

    /// One page of a bucket's keys starting with `prefix`, in byte order, after
    /// `start`; keys whose rest after the prefix holds `delimiter` roll up into common
    /// prefixes. At most `max` entries (objects and common prefixes together).
    pub fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: &str,
        max: usize,
        start: &ListingStart,
    ) -> Result<Listing> {
        let txn = self.read()?;
        need_bucket(&txn, bucket)?;
        let objects = txn.open_table(OBJECTS)?;
        let base = bucket_prefix(bucket).len();
        let low = object_key(bucket, prefix.as_bytes());
        let high = successor(&low).expect("a bucket name is not all 0xFF");
        // The common prefix `key` rolls up into, if any.
        let rolled = |key: &[u8]| -> Option<usize> {
            if delimiter.is_empty() || !key.starts_with(prefix.as_bytes()) {
                return None;
            }
            let rest = &key[prefix.len()..];
            rest.windows(delimiter.len())
                .position(|w| w == delimiter.as_bytes())
                .map(|i| prefix.len() + i + delimiter.len())
        };
        // The first table key after an entry: past its whole common prefix, or just
        // after the key itself.
        let past = |key: &[u8]| -> Vec<u8> {
            match rolled(key) {
                Some(n) => successor(&object_key(bucket, &key[..n]))
                    .expect("a bucket name is not all 0xFF"),
                None => {
                    let mut k = object_key(bucket, key);
                    k.push(0);
                    k
                }
            }
        };
        let mut from = match start {
            ListingStart::First => low.clone(),
            ListingStart::After(after) => past(after.as_bytes()).max(low.clone()),
        };
        let mut out = Listing::default();
        // A start past the prefix's range (start-after beyond every key it holds).
        if max == 0 || from >= high {
            return Ok(out);
        }
        let mut last = None;
        loop {
            let next = match objects
                .range::<&[u8]>(from.as_slice()..high.as_slice())?
                .next()
            {
                Some(entry) => entry?,
                None => return Ok(out),
            };
            if out.objects.len() + out.common_prefixes.len() == max {
                out.next = last;
                return Ok(out);
            }
            let k = next.0.value();
            let key = &k[base..];
            from = past(key);
            let at_end = from >= high;
            match rolled(key) {
                Some(n) => {
                    let cp = utf8(&key[..n])?;
                    last = Some(cp.clone());
                    out.common_prefixes.push(cp);
                }
                None => {
                    let name = utf8(key)?;
                    last = Some(name.clone());
                    out.objects.push((name, ObjectRow::decode(next.1.value())?));
                }
            }
            if at_end {
                return Ok(out);
            }
        }
    }

    /// A multipart upload of this bucket and key; `NoSuchBucket`, `NoSuchUpload`.
    pub fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRow> {
        let txn = self.read()?;
        need_bucket(&txn, bucket)?;
        let row = txn
            .open_table(UPLOADS)?
            .get(upload_id)?
            .map(|v| UploadRow::decode(v.value()))
            .transpose()?;
        match row {
            Some(row) if row.bucket == bucket && row.key == key => Ok(row),
            _ => refuse(
                Code::NoSuchUpload,
                format!("no multipart upload {upload_id} of key {key:?} in bucket {bucket:?}"),
            ),
        }
    }

    /// Up to `max` parts of an upload numbered above `after`, and whether more follow.
    pub fn parts(
        &self,
        upload_id: &str,
        after: u32,
        max: usize,
    ) -> Result<(Vec<(u32, PartRow)>, bool)> {
        let txn = self.read()?;
        let parts = txn.open_table(PARTS)?;
        let (from, to) = (
            part_key(upload_id, after.saturating_add(1)),
            part_key(upload_id, u32::MAX),
        );
        let mut out = Vec::new();
        for entry in parts.range::<&[u8]>(from.as_slice()..to.as_slice())? {
            if out.len() == max {
                return Ok((out, true));
            }
            let (k, v) = entry?;
            let k = k.value();
            let n = u32::from_be_bytes(k[k.len() - 4..].try_into().expect("4 bytes"));
            out.push((n, PartRow::decode(v.value())?));
        }
        Ok((out, false))
    }

    /// Up to `max` uploads of a bucket whose keys start with `prefix`, by key then
    /// upload id, after (`key_marker`, `upload_id_marker`); and whether more follow.
    pub fn uploads(
        &self,
        bucket: &str,
        prefix: &str,
        (key_marker, upload_id_marker): (&str, &str),
        max: usize,
    ) -> Result<(Vec<(String, UploadRow)>, bool)> {
        let txn = self.read()?;
        need_bucket(&txn, bucket)?;
        let index = txn.open_table(UPLOAD_KEYS)?;
        let rows = txn.open_table(UPLOADS)?;
        let base = bucket_prefix(bucket).len();
        let low = object_key(bucket, prefix.as_bytes());
        let high = successor(&low).expect("a bucket name is not all 0xFF");
        let from = if key_marker.is_empty() {
            low
        } else if upload_id_marker.is_empty() {
            // Every upload of the marker key is skipped.
            let mut k = object_key(bucket, key_marker.as_bytes());
            k.push(1);
            k.max(low)
        } else {
            let mut k = object_key(bucket, key_marker.as_bytes());
            k.push(0);
            k.extend_from_slice(upload_id_marker.as_bytes());
            k.push(0);
            k.max(low)
        };
        let mut out = Vec::new();
        if from >= high {
            return Ok((out, false));
        }
        for entry in index.range::<&[u8]>(from.as_slice()..high.as_slice())? {
            if out.len() == max {
                return Ok((out, true));
            }
            let (_, id) = split_upload_key(entry?.0.value(), base)?;
            if let Some(v) = rows.get(id.as_str())? {
                out.push((id, UploadRow::decode(v.value())?));
            }
        }
        Ok((out, false))
    }
}

#[cfg(test)]
mod tests {
    use kdfs_core::FileId;

    use super::super::tables::Tables;
    use super::*;

    /// A bucket of 100,000 keys `dNN/fNNNNNN`, 1,000 under each of 100 "folders";
    /// written straight into the tables (how ops write them is `object_ops.rs`'s
    /// concern).
    fn big_bucket() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let row = ObjectRow {
            file_id: FileId::of(b"x"),
            size: 1,
            content_type: String::new(),
            user_metadata: vec![],
            etag: String::new(),
            last_modified_ms: 1,
        }
        .encode();
        let txn = store.begin_write().unwrap();
        {
            let mut t = Tables::open(&txn).unwrap();
            t.buckets.insert("big", 1).unwrap();
            for i in 0..100_000 {
                let key = format!("d{:02}/f{i:06}", i % 100);
                t.objects
                    .insert(object_key("big", key.as_bytes()).as_slice(), row.as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        (dir, store)
    }

    #[test]
    fn a_bucket_of_100k_keys_lists_by_page_and_by_folder() {
        let (_dir, store) = big_bucket();
        // A page of keys, and the next one from where it stopped.
        let page = store
            .list_objects("big", "", "", 1000, &ListingStart::First)
            .unwrap();
        assert_eq!(page.objects.len(), 1000);
        assert_eq!(page.objects[0].0, "d00/f000000");
        let next = page.next.clone().expect("truncated");
        let page2 = store
            .list_objects("big", "", "", 1000, &ListingStart::After(next))
            .unwrap();
        assert_eq!(page2.objects[0].0, "d01/f000001");
        // The folders: one seek per folder, not a walk over 100,000 keys.
        let folders = store
            .list_objects("big", "", "/", 1000, &ListingStart::First)
            .unwrap();
        assert_eq!(folders.common_prefixes.len(), 100);
        assert!(folders.objects.is_empty() && folders.next.is_none());
        assert_eq!(folders.common_prefixes[42], "d42/");
        // One folder's keys, paged, ending with an untruncated page.
        let mut start = ListingStart::First;
        let mut seen = 0;
        loop {
            let page = store.list_objects("big", "d42/", "/", 300, &start).unwrap();
            seen += page.objects.len();
            match page.next {
                Some(n) => start = ListingStart::After(n),
                None => break,
            }
        }
        assert_eq!(seen, 1000);
    }

    #[test]
    fn tokens_round_trip_and_refuse_anything_else() {
        for key in ["", "a", "dir/ünï cödé %+", &"k".repeat(1024)] {
            assert_eq!(decode_token(&encode_token(key)).unwrap(), key);
        }
        for bad in [
            "",
            "2",
            "1a",
            "1zz",
            "1ff",
            &format!("1{}", "61".repeat(1025)),
        ] {
            assert!(decode_token(bad).is_err(), "{bad:?}");
        }
    }
}

//! The bucket/key namespace's changes ([`ObjectOp`]) and how one is applied inside a
//! group commit's transaction ([`apply`]).
//!
//! References: every key and every multipart part that points to a file has a row in
//! `referrers`. A file committed for the namespace only (`unpinned`) is tombstoned,
//! in the same transaction, when its last referrer goes; a file the hash API stored
//! stays. The hash API's delete of a file that still has a referrer is refused
//! (`ops.rs`), so no object ever points to a deleted file.
//!
//! As in `ops.rs`, an op decides every refusal ([`Error::Namespace`]) before it
//! changes anything, so a refused op leaves the transaction as it was.

use kdfs_core::FileId;
use kdfs_proto::objects::{Code, Refusal, WriteCondition};
use redb::ReadableTable;

use super::object_rows::{
    ObjectRow, PartRow, Referrer, UploadRow, UserMetadata, bucket_prefix, object_key, part_key,
    successor, upload_key,
};
use super::ops::{commit, tombstone};
use super::records::FileRecord;
use super::tables::Tables;
use crate::error::{Error, Result};
use crate::file_ids::check_content_id;

/// A change to the namespace. Names, keys and ids were checked by the caller.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ObjectOp {
    CreateBucket {
        bucket: String,
        now_ms: u64,
    },
    /// Refused while the bucket holds an object; aborts its uploads in progress.
    DeleteBucket {
        bucket: String,
        now_ms: u64,
    },
    Put {
        bucket: String,
        key: String,
        file_id: FileId,
        content_type: String,
        user_metadata: UserMetadata,
        etag: String,
        /// Checked against the key's current object before it is replaced.
        condition: WriteCondition,
        now_ms: u64,
    },
    /// Removes each key (missing keys are no error).
    Delete {
        bucket: String,
        keys: Vec<String>,
        now_ms: u64,
    },
    Copy {
        source_bucket: String,
        source_key: String,
        bucket: String,
        key: String,
        /// `Some`: the new content type and user metadata; `None`: the source's.
        metadata: Option<(String, UserMetadata)>,
        /// `None`: the source's.
        etag: Option<String>,
        now_ms: u64,
    },
    CreateUpload {
        upload_id: String,
        row: UploadRow,
    },
    RegisterPart {
        bucket: String,
        key: String,
        upload_id: String,
        part: u32,
        file_id: FileId,
        etag: String,
        now_ms: u64,
    },
    Abort {
        bucket: String,
        key: String,
        upload_id: String,
        now_ms: u64,
    },
    Complete(Box<Completion>),
    /// Aborts uploads initiated before `before_ms`.
    ExpireUploads {
        before_ms: u64,
        now_ms: u64,
    },
    /// Tombstones namespace-only files committed before `before_ms` that nothing
    /// refers to.
    ExpireUnclaimed {
        before_ms: u64,
        now_ms: u64,
    },
}

/// What CompleteMultipartUpload commits.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Completion {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    /// The client's list: part number and etag.
    pub parts: Vec<(u32, String)>,
    pub file_id: FileId,
    pub etag: String,
    pub min_part_size: u64,
    pub now_ms: u64,
}

/// An op's answer to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A bucket's creation time.
    Bucket(u64),
    /// Uploads aborted (DeleteBucket, ExpireUploads).
    Aborted(u32),
    Object {
        row: ObjectRow,
        replaced: bool,
    },
    /// Per key of a Delete: whether it was there.
    Deleted(Vec<bool>),
    Part(PartRow),
    Done,
}

/// What a namespace op did: its answer, and the file records it created or
/// tombstoned, for the in-memory block map.
#[derive(Debug, Clone)]
pub struct ObjectEffect {
    pub answer: Answer,
    /// A file CompleteMultipartUpload committed.
    pub created: Option<FileRecord>,
    /// Files whose last referrer went (created ones' blocks are counted first).
    pub tombstoned: Vec<FileRecord>,
    pub now_ms: u64,
}

fn refuse<T>(code: Code, message: impl Into<String>) -> Result<T> {
    Err(Error::Namespace(Refusal::new(code, message)))
}

pub(super) fn apply(t: &mut Tables<'_>, op: &ObjectOp) -> Result<ObjectEffect> {
    let now_ms = op_time(op);
    let mut fx = ObjectEffect {
        answer: Answer::Done,
        created: None,
        tombstoned: Vec::new(),
        now_ms,
    };
    fx.answer = match op {
        ObjectOp::CreateBucket { bucket, now_ms } => {
            if t.buckets.get(bucket.as_str())?.is_some() {
                return refuse(
                    Code::BucketAlreadyOwnedByYou,
                    format!("bucket {bucket:?} already exists"),
                );
            }
            t.buckets.insert(bucket.as_str(), *now_ms)?;
            Answer::Bucket(*now_ms)
        }
        ObjectOp::DeleteBucket { bucket, .. } => {
            need_bucket(t, bucket)?;
            let prefix = bucket_prefix(bucket);
            if first_in(&t.objects, &prefix)?.is_some() {
                return refuse(
                    Code::BucketNotEmpty,
                    format!("bucket {bucket:?} holds objects: delete them first"),
                );
            }
            let uploads = upload_ids_in(t, &prefix)?;
            for id in &uploads {
                abort(t, id, &mut fx)?;
            }
            t.buckets.remove(bucket.as_str())?;
            Answer::Aborted(uploads.len() as u32)
        }
        ObjectOp::Put {
            bucket,
            key,
            file_id,
            content_type,
            user_metadata,
            etag,
            condition,
            now_ms,
        } => {
            need_bucket(t, bucket)?;
            let current = get_object(t, bucket, key)?;
            condition
                .check(current.as_ref().map(|o| o.etag.as_str()))
                .map_err(Error::Namespace)?;
            let file = live_file(t, file_id)?;
            let row = ObjectRow {
                file_id: *file_id,
                size: file.size,
                content_type: content_type.clone(),
                user_metadata: user_metadata.clone(),
                etag: etag.clone(),
                last_modified_ms: *now_ms,
            };
            let replaced = set_object(t, bucket, key, &row, &mut fx)?;
            Answer::Object { row, replaced }
        }
        ObjectOp::Delete { bucket, keys, .. } => {
            need_bucket(t, bucket)?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(remove_object(t, bucket, key, &mut fx)?);
            }
            Answer::Deleted(out)
        }
        ObjectOp::Copy {
            source_bucket,
            source_key,
            bucket,
            key,
            metadata,
            etag,
            now_ms,
        } => {
            need_bucket(t, source_bucket)?;
            need_bucket(t, bucket)?;
            let Some(source) = get_object(t, source_bucket, source_key)? else {
                return refuse(
                    Code::NoSuchKey,
                    format!("no key {source_key:?} in bucket {source_bucket:?}"),
                );
            };
            let (content_type, user_metadata) = match metadata {
                Some((ct, m)) => (ct.clone(), m.clone()),
                None => (source.content_type.clone(), source.user_metadata.clone()),
            };
            let row = ObjectRow {
                content_type,
                user_metadata,
                etag: etag.clone().unwrap_or(source.etag.clone()),
                last_modified_ms: *now_ms,
                ..source
            };
            let replaced = set_object(t, bucket, key, &row, &mut fx)?;
            Answer::Object { row, replaced }
        }
        ObjectOp::CreateUpload { upload_id, row } => {
            need_bucket(t, &row.bucket)?;
            t.uploads
                .insert(upload_id.as_str(), row.encode().as_slice())?;
            t.upload_keys
                .insert(upload_key(&row.bucket, &row.key, upload_id).as_slice(), ())?;
            Answer::Done
        }
        ObjectOp::RegisterPart {
            bucket,
            key,
            upload_id,
            part,
            file_id,
            etag,
            now_ms,
        } => {
            need_upload(t, bucket, key, upload_id)?;
            let file = live_file(t, file_id)?;
            let row = PartRow {
                file_id: *file_id,
                size: file.size,
                etag: etag.clone(),
                last_modified_ms: *now_ms,
            };
            let pk = part_key(upload_id, *part);
            let old = t
                .parts
                .insert(pk.as_slice(), row.encode().as_slice())?
                .map(|v| PartRow::decode(v.value()))
                .transpose()?;
            let referrer = Referrer::Part {
                upload_id: upload_id.clone(),
                part: *part,
            };
            add_referrer(t, file_id, &referrer)?;
            if let Some(old) = old.filter(|o| o.file_id != *file_id) {
                drop_referrer(t, &old.file_id, &referrer, &mut fx)?;
            }
            Answer::Part(row)
        }
        ObjectOp::Abort {
            bucket,
            key,
            upload_id,
            ..
        } => {
            need_upload(t, bucket, key, upload_id)?;
            abort(t, upload_id, &mut fx)?;
            Answer::Done
        }
        ObjectOp::Complete(c) => complete(t, c, &mut fx)?,
        ObjectOp::ExpireUploads { before_ms, .. } => {
            let mut old = Vec::new();
            for entry in t.uploads.iter()? {
                let (k, v) = entry?;
                if UploadRow::decode(v.value())?.initiated_ms < *before_ms {
                    old.push(k.value().to_owned());
                }
            }
            for id in &old {
                abort(t, id, &mut fx)?;
            }
            Answer::Aborted(old.len() as u32)
        }
        ObjectOp::ExpireUnclaimed { before_ms, now_ms } => {
            let mut old = Vec::new();
            for entry in t.unclaimed.iter()? {
                let (k, v) = entry?;
                if v.value() < *before_ms {
                    old.push(k.value());
                }
            }
            for k in old {
                t.unclaimed.remove(k)?;
                let id = FileId::from_slice(&k).map_err(|e| Error::Corrupt(e.to_string()))?;
                if first_referrer(t, &id)?.is_none()
                    && t.unpinned.remove(k)?.is_some()
                    && let Some(record) = tombstone(t, &id, *now_ms)?
                {
                    fx.tombstoned.push(record);
                }
            }
            Answer::Done
        }
    };
    Ok(fx)
}

fn op_time(op: &ObjectOp) -> u64 {
    match op {
        ObjectOp::CreateBucket { now_ms, .. }
        | ObjectOp::DeleteBucket { now_ms, .. }
        | ObjectOp::Put { now_ms, .. }
        | ObjectOp::Delete { now_ms, .. }
        | ObjectOp::Copy { now_ms, .. }
        | ObjectOp::RegisterPart { now_ms, .. }
        | ObjectOp::Abort { now_ms, .. }
        | ObjectOp::ExpireUploads { now_ms, .. }
        | ObjectOp::ExpireUnclaimed { now_ms, .. } => *now_ms,
        ObjectOp::CreateUpload { row, .. } => row.initiated_ms,
        ObjectOp::Complete(c) => c.now_ms,
    }
}

fn need_bucket(t: &Tables<'_>, bucket: &str) -> Result<()> {
    if t.buckets.get(bucket)?.is_none() {
        return refuse(Code::NoSuchBucket, format!("no bucket {bucket:?}"));
    }
    Ok(())
}

/// The upload, which must exist and belong to this bucket and key.
fn need_upload(t: &Tables<'_>, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRow> {
    need_bucket(t, bucket)?;
    let row = t
        .uploads
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

fn live_file(t: &Tables<'_>, id: &FileId) -> Result<FileRecord> {
    match t.files.get(id.as_bytes())? {
        Some(v) => FileRecord::decode(*id, v.value()),
        None => refuse(
            Code::NoSuchContent,
            format!("file {id} is not stored (deleted or never committed)"),
        ),
    }
}

fn get_object(t: &Tables<'_>, bucket: &str, key: &str) -> Result<Option<ObjectRow>> {
    t.objects
        .get(object_key(bucket, key.as_bytes()).as_slice())?
        .map(|v| ObjectRow::decode(v.value()))
        .transpose()
}

/// The first key of `table` starting with `prefix`, if any.
fn first_in<V: redb::Value + 'static>(
    table: &redb::Table<'_, &'static [u8], V>,
    prefix: &[u8],
) -> Result<Option<Vec<u8>>> {
    let mut range = match successor(prefix) {
        Some(end) => table.range::<&[u8]>(prefix..end.as_slice())?,
        None => table.range::<&[u8]>(prefix..)?,
    };
    Ok(match range.next() {
        Some(entry) => Some(entry?.0.value().to_vec()),
        None => None,
    })
}

/// The ids of the uploads indexed under `prefix` (a bucket's).
fn upload_ids_in(t: &Tables<'_>, prefix: &[u8]) -> Result<Vec<String>> {
    let range = match successor(prefix) {
        Some(end) => t.upload_keys.range::<&[u8]>(prefix..end.as_slice())?,
        None => t.upload_keys.range::<&[u8]>(prefix..)?,
    };
    let mut ids = Vec::new();
    for entry in range {
        let k = entry?.0;
        let k = k.value();
        if k.len() > 32 {
            ids.push(
                String::from_utf8(k[k.len() - 32..].to_vec())
                    .map_err(|_| Error::Corrupt("upload index key".into()))?,
            );
        }
    }
    Ok(ids)
}

/// The first referrer of a file, if any.
pub(super) fn first_referrer(t: &Tables<'_>, id: &FileId) -> Result<Option<Referrer>> {
    first_in(&t.referrers, id.as_bytes())?
        .map(|k| Referrer::decode(&k))
        .transpose()
}

fn add_referrer(t: &mut Tables<'_>, id: &FileId, referrer: &Referrer) -> Result<()> {
    t.referrers.insert(referrer.entry(id).as_slice(), ())?;
    t.unclaimed.remove(id.as_bytes())?;
    Ok(())
}

/// Removes a referrer; a namespace-only file left without any is tombstoned.
fn drop_referrer(
    t: &mut Tables<'_>,
    id: &FileId,
    referrer: &Referrer,
    fx: &mut ObjectEffect,
) -> Result<()> {
    t.referrers.remove(referrer.entry(id).as_slice())?;
    if first_referrer(t, id)?.is_none()
        && t.unpinned.remove(id.as_bytes())?.is_some()
        && let Some(record) = tombstone(t, id, fx.now_ms)?
    {
        fx.tombstoned.push(record);
    }
    Ok(())
}

/// Points a key at `row`, replacing (and dereferencing) its previous object.
fn set_object(
    t: &mut Tables<'_>,
    bucket: &str,
    key: &str,
    row: &ObjectRow,
    fx: &mut ObjectEffect,
) -> Result<bool> {
    let k = object_key(bucket, key.as_bytes());
    let old = t
        .objects
        .insert(k.as_slice(), row.encode().as_slice())?
        .map(|v| ObjectRow::decode(v.value()))
        .transpose()?;
    let referrer = Referrer::Object {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    };
    // The new reference first, so content both objects hold is never unreferenced.
    add_referrer(t, &row.file_id, &referrer)?;
    let replaced = old.is_some();
    if let Some(old) = old.filter(|o| o.file_id != row.file_id) {
        drop_referrer(t, &old.file_id, &referrer, fx)?;
    }
    Ok(replaced)
}

fn remove_object(
    t: &mut Tables<'_>,
    bucket: &str,
    key: &str,
    fx: &mut ObjectEffect,
) -> Result<bool> {
    let Some(old) = t
        .objects
        .remove(object_key(bucket, key.as_bytes()).as_slice())?
        .map(|v| ObjectRow::decode(v.value()))
        .transpose()?
    else {
        return Ok(false);
    };
    let referrer = Referrer::Object {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    };
    drop_referrer(t, &old.file_id, &referrer, fx)?;
    Ok(true)
}

/// Every part of an upload, by number.
fn parts_of(t: &Tables<'_>, upload_id: &str) -> Result<Vec<(u32, PartRow)>> {
    let (from, to) = (part_key(upload_id, 0), part_key(upload_id, u32::MAX));
    let mut out = Vec::new();
    for entry in t.parts.range::<&[u8]>(from.as_slice()..to.as_slice())? {
        let (k, v) = entry?;
        let k = k.value();
        let n = u32::from_be_bytes(k[k.len() - 4..].try_into().expect("4 bytes"));
        out.push((n, PartRow::decode(v.value())?));
    }
    Ok(out)
}

/// Drops an upload and its parts (whose files lose a referrer).
fn abort(t: &mut Tables<'_>, upload_id: &str, fx: &mut ObjectEffect) -> Result<()> {
    let Some(row) = t
        .uploads
        .remove(upload_id)?
        .map(|v| UploadRow::decode(v.value()))
        .transpose()?
    else {
        return Ok(());
    };
    t.upload_keys
        .remove(upload_key(&row.bucket, &row.key, upload_id).as_slice())?;
    for (n, part) in parts_of(t, upload_id)? {
        t.parts.remove(part_key(upload_id, n).as_slice())?;
        let referrer = Referrer::Part {
            upload_id: upload_id.to_owned(),
            part: n,
        };
        drop_referrer(t, &part.file_id, &referrer, fx)?;
    }
    Ok(())
}

fn unquoted(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// CompleteMultipartUpload: every check first, then the file, the key and the
/// upload's end in one go.
fn complete(t: &mut Tables<'_>, c: &Completion, fx: &mut ObjectEffect) -> Result<Answer> {
    let upload = need_upload(t, &c.bucket, &c.key, &c.upload_id)?;
    if c.parts.is_empty() {
        return refuse(
            Code::InvalidArgument,
            "a completion names at least one part",
        );
    }
    if c.parts.windows(2).any(|w| w[0].0 >= w[1].0) {
        return refuse(
            Code::InvalidPartOrder,
            "the part numbers are not in ascending order",
        );
    }
    let mut blocks = Vec::new();
    let mut size = 0u64;
    let mut replication = 0;
    for (i, (n, etag)) in c.parts.iter().enumerate() {
        let part = t
            .parts
            .get(part_key(&c.upload_id, *n).as_slice())?
            .map(|v| PartRow::decode(v.value()))
            .transpose()?;
        let Some(part) = part.filter(|p| unquoted(&p.etag) == unquoted(etag)) else {
            return refuse(
                Code::InvalidPart,
                format!("part {n} was not uploaded with etag {etag}"),
            );
        };
        if i + 1 < c.parts.len() && part.size < c.min_part_size {
            return refuse(
                Code::EntityTooSmall,
                format!(
                    "part {n} is {} bytes, less than the {} every part but the last needs",
                    part.size, c.min_part_size
                ),
            );
        }
        let Ok(file) = live_file(t, &part.file_id) else {
            return refuse(Code::InvalidPart, format!("part {n}'s content is gone"));
        };
        size += file.size;
        replication = replication.max(file.replication);
        blocks.extend(file.blocks);
    }
    let existing = t
        .files
        .get(c.file_id.as_bytes())?
        .map(|v| FileRecord::decode(c.file_id, v.value()))
        .transpose()?;
    match existing {
        Some(existing) if existing.size != size => {
            return refuse(
                Code::InvalidArgument,
                format!(
                    "file {} is stored with {} bytes, the parts hold {size}",
                    c.file_id, existing.size
                ),
            );
        }
        Some(_) => {}
        None => {
            if let Err(e) = check_content_id(&c.file_id, &blocks) {
                return refuse(Code::InvalidArgument, e.to_string());
            }
            let record = FileRecord {
                id: c.file_id,
                name: file_name(&c.key),
                size,
                content_type: upload.content_type.clone(),
                created_ms: c.now_ms as i64,
                replication,
                blocks,
            };
            commit(t, &record, None)?;
            t.unpinned.insert(c.file_id.as_bytes(), ())?;
            fx.created = Some(record);
        }
    }
    let row = ObjectRow {
        file_id: c.file_id,
        size,
        content_type: upload.content_type,
        user_metadata: upload.user_metadata,
        etag: c.etag.clone(),
        last_modified_ms: c.now_ms,
    };
    let replaced = set_object(t, &c.bucket, &c.key, &row, fx)?;
    abort(t, &c.upload_id, fx)?;
    Ok(Answer::Object { row, replaced })
}

/// A download name for a completed object: the key's last segment, without control
/// characters.
fn file_name(key: &str) -> String {
    let last = key.rsplit('/').find(|s| !s.is_empty()).unwrap_or("object");
    last.chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

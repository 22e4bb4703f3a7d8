//! The bucket/key namespace (the namenode's `ObjectNamespace` service, docs/objects.md):
//! buckets, objects (a key pointing to a stored file plus its own metadata), listings
//! and multipart uploads, as checked domain types for the gateway's S3 port.
//!
//! The content of an object or a part is stored first with
//! [`Client::upload_object_content`] (an ordinary upload whose file is held only by
//! the keys and parts that point to it), then named here. A refusal of the namespace
//! is [`Error::Namespace`] with its S3 error code.

use kdfs_core::FileId;
use kdfs_proto::namenodes::Retry;
use kdfs_proto::objects::{Code, Refusal};
use kdfs_proto::pb;
use kdfs_proto::wire;

use super::Client;
use super::model::{FileInfo, FileRecord, LocatedBlock};
use super::rpc::bad_reply;
use crate::error::{Error, Result};

pub use kdfs_proto::objects::{MAX_KEY_LEN, MAX_PAGE, MAX_PART_NUMBER, MAX_USER_METADATA};

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// An object's own metadata, as the gateway gives it (and gets it back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMetadata {
    pub content_type: String,
    /// `x-amz-meta-*` entries: the name without the prefix, lowercased.
    pub user_metadata: Vec<(String, String)>,
}

/// An object as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    /// The file the key points to; `/download?hash=` serves it too.
    pub file_id: FileId,
    pub size: u64,
    pub metadata: ObjectMetadata,
    pub etag: String,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
}

/// An object with its file: with `locate`, the blocks to read it from.
#[derive(Debug, Clone)]
pub struct ObjectRead {
    pub object: ObjectInfo,
    pub file: FileRecord,
    /// Empty unless asked to locate; then [`ObjectRead::file_info`] is ready for
    /// [`Client::read_small`] and [`Client::read`] (which expect the file id checked
    /// against its blocks first, as [`Client::download`] does).
    pub blocks: Vec<LocatedBlock>,
}

impl ObjectRead {
    /// The file with its located blocks, for a download.
    pub fn file_info(&self) -> Result<FileInfo> {
        let info = FileInfo {
            record: self.file.clone(),
            blocks: self.blocks.clone(),
        };
        info.check()?;
        Ok(info)
    }
}

/// What a listing asks for (ListObjectsV2 and V1).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub prefix: String,
    pub delimiter: String,
    /// `None`: 1000; more than 1000 is 1000; `Some(0)` answers an empty page.
    pub max_keys: Option<u32>,
    /// V2 StartAfter or V1 Marker.
    pub start_after: String,
    /// A previous page's `next_continuation_token`.
    pub continuation_token: String,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ObjectListing {
    pub objects: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    /// When truncated: the token for the next page (V2).
    pub next_continuation_token: Option<String>,
    /// When truncated: the last key or common prefix of this page (V1 NextMarker).
    pub next_marker: Option<String>,
}

/// One key's outcome in [`Client::delete_objects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteResult {
    pub key: String,
    /// `Ok(true)`: removed; `Ok(false)`: there was no such key (S3 counts both as
    /// deleted); `Err`: the key was refused (too long, empty).
    pub outcome: std::result::Result<bool, Refusal>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated_ms: i64,
    pub metadata: ObjectMetadata,
}

/// A registered part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub part_number: u32,
    pub file_id: FileId,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
}

/// One page of an upload's parts.
#[derive(Debug, Clone)]
pub struct PartListing {
    pub upload: MultipartUpload,
    pub parts: Vec<Part>,
    pub is_truncated: bool,
    /// When truncated: pass as `part_number_marker`.
    pub next_part_number_marker: Option<u32>,
}

/// One page of a bucket's uploads in progress.
#[derive(Debug, Clone, Default)]
pub struct UploadListing {
    pub uploads: Vec<MultipartUpload>,
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

/// The client's list of parts for CompleteMultipartUpload, in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
}

/// What [`Client::complete_multipart_upload`] commits.
#[derive(Debug, Clone)]
pub struct Completion {
    pub parts: Vec<CompletedPart>,
    /// SHA-256 of the parts' bytes in the order of `parts` (read back by the gateway).
    pub file_id: FileId,
    /// The completed object's etag.
    pub etag: String,
    /// Every part but the last must hold at least this many bytes (S3: 5 MiB); 0
    /// checks nothing.
    pub min_part_size: u64,
}

impl Client {
    /// Creates a bucket; [`Code::BucketAlreadyOwnedByYou`] if it exists.
    pub async fn create_bucket(&self, bucket: &str) -> Result<Bucket> {
        let r = self
            .objects_call(
                "CreateBucket",
                Retry::AtMostOnce,
                pb::CreateBucketRequest {
                    bucket: bucket.to_owned(),
                },
                |mut c, r| async move { c.create_bucket(r).await },
            )
            .await?;
        bucket_from(r.bucket)
    }

    /// A bucket; [`Code::NoSuchBucket`] if there is none.
    pub async fn head_bucket(&self, bucket: &str) -> Result<Bucket> {
        let r = self
            .objects_call(
                "HeadBucket",
                Retry::Idempotent,
                pb::HeadBucketRequest {
                    bucket: bucket.to_owned(),
                },
                |mut c, r| async move { c.head_bucket(r).await },
            )
            .await?;
        bucket_from(r.bucket)
    }

    /// Every bucket, by name.
    pub async fn list_buckets(&self) -> Result<Vec<Bucket>> {
        let r = self
            .objects_call(
                "ListBuckets",
                Retry::Idempotent,
                pb::ListBucketsRequest {},
                |mut c, r| async move { c.list_buckets(r).await },
            )
            .await?;
        r.buckets
            .into_iter()
            .map(|b| bucket_from(Some(b)))
            .collect()
    }

    /// Deletes an empty bucket ([`Code::BucketNotEmpty`] while it holds an object),
    /// aborting its multipart uploads in progress; returns how many were aborted.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<u32> {
        let r = self
            .objects_call(
                "DeleteBucket",
                Retry::AtMostOnce,
                pb::DeleteBucketRequest {
                    bucket: bucket.to_owned(),
                },
                |mut c, r| async move { c.delete_bucket(r).await },
            )
            .await?;
        Ok(r.aborted_uploads)
    }

    /// Points `key` at the stored file `file_id`, replacing its previous object
    /// atomically. Returns the object and whether one was replaced.
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        file_id: FileId,
        metadata: &ObjectMetadata,
        etag: &str,
        condition: &kdfs_proto::objects::WriteCondition,
    ) -> Result<(ObjectInfo, bool)> {
        // A conditional write retried after it ran could be refused by its own effect.
        let retry = if condition.if_none_match.is_empty() && condition.if_match.is_empty() {
            Retry::Idempotent
        } else {
            Retry::AtMostOnce
        };
        let r = self
            .objects_call(
                "PutObject",
                retry,
                pb::PutObjectRequest {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    file_id: wire::raw(file_id.as_bytes()),
                    content_type: metadata.content_type.clone(),
                    user_metadata: metadata_to(&metadata.user_metadata),
                    etag: etag.to_owned(),
                    if_none_match: condition.if_none_match.clone(),
                    if_match: condition.if_match.clone(),
                },
                |mut c, r| async move { c.put_object(r).await },
            )
            .await?;
        Ok((object_from(r.object)?, r.replaced))
    }

    /// An object and its file record; with `locate`, its blocks with their replicas and
    /// READ tokens too. The file is the one the answered metadata points to (no
    /// overwrite is ever mixed in).
    pub async fn get_object(&self, bucket: &str, key: &str, locate: bool) -> Result<ObjectRead> {
        let r = self
            .objects_call(
                "GetObject",
                Retry::Idempotent,
                pb::GetObjectRequest {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    locate,
                },
                |mut c, r| async move { c.get_object(r).await },
            )
            .await?;
        let object = object_from(r.object)?;
        let file = r
            .file
            .as_ref()
            .ok_or_else(|| bad_reply("GetObject without a file"))
            .and_then(FileRecord::try_from)?;
        let blocks = r
            .blocks
            .iter()
            .map(LocatedBlock::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(ObjectRead {
            object,
            file,
            blocks,
        })
    }

    /// Removes a key; `Ok(false)` if there was none (S3 answers success either way).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool> {
        let r = self
            .objects_call(
                "DeleteObject",
                Retry::Idempotent,
                pb::DeleteObjectRequest {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                },
                |mut c, r| async move { c.delete_object(r).await },
            )
            .await?;
        Ok(r.deleted)
    }

    /// Removes up to [`MAX_PAGE`] keys of a bucket in one transaction.
    pub async fn delete_objects(&self, bucket: &str, keys: &[String]) -> Result<Vec<DeleteResult>> {
        let r = self
            .objects_call(
                "DeleteObjects",
                Retry::Idempotent,
                pb::DeleteObjectsRequest {
                    bucket: bucket.to_owned(),
                    keys: keys.to_vec(),
                },
                |mut c, r| async move { c.delete_objects(r).await },
            )
            .await?;
        r.results
            .into_iter()
            .map(|d| {
                let outcome = if d.error_code.is_empty() {
                    Ok(d.deleted)
                } else {
                    let code = Code::parse(&d.error_code)
                        .ok_or_else(|| bad_reply("DeleteObjects: unknown error code"))?;
                    Err(Refusal::new(code, d.error_message))
                };
                Ok(DeleteResult {
                    key: d.key,
                    outcome,
                })
            })
            .collect()
    }

    /// Points `(bucket, key)` at the file of `(source_bucket, source_key)`: no bytes
    /// move. `metadata`: `None` keeps the source's, `Some` replaces it. `etag`: `None`
    /// keeps the source's.
    pub async fn copy_object(
        &self,
        (source_bucket, source_key): (&str, &str),
        (bucket, key): (&str, &str),
        metadata: Option<&ObjectMetadata>,
        etag: Option<&str>,
    ) -> Result<ObjectInfo> {
        let r = self
            .objects_call(
                "CopyObject",
                Retry::Idempotent,
                pb::CopyObjectRequest {
                    source_bucket: source_bucket.to_owned(),
                    source_key: source_key.to_owned(),
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    replace_metadata: metadata.is_some(),
                    content_type: metadata.map(|m| m.content_type.clone()).unwrap_or_default(),
                    user_metadata: metadata
                        .map(|m| metadata_to(&m.user_metadata))
                        .unwrap_or_default(),
                    etag: etag.unwrap_or_default().to_owned(),
                },
                |mut c, r| async move { c.copy_object(r).await },
            )
            .await?;
        object_from(r.object)
    }

    /// One page of a bucket's keys in byte order.
    pub async fn list_objects(&self, bucket: &str, query: &ListQuery) -> Result<ObjectListing> {
        let r = self
            .objects_call(
                "ListObjects",
                Retry::Idempotent,
                pb::ListObjectsRequest {
                    bucket: bucket.to_owned(),
                    prefix: query.prefix.clone(),
                    delimiter: query.delimiter.clone(),
                    max_keys: query.max_keys,
                    start_after: query.start_after.clone(),
                    continuation_token: query.continuation_token.clone(),
                },
                |mut c, r| async move { c.list_objects(r).await },
            )
            .await?;
        Ok(ObjectListing {
            objects: r
                .objects
                .into_iter()
                .map(|o| object_from(Some(o)))
                .collect::<Result<_>>()?,
            common_prefixes: r.common_prefixes,
            is_truncated: r.is_truncated,
            next_continuation_token: non_empty(r.next_continuation_token),
            next_marker: non_empty(r.next_marker),
        })
    }

    /// Starts a multipart upload of `key`; returns its upload id.
    pub async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        metadata: &ObjectMetadata,
    ) -> Result<String> {
        let r = self
            .objects_call(
                "CreateMultipartUpload",
                Retry::Idempotent,
                pb::CreateMultipartUploadRequest {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    content_type: metadata.content_type.clone(),
                    user_metadata: metadata_to(&metadata.user_metadata),
                },
                |mut c, r| async move { c.create_multipart_upload(r).await },
            )
            .await?;
        Ok(r.upload_id)
    }

    /// Records the stored file `file_id` as part `part_number` of an upload (a part
    /// registered again is replaced, its old file dropped).
    pub async fn register_part(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        part_number: u32,
        file_id: FileId,
        etag: &str,
    ) -> Result<Part> {
        let r = self
            .objects_call(
                "RegisterPart",
                Retry::Idempotent,
                pb::RegisterPartRequest {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    upload_id: upload_id.to_owned(),
                    part_number,
                    file_id: wire::raw(file_id.as_bytes()),
                    etag: etag.to_owned(),
                },
                |mut c, r| async move { c.register_part(r).await },
            )
            .await?;
        part_from(
            r.part
                .ok_or_else(|| bad_reply("RegisterPart without a part"))?,
        )
    }

    /// One page of an upload's parts, numbered above `part_number_marker`.
    pub async fn list_parts(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        max_parts: u32,
        part_number_marker: u32,
    ) -> Result<PartListing> {
        let r = self
            .objects_call(
                "ListParts",
                Retry::Idempotent,
                pb::ListPartsRequest {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    upload_id: upload_id.to_owned(),
                    max_parts,
                    part_number_marker,
                },
                |mut c, r| async move { c.list_parts(r).await },
            )
            .await?;
        Ok(PartListing {
            upload: upload_from(
                r.upload
                    .ok_or_else(|| bad_reply("ListParts without an upload"))?,
            ),
            parts: r.parts.into_iter().map(part_from).collect::<Result<_>>()?,
            is_truncated: r.is_truncated,
            next_part_number_marker: r.is_truncated.then_some(r.next_part_number_marker),
        })
    }

    /// One page of a bucket's uploads in progress, by key then upload id.
    pub async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        max_uploads: u32,
        (key_marker, upload_id_marker): (&str, &str),
    ) -> Result<UploadListing> {
        let r = self
            .objects_call(
                "ListMultipartUploads",
                Retry::Idempotent,
                pb::ListMultipartUploadsRequest {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                    max_uploads,
                    key_marker: key_marker.to_owned(),
                    upload_id_marker: upload_id_marker.to_owned(),
                },
                |mut c, r| async move { c.list_multipart_uploads(r).await },
            )
            .await?;
        Ok(UploadListing {
            uploads: r.uploads.into_iter().map(upload_from).collect(),
            is_truncated: r.is_truncated,
            next_key_marker: non_empty(r.next_key_marker),
            next_upload_id_marker: non_empty(r.next_upload_id_marker),
        })
    }

    /// Drops an upload and its parts.
    pub async fn abort_multipart_upload(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
    ) -> Result<()> {
        self.objects_call(
            "AbortMultipartUpload",
            Retry::AtMostOnce,
            pb::AbortMultipartUploadRequest {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                upload_id: upload_id.to_owned(),
            },
            |mut c, r| async move { c.abort_multipart_upload(r).await },
        )
        .await?;
        Ok(())
    }

    /// Completes an upload: checks `completion.parts` against the registered parts,
    /// commits the concatenation as a new file and points the key at it, in one
    /// transaction.
    pub async fn complete_multipart_upload(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        completion: &Completion,
    ) -> Result<ObjectInfo> {
        let r = self
            .objects_call(
                "CompleteMultipartUpload",
                Retry::AtMostOnce,
                pb::CompleteMultipartUploadRequest {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    upload_id: upload_id.to_owned(),
                    parts: completion
                        .parts
                        .iter()
                        .map(|p| pb::CompletedPart {
                            part_number: p.part_number,
                            etag: p.etag.clone(),
                        })
                        .collect(),
                    file_id: wire::raw(completion.file_id.as_bytes()),
                    etag: completion.etag.clone(),
                    min_part_size: completion.min_part_size,
                },
                |mut c, r| async move { c.complete_multipart_upload(r).await },
            )
            .await?;
        object_from(r.object)
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn metadata_to(entries: &[(String, String)]) -> Vec<pb::MetadataEntry> {
    entries
        .iter()
        .map(|(name, value)| pb::MetadataEntry {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn metadata_from(entries: Vec<pb::MetadataEntry>) -> Vec<(String, String)> {
    entries.into_iter().map(|e| (e.name, e.value)).collect()
}

fn bucket_from(b: Option<pb::Bucket>) -> Result<Bucket> {
    let b = b.ok_or_else(|| bad_reply("a bucket reply without its bucket"))?;
    Ok(Bucket {
        name: b.name,
        created_ms: b.created_ms,
    })
}

fn file_id_from(what: &str, raw: &[u8]) -> Result<FileId> {
    wire::file_id("file_id", raw)
        .map_err(|s| Error::Internal(format!("namenode reply {what}: {}", s.message())))
}

fn object_from(o: Option<pb::ObjectInfo>) -> Result<ObjectInfo> {
    let o = o.ok_or_else(|| bad_reply("an object reply without its object"))?;
    Ok(ObjectInfo {
        file_id: file_id_from("object", &o.file_id)?,
        key: o.key,
        size: o.size,
        metadata: ObjectMetadata {
            content_type: o.content_type,
            user_metadata: metadata_from(o.user_metadata),
        },
        etag: o.etag,
        last_modified_ms: o.last_modified_ms,
    })
}

fn part_from(p: pb::PartInfo) -> Result<Part> {
    Ok(Part {
        part_number: p.part_number,
        file_id: file_id_from("part", &p.file_id)?,
        size: p.size,
        etag: p.etag,
        last_modified_ms: p.last_modified_ms,
    })
}

fn upload_from(u: pb::MultipartUpload) -> MultipartUpload {
    MultipartUpload {
        key: u.key,
        upload_id: u.upload_id,
        initiated_ms: u.initiated_ms,
        metadata: ObjectMetadata {
            content_type: u.content_type,
            user_metadata: metadata_from(u.user_metadata),
        },
    }
}

//! The bucket/key namespace (docs/objects.md): every name, key, id and size from the
//! network is checked here before it reaches the store, each change is one op of the
//! group commit (durable before it returns, so a read after it sees it), and every
//! write and delete leaves an audit line.

use kdfs_core::FileId;
use kdfs_core::telemetry::AUDIT_TARGET;
use kdfs_proto::objects::{self as rules, Code, MAX_PAGE, Refusal};
use tracing::info;

use super::NameSystem;
use super::reads::{FileView, LocatedBlock};
use crate::error::{Error, Result};
use crate::meta::{
    Answer, Completion, Effect, FileRecord, Listing, ListingStart, ObjectEffect, ObjectOp,
    ObjectRow, Op, PartRow, UploadRow, UserMetadata, decode_token, encode_token,
};

/// An object's own metadata as the gateway gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub content_type: String,
    pub user_metadata: UserMetadata,
}

/// What a listing asks for.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub prefix: String,
    pub delimiter: String,
    pub max_keys: Option<u32>,
    pub start_after: String,
    pub continuation_token: String,
}

/// An object with its live file; with `locate`, the file's located blocks.
#[derive(Debug, Clone)]
pub struct ObjectView {
    pub object: ObjectRow,
    pub file: FileRecord,
    pub blocks: Vec<LocatedBlock>,
}

/// An upload, a page of its parts by number, and whether more follow.
pub type PartPage = (UploadRow, Vec<(u32, PartRow)>, bool);

/// How often a read retries when the key was overwritten between reading it and its
/// file (each retry reads the key again).
const READ_ATTEMPTS: usize = 3;

fn check(r: std::result::Result<(), Refusal>) -> Result<()> {
    r.map_err(Error::Namespace)
}

fn check_meta(meta: &ObjectMeta) -> Result<()> {
    check(rules::check_content_type(&meta.content_type))?;
    check(rules::check_user_metadata(
        meta.user_metadata
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    ))
}

fn page(max: u32) -> usize {
    match max {
        0 => MAX_PAGE as usize,
        n => n.min(MAX_PAGE) as usize,
    }
}

impl NameSystem {
    async fn apply_object(&self, op: ObjectOp) -> Result<ObjectEffect> {
        match self.writer.submit(Op::Objects(op)).await? {
            Effect::Objects(fx) => {
                if !fx.tombstoned.is_empty() {
                    info!(
                        target: AUDIT_TARGET,
                        action = "delete",
                        files = ?fx.tombstoned.iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
                        result = "ok",
                        "content no key or part refers to any more was deleted"
                    );
                }
                Ok(fx)
            }
            other => Err(Error::Corrupt(format!(
                "unexpected namespace effect {other:?}"
            ))),
        }
    }

    pub async fn create_bucket(&self, bucket: &str) -> Result<u64> {
        check(rules::check_bucket(bucket))?;
        let now_ms = self.clock.now_ms();
        let op = ObjectOp::CreateBucket {
            bucket: bucket.to_owned(),
            now_ms,
        };
        let fx = self.apply_object(op).await;
        audit("create_bucket", bucket, "", &fx);
        fx?;
        Ok(now_ms)
    }

    pub fn head_bucket(&self, bucket: &str) -> Result<u64> {
        check(rules::check_bucket(bucket))?;
        self.store.bucket(bucket)
    }

    pub fn list_buckets(&self) -> Result<Vec<(String, u64)>> {
        self.store.buckets()
    }

    /// Deletes an empty bucket, aborting its uploads in progress; how many.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<u32> {
        check(rules::check_bucket(bucket))?;
        let op = ObjectOp::DeleteBucket {
            bucket: bucket.to_owned(),
            now_ms: self.clock.now_ms(),
        };
        let fx = self.apply_object(op).await;
        audit("delete_bucket", bucket, "", &fx);
        match fx?.answer {
            Answer::Aborted(n) => Ok(n),
            a => Err(unexpected(a)),
        }
    }

    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        file_id: FileId,
        meta: ObjectMeta,
        etag: &str,
        condition: kdfs_proto::objects::WriteCondition,
    ) -> Result<(ObjectRow, bool)> {
        check(rules::check_bucket(bucket))?;
        check(rules::check_key(key))?;
        check_meta(&meta)?;
        check(rules::check_etag(etag))?;
        for e in [&condition.if_match, &condition.if_none_match] {
            check(rules::check_etag(e))?;
        }
        let op = ObjectOp::Put {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            file_id,
            content_type: meta.content_type,
            user_metadata: meta.user_metadata,
            etag: etag.to_owned(),
            condition,
            now_ms: self.clock.now_ms(),
        };
        let fx = self.apply_object(op).await;
        audit("put_object", bucket, key, &fx);
        object_answer(fx?)
    }

    /// An object with its file; with `locate`, the file's blocks located as GetFile
    /// does. A key overwritten between reading it and its file is read again.
    pub async fn get_object(&self, bucket: &str, key: &str, locate: bool) -> Result<ObjectView> {
        check(rules::check_bucket(bucket))?;
        check(rules::check_key(key))?;
        for _ in 0..READ_ATTEMPTS {
            let object = self.store.object(bucket, key)?;
            let view = if locate {
                self.get_file(&object.file_id).await
            } else {
                self.store.lookup(&object.file_id).map(|found| match found {
                    Some(crate::meta::Lookup::Live(record)) => FileView::Live {
                        record,
                        blocks: Vec::new(),
                    },
                    Some(crate::meta::Lookup::Deleted { record, deleted_ms }) => {
                        FileView::Deleted { record, deleted_ms }
                    }
                    None => FileView::Deleted {
                        record: FileRecord {
                            id: object.file_id,
                            name: String::new(),
                            size: 0,
                            content_type: String::new(),
                            created_ms: 0,
                            replication: 0,
                            blocks: Vec::new(),
                        },
                        deleted_ms: 0,
                    },
                })
            };
            match view {
                Ok(FileView::Live { record, blocks }) => {
                    return Ok(ObjectView {
                        object,
                        file: record,
                        blocks,
                    });
                }
                // The key moved on to another file in between: read it again.
                Ok(FileView::Deleted { .. }) | Err(Error::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!(
            "key {key:?} of bucket {bucket:?} kept changing while it was read"
        )))
    }

    /// Removes keys of one bucket in one transaction: per key, whether it was there,
    /// or why it was refused.
    pub async fn delete_objects(
        &self,
        bucket: &str,
        keys: Vec<String>,
    ) -> Result<Vec<std::result::Result<bool, Refusal>>> {
        check(rules::check_bucket(bucket))?;
        if keys.len() > MAX_PAGE as usize {
            return Err(Error::Namespace(Refusal::new(
                Code::InvalidArgument,
                format!("{} keys, at most {MAX_PAGE} in one delete", keys.len()),
            )));
        }
        let checked: Vec<_> = keys.iter().map(|k| rules::check_key(k)).collect();
        let valid: Vec<String> = keys
            .iter()
            .zip(&checked)
            .filter(|(_, c)| c.is_ok())
            .map(|(k, _)| k.clone())
            .collect();
        let op = ObjectOp::Delete {
            bucket: bucket.to_owned(),
            keys: valid.clone(),
            now_ms: self.clock.now_ms(),
        };
        let fx = self.apply_object(op).await;
        for key in &valid {
            audit("delete_object", bucket, key, &fx);
        }
        let Answer::Deleted(found) = fx?.answer else {
            return Err(Error::Corrupt("a delete answered otherwise".into()));
        };
        let mut found = found.into_iter();
        Ok(checked
            .into_iter()
            .map(|c| c.map(|()| found.next().unwrap_or(false)))
            .collect())
    }

    pub async fn copy_object(
        &self,
        (source_bucket, source_key): (&str, &str),
        (bucket, key): (&str, &str),
        meta: Option<ObjectMeta>,
        etag: Option<&str>,
    ) -> Result<ObjectRow> {
        for b in [source_bucket, bucket] {
            check(rules::check_bucket(b))?;
        }
        for k in [source_key, key] {
            check(rules::check_key(k))?;
        }
        if let Some(m) = &meta {
            check_meta(m)?;
        }
        if let Some(e) = etag {
            check(rules::check_etag(e))?;
        }
        let op = ObjectOp::Copy {
            source_bucket: source_bucket.to_owned(),
            source_key: source_key.to_owned(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            metadata: meta.map(|m| (m.content_type, m.user_metadata)),
            etag: etag.map(str::to_owned),
            now_ms: self.clock.now_ms(),
        };
        let fx = self.apply_object(op).await;
        audit("copy_object", bucket, key, &fx);
        object_answer(fx?).map(|(row, _)| row)
    }

    /// One page of a bucket's keys, and the continuation token when truncated.
    pub fn list_objects(
        &self,
        bucket: &str,
        req: &ListRequest,
    ) -> Result<(Listing, Option<String>)> {
        check(rules::check_bucket(bucket))?;
        for (what, s) in [
            ("prefix", &req.prefix),
            ("delimiter", &req.delimiter),
            ("start-after", &req.start_after),
        ] {
            if s.len() > rules::MAX_KEY_LEN {
                return Err(Error::Namespace(Refusal::new(
                    Code::InvalidArgument,
                    format!("{what} is longer than {} bytes", rules::MAX_KEY_LEN),
                )));
            }
        }
        let start = if !req.continuation_token.is_empty() {
            ListingStart::After(decode_token(&req.continuation_token).map_err(Error::Namespace)?)
        } else if !req.start_after.is_empty() {
            ListingStart::After(req.start_after.clone())
        } else {
            ListingStart::First
        };
        let max = req.max_keys.map_or(MAX_PAGE, |m| m.min(MAX_PAGE)) as usize;
        let listing = self
            .store
            .list_objects(bucket, &req.prefix, &req.delimiter, max, &start)?;
        let token = listing.next.as_deref().map(encode_token);
        Ok((listing, token))
    }

    /// Starts a multipart upload; its id.
    pub async fn create_upload(&self, bucket: &str, key: &str, meta: ObjectMeta) -> Result<String> {
        check(rules::check_bucket(bucket))?;
        check(rules::check_key(key))?;
        check_meta(&meta)?;
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        let op = ObjectOp::CreateUpload {
            upload_id: upload_id.clone(),
            row: UploadRow {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                content_type: meta.content_type,
                user_metadata: meta.user_metadata,
                initiated_ms: self.clock.now_ms(),
            },
        };
        let fx = self.apply_object(op).await;
        audit("create_multipart_upload", bucket, key, &fx);
        fx?;
        Ok(upload_id)
    }

    fn check_upload(bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        check(rules::check_bucket(bucket))?;
        check(rules::check_key(key))?;
        check(rules::check_upload_id(upload_id))
    }

    pub async fn register_part(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        part: u32,
        file_id: FileId,
        etag: &str,
    ) -> Result<PartRow> {
        Self::check_upload(bucket, key, upload_id)?;
        check(rules::check_part_number(part))?;
        check(rules::check_etag(etag))?;
        let op = ObjectOp::RegisterPart {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            part,
            file_id,
            etag: etag.to_owned(),
            now_ms: self.clock.now_ms(),
        };
        let fx = self.apply_object(op).await;
        audit("upload_part", bucket, key, &fx);
        match fx?.answer {
            Answer::Part(p) => Ok(p),
            a => Err(unexpected(a)),
        }
    }

    /// An upload and a page of its parts above `after`; whether more follow.
    pub fn list_parts(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        max: u32,
        after: u32,
    ) -> Result<PartPage> {
        Self::check_upload(bucket, key, upload_id)?;
        let upload = self.store.upload(bucket, key, upload_id)?;
        let (parts, more) = self.store.parts(upload_id, after, page(max))?;
        Ok((upload, parts, more))
    }

    /// A page of a bucket's uploads in progress; whether more follow.
    pub fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        max: u32,
        (key_marker, upload_id_marker): (&str, &str),
    ) -> Result<(Vec<(String, UploadRow)>, bool)> {
        check(rules::check_bucket(bucket))?;
        if !upload_id_marker.is_empty() {
            check(rules::check_upload_id(upload_id_marker))?;
        }
        if prefix.len() > rules::MAX_KEY_LEN || key_marker.len() > rules::MAX_KEY_LEN {
            return Err(Error::Namespace(Refusal::new(
                Code::InvalidArgument,
                "prefix or key marker longer than a key",
            )));
        }
        self.store
            .uploads(bucket, prefix, (key_marker, upload_id_marker), page(max))
    }

    pub async fn abort_upload(&self, (bucket, key, upload_id): (&str, &str, &str)) -> Result<()> {
        Self::check_upload(bucket, key, upload_id)?;
        let op = ObjectOp::Abort {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            now_ms: self.clock.now_ms(),
        };
        let fx = self.apply_object(op).await;
        audit("abort_multipart_upload", bucket, key, &fx);
        fx.map(|_| ())
    }

    /// Completes an upload: the parts in the client's order become one new file the
    /// key points to (see `meta::object_ops::complete`).
    pub async fn complete_upload(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        parts: Vec<(u32, String)>,
        file_id: FileId,
        etag: &str,
        min_part_size: u64,
    ) -> Result<ObjectRow> {
        Self::check_upload(bucket, key, upload_id)?;
        check(rules::check_etag(etag))?;
        if parts.len() > rules::MAX_PART_NUMBER as usize {
            return Err(Error::Namespace(Refusal::new(
                Code::InvalidArgument,
                format!("{} parts, at most {}", parts.len(), rules::MAX_PART_NUMBER),
            )));
        }
        for (n, e) in &parts {
            check(rules::check_part_number(*n))?;
            check(rules::check_etag(e))?;
        }
        let op = ObjectOp::Complete(Box::new(Completion {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            parts,
            file_id,
            etag: etag.to_owned(),
            min_part_size,
            now_ms: self.clock.now_ms(),
        }));
        let fx = self.apply_object(op).await;
        audit("complete_multipart_upload", bucket, key, &fx);
        object_answer(fx?).map(|(row, _)| row)
    }

    /// Aborts multipart uploads older than `--multipart-expiry` and deletes namespace
    /// content no key or part claimed within `--object-claim-grace` (the gc worker).
    pub(super) async fn expire_namespace(&self, now_ms: u64) -> Result<()> {
        let expiry = self.settings.multipart_expiry.as_millis() as u64;
        let grace = self.settings.object_claim_grace.as_millis() as u64;
        let fx = self
            .apply_object(ObjectOp::ExpireUploads {
                before_ms: now_ms.saturating_sub(expiry),
                now_ms,
            })
            .await?;
        if let Answer::Aborted(n @ 1..) = fx.answer {
            info!(target: AUDIT_TARGET, action = "abort_multipart_upload", uploads = n, result = "ok", "expired multipart uploads aborted");
        }
        self.apply_object(ObjectOp::ExpireUnclaimed {
            before_ms: now_ms.saturating_sub(grace),
            now_ms,
        })
        .await?;
        Ok(())
    }
}

fn unexpected(a: Answer) -> Error {
    Error::Corrupt(format!("unexpected namespace answer {a:?}"))
}

fn object_answer(fx: ObjectEffect) -> Result<(ObjectRow, bool)> {
    match fx.answer {
        Answer::Object { row, replaced } => Ok((row, replaced)),
        a => Err(unexpected(a)),
    }
}

/// The audit line of a namespace write or delete.
fn audit(action: &str, bucket: &str, key: &str, outcome: &Result<ObjectEffect>) {
    match outcome {
        Ok(_) => info!(
            target: AUDIT_TARGET,
            action, bucket, key, result = "ok", "{action} {bucket}/{key}"
        ),
        Err(e) => info!(
            target: AUDIT_TARGET,
            action, bucket, key, result = "refused", reason = %e, "{action} {bucket}/{key} refused"
        ),
    }
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;

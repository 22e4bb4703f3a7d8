//! Object operations: PutObject (streamed through the upload path, digests checked
//! before the key is set), GetObject and HeadObject (conditional headers, Range,
//! served through the verified read path), DeleteObject and CopyObject (metadata only:
//! the copy points a second key at the same file).

use bytes::Bytes;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tracing::info;

use super::body::{self, Announced, BodyError};
use super::error::to_s3;
use super::etag;
use super::meta::{self, check_names, from_request, timestamp, user_metadata};
use super::observe::stored;
use super::service::KdfsS3;
use super::versions::is_current;
use crate::client::objects::ObjectInfo;
use crate::error::Error;
use kdfs_proto::objects::WriteCondition;

/// The S3 error of a failed upload of a request body: the body's own refusal
/// (too large, a digest that did not match) or the library's error.
pub(crate) fn upload_error(what: &str, e: Error) -> S3Error {
    if let Error::Source(source) = &e
        && let Some(b) = source.downcast_ref::<BodyError>()
    {
        let code = match b {
            BodyError::TooLarge { .. } => S3ErrorCode::EntityTooLarge,
            BodyError::BadDigest(_) => S3ErrorCode::BadDigest,
            BodyError::NotSigned => S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
            BodyError::Read(_) => S3ErrorCode::IncompleteBody,
        };
        info!(operation = what, error = %b, "S3 request body refused");
        let mut e = S3Error::with_message(code, b.to_string());
        if matches!(b, BodyError::NotSigned) {
            // S3's code for it has no variant in s3s, so no status of its own.
            e.set_status_code(http::StatusCode::BAD_REQUEST);
        }
        return e;
    }
    to_s3(what, e)
}

/// The checksums a request announced (headers, `Content-MD5`, trailer names).
pub(crate) fn announced<T>(
    req: &S3Request<T>,
    content_md5: Option<&str>,
    headers: Checksum,
) -> S3Result<Announced> {
    let content_md5 = body::content_md5(content_md5)
        .map_err(|m| S3Error::with_message(S3ErrorCode::InvalidDigest, m))?;
    let trailer_names = req
        .headers
        .get("x-amz-trailer")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| n.starts_with("x-amz-checksum-"))
                .collect()
        })
        .unwrap_or_default();
    Ok(Announced {
        content_md5,
        headers,
        trailer_names,
        trailers: req.trailing_headers.clone(),
    })
}

/// A body's announced length as a bound for the upload, refused early if over `max`.
pub(crate) fn length_bound(len: Option<i64>, max: Option<u64>) -> S3Result<Option<u64>> {
    let len = len.and_then(|l| u64::try_from(l).ok());
    if let (Some(len), Some(max)) = (len, max)
        && len > max
    {
        return Err(s3_error!(
            EntityTooLarge,
            "{len} bytes is more than the {max} this gateway accepts (--max-upload)"
        ));
    }
    Ok(len)
}

/// The body of a request, or an empty one.
pub(crate) fn body_or_empty(body: Option<StreamingBlob>) -> StreamingBlob {
    body.unwrap_or_else(|| {
        StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>())
    })
}

/// A PUT's `If-Match` / `If-None-Match` as the namespace's write condition.
fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> WriteCondition {
    let wire = |c: Option<&ETagCondition>| match c {
        None => String::new(),
        Some(ETagCondition::Any) => "*".to_owned(),
        Some(ETagCondition::ETag(e)) => etag::unquoted(e.value()).to_owned(),
    };
    WriteCondition {
        if_match: wire(if_match),
        if_none_match: wire(if_none_match),
    }
}

/// What the conditional headers of a GET or HEAD decide.
enum Condition {
    Serve,
    NotModified,
    Failed,
}

fn etag_matches(cond: &ETagCondition, o: &ObjectInfo) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => etag::unquoted(e.value()) == etag::unquoted(&o.etag),
    }
}

/// RFC 9110 §13.2.2's order: If-Match, If-Unmodified-Since (without If-Match),
/// If-None-Match, If-Modified-Since (without If-None-Match).
fn evaluate(
    o: &ObjectInfo,
    if_match: Option<&ETagCondition>,
    if_unmodified_since: Option<&Timestamp>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
) -> Condition {
    let modified = o.last_modified_ms.div_euclid(1000);
    if let Some(m) = if_match {
        if !etag_matches(m, o) {
            return Condition::Failed;
        }
    } else if let Some(t) = if_unmodified_since
        && modified > meta::seconds(t)
    {
        return Condition::Failed;
    }
    if let Some(n) = if_none_match {
        if etag_matches(n, o) {
            return Condition::NotModified;
        }
    } else if let Some(t) = if_modified_since
        && modified <= meta::seconds(t)
    {
        return Condition::NotModified;
    }
    Condition::Serve
}

/// A 304 still names the object's ETag and modification time (RFC 9110 §15.4.5), which
/// caches and the SDKs read.
fn not_modified(o: &ObjectInfo) -> S3Error {
    let mut e = S3Error::new(S3ErrorCode::NotModified);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", etag::unquoted(&o.etag))) {
        headers.insert(http::header::ETAG, v);
    }
    let mut date = Vec::new();
    if timestamp(o.last_modified_ms)
        .format(TimestampFormat::HttpDate, &mut date)
        .is_ok()
        && let Ok(v) = http::HeaderValue::from_bytes(&date)
    {
        headers.insert(http::header::LAST_MODIFIED, v);
    }
    e.set_headers(headers);
    e
}

fn check_conditions(c: Condition, o: &ObjectInfo) -> S3Result<()> {
    match c {
        Condition::Serve => Ok(()),
        Condition::NotModified => Err(not_modified(o)),
        Condition::Failed => Err(s3_error!(
            PreconditionFailed,
            "at least one of the preconditions you specified did not hold"
        )),
    }
}

/// The object's SHA-256 (its kdfs file id) as `x-amz-checksum-sha256`, for a client
/// that asked for checksums (`x-amz-checksum-mode: ENABLED`).
fn full_sha256(o: &ObjectInfo, mode: Option<&ChecksumMode>) -> Option<String> {
    mode.filter(|m| m.as_str() == ChecksumMode::ENABLED)
        .map(|_| body::base64_encode(o.file_id.as_bytes()))
}

impl KdfsS3 {
    /// Stores a body as namespace content, counted and hashed on its way (refused before
    /// it commits if it breaks what was announced); its digests once it is stored.
    pub(crate) async fn store_content(
        &self,
        operation: &'static str,
        blob: StreamingBlob,
        announced: Announced,
        content_type: &str,
        len: Option<u64>,
    ) -> S3Result<(crate::client::Uploaded, body::Digests)> {
        let (stream, digests) = body::verified(blob, announced, self.max_object);
        let uploaded = self
            .client
            .upload_object_content(stream, content_type, len)
            .await
            .map_err(|e| upload_error(operation, e))?;
        let digests = digests
            .await
            .map_err(|_| s3_error!(InternalError, "the body's digests were lost"))?;
        Ok((uploaded, digests))
    }

    pub(crate) async fn put_object_op(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let checksums = Checksum {
            checksum_crc32: req.input.checksum_crc32.clone(),
            checksum_crc32c: req.input.checksum_crc32c.clone(),
            checksum_crc64nvme: req.input.checksum_crc64nvme.clone(),
            checksum_sha1: req.input.checksum_sha1.clone(),
            checksum_sha256: req.input.checksum_sha256.clone(),
            ..Default::default()
        };
        let announced = announced(&req, req.input.content_md5.as_deref(), checksums)?;
        let input = req.input;
        let (bucket, key) = (input.bucket.as_str(), input.key.as_str());
        check_names(bucket, key)?;
        let metadata = from_request(input.content_type.as_ref(), input.metadata.as_ref())?;
        let len = length_bound(input.content_length, self.max_object)?;
        let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref());
        // No byte is stored for a bucket that does not exist, or for a conditional
        // write that already cannot hold (the namenode checks again as it writes).
        self.client
            .head_bucket(bucket)
            .await
            .map_err(|e| to_s3("PutObject", e))?;
        if condition != WriteCondition::default() {
            let current = match self.client.get_object(bucket, key, false).await {
                Ok(read) => Some(read.object.etag),
                Err(Error::Namespace(r)) if r.code == kdfs_proto::objects::Code::NoSuchKey => None,
                Err(e) => return Err(to_s3("PutObject", e)),
            };
            condition
                .check(current.as_deref())
                .map_err(super::error::refused)?;
        }
        let (uploaded, digests) = self
            .store_content(
                "PutObject",
                body_or_empty(input.body),
                announced,
                &metadata.content_type,
                len,
            )
            .await?;
        let etag = etag::of_md5(&digests.md5);
        let (object, replaced) = self
            .client
            .put_object(
                bucket,
                key,
                uploaded.record.id,
                &metadata,
                &etag,
                &condition,
            )
            .await
            .map_err(|e| to_s3("PutObject", e))?;
        info!(bucket, key, file = %object.file_id, size = object.size, replaced, "object stored");
        Ok(stored(
            PutObjectOutput {
                e_tag: Some(ETag::Strong(etag)),
                checksum_crc32: digests.checksums.checksum_crc32,
                checksum_crc32c: digests.checksums.checksum_crc32c,
                checksum_crc64nvme: digests.checksums.checksum_crc64nvme,
                checksum_sha1: digests.checksums.checksum_sha1,
                checksum_sha256: digests.checksums.checksum_sha256,
                size: Some(object.size as i64),
                ..Default::default()
            },
            object.file_id,
            object.size,
        ))
    }

    pub(crate) async fn get_object_op(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        if input.part_number.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "GetObject by partNumber is not supported"
            ));
        }
        let read = self
            .client
            .get_object(&input.bucket, &input.key, true)
            .await
            .map_err(|e| to_s3("GetObject", e))?;
        let o = &read.object;
        check_conditions(
            evaluate(
                o,
                input.if_match.as_ref(),
                input.if_unmodified_since.as_ref(),
                input.if_none_match.as_ref(),
                input.if_modified_since.as_ref(),
            ),
            o,
        )?;
        let size = read.file.size;
        let range = match &input.range {
            None => None,
            Some(r) => Some(r.check(size).map_err(|_| {
                s3_error!(
                    InvalidRange,
                    "the requested range is not satisfiable for {size} bytes"
                )
            })?),
        };
        let span = range.clone().unwrap_or(0..size);
        let byte_range = crate::client::ByteRange {
            start: span.start,
            end: span.end,
        };
        let info = read.file_info().map_err(|e| to_s3("GetObject", e))?;
        let body = match self.client.read_small(&info, byte_range).await {
            Some(bytes) => {
                let bytes = bytes.map_err(|e| to_s3("GetObject", e))?;
                StreamingBlob::wrap(futures::stream::once(async move {
                    Ok::<_, std::io::Error>(bytes)
                }))
            }
            None => StreamingBlob::wrap(self.client.read(&info, byte_range)),
        };
        let whole = range.is_none();
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            accept_ranges: Some("bytes".to_owned()),
            content_length: Some((span.end - span.start) as i64),
            content_range: range
                .as_ref()
                .map(|r| format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1))),
            content_type: o.metadata.content_type.parse().ok(),
            e_tag: Some(meta::etag(o)),
            last_modified: Some(timestamp(o.last_modified_ms)),
            metadata: user_metadata(&o.metadata),
            checksum_sha256: whole
                .then(|| full_sha256(o, input.checksum_mode.as_ref()))
                .flatten(),
            checksum_type: (whole && input.checksum_mode.is_some())
                .then(|| ChecksumType::from_static(ChecksumType::FULL_OBJECT)),
            ..Default::default()
        }))
    }

    pub(crate) async fn head_object_op(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let read = self
            .client
            .get_object(&input.bucket, &input.key, false)
            .await
            .map_err(|e| to_s3("HeadObject", e))?;
        let o = &read.object;
        check_conditions(
            evaluate(
                o,
                input.if_match.as_ref(),
                input.if_unmodified_since.as_ref(),
                input.if_none_match.as_ref(),
                input.if_modified_since.as_ref(),
            ),
            o,
        )?;
        Ok(S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".to_owned()),
            content_length: Some(o.size as i64),
            content_type: o.metadata.content_type.parse().ok(),
            e_tag: Some(meta::etag(o)),
            last_modified: Some(timestamp(o.last_modified_ms)),
            metadata: user_metadata(&o.metadata),
            checksum_sha256: full_sha256(o, input.checksum_mode.as_ref()),
            ..Default::default()
        }))
    }

    /// kdfs keeps no tags: an existing object has an empty tag set (`aws s3 cp`
    /// between keys asks for it).
    pub(crate) async fn get_object_tagging_op(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        self.client
            .get_object(&req.input.bucket, &req.input.key, false)
            .await
            .map_err(|e| to_s3("GetObjectTagging", e))?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: Vec::new(),
            version_id: None,
        }))
    }

    pub(crate) async fn delete_object_op(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (bucket, key) = (&req.input.bucket, &req.input.key);
        if !is_current(req.input.version_id.as_deref()) {
            return Err(s3_error!(NoSuchVersion, "kdfs keeps no object versions"));
        }
        let deleted = self
            .client
            .delete_object(bucket, key)
            .await
            .map_err(|e| to_s3("DeleteObject", e))?;
        info!(bucket, key, deleted, "object deleted");
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(crate) async fn copy_object_op(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            version_id,
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "copies from access points are not supported"
            ));
        };
        if version_id.is_some() {
            return Err(s3_error!(NotImplemented, "kdfs keeps no object versions"));
        }
        check_names(&input.bucket, &input.key)?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if **src_bucket == *input.bucket && **src_key == *input.key && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "copying an object onto itself without changing its metadata \
                 (x-amz-metadata-directive: REPLACE) is not allowed"
            ));
        }
        let metadata = match replace {
            true => Some(from_request(
                input.content_type.as_ref(),
                input.metadata.as_ref(),
            )?),
            false => None,
        };
        if input.copy_source_if_match.is_some()
            || input.copy_source_if_none_match.is_some()
            || input.copy_source_if_modified_since.is_some()
            || input.copy_source_if_unmodified_since.is_some()
        {
            let source = self
                .client
                .get_object(src_bucket, src_key, false)
                .await
                .map_err(|e| to_s3("CopyObject", e))?;
            if let Condition::Failed | Condition::NotModified = evaluate(
                &source.object,
                input.copy_source_if_match.as_ref(),
                input.copy_source_if_unmodified_since.as_ref(),
                input.copy_source_if_none_match.as_ref(),
                input.copy_source_if_modified_since.as_ref(),
            ) {
                return Err(s3_error!(
                    PreconditionFailed,
                    "a precondition on the copy source did not hold"
                ));
            }
        }
        let object = self
            .client
            .copy_object(
                (src_bucket, src_key),
                (&input.bucket, &input.key),
                metadata.as_ref(),
                None,
            )
            .await
            .map_err(|e| to_s3("CopyObject", e))?;
        info!(bucket = input.bucket, key = input.key, from_bucket = %src_bucket, from_key = %src_key, "object copied (metadata only)");
        Ok(stored(
            CopyObjectOutput {
                copy_object_result: Some(CopyObjectResult {
                    e_tag: Some(meta::etag(&object)),
                    last_modified: Some(timestamp(object.last_modified_ms)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            object.file_id,
            object.size,
        ))
    }
}

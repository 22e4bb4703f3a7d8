//! Multipart uploads, which are kdfs's resumable uploads: each part is stored as an
//! ordinary kdfs file (streamed like a PutObject, its MD5 its ETag) and registered
//! with the upload; CompleteMultipartUpload reads the parts back through the verified
//! read path, hashing them in order (the whole object's SHA-256 is its kdfs id, and
//! SHA-256 does not combine), then has the namenode commit a file made of the parts'
//! blocks and point the key at it, in one transaction. Memory stays bounded: parts
//! stream in and out, nothing is held whole.

use std::collections::HashMap;

use futures::StreamExt;
use kdfs_core::FileId;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use sha2::{Digest, Sha256};
use tracing::info;

use super::body;
use super::error::to_s3;
use super::etag;
use super::meta::{check_names, from_request, part_number, timestamp};
use super::object::{announced, body_or_empty, length_bound};
use super::observe::stored;
use super::service::KdfsS3;
use crate::client::objects::{
    CompletedPart as Completed, Completion, MAX_PAGE, Part as Registered,
};

/// Every part but the last must be at least this large (S3's rule; clients size
/// their parts for it).
pub const MIN_PART_SIZE: u64 = 5 << 20;

fn upload_id(id: &str) -> S3Result<()> {
    kdfs_proto::objects::check_upload_id(id)
        .map_err(|r| S3Error::with_message(S3ErrorCode::NoSuchUpload, r.message))
}

/// `x-amz-copy-source-range: bytes=FIRST-LAST` within an object of `size` bytes.
fn copy_range(header: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    // A header that is not `bytes=FIRST-LAST` is a bad argument; one outside the
    // object is a range that cannot be satisfied (S3's two answers).
    let malformed = || {
        s3_error!(
            InvalidArgument,
            "x-amz-copy-source-range {header:?} is not bytes=FIRST-LAST"
        )
    };
    let (first, last) = header
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(malformed)?;
    let (first, last): (u64, u64) = (
        first.parse().map_err(|_| malformed())?,
        last.parse().map_err(|_| malformed())?,
    );
    if first > last || last >= size {
        return Err(s3_error!(
            InvalidRange,
            "x-amz-copy-source-range {header:?} is not within {size} bytes"
        ));
    }
    Ok(first..last + 1)
}

impl KdfsS3 {
    pub(crate) async fn create_multipart_upload_op(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        check_names(&input.bucket, &input.key)?;
        let metadata = from_request(input.content_type.as_ref(), input.metadata.as_ref())?;
        let id = self
            .client
            .create_multipart_upload(&input.bucket, &input.key, &metadata)
            .await
            .map_err(|e| to_s3("CreateMultipartUpload", e))?;
        info!(
            bucket = input.bucket,
            key = input.key,
            upload = id,
            "multipart upload started"
        );
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    pub(crate) async fn upload_part_op(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
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
        let n = part_number(input.part_number)?;
        upload_id(&input.upload_id)?;
        let len = length_bound(input.content_length, self.max_object)?;
        let upload = (
            input.bucket.as_str(),
            input.key.as_str(),
            input.upload_id.as_str(),
        );
        // No byte is stored for an upload that does not exist.
        self.client
            .list_parts(upload, 1, 0)
            .await
            .map_err(|e| to_s3("UploadPart", e))?;
        let (uploaded, digests) = self
            .store_content("UploadPart", body_or_empty(input.body), announced, "", len)
            .await?;
        let etag = etag::of_md5(&digests.md5);
        let part = self
            .client
            .register_part(upload, n, uploaded.record.id, &etag)
            .await
            .map_err(|e| to_s3("UploadPart", e))?;
        Ok(stored(
            UploadPartOutput {
                e_tag: Some(ETag::Strong(etag)),
                checksum_crc32: digests.checksums.checksum_crc32,
                checksum_crc32c: digests.checksums.checksum_crc32c,
                checksum_crc64nvme: digests.checksums.checksum_crc64nvme,
                checksum_sha1: digests.checksums.checksum_sha1,
                checksum_sha256: digests.checksums.checksum_sha256,
                ..Default::default()
            },
            part.file_id,
            part.size,
        ))
    }

    /// UploadPartCopy: a byte range of an existing object becomes a part. Unlike
    /// CopyObject this moves bytes (a part is a file of its own): they are read through
    /// the verified read path and uploaded like an UploadPart's body.
    pub(crate) async fn upload_part_copy_op(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        let n = part_number(input.part_number)?;
        upload_id(&input.upload_id)?;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            version_id: None,
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "copies from access points or versions are not supported"
            ));
        };
        let upload = (
            input.bucket.as_str(),
            input.key.as_str(),
            input.upload_id.as_str(),
        );
        self.client
            .list_parts(upload, 1, 0)
            .await
            .map_err(|e| to_s3("UploadPartCopy", e))?;
        let source = self
            .client
            .get_object(src_bucket, src_key, true)
            .await
            .map_err(|e| to_s3("UploadPartCopy", e))?;
        let size = source.file.size;
        let range = match &input.copy_source_range {
            None => 0..size,
            Some(r) => copy_range(r, size)?,
        };
        length_bound(Some((range.end - range.start) as i64), self.max_object)?;
        let info = source.file_info().map_err(|e| to_s3("UploadPartCopy", e))?;
        let byte_range = crate::client::ByteRange {
            start: range.start,
            end: range.end,
        };
        // `read_small` checks the file id against its blocks; `read` relies on that.
        let bytes = match self.client.read_small(&info, byte_range).await {
            Some(b) => StreamingBlob::wrap(futures::stream::once(async move {
                b.map_err(|e| std::io::Error::other(e.to_string()))
            })),
            None => StreamingBlob::wrap(self.client.read(&info, byte_range)),
        };
        let (uploaded, digests) = self
            .store_content(
                "UploadPartCopy",
                bytes,
                body::Announced::default(),
                "",
                Some(range.end - range.start),
            )
            .await?;
        let etag = etag::of_md5(&digests.md5);
        let part = self
            .client
            .register_part(upload, n, uploaded.record.id, &etag)
            .await
            .map_err(|e| to_s3("UploadPartCopy", e))?;
        Ok(stored(
            UploadPartCopyOutput {
                copy_part_result: Some(CopyPartResult {
                    e_tag: Some(ETag::Strong(etag)),
                    last_modified: Some(timestamp(part.last_modified_ms)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            part.file_id,
            part.size,
        ))
    }

    /// Every registered part of an upload, by number.
    async fn all_parts(&self, upload: (&str, &str, &str)) -> S3Result<HashMap<u32, Registered>> {
        let mut parts = HashMap::new();
        let mut marker = 0;
        loop {
            let page = self
                .client
                .list_parts(upload, MAX_PAGE, marker)
                .await
                .map_err(|e| to_s3("CompleteMultipartUpload", e))?;
            for p in page.parts {
                parts.insert(p.part_number, p);
            }
            match page.next_part_number_marker {
                Some(next) if page.is_truncated && next > marker => marker = next,
                _ => return Ok(parts),
            }
        }
    }

    /// SHA-256 of `files` read in order through the verified read path.
    async fn hash_in_order(&self, files: &[FileId]) -> S3Result<FileId> {
        let mut hasher = Sha256::new();
        for id in files {
            let (_, mut body) = self
                .client
                .download(*id, None)
                .await
                .map_err(|e| to_s3("CompleteMultipartUpload", e))?;
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| to_s3("CompleteMultipartUpload", e))?;
                hasher.update(&piece);
            }
        }
        Ok(FileId::from_bytes(hasher.finalize().into()))
    }

    pub(crate) async fn complete_multipart_upload_op(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        upload_id(&input.upload_id)?;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if listed.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "CompleteMultipartUpload must name at least one part"
            ));
        }
        let mut wanted = Vec::with_capacity(listed.len());
        for p in &listed {
            let n = part_number(
                p.part_number
                    .ok_or_else(|| s3_error!(MalformedXML, "every part needs its PartNumber"))?,
            )?;
            let etag = p
                .e_tag
                .as_ref()
                .map(|e| etag::unquoted(e.value()).to_owned())
                .ok_or_else(|| s3_error!(MalformedXML, "every part needs its ETag"))?;
            wanted.push(Completed {
                part_number: n,
                etag,
            });
        }
        if wanted
            .windows(2)
            .any(|w| w[0].part_number >= w[1].part_number)
        {
            return Err(s3_error!(
                InvalidPartOrder,
                "the list of parts was not in ascending order"
            ));
        }
        let upload = (
            input.bucket.as_str(),
            input.key.as_str(),
            input.upload_id.as_str(),
        );
        let registered = match self.all_parts(upload).await {
            Ok(r) => r,
            Err(e) if *e.code() == S3ErrorCode::NoSuchUpload => {
                return self
                    .completed_before(&input.bucket, &input.key, &wanted, e)
                    .await;
            }
            Err(e) => return Err(e),
        };
        let mut files = Vec::with_capacity(wanted.len());
        for w in &wanted {
            let part = registered
                .get(&w.part_number)
                .filter(|p| etag::unquoted(&p.etag) == w.etag)
                .ok_or_else(|| {
                    s3_error!(
                        InvalidPart,
                        "part {} was not uploaded, or its ETag is not {}",
                        w.part_number,
                        w.etag
                    )
                })?;
            files.push(part.file_id);
        }
        let object_etag = etag::multipart(wanted.iter().map(|w| w.etag.as_str()))
            .ok_or_else(|| s3_error!(InvalidPart, "a part's ETag is not one this gateway gave"))?;
        let upload = (input.bucket, input.key, input.upload_id);
        let within = self.complete_keepalive_after;
        super::keep_alive::answer_in_time(
            within,
            self.clone()
                .finish_completion(upload, wanted, files, object_etag),
        )
        .await
    }

    /// The slow half of a completion, run in a task of its own
    /// ([`super::keep_alive`]): the parts hashed in order, then the namenode's commit.
    async fn finish_completion(
        self,
        (bucket, key, upload_id): (String, String, String),
        wanted: Vec<Completed>,
        files: Vec<FileId>,
        object_etag: String,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let file_id = self.hash_in_order(&files).await?;
        let object = self
            .client
            .complete_multipart_upload(
                (&bucket, &key, &upload_id),
                &Completion {
                    parts: wanted,
                    file_id,
                    etag: object_etag.clone(),
                    min_part_size: MIN_PART_SIZE,
                },
            )
            .await
            .map_err(|e| to_s3("CompleteMultipartUpload", e))?;
        info!(bucket, key, upload = upload_id, file = %object.file_id, size = object.size, "multipart upload completed");
        Ok(stored(
            CompleteMultipartUploadOutput {
                location: Some(format!("/{bucket}/{key}")),
                bucket: Some(bucket),
                key: Some(key),
                e_tag: Some(ETag::Strong(object_etag)),
                ..Default::default()
            },
            object.file_id,
            object.size,
        ))
    }

    /// A completion retried after it succeeded (its answer was lost): the upload is
    /// gone, but if the key still holds the object made of exactly the listed parts
    /// (its ETag is theirs), the retry gets the same success; otherwise `gone`.
    async fn completed_before(
        &self,
        bucket: &str,
        key: &str,
        wanted: &[Completed],
        gone: S3Error,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let Some(expected) = etag::multipart(wanted.iter().map(|w| w.etag.as_str())) else {
            return Err(gone);
        };
        let current = match self.client.get_object(bucket, key, false).await {
            Ok(read) => read.object,
            Err(_) => return Err(gone),
        };
        if etag::unquoted(&current.etag) != expected {
            return Err(gone);
        }
        info!(
            bucket,
            key,
            etag = expected,
            "multipart completion retried: already completed"
        );
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(bucket.to_owned()),
            key: Some(key.to_owned()),
            e_tag: Some(ETag::Strong(expected)),
            location: Some(format!("/{bucket}/{key}")),
            ..Default::default()
        }))
    }

    pub(crate) async fn abort_multipart_upload_op(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        upload_id(&input.upload_id)?;
        self.client
            .abort_multipart_upload((&input.bucket, &input.key, &input.upload_id))
            .await
            .map_err(|e| to_s3("AbortMultipartUpload", e))?;
        info!(
            bucket = input.bucket,
            key = input.key,
            upload = input.upload_id,
            "multipart upload aborted"
        );
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(crate) async fn list_parts_op(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        upload_id(&input.upload_id)?;
        let max = input
            .max_parts
            .unwrap_or(MAX_PAGE as i32)
            .clamp(0, MAX_PAGE as i32) as u32;
        let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let page = self
            .client
            .list_parts((&input.bucket, &input.key, &input.upload_id), max, marker)
            .await
            .map_err(|e| to_s3("ListParts", e))?;
        let parts = page
            .parts
            .iter()
            .map(|p| Part {
                part_number: Some(p.part_number as i32),
                e_tag: Some(ETag::Strong(p.etag.clone())),
                size: Some(p.size as i64),
                last_modified: Some(timestamp(p.last_modified_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: page.next_part_number_marker.map(|n| n as i32),
            is_truncated: Some(page.is_truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_ranges_are_inclusive_and_inside_the_object() {
        assert_eq!(copy_range("bytes=0-0", 10).unwrap(), 0..1);
        assert_eq!(copy_range("bytes=5-9", 10).unwrap(), 5..10);
        for bad in ["bytes=5-10", "bytes=6-5", "bytes=-5", "5-6", "bytes=a-b"] {
            assert!(copy_range(bad, 10).is_err(), "{bad}");
        }
    }
}

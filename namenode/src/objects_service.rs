//! The `ObjectNamespace` gRPC service (the bucket/key namespace the gateway's S3 port
//! uses): converts wire messages to domain values, calls the [`NameSystem`]
//! (`namesystem/objects.rs`, where names and limits are checked), and converts the
//! answer back. No policy lives here.

use std::sync::Arc;

use kdfs_proto::pb::{self, object_namespace_server};
use kdfs_proto::{transport, wire};
use tonic::{Request, Response, Status};

use crate::block_keys::BlockKeys;
use crate::meta::{ObjectRow, PartRow, UploadRow, UserMetadata};
use crate::namesystem::NameSystem;
use crate::namesystem::objects::{ListRequest, ObjectMeta};
use crate::service::{record, wire_location};

/// The tonic service.
#[derive(Clone)]
pub struct ObjectsService {
    ns: Arc<NameSystem>,
    /// Signs the READ tokens of located blocks (the Namenode service's keys).
    keys: Arc<BlockKeys>,
}

type Answer<T> = Result<Response<T>, Status>;

impl ObjectsService {
    pub fn new(ns: Arc<NameSystem>, keys: Arc<BlockKeys>) -> Self {
        Self { ns, keys }
    }

    pub fn into_server(self) -> object_namespace_server::ObjectNamespaceServer<Self> {
        object_namespace_server::ObjectNamespaceServer::new(self)
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(transport::MAX_MESSAGE_SIZE)
    }
}

fn bucket(name: String, created_ms: u64) -> pb::Bucket {
    pb::Bucket {
        name,
        created_ms: created_ms as i64,
    }
}

fn metadata_from(entries: Vec<pb::MetadataEntry>) -> UserMetadata {
    entries.into_iter().map(|e| (e.name, e.value)).collect()
}

fn metadata_to(entries: &UserMetadata) -> Vec<pb::MetadataEntry> {
    entries
        .iter()
        .map(|(name, value)| pb::MetadataEntry {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn object(key: String, row: &ObjectRow) -> pb::ObjectInfo {
    pb::ObjectInfo {
        key,
        file_id: wire::raw(row.file_id.as_bytes()),
        size: row.size,
        content_type: row.content_type.clone(),
        user_metadata: metadata_to(&row.user_metadata),
        etag: row.etag.clone(),
        last_modified_ms: row.last_modified_ms as i64,
    }
}

fn part(n: u32, row: &PartRow) -> pb::PartInfo {
    pb::PartInfo {
        part_number: n,
        file_id: wire::raw(row.file_id.as_bytes()),
        size: row.size,
        etag: row.etag.clone(),
        last_modified_ms: row.last_modified_ms as i64,
    }
}

fn upload(upload_id: String, row: UploadRow) -> pb::MultipartUpload {
    pb::MultipartUpload {
        key: row.key,
        upload_id,
        initiated_ms: row.initiated_ms as i64,
        content_type: row.content_type,
        user_metadata: metadata_to(&row.user_metadata),
    }
}

/// Runs a change in its own task, so a caller that disconnects cannot cut it short
/// between the group commit and the answer.
async fn detached<T: Send + 'static>(
    f: impl Future<Output = crate::Result<T>> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(f)
        .await
        .map_err(|e| Status::internal(format!("namespace task failed: {e}")))?
        .map_err(Status::from)
}

#[tonic::async_trait]
impl object_namespace_server::ObjectNamespace for ObjectsService {
    async fn create_bucket(
        &self,
        request: Request<pb::CreateBucketRequest>,
    ) -> Answer<pb::CreateBucketResponse> {
        let name = request.into_inner().bucket;
        let ns = self.ns.clone();
        let n = name.clone();
        let created = detached(async move { ns.create_bucket(&n).await }).await?;
        Ok(Response::new(pb::CreateBucketResponse {
            bucket: Some(bucket(name, created)),
        }))
    }

    async fn head_bucket(
        &self,
        request: Request<pb::HeadBucketRequest>,
    ) -> Answer<pb::HeadBucketResponse> {
        let name = request.into_inner().bucket;
        let created = self.ns.head_bucket(&name)?;
        Ok(Response::new(pb::HeadBucketResponse {
            bucket: Some(bucket(name, created)),
        }))
    }

    async fn list_buckets(
        &self,
        _request: Request<pb::ListBucketsRequest>,
    ) -> Answer<pb::ListBucketsResponse> {
        let buckets = self.ns.list_buckets()?;
        Ok(Response::new(pb::ListBucketsResponse {
            buckets: buckets.into_iter().map(|(n, c)| bucket(n, c)).collect(),
        }))
    }

    async fn delete_bucket(
        &self,
        request: Request<pb::DeleteBucketRequest>,
    ) -> Answer<pb::DeleteBucketResponse> {
        let name = request.into_inner().bucket;
        let ns = self.ns.clone();
        let aborted = detached(async move { ns.delete_bucket(&name).await }).await?;
        Ok(Response::new(pb::DeleteBucketResponse {
            aborted_uploads: aborted,
        }))
    }

    async fn put_object(
        &self,
        request: Request<pb::PutObjectRequest>,
    ) -> Answer<pb::PutObjectResponse> {
        let r = request.into_inner();
        let file_id = wire::file_id("file_id", &r.file_id)?;
        let meta = ObjectMeta {
            content_type: r.content_type,
            user_metadata: metadata_from(r.user_metadata),
        };
        let ns = self.ns.clone();
        let key = r.key.clone();
        let condition = kdfs_proto::objects::WriteCondition {
            if_none_match: r.if_none_match,
            if_match: r.if_match,
        };
        let (row, replaced) = detached(async move {
            ns.put_object(&r.bucket, &r.key, file_id, meta, &r.etag, condition)
                .await
        })
        .await?;
        Ok(Response::new(pb::PutObjectResponse {
            object: Some(object(key, &row)),
            replaced,
        }))
    }

    async fn get_object(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Answer<pb::GetObjectResponse> {
        let r = request.into_inner();
        let view = self.ns.get_object(&r.bucket, &r.key, r.locate).await?;
        Ok(Response::new(pb::GetObjectResponse {
            object: Some(object(r.key, &view.object)),
            file: Some(record(&view.file)),
            blocks: view
                .blocks
                .iter()
                .map(|b| pb::LocatedBlock {
                    id: wire::raw(b.id.as_bytes()),
                    length: b.length,
                    offset: b.offset,
                    replicas: b.replicas.iter().map(wire_location).collect(),
                    token: Some(self.keys.read(b.id)),
                })
                .collect(),
        }))
    }

    async fn delete_object(
        &self,
        request: Request<pb::DeleteObjectRequest>,
    ) -> Answer<pb::DeleteObjectResponse> {
        let r = request.into_inner();
        let ns = self.ns.clone();
        let mut out =
            detached(async move { ns.delete_objects(&r.bucket, vec![r.key]).await }).await?;
        let deleted = out
            .pop()
            .ok_or_else(|| Status::internal("a delete without its answer"))?
            .map_err(|refusal| refusal.to_status())?;
        Ok(Response::new(pb::DeleteObjectResponse { deleted }))
    }

    async fn delete_objects(
        &self,
        request: Request<pb::DeleteObjectsRequest>,
    ) -> Answer<pb::DeleteObjectsResponse> {
        let r = request.into_inner();
        let keys = r.keys.clone();
        let ns = self.ns.clone();
        let out = detached(async move { ns.delete_objects(&r.bucket, r.keys).await }).await?;
        Ok(Response::new(pb::DeleteObjectsResponse {
            results: keys
                .into_iter()
                .zip(out)
                .map(|(key, o)| match o {
                    Ok(deleted) => pb::DeleteObjectResult {
                        key,
                        deleted,
                        ..Default::default()
                    },
                    Err(refusal) => pb::DeleteObjectResult {
                        key,
                        deleted: false,
                        error_code: refusal.code.as_str().to_owned(),
                        error_message: refusal.message,
                    },
                })
                .collect(),
        }))
    }

    async fn copy_object(
        &self,
        request: Request<pb::CopyObjectRequest>,
    ) -> Answer<pb::CopyObjectResponse> {
        let r = request.into_inner();
        let meta = r.replace_metadata.then(|| ObjectMeta {
            content_type: r.content_type.clone(),
            user_metadata: metadata_from(r.user_metadata.clone()),
        });
        let ns = self.ns.clone();
        let key = r.key.clone();
        let row = detached(async move {
            let etag = (!r.etag.is_empty()).then_some(r.etag.as_str());
            ns.copy_object(
                (&r.source_bucket, &r.source_key),
                (&r.bucket, &r.key),
                meta,
                etag,
            )
            .await
        })
        .await?;
        Ok(Response::new(pb::CopyObjectResponse {
            object: Some(object(key, &row)),
        }))
    }

    async fn list_objects(
        &self,
        request: Request<pb::ListObjectsRequest>,
    ) -> Answer<pb::ListObjectsResponse> {
        let r = request.into_inner();
        let req = ListRequest {
            prefix: r.prefix,
            delimiter: r.delimiter,
            max_keys: r.max_keys,
            start_after: r.start_after,
            continuation_token: r.continuation_token,
        };
        let (listing, token) = self.ns.list_objects(&r.bucket, &req)?;
        Ok(Response::new(pb::ListObjectsResponse {
            objects: listing
                .objects
                .into_iter()
                .map(|(key, row)| object(key, &row))
                .collect(),
            common_prefixes: listing.common_prefixes,
            is_truncated: token.is_some(),
            next_continuation_token: token.unwrap_or_default(),
            next_marker: listing.next.unwrap_or_default(),
        }))
    }

    async fn create_multipart_upload(
        &self,
        request: Request<pb::CreateMultipartUploadRequest>,
    ) -> Answer<pb::CreateMultipartUploadResponse> {
        let r = request.into_inner();
        let meta = ObjectMeta {
            content_type: r.content_type,
            user_metadata: metadata_from(r.user_metadata),
        };
        let ns = self.ns.clone();
        let upload_id =
            detached(async move { ns.create_upload(&r.bucket, &r.key, meta).await }).await?;
        Ok(Response::new(pb::CreateMultipartUploadResponse {
            upload_id,
        }))
    }

    async fn register_part(
        &self,
        request: Request<pb::RegisterPartRequest>,
    ) -> Answer<pb::RegisterPartResponse> {
        let r = request.into_inner();
        let file_id = wire::file_id("file_id", &r.file_id)?;
        let ns = self.ns.clone();
        let n = r.part_number;
        let row = detached(async move {
            ns.register_part((&r.bucket, &r.key, &r.upload_id), n, file_id, &r.etag)
                .await
        })
        .await?;
        Ok(Response::new(pb::RegisterPartResponse {
            part: Some(part(n, &row)),
        }))
    }

    async fn list_parts(
        &self,
        request: Request<pb::ListPartsRequest>,
    ) -> Answer<pb::ListPartsResponse> {
        let r = request.into_inner();
        let (row, parts, more) = self.ns.list_parts(
            (&r.bucket, &r.key, &r.upload_id),
            r.max_parts,
            r.part_number_marker,
        )?;
        Ok(Response::new(pb::ListPartsResponse {
            next_part_number_marker: if more {
                parts.last().map_or(0, |(n, _)| *n)
            } else {
                0
            },
            parts: parts.iter().map(|(n, p)| part(*n, p)).collect(),
            is_truncated: more,
            upload: Some(upload(r.upload_id, row)),
        }))
    }

    async fn list_multipart_uploads(
        &self,
        request: Request<pb::ListMultipartUploadsRequest>,
    ) -> Answer<pb::ListMultipartUploadsResponse> {
        let r = request.into_inner();
        let (uploads, more) = self.ns.list_uploads(
            &r.bucket,
            &r.prefix,
            r.max_uploads,
            (&r.key_marker, &r.upload_id_marker),
        )?;
        let (next_key_marker, next_upload_id_marker) = match uploads.last() {
            Some((id, row)) if more => (row.key.clone(), id.clone()),
            _ => Default::default(),
        };
        Ok(Response::new(pb::ListMultipartUploadsResponse {
            uploads: uploads
                .into_iter()
                .map(|(id, row)| upload(id, row))
                .collect(),
            is_truncated: more,
            next_key_marker,
            next_upload_id_marker,
        }))
    }

    async fn abort_multipart_upload(
        &self,
        request: Request<pb::AbortMultipartUploadRequest>,
    ) -> Answer<pb::AbortMultipartUploadResponse> {
        let r = request.into_inner();
        let ns = self.ns.clone();
        detached(async move { ns.abort_upload((&r.bucket, &r.key, &r.upload_id)).await }).await?;
        Ok(Response::new(pb::AbortMultipartUploadResponse {}))
    }

    async fn complete_multipart_upload(
        &self,
        request: Request<pb::CompleteMultipartUploadRequest>,
    ) -> Answer<pb::CompleteMultipartUploadResponse> {
        let r = request.into_inner();
        let file_id = wire::file_id("file_id", &r.file_id)?;
        let parts = r
            .parts
            .into_iter()
            .map(|p| (p.part_number, p.etag))
            .collect();
        let ns = self.ns.clone();
        let key = r.key.clone();
        let row = detached(async move {
            ns.complete_upload(
                (&r.bucket, &r.key, &r.upload_id),
                parts,
                file_id,
                &r.etag,
                r.min_part_size,
            )
            .await
        })
        .await?;
        Ok(Response::new(pb::CompleteMultipartUploadResponse {
            object: Some(object(key, &row)),
        }))
    }
}

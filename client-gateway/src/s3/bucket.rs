//! Bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket (only when
//! empty), GetBucketLocation.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};
use tracing::info;

use super::error::to_s3;
use super::meta::timestamp;
use super::service::KdfsS3;

impl KdfsS3 {
    pub(crate) async fn list_buckets_op(&self) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .client
            .list_buckets()
            .await
            .map_err(|e| to_s3("ListBuckets", e))?;
        let buckets = buckets
            .into_iter()
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(timestamp(b.created_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(super::meta::owner()),
            ..Default::default()
        }))
    }

    pub(crate) async fn create_bucket_op(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = &req.input.bucket;
        self.client
            .create_bucket(bucket)
            .await
            .map_err(|e| to_s3("CreateBucket", e))?;
        info!(bucket, "bucket created");
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    pub(crate) async fn head_bucket_op(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.client
            .head_bucket(&req.input.bucket)
            .await
            .map_err(|e| to_s3("HeadBucket", e))?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    pub(crate) async fn delete_bucket_op(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = &req.input.bucket;
        let aborted = self
            .client
            .delete_bucket(bucket)
            .await
            .map_err(|e| to_s3("DeleteBucket", e))?;
        info!(bucket, aborted_uploads = aborted, "bucket deleted");
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    pub(crate) async fn get_bucket_location_op(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.client
            .head_bucket(&req.input.bucket)
            .await
            .map_err(|e| to_s3("GetBucketLocation", e))?;
        // us-east-1 is answered as no constraint, as S3 does.
        let location = (self.region != "us-east-1")
            .then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: location,
        }))
    }

    /// kdfs keeps no object versions: versioning was never enabled (no status).
    pub(crate) async fn get_bucket_versioning_op(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.client
            .head_bucket(&req.input.bucket)
            .await
            .map_err(|e| to_s3("GetBucketVersioning", e))?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }
}

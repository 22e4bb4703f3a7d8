//! [`KdfsS3`]: s3s's [`S3`] trait, each operation a call into the client library.
//! Operations not listed here answer `NotImplemented` (s3s's default).

use s3s::S3;

use crate::client::Client;

/// The S3 operations over the client library; cheap to clone.
#[derive(Clone)]
pub struct KdfsS3 {
    pub client: Client,
    /// `--max-upload`: a larger object (or part) is refused with `EntityTooLarge`.
    pub max_object: Option<u64>,
    /// The region answered by GetBucketLocation.
    pub region: String,
}

#[async_trait::async_trait]
impl S3 for KdfsS3 {}

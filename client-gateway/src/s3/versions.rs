//! kdfs keeps no object versions: every bucket is one S3 calls "unversioned", where
//! each key has exactly one version, `null`. ListObjectVersions answers that (tools
//! that clean a bucket, rclone, the Ceph s3-tests ask it), and a request naming a
//! version other than `null` is refused instead of acting on the current object.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::error::to_s3;
use super::list::{Encoding, common, max_keys};
use super::meta::{etag, timestamp};
use super::service::KdfsS3;
use crate::client::objects::{ListQuery, MAX_PAGE};

/// The one version id of an object in an unversioned bucket.
pub const NULL_VERSION: &str = "null";

/// Whether `version_id` (from a request) names the current object.
pub fn is_current(version_id: Option<&str>) -> bool {
    version_id.is_none_or(|v| v == NULL_VERSION)
}

impl KdfsS3 {
    pub(crate) async fn list_object_versions_op(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        if input
            .version_id_marker
            .as_deref()
            .is_some_and(|v| !v.is_empty() && v != NULL_VERSION)
        {
            return Err(s3_error!(
                InvalidArgument,
                "version-id-marker must be null: kdfs keeps no object versions"
            ));
        }
        let query = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone().unwrap_or_default(),
            max_keys: max_keys(input.max_keys)?,
            start_after: input.key_marker.clone().unwrap_or_default(),
            continuation_token: String::new(),
        };
        let page = self
            .client
            .list_objects(&input.bucket, &query)
            .await
            .map_err(|e| to_s3("ListObjectVersions", e))?;
        let enc = Encoding::of(input.encoding_type.as_ref());
        let versions = page
            .objects
            .iter()
            .map(|o| ObjectVersion {
                key: Some(enc.apply(&o.key)),
                version_id: Some(NULL_VERSION.to_owned()),
                is_latest: Some(true),
                size: Some(o.size as i64),
                e_tag: Some(etag(o)),
                last_modified: Some(timestamp(o.last_modified_ms)),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        let next_key_marker = page
            .is_truncated
            .then(|| {
                page.next_marker.clone().or_else(|| {
                    let last_key = page.objects.last().map(|o| o.key.clone());
                    let last_prefix = page.common_prefixes.last().cloned();
                    last_key.max(last_prefix)
                })
            })
            .flatten();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: enc.opt(input.prefix),
            delimiter: enc.opt(input.delimiter),
            key_marker: enc.opt(input.key_marker),
            version_id_marker: input.version_id_marker,
            max_keys: Some(query.max_keys.unwrap_or(MAX_PAGE) as i32),
            is_truncated: Some(page.is_truncated),
            next_version_id_marker: next_key_marker.is_some().then(|| NULL_VERSION.to_owned()),
            next_key_marker: enc.opt(next_key_marker),
            versions: Some(versions),
            delete_markers: Some(Vec::new()),
            common_prefixes: common(page.common_prefixes, enc),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}

//! Conversions between the namespace's types ([`crate::client::objects`]) and s3s's
//! DTOs: timestamps, user metadata, ETags, listed objects.

use std::time::{Duration, SystemTime};

use s3s::dto::{self, ETag, Timestamp};
use s3s::{S3Result, s3_error};

use super::error::refused;
use crate::client::objects::{ObjectInfo, ObjectMetadata};

/// Milliseconds since the Unix epoch as an S3 timestamp.
pub fn timestamp(ms: i64) -> Timestamp {
    let t = if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        SystemTime::UNIX_EPOCH
    };
    Timestamp::from(t)
}

/// An S3 timestamp as seconds since the Unix epoch (HTTP dates have whole seconds).
pub fn seconds(t: &Timestamp) -> i64 {
    let t: time::OffsetDateTime = t.clone().into();
    t.unix_timestamp()
}

/// The object's ETag as a strong validator.
pub fn etag(o: &ObjectInfo) -> ETag {
    ETag::Strong(o.etag.clone())
}

/// An object's metadata from a request's `Content-Type` and `x-amz-meta-*` headers,
/// checked as the namespace will (so nothing is uploaded for a request it refuses).
pub fn from_request(
    content_type: Option<&dto::ContentType>,
    metadata: Option<&dto::Metadata>,
) -> S3Result<ObjectMetadata> {
    let content_type = content_type
        .map(ToString::to_string)
        .unwrap_or_else(|| "binary/octet-stream".to_owned());
    let mut user_metadata: Vec<(String, String)> = metadata
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    user_metadata.sort();
    kdfs_proto::objects::check_content_type(&content_type).map_err(refused)?;
    kdfs_proto::objects::check_user_metadata(
        user_metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(refused)?;
    Ok(ObjectMetadata {
        content_type,
        user_metadata,
    })
}

/// An object's user metadata as s3s's map (the `x-amz-meta-*` headers of an answer).
pub fn user_metadata(m: &ObjectMetadata) -> Option<dto::Metadata> {
    (!m.user_metadata.is_empty()).then(|| m.user_metadata.iter().cloned().collect())
}

/// An object as a listing shows it.
pub fn listed(o: &ObjectInfo) -> dto::Object {
    dto::Object {
        key: Some(o.key.clone()),
        size: Some(o.size as i64),
        e_tag: Some(etag(o)),
        last_modified: Some(timestamp(o.last_modified_ms)),
        storage_class: Some(dto::ObjectStorageClass::from_static(
            dto::ObjectStorageClass::STANDARD,
        )),
        ..Default::default()
    }
}

/// The one owner of every bucket and object: kdfs has no accounts, every key pair
/// sees the same namespace.
pub fn owner() -> dto::Owner {
    dto::Owner {
        display_name: Some("kdfs".to_owned()),
        id: Some("kdfs".to_owned()),
    }
}

/// Checks a bucket name and key as the namespace will, before any byte is uploaded.
pub fn check_names(bucket: &str, key: &str) -> S3Result<()> {
    kdfs_proto::objects::check_bucket(bucket).map_err(refused)?;
    kdfs_proto::objects::check_key(key).map_err(refused)?;
    Ok(())
}

/// A part number from the wire (1..=10000).
pub fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=crate::client::objects::MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "part number {n} is not between 1 and 10000"
            )
        })
}

//! The bucket/key namespace on the HTTP port, for the browser page and scripts that
//! hold a bearer token rather than an S3 key pair (DESIGN.md §8): small JSON routes
//! over the same client calls the S3 port makes ([`crate::client::objects`]), so an
//! object put here is the S3 port's object (its ETag the MD5 of its bytes, as a single
//! S3 PUT's) and the other way round.
//!
//! - `GET /buckets`: every bucket.
//! - `PUT /buckets/{bucket}`, `DELETE /buckets/{bucket}`: create, delete an empty one.
//! - `GET /buckets/{bucket}?prefix=&delimiter=&continuation=&limit=`: one page of keys
//!   in byte order; with a delimiter, the "folders" (common prefixes) too.
//! - `PUT`, `GET`, `DELETE /buckets/{bucket}/objects/{key}`: the body is the object
//!   (`Content-Type` kept); the whole object back; remove the key.
//!
//! Puts and deletes pass the guard middleware like `/upload` (token, failure limit,
//! audit line naming the object); reads like `/files` (`--auth-reads`). Every bucket
//! name and key is checked before anything is read or stored.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kdfs_proto::objects::{self as rules};
use s3s::dto::StreamingBlob;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::ByteRange;
use crate::client::objects::{Bucket, ListQuery, MAX_PAGE, ObjectInfo, ObjectMetadata};
use crate::error::Error;
use crate::gateway::audit::Audited;
use crate::gateway::error::ApiError;
use crate::gateway::routes::download::content_disposition;
use crate::gateway::routes::upload::SharedBody;
use crate::gateway::state::AppState;
use crate::s3::body::{self, BodyError};
use crate::s3::etag;

/// The bucket and key a guarded path names, as sent (still percent-encoded), for the
/// audit line.
pub fn named(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/buckets/")?;
    Some(match rest.split_once("/objects/") {
        Some((bucket, key)) => format!("{bucket}/{key}"),
        None => rest.to_owned(),
    })
}

fn check_bucket(bucket: &str) -> Result<(), ApiError> {
    rules::check_bucket(bucket).map_err(|r| Error::Namespace(r).into())
}

fn check_names(bucket: &str, key: &str) -> Result<(), ApiError> {
    check_bucket(bucket)?;
    rules::check_key(key).map_err(|r| Error::Namespace(r).into())
}

#[derive(Debug, Serialize)]
struct BucketJson {
    name: String,
    created_ms: i64,
}

impl From<Bucket> for BucketJson {
    fn from(b: Bucket) -> Self {
        Self {
            name: b.name,
            created_ms: b.created_ms,
        }
    }
}

/// An object as the listing and a put answer show it.
#[derive(Debug, Serialize)]
struct ObjectJson {
    key: String,
    size: u64,
    /// The content's SHA-256: `/download?hash=` serves it too.
    hash: String,
    etag: String,
    content_type: String,
    last_modified_ms: i64,
}

impl From<&ObjectInfo> for ObjectJson {
    fn from(o: &ObjectInfo) -> Self {
        Self {
            key: o.key.clone(),
            size: o.size,
            hash: o.file_id.to_string(),
            etag: o.etag.clone(),
            content_type: o.metadata.content_type.clone(),
            last_modified_ms: o.last_modified_ms,
        }
    }
}

pub async fn list_buckets(State(st): State<AppState>) -> Result<Response, ApiError> {
    let buckets: Vec<BucketJson> = st
        .client
        .list_buckets()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(json!({ "buckets": buckets })).into_response())
}

pub async fn create_bucket(
    State(st): State<AppState>,
    Path(bucket): Path<String>,
) -> Result<Response, ApiError> {
    check_bucket(&bucket)?;
    let b = st.client.create_bucket(&bucket).await?;
    tracing::info!(bucket, "bucket created");
    Ok((StatusCode::CREATED, Json(BucketJson::from(b))).into_response())
}

pub async fn delete_bucket(
    State(st): State<AppState>,
    Path(bucket): Path<String>,
) -> Result<Response, ApiError> {
    check_bucket(&bucket)?;
    let aborted = st.client.delete_bucket(&bucket).await?;
    tracing::info!(bucket, aborted, "bucket deleted");
    Ok(Json(json!({ "deleted": bucket, "aborted_uploads": aborted })).into_response())
}

/// The query of a listing.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    delimiter: String,
    /// A previous page's `next`.
    #[serde(default)]
    continuation: String,
    /// Keys and folders per page, at most 1000 (the default).
    limit: Option<u32>,
}

/// Longest continuation token accepted (the namenode's are far shorter).
const MAX_TOKEN_LEN: usize = 4 * rules::MAX_KEY_LEN;

pub async fn list_objects(
    State(st): State<AppState>,
    Path(bucket): Path<String>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    check_bucket(&bucket)?;
    if q.prefix.len() > rules::MAX_KEY_LEN || q.delimiter.len() > rules::MAX_KEY_LEN {
        return Err(ApiError::bad_request(format!(
            "prefix and delimiter hold at most {} bytes",
            rules::MAX_KEY_LEN
        )));
    }
    if q.continuation.len() > MAX_TOKEN_LEN {
        return Err(ApiError::bad_request(
            "continuation is not a listing's token",
        ));
    }
    let page = st
        .client
        .list_objects(
            &bucket,
            &ListQuery {
                prefix: q.prefix.clone(),
                delimiter: q.delimiter.clone(),
                max_keys: Some(q.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE)),
                continuation_token: q.continuation,
                ..ListQuery::default()
            },
        )
        .await?;
    let objects: Vec<ObjectJson> = page.objects.iter().map(ObjectJson::from).collect();
    Ok(Json(json!({
        "bucket": bucket,
        "prefix": q.prefix,
        "delimiter": q.delimiter,
        "objects": objects,
        "folders": page.common_prefixes,
        "next": page.next_continuation_token.filter(|_| page.is_truncated),
    }))
    .into_response())
}

/// The `Content-Type` of a put, as the object's; S3's default without one.
fn content_type(headers: &HeaderMap) -> Result<String, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("binary/octet-stream")
        .to_owned();
    rules::check_content_type(&ct).map_err(Error::Namespace)?;
    Ok(ct)
}

/// A put's failure: the body's own refusal (too large, broken off) or the library's.
fn put_error(e: Error) -> ApiError {
    if let Error::Source(source) = &e
        && let Some(b) = source.downcast_ref::<BodyError>()
    {
        let status = match b {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        return ApiError::new(status, b.to_string());
    }
    e.into()
}

pub async fn put_object(
    State(st): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    // Shared, so that after a refusal the rest of the body is read and dropped (as
    // `/upload` does) and the client gets the answer rather than a reset.
    let shared = SharedBody::new(request_body);
    let answer = store(&st, (&bucket, &key), &headers, shared.clone()).await;
    if answer.is_err() {
        shared.linger();
    }
    answer
}

async fn store(
    st: &AppState,
    (bucket, key): (&str, &str),
    headers: &HeaderMap,
    source: SharedBody,
) -> Result<Response, ApiError> {
    check_names(bucket, key)?;
    let metadata = ObjectMetadata {
        content_type: content_type(headers)?,
        user_metadata: Vec::new(),
    };
    let max = st.config.max_upload.map(|b| b.bytes());
    let len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(len), Some(max)) = (len, max)
        && len > max
    {
        return Err(crate::gateway::error::BodyError::TooLarge(max).into());
    }
    // No byte is stored for a bucket that does not exist.
    st.client.head_bucket(bucket).await?;
    let blob = StreamingBlob::wrap(source);
    let (stream, digests) = body::verified(blob, body::Announced::default(), max);
    let uploaded = st
        .client
        .upload_object_content(stream, &metadata.content_type, len)
        .await
        .map_err(put_error)?;
    let digests = digests
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the body's MD5 was lost"))?;
    let (object, replaced) = st
        .client
        .put_object(
            bucket,
            key,
            uploaded.record.id,
            &metadata,
            &etag::of_md5(&digests.md5),
            &rules::WriteCondition::default(),
        )
        .await?;
    tracing::info!(bucket, key, file = %object.file_id, size = object.size, replaced, "object stored");
    let mut resp = Json(json!({
        "bucket": bucket,
        "object": ObjectJson::from(&object),
        "replaced": replaced,
    }))
    .into_response();
    resp.extensions_mut().insert(Audited {
        file: Some(object.file_id),
        size: Some(object.size),
    });
    Ok(resp)
}

pub async fn get_object(
    State(st): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_names(&bucket, &key)?;
    let read = st.client.get_object(&bucket, &key, true).await?;
    let info = read.file_info()?;
    let size = read.file.size;
    let whole = ByteRange {
        start: 0,
        end: size,
    };
    let body = match st.client.read_small(&info, whole).await {
        Some(small) => Body::from(small?),
        None => Body::from_stream(st.client.read(&info, whole)),
    };
    let o = &read.object;
    let content_type = HeaderValue::from_str(&o.metadata.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let name = key.rsplit('/').find(|s| !s.is_empty()).unwrap_or("object");
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, size)
        .header(
            header::ETAG,
            HeaderValue::from_str(&format!("\"{}\"", etag::unquoted(&o.etag)))
                .unwrap_or_else(|_| HeaderValue::from_static("\"\"")),
        )
        .header(header::CONTENT_DISPOSITION, content_disposition(name))
        .header("x-content-type-options", "nosniff")
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub async fn delete_object(
    State(st): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_names(&bucket, &key)?;
    let deleted = st.client.delete_object(&bucket, &key).await?;
    tracing::info!(bucket, key, deleted, "object deleted");
    Ok(Json(json!({ "bucket": bucket, "key": key, "deleted": deleted })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_names_bucket_and_key_as_sent() {
        assert_eq!(named("/buckets/b").as_deref(), Some("b"));
        assert_eq!(
            named("/buckets/b/objects/a%20b/c").as_deref(),
            Some("b/a%20b/c")
        );
        assert_eq!(named("/files/x"), None);
    }
}

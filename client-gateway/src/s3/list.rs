//! Listings and batch deletes: ListObjectsV2 and V1 (prefix, delimiter, pages with
//! continuation tokens or markers) and DeleteObjects.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use tracing::info;

use super::error::to_s3;
use super::meta::listed;
use super::service::KdfsS3;
use super::versions::is_current;
use crate::client::objects::{ListQuery, MAX_PAGE};

/// `max-keys` from the wire: negative is refused, more than a page is a page.
pub(super) fn max_keys(n: Option<i32>) -> S3Result<Option<u32>> {
    match n {
        None => Ok(None),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok(Some((n as u32).min(MAX_PAGE))),
    }
}

pub(super) fn common(prefixes: Vec<String>, enc: Encoding) -> Option<Vec<CommonPrefix>> {
    Some(
        prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc.apply(&p)),
            })
            .collect(),
    )
}

/// `encoding-type=url`: keys (and prefixes, markers) in the answer are percent-encoded,
/// which the AWS CLI asks for and then decodes (a `+` in a key sent raw would come
/// back as a space).
#[derive(Clone, Copy)]
pub(super) struct Encoding(bool);

impl Encoding {
    pub(super) fn of(e: Option<&EncodingType>) -> Self {
        Self(e.is_some_and(|e| e.as_str() == EncodingType::URL))
    }

    pub(super) fn apply(self, s: &str) -> String {
        if !self.0 {
            return s.to_owned();
        }
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                    out.push(b as char)
                }
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    pub(super) fn opt(self, s: Option<String>) -> Option<String> {
        s.map(|s| self.apply(&s))
    }

    /// The listed objects, with their owner (V1 always, V2 with `fetch-owner=true`).
    fn objects(
        self,
        objects: &[crate::client::objects::ObjectInfo],
        owner: bool,
    ) -> Option<Vec<Object>> {
        Some(
            objects
                .iter()
                .map(|o| {
                    let mut l = listed(o);
                    l.key = self.opt(l.key);
                    l.owner = owner.then(super::meta::owner);
                    l
                })
                .collect(),
        )
    }
}

impl KdfsS3 {
    pub(crate) async fn list_objects_v2_op(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let query = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone().unwrap_or_default(),
            max_keys: max_keys(input.max_keys)?,
            start_after: input.start_after.clone().unwrap_or_default(),
            continuation_token: input.continuation_token.clone().unwrap_or_default(),
        };
        let page = self
            .client
            .list_objects(&input.bucket, &query)
            .await
            .map_err(|e| to_s3("ListObjectsV2", e))?;
        let key_count = (page.objects.len() + page.common_prefixes.len()) as i32;
        let enc = Encoding::of(input.encoding_type.as_ref());
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: enc.opt(input.prefix),
            delimiter: enc.opt(input.delimiter.filter(|d| !d.is_empty())),
            max_keys: Some(query.max_keys.unwrap_or(MAX_PAGE) as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            start_after: enc.opt(input.start_after),
            is_truncated: Some(page.is_truncated),
            next_continuation_token: page.next_continuation_token,
            contents: enc.objects(&page.objects, input.fetch_owner == Some(true)),
            common_prefixes: common(page.common_prefixes, enc),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    pub(crate) async fn list_objects_op(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let query = ListQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone().unwrap_or_default(),
            max_keys: max_keys(input.max_keys)?,
            start_after: input.marker.clone().unwrap_or_default(),
            continuation_token: String::new(),
        };
        let page = self
            .client
            .list_objects(&input.bucket, &query)
            .await
            .map_err(|e| to_s3("ListObjects", e))?;
        let enc = Encoding::of(input.encoding_type.as_ref());
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            // V1 answers its prefix as sent: SDKs decode only keys, prefixes and markers.
            prefix: input.prefix,
            delimiter: enc.opt(input.delimiter.filter(|d| !d.is_empty())),
            marker: Some(enc.apply(input.marker.as_deref().unwrap_or(""))),
            max_keys: Some(query.max_keys.unwrap_or(MAX_PAGE) as i32),
            is_truncated: Some(page.is_truncated),
            // S3 sends NextMarker only with a delimiter; clients without one continue
            // from the last key, which is the same thing.
            next_marker: enc.opt(page.next_marker),
            contents: enc.objects(&page.objects, true),
            common_prefixes: common(page.common_prefixes, enc),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    pub(crate) async fn delete_objects_op(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        if input.delete.objects.len() > MAX_PAGE as usize {
            return Err(s3_error!(
                MalformedXML,
                "a DeleteObjects request names at most {MAX_PAGE} keys"
            ));
        }
        // A version other than `null` does not exist: refused for that key alone.
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        let mut keys = Vec::with_capacity(input.delete.objects.len());
        for o in &input.delete.objects {
            if is_current(o.version_id.as_deref()) {
                keys.push(o.key.clone());
            } else {
                errors.push(Error {
                    key: Some(o.key.clone()),
                    version_id: o.version_id.clone(),
                    code: Some("NoSuchVersion".to_owned()),
                    message: Some("kdfs keeps no object versions".to_owned()),
                });
            }
        }
        let results = self
            .client
            .delete_objects(&input.bucket, &keys)
            .await
            .map_err(|e| to_s3("DeleteObjects", e))?;
        let quiet = input.delete.quiet.unwrap_or(false);
        for r in results {
            match r.outcome {
                Ok(_) if quiet => {}
                Ok(_) => deleted.push(DeletedObject {
                    key: Some(r.key),
                    ..Default::default()
                }),
                Err(refusal) => errors.push(Error {
                    key: Some(r.key),
                    code: Some(refusal.code.as_str().to_owned()),
                    message: Some(refusal.message),
                    ..Default::default()
                }),
            }
        }
        info!(
            bucket = input.bucket,
            keys = keys.len(),
            refused = errors.len(),
            "objects deleted"
        );
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved_characters() {
        let url = Encoding(true);
        assert_eq!(url.apply("a b+c/ü%"), "a%20b%2Bc/%C3%BC%25");
        assert_eq!(url.apply("plain/key-1_2.3~"), "plain/key-1_2.3~");
        assert_eq!(Encoding(false).apply("a b+c"), "a b+c");
    }
}

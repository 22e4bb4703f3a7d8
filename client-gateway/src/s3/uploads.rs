//! ListMultipartUploads: the uploads in progress in a bucket, by key, with `prefix`,
//! markers and, with a `delimiter`, the keys that hold it after the prefix rolled up into
//! common prefixes ("folders", as ListObjects does). The namenode lists uploads by key;
//! the roll-up is done here, over as many of its pages as one answer needs.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::error::to_s3;
use super::meta::timestamp;
use super::service::KdfsS3;
use crate::client::objects::{MAX_PAGE, MultipartUpload as InProgress};

/// One entry of an answer: an upload, or a common prefix standing for every upload
/// under it.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Upload(InProgress),
    Prefix(String),
}

/// The common prefix `key` rolls up into: the prefix and the rest of the key up to and
/// including its first `delimiter`, if it holds one.
fn rolled_up(key: &str, prefix: &str, delimiter: &str) -> Option<String> {
    if delimiter.is_empty() {
        return None;
    }
    let rest = key.strip_prefix(prefix)?;
    let at = rest.find(delimiter)?;
    Some(format!("{prefix}{}", &rest[..at + delimiter.len()]))
}

/// Gathers an answer of at most `max` entries from uploads in key order: each upload,
/// or its common prefix once (none at or before `key_marker`, which a client continuing
/// after a prefix sends).
struct Rollup<'a> {
    prefix: &'a str,
    delimiter: &'a str,
    key_marker: &'a str,
    max: usize,
    entries: Vec<Entry>,
    truncated: bool,
}

impl Rollup<'_> {
    /// Adds `u`; false once the answer is full and `u` did not fit.
    fn add(&mut self, u: InProgress) -> bool {
        let entry = match rolled_up(&u.key, self.prefix, self.delimiter) {
            Some(p) if p.as_str() <= self.key_marker => return true,
            Some(p) if matches!(self.entries.last(), Some(Entry::Prefix(last)) if *last == p) => {
                return true;
            }
            Some(p) => Entry::Prefix(p),
            None => Entry::Upload(u),
        };
        if self.entries.len() >= self.max {
            self.truncated = true;
            return false;
        }
        self.entries.push(entry);
        true
    }

    /// Where a continuation starts: after the last entry.
    fn next_markers(&self) -> (Option<String>, Option<String>) {
        match (self.truncated, self.entries.last()) {
            (true, Some(Entry::Upload(u))) => (Some(u.key.clone()), Some(u.upload_id.clone())),
            (true, Some(Entry::Prefix(p))) => (Some(p.clone()), None),
            _ => (None, None),
        }
    }
}

impl KdfsS3 {
    pub(crate) async fn list_multipart_uploads_op(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let max = input
            .max_uploads
            .unwrap_or(MAX_PAGE as i32)
            .clamp(0, MAX_PAGE as i32) as u32;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().unwrap_or_default();
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let prefix = prefix.as_str();
        let mut rollup = Rollup {
            prefix,
            delimiter: &delimiter,
            key_marker: &key_marker,
            max: max as usize,
            entries: Vec::new(),
            truncated: false,
        };
        let mut marker = (
            key_marker.clone(),
            input.upload_id_marker.clone().unwrap_or_default(),
        );
        'pages: loop {
            let page = self
                .client
                .list_multipart_uploads(&input.bucket, prefix, MAX_PAGE, (&marker.0, &marker.1))
                .await
                .map_err(|e| to_s3("ListMultipartUploads", e))?;
            for u in page.uploads {
                if !rollup.add(u) {
                    break 'pages;
                }
            }
            match (page.is_truncated, page.next_key_marker) {
                (true, Some(key)) => marker = (key, page.next_upload_id_marker.unwrap_or_default()),
                _ => break,
            }
        }
        let (next_key_marker, next_upload_id_marker) = rollup.next_markers();
        let (mut uploads, mut prefixes) = (Vec::new(), Vec::new());
        for e in rollup.entries {
            match e {
                Entry::Upload(u) => uploads.push(MultipartUpload {
                    key: Some(u.key),
                    upload_id: Some(u.upload_id),
                    initiated: Some(timestamp(u.initiated_ms)),
                    ..Default::default()
                }),
                Entry::Prefix(p) => prefixes.push(CommonPrefix { prefix: Some(p) }),
            }
        }
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter.filter(|d| !d.is_empty()),
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(rollup.truncated),
            next_key_marker,
            next_upload_id_marker,
            uploads: Some(uploads),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(key: &str) -> InProgress {
        InProgress {
            key: key.to_owned(),
            upload_id: format!("id-{key}"),
            initiated_ms: 0,
            metadata: Default::default(),
        }
    }

    fn gather(keys: &[&str], prefix: &str, marker: &str, max: usize) -> (Vec<String>, bool) {
        let mut r = Rollup {
            prefix,
            delimiter: "/",
            key_marker: marker,
            max,
            entries: Vec::new(),
            truncated: false,
        };
        for k in keys {
            if !r.add(upload(k)) {
                break;
            }
        }
        let names = r
            .entries
            .iter()
            .map(|e| match e {
                Entry::Upload(u) => u.key.clone(),
                Entry::Prefix(p) => format!("{p}*"),
            })
            .collect();
        (names, r.truncated)
    }

    #[test]
    fn keys_with_the_delimiter_roll_up_into_common_prefixes_once() {
        // As the namenode lists them: in key order, under the prefix.
        let keys = ["a/1", "a/2", "b", "c/x/1", "c/y", "d"];
        assert_eq!(
            gather(&keys, "", "", 10),
            (
                vec!["a/*".into(), "b".into(), "c/*".into(), "d".into()],
                false
            )
        );
        assert_eq!(
            gather(&keys[3..5], "c/", "", 10),
            (vec!["c/x/*".into(), "c/y".into()], false)
        );
        // A page of two, then the continuation after the prefix the client was given.
        assert_eq!(
            gather(&keys, "", "", 2),
            (vec!["a/*".into(), "b".into()], true)
        );
        assert_eq!(
            gather(&keys[3..], "", "b", 2),
            (vec!["c/*".into(), "d".into()], false)
        );
        assert_eq!(gather(&keys[3..], "", "c/", 5), (vec!["d".into()], false));
        assert_eq!(rolled_up("a/b", "", ""), None);
    }
}

//! The raw form of an upload: the request body is the file (`curl -T path`,
//! `curl --data-binary @path -H 'Content-Type: …'`, WebHDFS-style clients).
//!
//! The name comes from `?name=`, else from a `Content-Disposition` header's filename,
//! and goes through the same [`sanitize_name`] as a form's filename (no name at all
//! gives the same default as a form part without a filename). The content type is the
//! `Content-Type` header's essence (no parameters), empty without one or when it is
//! `application/x-www-form-urlencoded`: that is what `curl --data-binary` sends unless
//! told otherwise, never the type of a file, and a download would be served with it.
//! A Content-Length
//! over `--max-upload` is refused at once; a chunked body (no Content-Length, `curl -T
//! -`) is counted as it streams and fails the upload as soon as it crosses the limit.

use axum::extract::Query;
use axum::http::{HeaderMap, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;

use super::body::SharedBody;
use super::name::disposition_filename;
use super::{BodyError, content_length, content_type_essence, sanitize_name, store};
use crate::gateway::error::ApiError;
use crate::gateway::state::AppState;

/// The query of a raw upload.
#[derive(Debug, Default, Deserialize)]
pub struct RawQuery {
    /// The file's name; takes precedence over a `Content-Disposition` filename.
    pub name: Option<String>,
}

/// Stores the request body as the file.
pub(super) async fn upload_raw(
    st: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: SharedBody,
) -> Result<Response, ApiError> {
    let Query(query) = Query::<RawQuery>::try_from_uri(uri)
        .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let name = sanitize_name(&raw_name(query.name, headers).unwrap_or_default());
    let mime = content_type(headers);
    let limit = st.config.max_upload.map(|b| b.bytes());
    let at_most = content_length(headers);
    // The length is announced: refuse before reading a byte rather than after
    // `limit` of them.
    if let (Some(limit), Some(len)) = (limit, at_most)
        && len > limit
    {
        return Err(BodyError::TooLarge(limit).into());
    }
    store(st, limited(body, limit), &name, &mime, at_most).await
}

/// The name the client gave, unsanitised: a non-empty `?name=`, else the
/// `Content-Disposition` filename.
fn raw_name(query: Option<String>, headers: &HeaderMap) -> Option<String> {
    query.filter(|n| !n.is_empty()).or_else(|| {
        headers
            .get(header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(disposition_filename)
    })
}

/// The `Content-Type` without its parameters, lowercased (as a form part's type is
/// kept); empty without one, or for curl's default form type (module doc).
fn content_type(headers: &HeaderMap) -> String {
    let essence = content_type_essence(headers);
    if essence == "application/x-www-form-urlencoded" {
        return String::new();
    }
    essence
}

/// The body as the upload's source: a body that breaks off fails it, and so does one
/// that crosses `limit` bytes (the limit's error, not a client's, sets the status).
fn limited(
    body: SharedBody,
    limit: Option<u64>,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static {
    let mut received = 0u64;
    body.map(move |item| {
        let b = item.map_err(BodyError::from_body)?;
        received += b.len() as u64;
        match limit {
            Some(limit) if received > limit => Err(BodyError::TooLarge(limit)),
            _ => Ok(b),
        }
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn names_come_from_the_query_then_the_disposition() {
        let cd = header::CONTENT_DISPOSITION;
        for (query, hs, want) in [
            (
                Some("q.bin"),
                vec![(cd.clone(), "attachment; filename=h.bin")],
                "q.bin",
            ),
            (
                Some(""),
                vec![(cd.clone(), "attachment; filename=h.bin")],
                "h.bin",
            ),
            (
                None,
                vec![(cd.clone(), "attachment; filename=\"../../h.bin\"")],
                "h.bin",
            ),
            (Some("a/b\u{7}c.txt"), vec![], "bc.txt"),
            (None, vec![(cd.clone(), "inline")], "upload"),
            (None, vec![], "upload"),
        ] {
            let got = sanitize_name(
                &raw_name(query.map(str::to_owned), &headers(&hs)).unwrap_or_default(),
            );
            assert_eq!(got, want, "{query:?} {hs:?}");
        }
    }

    #[test]
    fn content_types_lose_their_parameters() {
        let ct = header::CONTENT_TYPE;
        for (hs, want) in [
            (vec![], ""),
            (
                vec![(ct.clone(), "application/octet-stream")],
                "application/octet-stream",
            ),
            (
                vec![(ct.clone(), "Text/Plain; charset=utf-8")],
                "text/plain",
            ),
            (vec![(ct.clone(), "application/x-www-form-urlencoded")], ""),
        ] {
            assert_eq!(content_type(&headers(&hs)), want, "{hs:?}");
        }
    }

    #[tokio::test]
    async fn the_limit_fails_the_source_once_crossed() {
        let body = |parts: &'static [&'static [u8]]| {
            let chunks = parts
                .iter()
                .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p)));
            SharedBody::new(axum::body::Body::from_stream(futures::stream::iter(chunks)))
        };
        let ok: Vec<_> = limited(body(&[b"ab", b"cd"]), Some(4)).collect().await;
        assert!(ok.iter().all(Result::is_ok), "{ok:?}");
        let over: Vec<_> = limited(body(&[b"ab", b"cde"]), Some(4)).collect().await;
        assert!(matches!(over[1], Err(BodyError::TooLarge(4))), "{over:?}");
        let free: Vec<_> = limited(body(&[b"abcdef"]), None).collect().await;
        assert!(free.iter().all(Result::is_ok));
    }
}

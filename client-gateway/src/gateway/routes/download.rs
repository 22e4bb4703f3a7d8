//! `GET /download?hash=H`: streams a file with the headers a browser or curl needs,
//! `Range` (one range → 206, unsatisfiable → 416) and `If-None-Match` (→ 304).
//!
//! The header builders are pure functions, tested below: a stored name can hold
//! quotes, backslashes, newlines or any Unicode, and must never break out of
//! `Content-Disposition`.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::field::Empty;
use tracing::{Span, instrument};

use crate::client::ByteRange;
use crate::gateway::error::ApiError;
use crate::gateway::routes::parse_hash;
use crate::gateway::state::AppState;

#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    hash: Option<String>,
}

#[instrument(name = "http_download", skip_all, fields(file = Empty))]
pub async fn download(
    State(st): State<AppState>,
    query: Result<Query<DownloadQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let raw = q
        .hash
        .ok_or_else(|| ApiError::bad_request("missing query parameter hash"))?;
    let id = parse_hash(&raw)?;
    Span::current().record("file", tracing::field::display(id));
    let info = st.client.get(id).await?;
    let record = &info.record;
    let etag = format!("\"{id}\"");
    let etag_value = HeaderValue::from_str(&etag).expect("hex in quotes is a valid header");

    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && etag_matches(inm, &etag)
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }

    let size = record.size;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => RangeSpec::Full,
        Some(r) => parse_range(r, size),
    };
    let (status, range) = match range {
        RangeSpec::Full => (
            StatusCode::OK,
            ByteRange {
                start: 0,
                end: size,
            },
        ),
        RangeSpec::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
        RangeSpec::Unsatisfiable => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("range not satisfiable for a file of {size} bytes"),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("digits are valid"),
            );
            return Ok(r);
        }
    };

    // A block of the range with no live replica would break the body off after a 200:
    // say so before any header is sent.
    if let Some(b) = info.blocks.iter().find(|b| {
        b.replicas.is_empty() && b.offset < range.end && b.offset + b.length > range.start
    }) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("block {} has no live replica right now", b.id),
        ));
    }
    let content_type = HeaderValue::from_str(&record.content_type)
        .ok()
        .filter(|_| !record.content_type.is_empty())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let body = match st.client.read_small(&info, range).await {
        Some(small) => Body::from(small?),
        None => Body::from_stream(st.client.read(&info, range)),
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, range.len())
        .header(header::ETAG, etag_value)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_DISPOSITION,
            content_disposition(&record.name),
        )
        .header("x-content-type-options", "nosniff")
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if status == StatusCode::PARTIAL_CONTENT {
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {}-{}/{size}", range.start, range.end - 1))
                .expect("digits are valid"),
        );
    }
    Ok(resp)
}

/// What a `Range` header asks for, resolved against the file size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// No usable range (absent, malformed, or several ranges): send everything (200).
    Full,
    /// One satisfiable range (206).
    Partial(ByteRange),
    /// A well-formed range that selects nothing of this file (416).
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` (RFC 9110 §14.1.2). Several ranges are
/// answered with the whole file, which the RFC allows; a malformed header is ignored.
pub fn parse_range(header: &str, size: u64) -> RangeSpec {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last n bytes.
        let Some(n) = num(b) else {
            return RangeSpec::Full;
        };
        if n == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        let n = n.min(size);
        return RangeSpec::Partial(ByteRange {
            start: size - n,
            end: size,
        });
    }
    let Some(start) = num(a) else {
        return RangeSpec::Full;
    };
    let end_incl = if b.is_empty() {
        u64::MAX
    } else {
        match num(b) {
            Some(e) if e >= start => e,
            _ => return RangeSpec::Full,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Partial(ByteRange {
        start,
        end: end_incl.saturating_add(1).min(size),
    })
}

/// Whether an `If-None-Match` value matches our strong `etag` (weak comparison, as
/// RFC 9110 §13.1.2 asks for this header).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// `attachment; filename="ascii fallback"; filename*=UTF-8''percent-encoded` (RFC 6266,
/// RFC 8187). The fallback keeps printable ASCII except `"` and `\` (replaced by `_`);
/// `filename*` percent-encodes every byte outside RFC 8187's attr-char set. Neither can
/// carry a quote, a CR or an LF, so no name can inject a header or a parameter.
pub fn content_disposition(name: &str) -> HeaderValue {
    let name = if name.is_empty() { "download" } else { name };
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        let attr_char = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        if attr_char {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let value = format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}");
    HeaderValue::from_str(&value).expect("only printable ASCII remains")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_range(header: &str, size: u64, want: RangeSpec) {
        assert_eq!(parse_range(header, size), want, "{header:?} of {size}");
    }

    fn part(start: u64, end: u64) -> RangeSpec {
        RangeSpec::Partial(ByteRange { start, end })
    }

    #[test]
    fn ranges() {
        check_range("bytes=0-0", 10, part(0, 1));
        check_range("bytes=0-9", 10, part(0, 10));
        check_range("bytes=0-99", 10, part(0, 10));
        check_range("bytes=5-", 10, part(5, 10));
        check_range("bytes=-3", 10, part(7, 10));
        check_range("bytes=-30", 10, part(0, 10));
        check_range("bytes=9-9", 10, part(9, 10));
        check_range("bytes=10-", 10, RangeSpec::Unsatisfiable);
        check_range("bytes=10-20", 10, RangeSpec::Unsatisfiable);
        check_range("bytes=-0", 10, RangeSpec::Unsatisfiable);
        check_range("bytes=0-", 0, RangeSpec::Unsatisfiable);
        check_range("bytes=-5", 0, RangeSpec::Unsatisfiable);
        // Malformed or unsupported: ignored, the whole file is sent.
        check_range("bytes=5-3", 10, RangeSpec::Full);
        check_range("bytes=0-1,3-4", 10, RangeSpec::Full);
        check_range("items=0-1", 10, RangeSpec::Full);
        check_range("bytes=a-b", 10, RangeSpec::Full);
        check_range("bytes=+1-2", 10, RangeSpec::Full);
        check_range("bytes=-", 10, RangeSpec::Full);
    }

    #[test]
    fn etags() {
        let e = "\"abc\"";
        assert!(etag_matches("\"abc\"", e));
        assert!(etag_matches("W/\"abc\"", e));
        assert!(etag_matches("\"x\", \"abc\"", e));
        assert!(etag_matches("*", e));
        assert!(!etag_matches("\"abd\"", e));
        assert!(!etag_matches("abc", e));
    }

    #[test]
    fn content_disposition_cannot_be_broken_out_of() {
        let cases = [
            (
                "report.pdf",
                "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf",
            ),
            (
                "a b.txt",
                "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt",
            ),
            (
                "x\"; filename=evil.exe",
                "attachment; filename=\"x_; filename=evil.exe\"; filename*=UTF-8''x%22%3B%20filename%3Devil.exe",
            ),
            (
                "a\\b",
                "attachment; filename=\"a_b\"; filename*=UTF-8''a%5Cb",
            ),
            (
                "line\r\nSet-Cookie: x=1",
                "attachment; filename=\"line__Set-Cookie: x=1\"; filename*=UTF-8''line%0D%0ASet-Cookie%3A%20x%3D1",
            ),
            (
                "é.txt",
                "attachment; filename=\"_.txt\"; filename*=UTF-8''%C3%A9.txt",
            ),
            (
                "",
                "attachment; filename=\"download\"; filename*=UTF-8''download",
            ),
        ];
        for (name, want) in cases {
            let v = content_disposition(name);
            assert_eq!(v.to_str().unwrap(), want, "{name:?}");
            // One parameter pair only: the quoted part holds no quote.
            assert_eq!(v.to_str().unwrap().matches('"').count(), 2);
        }
    }
}

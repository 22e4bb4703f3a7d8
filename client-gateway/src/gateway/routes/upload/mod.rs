//! `POST /upload` and `PUT /upload`: the request body streamed straight into
//! [`Client::upload_at_most`](crate::Client::upload_at_most), with no temp file and no
//! whole-file buffer, in one of two forms chosen by the `Content-Type`:
//!
//! - `multipart/form-data` ([`multipart`]): the form's `file` part is the file (the
//!   page, `curl -F file=@path`);
//! - anything else, or none ([`raw`]): the body is the file, named by `?name=` or a
//!   `Content-Disposition` filename (`curl -T path`, scripts, WebHDFS-style clients).
//!
//! Both forms share everything past the parsing: `--max-upload` (413 as soon as it is
//! crossed), the bearer token (checked by the guard middleware before the body is
//! read), the upload budget and memory bound of the client library, the batching of
//! small files (the body's Content-Length bounds the file), the name rules
//! ([`name`]), the audit line and the JSON answer ([`UploadResponse`]). A client that
//! disconnects makes the body stream fail, and the upload is abandoned: no file record
//! is left.
//!
//! A refused upload (no room, too few datanodes, a bad form, too large) is usually
//! answered before its body has been read. Closing the connection then would make the
//! kernel reset it (unread data), and a client still sending would see "connection
//! reset" instead of the answer. So the body is shared between the parser and the
//! handler (`body::SharedBody`), and after an error the rest of it is read and
//! discarded in the background, within [`LINGER_BYTES`] and [`LINGER_TIME`] ("lingering
//! close"), while the answer goes out.

mod body;
mod framing;
pub mod multipart;
pub mod name;
pub mod raw;

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use tracing::field::Empty;
use tracing::{Span, instrument};

use crate::gateway::audit::Audited;
use crate::gateway::error::ApiError;
pub use crate::gateway::error::BodyError;
use crate::gateway::state::AppState;

pub(crate) use body::SharedBody;
pub use multipart::{FILE_FIELD, MAX_OTHER_FIELD};
pub use name::{MAX_NAME_BYTES, sanitize_name};

/// Most bytes of a refused upload's body read (and discarded) after the answer, so
/// that a client which reads the answer only once it has sent everything gets it.
pub const LINGER_BYTES: u64 = 256 << 20;
/// Longest time a refused upload's body is read after the answer.
pub const LINGER_TIME: Duration = Duration::from_secs(30);

/// The JSON answer of a successful upload.
#[derive(Debug, Serialize)]
pub struct UploadResponse {
    pub hash: String,
    pub size: u64,
    pub name: String,
    pub content_type: String,
    pub blocks: usize,
    pub replicas: u32,
    pub existed: bool,
}

/// Stores the body (a form's `file` part, or the raw body); the answer names the file
/// by its hash.
#[instrument(name = "http_upload", skip_all, fields(form = Empty, file = Empty))]
pub async fn upload(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = SharedBody::new(body);
    let answer = if multipart::is_form(&headers) {
        Span::current().record("form", "multipart");
        multipart::upload_form(&st, &headers, body.clone()).await
    } else {
        Span::current().record("form", "raw");
        raw::upload_raw(&st, &uri, &headers, body.clone()).await
    };
    if answer.is_err() {
        body.linger();
    }
    answer
}

/// The upload's bound from the body's Content-Length, if it has one (a chunked body
/// has none).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The `Content-Type` without its parameters, lowercased; empty without one.
fn content_type_essence(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Stores `source` through the client library and answers as both forms do: the JSON
/// [`UploadResponse`], with the file's hash and size for the audit line.
async fn store<S>(
    st: &AppState,
    source: S,
    name: &str,
    mime: &str,
    at_most: Option<u64>,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Send,
{
    let up = st
        .client
        .upload_at_most(source, name, mime, at_most)
        .await?;
    Span::current().record("file", tracing::field::display(up.record.id));
    let audited = Audited {
        file: Some(up.record.id),
        size: Some(up.record.size),
    };
    let mut resp = Json(UploadResponse {
        hash: up.record.id.to_string(),
        size: up.record.size,
        name: up.record.name,
        content_type: up.record.content_type,
        blocks: up.record.blocks.len(),
        replicas: up.replicas,
        existed: up.existed,
    })
    .into_response();
    resp.extensions_mut().insert(audited);
    Ok(resp)
}

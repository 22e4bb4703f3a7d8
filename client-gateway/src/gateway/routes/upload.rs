//! `POST /upload`: a multipart form whose `file` field is streamed straight into
//! [`Client::upload`](crate::Client::upload), with no temp file and no whole-file
//! buffer.
//!
//! multer parses the raw body stream (axum's `Multipart` extractor would add its
//! default body limit). The `file` part's bytes become the upload's source; after the
//! part ends the rest of the form is read before the upload may commit, so a second
//! `file` part fails the upload (400) instead of being silently ignored. Other fields
//! are drained and capped at [`MAX_OTHER_FIELD`] bytes. Crossing `--max-upload` fails
//! the source at once (413); a client that disconnects makes the body stream fail, and
//! the upload is abandoned: no file record is left.
//!
//! A refused upload (no room, too few datanodes, a bad form) is usually answered
//! before its body has been read. Closing the connection then would make the kernel
//! reset it (unread data), and a client still sending would see "connection reset"
//! instead of the answer. So the body is shared between the parser and the handler,
//! and after an error the rest of it is read and discarded in the background, within
//! [`LINGER_BYTES`] and [`LINGER_TIME`] ("lingering close"), while the answer goes out.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, BodyDataStream};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use multer::{Constraints, Field, Multipart, SizeLimit};
use serde::Serialize;
use tracing::field::Empty;
use tracing::{Span, debug, instrument};

use crate::gateway::audit::Audited;
use crate::gateway::http::{ApiError, AppState};

/// Largest non-`file` form field accepted (they are read and discarded).
pub const MAX_OTHER_FIELD: u64 = 64 * 1024;
/// Most bytes of a refused upload's body read (and discarded) after the answer, so
/// that a client which reads the answer only once it has sent everything gets it.
pub const LINGER_BYTES: u64 = 256 << 20;
/// Longest time a refused upload's body is read after the answer.
pub const LINGER_TIME: Duration = Duration::from_secs(30);
/// Longest file name kept, in bytes (the namenode's limit).
pub const MAX_NAME_BYTES: usize = 1024;
/// The form field that carries the file.
pub const FILE_FIELD: &str = "file";

/// Why the upload's source (the request body) failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upload exceeds the limit of {0} bytes")]
    TooLarge(u64),
    #[error("more than one \"file\" field in the form")]
    DuplicateFile,
    #[error("malformed multipart body: {0}")]
    Malformed(String),
    #[error("request body broke off: {0}")]
    Broken(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn from_multer(e: multer::Error) -> Self {
        match e {
            multer::Error::StreamReadFailed(e) => BodyError::Broken(e.to_string()),
            multer::Error::FieldSizeExceeded { limit, field_name } => {
                BodyError::Malformed(format!(
                    "field {:?} is larger than {limit} bytes",
                    field_name.unwrap_or_default()
                ))
            }
            e => BodyError::Malformed(e.to_string()),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        ApiError::new(e.status(), e.to_string())
    }
}

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

/// Stores the form's `file` part; the answer names the file by its hash.
#[instrument(name = "http_upload", skip_all, fields(file = Empty))]
pub async fn upload(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = SharedBody::new(body);
    let answer = upload_form(&st, &headers, body.clone()).await;
    if answer.is_err() {
        body.linger();
    }
    answer
}

async fn upload_form(
    st: &AppState,
    headers: &HeaderMap,
    body: SharedBody,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError::bad_request(
            "expected a multipart/form-data body with a \"file\" field (e.g. curl -F file=@path)",
        )
    })?;
    let limits = SizeLimit::new()
        .per_field(MAX_OTHER_FIELD)
        .for_field(FILE_FIELD, u64::MAX);
    let mut form =
        Multipart::with_constraints(body, boundary, Constraints::new().size_limit(limits));
    let field = loop {
        match form.next_field().await.map_err(BodyError::from_multer)? {
            None => {
                return Err(ApiError::bad_request(
                    "missing form field \"file\" (send the file as multipart field named file)",
                ));
            }
            Some(f) if f.name() == Some(FILE_FIELD) => break f,
            Some(f) => drain(f).await?,
        }
    };
    let name = sanitize_name(field.file_name().unwrap_or(""));
    let mime = field
        .content_type()
        .map(|m| m.essence_str().to_owned())
        .unwrap_or_default();
    let source = FileSource {
        form,
        field: Some(field),
        received: 0,
        limit: st.config.max_upload.map(|b| b.bytes()),
    }
    .into_stream();
    // The file is part of the body, so the body's length bounds it: a small file then
    // reserves only its own size on the datanodes, not a whole block. (hyper ends a
    // body at its Content-Length, so the bound holds.)
    let at_most = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let up = st
        .client
        .upload_at_most(source, &name, &mime, at_most)
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

/// The request body, shared by the multipart parser and the handler: once the parser
/// is gone (the upload failed), the handler can still read what is left of it.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<BodyDataStream>>);

impl SharedBody {
    fn new(body: Body) -> Self {
        Self(Arc::new(Mutex::new(body.into_data_stream())))
    }

    /// Reads the rest of the body in the background and discards it, until it ends,
    /// fails, or [`LINGER_BYTES`] or [`LINGER_TIME`] is reached (then the connection
    /// is closed with the rest unread).
    fn linger(mut self) {
        tokio::spawn(async move {
            let deadline = tokio::time::sleep(LINGER_TIME);
            tokio::pin!(deadline);
            let mut read = 0u64;
            let outcome = loop {
                tokio::select! {
                    _ = &mut deadline => break "time limit",
                    item = self.next() => match item {
                        Some(Ok(b)) => {
                            read += b.len() as u64;
                            if read > LINGER_BYTES {
                                break "size limit";
                            }
                        }
                        Some(Err(_)) => break "body broke off",
                        None => break "body read to its end",
                    },
                }
            };
            debug!(read, outcome, "rest of a refused upload's body discarded");
        });
    }
}

impl Stream for SharedBody {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Never contended: the parser and the lingering reader never run together.
        let mut body = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut *body).poll_next(cx)
    }
}

/// Reads and discards a non-file field (its size is capped by the constraints).
async fn drain(mut f: Field<'static>) -> Result<(), BodyError> {
    while f.chunk().await.map_err(BodyError::from_multer)?.is_some() {}
    Ok(())
}

/// The `file` part's bytes, then a check of the rest of the form.
struct FileSource {
    form: Multipart<'static>,
    field: Option<Field<'static>>,
    received: u64,
    limit: Option<u64>,
}

impl FileSource {
    fn into_stream(self) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static {
        futures::stream::unfold(Some(self), |state| async move {
            let mut st = state?;
            match st.next().await {
                Ok(Some(b)) => Some((Ok(b), Some(st))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    async fn next(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            if let Some(field) = self.field.as_mut() {
                match field.chunk().await.map_err(BodyError::from_multer)? {
                    Some(b) => {
                        self.received += b.len() as u64;
                        if let Some(limit) = self.limit
                            && self.received > limit
                        {
                            return Err(BodyError::TooLarge(limit));
                        }
                        return Ok(Some(b));
                    }
                    None => self.field = None,
                }
            } else {
                return match self
                    .form
                    .next_field()
                    .await
                    .map_err(BodyError::from_multer)?
                {
                    None => Ok(None),
                    Some(f) if f.name() == Some(FILE_FIELD) => Err(BodyError::DuplicateFile),
                    Some(f) => {
                        drain(f).await?;
                        continue;
                    }
                };
            }
        }
    }
}

/// The name kept for a file: the last path component of what the client sent, with
/// control characters removed, at most [`MAX_NAME_BYTES`] bytes; `upload` if empty.
pub fn sanitize_name(raw: &str) -> String {
    // Browsers and curl send `"`, CR and LF in a multipart filename as %22, %0D, %0A
    // (HTML's form encoding; `%` itself is not escaped): undo the quote, drop the rest.
    let decoded = raw
        .replace("%22", "\"")
        .replace("%0D", "")
        .replace("%0A", "");
    let base = decoded.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out = String::new();
    for c in base.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    let trimmed = out.trim();
    if trimmed.is_empty() || trimmed == "." || trimmed == ".." {
        "upload".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        for (raw, want) in [
            ("a.txt", "a.txt"),
            ("dir/sub/a.txt", "a.txt"),
            ("C:\\Users\\x\\a.txt", "a.txt"),
            ("bad\r\nname\".txt", "badname\".txt"),
            ("b %22q%22.txt", "b \"q\".txt"),
            ("two%0D%0Alines.txt", "twolines.txt"),
            ("", "upload"),
            ("..", "upload"),
            ("  ", "upload"),
            ("héllo wörld.pdf", "héllo wörld.pdf"),
        ] {
            assert_eq!(sanitize_name(raw), want, "{raw:?}");
        }
        let long = "é".repeat(1000);
        let s = sanitize_name(&long);
        assert!(s.len() <= MAX_NAME_BYTES && s.len() >= MAX_NAME_BYTES - 1);
    }
}

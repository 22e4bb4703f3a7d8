//! The multipart form of an upload: the form's `file` part is the file.
//!
//! multer parses the raw body stream (axum's `Multipart` extractor would add its
//! default body limit). The `file` part's bytes become the upload's source; after the
//! part ends the rest of the form is read before the upload may commit, so a second
//! `file` part fails the upload (400) instead of being silently ignored. Other fields
//! are drained and capped at [`MAX_OTHER_FIELD`] bytes.

use axum::http::{HeaderMap, header};
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;
use multer::{Constraints, Field, Multipart, SizeLimit};

use super::body::SharedBody;
use super::{BodyError, content_length, sanitize_name, store};
use crate::gateway::error::ApiError;
use crate::gateway::state::AppState;

/// Largest non-`file` form field accepted (they are read and discarded).
pub const MAX_OTHER_FIELD: u64 = 64 * 1024;
/// The form field that carries the file.
pub const FILE_FIELD: &str = "file";

/// Whether the body is a `multipart/form-data` form (whatever its parameters); every
/// other body is a raw upload.
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|essence| essence.eq_ignore_ascii_case("multipart/form-data"))
}

impl BodyError {
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

/// Stores the form's `file` part.
pub(super) async fn upload_form(
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
            "expected a multipart/form-data body with a boundary and a \"file\" field (e.g. curl -F file=@path)",
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
    store(st, source, &name, &mime, content_length(headers)).await
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

//! The multipart form of an upload: the form's `file` part is the file.
//!
//! multer parses the raw body stream (axum's `Multipart` extractor would add its
//! default body limit). The `file` part's bytes become the upload's source; after the
//! part ends the rest of the form is read before the upload may commit, so a second
//! `file` part fails the upload (400) instead of being silently ignored. Other fields
//! are drained and capped at [`MAX_OTHER_FIELD`] bytes.
//!
//! multer holds in memory whatever it has read but not yet handed out as a part's
//! bytes: the preamble before the first boundary, and each boundary line and part
//! header. It has no limit for those, so the body reaches it through a counting
//! stream (`Framing`) that fails once more than [`MAX_FRAMING`] bytes arrive while
//! no part's data is being read (400), and a form has at most [`MAX_PARTS`] parts.

use axum::http::{HeaderMap, header};
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;
use multer::{Constraints, Field, Multipart, SizeLimit};

use super::body::SharedBody;
use super::framing::Framing;
use super::{BodyError, content_length, content_type_essence, sanitize_name, store};
use crate::gateway::error::ApiError;
use crate::gateway::state::AppState;

/// Largest non-`file` form field accepted (they are read and discarded).
pub const MAX_OTHER_FIELD: u64 = 64 * 1024;
pub use super::framing::MAX_FRAMING;
/// Most parts in a form (the `file` part included).
pub const MAX_PARTS: usize = 64;
/// The form field that carries the file.
pub const FILE_FIELD: &str = "file";

/// Whether the body is a `multipart/form-data` form (whatever its parameters); every
/// other body is a raw upload.
pub fn is_form(headers: &HeaderMap) -> bool {
    content_type_essence(headers) == "multipart/form-data"
}

impl BodyError {
    fn from_multer(e: multer::Error) -> Self {
        match e {
            // The bound of [`Framing`] fails the stream with its own error.
            multer::Error::StreamReadFailed(e) => match e.downcast::<BodyError>() {
                Ok(b) => *b,
                Err(e) => BodyError::Broken(e.to_string()),
            },
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
    let framing = Framing::default();
    let body = framing.guard(body, &boundary);
    let multipart =
        Multipart::with_constraints(body, boundary, Constraints::new().size_limit(limits));
    let mut form = Form {
        multipart,
        framing,
        parts: 0,
    };
    let field = loop {
        match form.next_field().await? {
            None => {
                return Err(ApiError::bad_request(
                    "missing form field \"file\" (send the file as multipart field named file)",
                ));
            }
            Some(f) if f.name() == Some(FILE_FIELD) => break f,
            Some(f) => form.drain(f).await?,
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

/// The form being parsed, with the bounds multer does not keep itself.
struct Form {
    multipart: Multipart<'static>,
    framing: Framing,
    parts: usize,
}

impl Form {
    /// The next part; its data is read (or drained) before the next call.
    async fn next_field(&mut self) -> Result<Option<Field<'static>>, BodyError> {
        let Some(field) = self
            .multipart
            .next_field()
            .await
            .map_err(BodyError::from_multer)?
        else {
            return Ok(None);
        };
        self.parts += 1;
        if self.parts > MAX_PARTS {
            return Err(BodyError::Malformed(format!(
                "more than {MAX_PARTS} parts in the form"
            )));
        }
        self.framing.set_in_part(true);
        Ok(Some(field))
    }

    /// Reads and discards a non-file field (its size is capped by the constraints).
    async fn drain(&self, mut f: Field<'static>) -> Result<(), BodyError> {
        while f.chunk().await.map_err(BodyError::from_multer)?.is_some() {}
        self.framing.set_in_part(false);
        Ok(())
    }
}

/// The `file` part's bytes, then a check of the rest of the form.
struct FileSource {
    form: Form,
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
                    None => {
                        self.field = None;
                        self.form.framing.set_in_part(false);
                    }
                }
            } else {
                return match self.form.next_field().await? {
                    None => Ok(None),
                    Some(f) if f.name() == Some(FILE_FIELD) => Err(BodyError::DuplicateFile),
                    Some(f) => {
                        self.form.drain(f).await?;
                        continue;
                    }
                };
            }
        }
    }
}

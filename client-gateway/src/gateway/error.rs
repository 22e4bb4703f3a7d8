//! The gateway's HTTP errors: [`ApiError`] (a status and a message, always sent as JSON
//! `{"error": …}`) with the one mapping from the client library's [`Error`] to a status,
//! and [`BodyError`], why a request body failed as an upload's source.
//!
//! They live below the router and the routes, which both use them.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};

use crate::error::Error;

/// An HTTP error: a status and a message sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(status = %self.status, error = %self.message, "request failed");
        } else {
            info!(status = %self.status, error = %self.message, "request refused");
        }
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let status = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Deleted(_) => StatusCode::GONE,
            Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Error::NotEnoughDatanodes(_) | Error::NotEnoughReplicas { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::NamenodeUnreachable(_) | Error::UploadInterrupted(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Unreadable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::NotItsContent { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::InUse(_) => StatusCode::CONFLICT,
            Error::Namespace(r) => match r.code.grpc() {
                Code::NotFound => StatusCode::NOT_FOUND,
                Code::AlreadyExists | Code::FailedPrecondition => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            },
            Error::Rpc { status, .. } => match status.code() {
                Code::NotFound => StatusCode::NOT_FOUND,
                Code::InvalidArgument => StatusCode::BAD_REQUEST,
                Code::FailedPrecondition => StatusCode::CONFLICT,
                Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                Code::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
                _ => StatusCode::BAD_GATEWAY,
            },
            Error::Source(src) => match src.downcast_ref::<BodyError>() {
                Some(b) => b.status(),
                None => StatusCode::BAD_REQUEST,
            },
            Error::Config(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            Error::Source(src) => src.to_string(),
            e => e.to_string(),
        };
        Self::new(status, message)
    }
}

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
    #[error("upload aborted: the client sent nothing for {0:?} (--idle-timeout)")]
    Idle(std::time::Duration),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Idle(_) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl BodyError {
    /// Why the request body itself failed: the idle timeout, or a broken connection.
    pub fn from_body(e: axum::Error) -> Self {
        match e
            .into_inner()
            .downcast::<crate::gateway::idle::IdleTimeout>()
        {
            Ok(idle) => BodyError::Idle(idle.0),
            Err(e) => BodyError::Broken(e.to_string()),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        ApiError::new(e.status(), e.to_string())
    }
}

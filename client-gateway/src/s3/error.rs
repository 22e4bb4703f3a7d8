//! The one mapping of the client library's errors onto S3 errors (codes and statuses
//! that S3 clients know how to act on: retry a 503 `SlowDown`, give up on a 4xx).

use s3s::{S3Error, S3ErrorCode};
use tracing::{info, warn};

use crate::error::Error;

/// `InsufficientStorage` (507): S3 has no code for a full store; MinIO answers 507
/// too, and clients treat it as a server error they may retry later.
fn insufficient_storage(message: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom("InsufficientStorage".into()), message);
    e.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
    e
}

/// The namespace's refusals carry their S3 code already; `NoSuchContent` (the content
/// just stored is gone again: a race with a delete by hash) is the gateway's problem.
fn namespace(what: &str, refusal: kdfs_proto::objects::Refusal) -> S3Error {
    use kdfs_proto::objects::Code;
    if refusal.code == Code::NoSuchContent {
        warn!(operation = what, error = %refusal.message, "stored content vanished before its key was set");
        return S3Error::with_message(S3ErrorCode::InternalError, refusal.message);
    }
    info!(operation = what, code = refusal.code.as_str(), error = %refusal.message, "S3 request refused");
    refused(refusal)
}

/// A namespace refusal (or a name check's, made before anything is stored) as the S3
/// error of the same code.
pub fn refused(refusal: kdfs_proto::objects::Refusal) -> S3Error {
    let code = S3ErrorCode::from_bytes(refusal.code.as_str().as_bytes())
        .unwrap_or(S3ErrorCode::InvalidArgument);
    S3Error::with_message(code, refusal.message)
}

/// An S3 error for `e`, met while serving `what` (e.g. `"PutObject"`).
pub fn to_s3(what: &str, e: Error) -> S3Error {
    let message = e.to_string();
    match e {
        Error::Namespace(refusal) => namespace(what, refusal),
        Error::InUse(_) => {
            warn!(operation = what, error = %message, "S3 request failed");
            S3Error::with_message(S3ErrorCode::InternalError, message)
        }
        Error::NotFound(_) | Error::Deleted(_) => {
            // The key's record names content that is gone: a bug or a race with a
            // delete through the hash API; the object cannot be served.
            warn!(operation = what, error = %message, "an object's content is missing");
            S3Error::with_message(S3ErrorCode::NoSuchKey, message)
        }
        Error::InvalidInput(_) => {
            info!(operation = what, error = %message, "bad S3 request");
            S3Error::with_message(S3ErrorCode::InvalidArgument, message)
        }
        Error::NotEnoughDatanodes(_) | Error::NotEnoughReplicas { .. } => {
            warn!(operation = what, error = %message, "S3 request refused: not enough datanodes");
            let mut s = S3Error::with_message(S3ErrorCode::SlowDown, message);
            s.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
            s
        }
        Error::NamenodeUnreachable(_) | Error::UploadInterrupted(_) => {
            warn!(operation = what, error = %message, "S3 request failed: namenode unreachable");
            S3Error::with_message(S3ErrorCode::ServiceUnavailable, message)
        }
        Error::NoSpace(_) => {
            warn!(operation = what, error = %message, "S3 request refused: out of space");
            insufficient_storage(message)
        }
        Error::Source(_) => {
            // The client's body failed (a disconnect, a lie about its length, a
            // checksum that did not match): its own fault, already worded.
            info!(operation = what, error = %message, "S3 request body failed");
            S3Error::with_message(S3ErrorCode::IncompleteBody, message)
        }
        Error::Unreadable { .. } | Error::NotItsContent { .. } => {
            warn!(operation = what, error = %message, "object unreadable");
            S3Error::with_message(S3ErrorCode::InternalError, message)
        }
        Error::Rpc { .. } | Error::Config(_) | Error::Internal(_) => {
            warn!(operation = what, error = %message, "S3 request failed");
            S3Error::with_message(S3ErrorCode::InternalError, message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_get_the_codes_clients_expect() {
        for (e, code, status) in [
            (Error::NotEnoughDatanodes("1 of 2".into()), "SlowDown", 503),
            (Error::NoSpace("full".into()), "InsufficientStorage", 507),
            (
                Error::NamenodeUnreachable("down".into()),
                "ServiceUnavailable",
                503,
            ),
            (Error::InvalidInput("bad".into()), "InvalidArgument", 400),
        ] {
            let s = to_s3("PutObject", e);
            assert_eq!(s.code().as_str(), code);
            let got = s.status_code().or_else(|| s.code().status_code()).unwrap();
            assert_eq!(got.as_u16(), status, "{code}");
        }
    }
}

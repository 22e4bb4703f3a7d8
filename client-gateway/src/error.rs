//! The client library's error type: what went wrong, in terms a caller can act on.
//!
//! The gRPC statuses of the namenode are mapped here, once, onto variants that carry
//! their meaning (the gateway then picks an HTTP status per variant in
//! [`crate::gateway::error::ApiError`]): UNAVAILABLE means "not enough live datanodes" (503)
//! unless it came from the transport or says no namenode leader answered (namenode
//! unreachable, also 503),
//! RESOURCE_EXHAUSTED means "out of space" (507), NOT_FOUND an unknown id (404).

use kdfs_core::FileId;

/// A boxed error from the byte source of an upload (an HTTP body, a file).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything the client library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No file with this id was ever stored.
    #[error("file {0} not found")]
    NotFound(FileId),
    /// The file was deleted.
    #[error("file {0} was deleted")]
    Deleted(FileId),
    /// The request itself was malformed (bad id, bad range, bad name).
    #[error("{0}")]
    InvalidInput(String),
    /// Not enough live datanodes for a write (or the namenode is in safe mode).
    #[error("not enough live datanodes: {0}")]
    NotEnoughDatanodes(String),
    /// The datanodes have no room for the block.
    #[error("out of space: {0}")]
    NoSpace(String),
    /// A block could not get `min_replicas` durable replicas, even after re-allocating
    /// its pipeline.
    #[error(
        "block {index} got only {obtained} of the {needed} replicas required after {attempts} pipeline attempts: {last_error}"
    )]
    NotEnoughReplicas {
        index: u64,
        obtained: usize,
        needed: usize,
        attempts: usize,
        last_error: String,
    },
    /// The bucket/key namespace refused the call, with its S3 error code (NoSuchBucket,
    /// BucketNotEmpty, InvalidPart, …; docs/objects.md).
    #[error("{}: {}", .0.code, .0.message)]
    Namespace(kdfs_proto::objects::Refusal),
    /// A file a key or a multipart part still refers to cannot be deleted by its hash
    /// (FAILED_PRECONDITION from DeleteFile; the message names the bucket and key).
    #[error("{0}")]
    InUse(String),
    /// The namenode could not be reached.
    #[error("namenode unreachable: {0}")]
    NamenodeUnreachable(String),
    /// The namenode no longer knows an upload in progress (its lease, or the replicas
    /// its blocks were acknowledged on): a new leader took over, or the lease expired.
    /// Nothing was stored; the upload may be sent again.
    #[error("upload interrupted, send it again: {0}")]
    UploadInterrupted(String),
    /// The namenode or a datanode answered with an error we do not map specially.
    #[error("{context} failed ({:?}): {}", status.code(), status.message())]
    Rpc {
        context: &'static str,
        status: tonic::Status,
    },
    /// No replica of a block could serve the requested bytes intact.
    #[error("block {block} unreadable: {reason}")]
    Unreadable { block: String, reason: String },
    /// A file's blocks were served intact, but together they are not the content its
    /// id names (a record claiming another content's id; docs/security.md).
    #[error("file {file} is not served: its content hashes to {content}")]
    NotItsContent { file: FileId, content: FileId },
    /// The byte source of an upload failed (client disconnect, bad multipart, too large).
    #[error("upload source failed: {0}")]
    Source(#[source] BoxError),
    /// The gateway cannot start as configured (an unreadable token file, a bad
    /// certificate).
    #[error("configuration: {0}")]
    Config(String),
    /// A background task of the library died (a bug or a runtime shutdown).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps a namenode status, in the context of the call that produced it.
    pub(crate) fn namenode(context: &'static str, status: tonic::Status) -> Self {
        use tonic::Code;
        if let Some(refusal) = kdfs_proto::objects::Refusal::from_status(&status) {
            return Self::Namespace(refusal);
        }
        // No namenode leader answered in time (kdfs_proto::namenodes): down, not busy.
        if kdfs_proto::leader::leader_hint(&status).is_some() {
            return Self::NamenodeUnreachable(status.message().to_owned());
        }
        match status.code() {
            Code::Unavailable if is_transport(&status) => {
                Self::NamenodeUnreachable(status.message().to_owned())
            }
            Code::Unavailable => Self::NotEnoughDatanodes(status.message().to_owned()),
            Code::FailedPrecondition if UPLOAD_CALLS.contains(&context) => {
                Self::UploadInterrupted(status.message().to_owned())
            }
            Code::ResourceExhausted => Self::NoSpace(status.message().to_owned()),
            Code::InvalidArgument => Self::InvalidInput(status.message().to_owned()),
            Code::Unknown | Code::Cancelled | Code::DeadlineExceeded if is_transport(&status) => {
                Self::NamenodeUnreachable(status.message().to_owned())
            }
            _ => Self::Rpc { context, status },
        }
    }
}

/// The calls of an upload in progress: their FAILED_PRECONDITION means the namenode lost
/// track of it (a failover, an expired lease), which is the server's state, not a conflict
/// the client made.
const UPLOAD_CALLS: [&str; 4] = ["AllocateBlock", "CommitFile", "CommitFiles", "RenewLease"];

/// Whether a status was made by the client's transport (connection refused, reset)
/// rather than sent by the server: tonic sets no metadata and wraps a transport error
/// as its source.
fn is_transport(status: &tonic::Status) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = src {
        if e.downcast_ref::<tonic::transport::Error>().is_some()
            || e.downcast_ref::<std::io::Error>().is_some()
        {
            return true;
        }
        src = e.source();
    }
    let m = status.message();
    m.contains("transport error")
        || m.contains("tcp connect error")
        || m.contains("Connection refused")
        || m.contains("error trying to connect")
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(format!("I/O: {e}"))
    }
}

impl From<kdfs_proto::pool::BadAddress> for Error {
    fn from(e: kdfs_proto::pool::BadAddress) -> Self {
        Error::InvalidInput(format!("datanode address {:?}: {}", e.address, e.source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_leader_and_no_leader_are_told_apart() {
        let busy = Error::namenode(
            "BeginUpload",
            tonic::Status::unavailable("2 live datanodes"),
        );
        assert!(matches!(busy, Error::NotEnoughDatanodes(_)), "{busy:?}");
        // What `kdfs_proto::namenodes` answers when no leader answered in time.
        let none = Error::namenode("BeginUpload", kdfs_proto::leader::not_leader(None));
        assert!(matches!(none, Error::NamenodeUnreachable(_)), "{none:?}");
    }
}

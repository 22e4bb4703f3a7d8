//! The namenode's error type and its single mapping to gRPC statuses.

use tonic::Status;

/// Everything that can go wrong inside the namenode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed request (bad id, name, size).
    #[error("{0}")]
    InvalidArgument(String),
    /// The named file or upload does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the current state (wrong cluster, expired lease,
    /// too few confirmed replicas).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Not enough live datanodes, or the namenode is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// No datanode has room.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The metadata store failed.
    #[error("metadata store: {0}")]
    Store(#[from] redb::Error),
    /// A stored record could not be decoded (the database is damaged).
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("TLS: {0}")]
    Tls(#[from] kdfs_proto::tls::TlsError),
    /// A commit met a live record of the same file id with other blocks (one of the
    /// two does not hold the content its id names): nothing was changed. The service
    /// answers it with the record, not as an error (`conflict` in CommitFile's reply).
    #[error("file {} is already stored with other blocks", .0.id)]
    Conflict(Box<crate::meta::FileRecord>),
    /// The bucket/key namespace refused a call, with its S3 error code.
    #[error("{0}")]
    Namespace(kdfs_proto::objects::Refusal),
    /// A hash-API delete of a file a key or multipart part still refers to.
    #[error("{0}")]
    InUse(String),
    /// Plaintext gRPC on a reachable address without `--allow-plaintext`.
    #[error(transparent)]
    Plaintext(#[from] kdfs_proto::plaintext::PlaintextRefused),
}

/// Result of namenode operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::ResourceExhausted(m) => Status::resource_exhausted(m),
            e @ Error::Conflict(_) => Status::already_exists(e.to_string()),
            Error::Namespace(r) => r.to_status(),
            Error::InUse(m) => Status::failed_precondition(m),
            other => {
                tracing::error!(error = %other, "internal error");
                Status::internal(other.to_string())
            }
        }
    }
}

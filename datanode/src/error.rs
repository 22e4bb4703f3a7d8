//! The datanode's one error type, and its one mapping onto gRPC statuses.
//!
//! Store errors carry what a caller needs to act: a corrupt replica (`Corrupt`) is
//! distinct from a block that is simply absent (`NotFound`) and from a write whose bytes
//! did not hash to the promised id (`HashMismatch`). [`From<Error> for Status`] is the
//! only place those become gRPC codes (see `kdfs.proto`, "Conventions").

use std::io;

use kdfs_core::BlockId;
use tonic::Status;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("block {0} not found")]
    NotFound(BlockId),
    #[error("replica of block {id} is corrupt: {reason}")]
    Corrupt { id: BlockId, reason: String },
    #[error("hash mismatch: the data hashes to {actual}, the writer promised {expected}")]
    HashMismatch { expected: BlockId, actual: BlockId },
    #[error("out of space: {needed} bytes needed, {available} available after the reserve")]
    OutOfSpace { needed: u64, available: u64 },
    #[error("write exceeds its declared max_length of {max} bytes")]
    TooLong { max: u64 },
    #[error("range {offset}+{length} lies outside the block of {block_len} bytes")]
    Range {
        offset: u64,
        length: u64,
        block_len: u64,
    },
    #[error("write aborted before its commit")]
    Aborted,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("data directory {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error(
        "this data directory belongs to cluster {ours:?} but the namenode runs cluster {theirs:?}; \
         refusing to mix disks of different clusters (wipe the directory or point --namenode at its cluster)"
    )]
    ClusterMismatch { ours: String, theirs: String },
    #[error("namenode refused the datanode: {0}")]
    Refused(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Rpc(#[from] Status),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl Error {
    /// An I/O error with what was being done, e.g. `"fsync /data/tmp/w1"`.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => Status::not_found(msg),
            Error::Corrupt { .. } => Status::data_loss(msg),
            Error::HashMismatch { .. } => Status::failed_precondition(msg),
            Error::OutOfSpace { .. } => Status::resource_exhausted(msg),
            Error::TooLong { .. } => Status::invalid_argument(msg),
            Error::Range { .. } => Status::out_of_range(msg),
            Error::Aborted => Status::cancelled(msg),
            Error::ClusterMismatch { .. } | Error::Refused(_) => Status::failed_precondition(msg),
            Error::Config(_) => Status::invalid_argument(msg),
            Error::Rpc(s) => s,
            Error::Io { .. } | Error::DataDir { .. } | Error::Transport(_) => Status::internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn store_errors_map_to_documented_codes() {
        let id = BlockId::of(b"x");
        let check = |e: Error, code: Code| assert_eq!(Status::from(e).code(), code);
        check(Error::NotFound(id), Code::NotFound);
        check(
            Error::Corrupt {
                id,
                reason: "crc".into(),
            },
            Code::DataLoss,
        );
        check(
            Error::HashMismatch {
                expected: id,
                actual: id,
            },
            Code::FailedPrecondition,
        );
        check(
            Error::OutOfSpace {
                needed: 1,
                available: 0,
            },
            Code::ResourceExhausted,
        );
        check(
            Error::Range {
                offset: 9,
                length: 1,
                block_len: 3,
            },
            Code::OutOfRange,
        );
    }
}

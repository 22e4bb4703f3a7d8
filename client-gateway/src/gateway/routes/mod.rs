//! The gateway's HTTP handlers, one module per resource of the HTTP API.

pub mod buckets;
pub mod datanodes;
pub mod download;
pub mod files;
pub mod health;
pub mod info;
pub mod upload;

use kdfs_core::FileId;

use crate::gateway::error::ApiError;

/// Parses a `hash` from a URL: 64 lowercase hex characters, nothing else.
pub(crate) fn parse_hash(raw: &str) -> Result<FileId, ApiError> {
    FileId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid hash: {e}")))
}

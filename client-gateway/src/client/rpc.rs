//! Helpers at the edge of every rpc the library makes: a unary namenode call with its
//! timeout and status mapping, and the checks of replies that both single uploads and
//! small-file batches read (a pipeline, a datanode's ack).

use kdfs_core::DatanodeId;
use kdfs_proto::pb;
use kdfs_proto::wire::{self, Location};
use tracing::warn;

use super::NAMENODE_CALL_TIMEOUT;
use crate::error::{Error, Result};

/// Runs a unary namenode call with [`NAMENODE_CALL_TIMEOUT`] and maps its status.
pub(crate) async fn unary<T>(
    context: &'static str,
    call: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(NAMENODE_CALL_TIMEOUT, call).await {
        Err(_) => Err(Error::NamenodeUnreachable(format!(
            "{context} timed out after {NAMENODE_CALL_TIMEOUT:?}"
        ))),
        Ok(Err(status)) => Err(Error::namenode(context, status)),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// An answer of the namenode that breaks the protocol.
pub(crate) fn bad_reply(what: &str) -> Error {
    Error::Internal(format!("malformed namenode reply: {what}"))
}

/// A pipeline from the namenode's reply to `rpc`, every location validated.
pub(crate) fn parse_pipeline(
    rpc: &str,
    locations: &[pb::DatanodeLocation],
) -> Result<Vec<Location>> {
    locations
        .iter()
        .map(Location::try_from)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|s| Error::Internal(format!("{rpc} reply: {}", s.message())))
}

/// Adds the datanodes of a pipeline's ack (`committed`) to `acked`, once each.
pub(crate) fn add_acks(acked: &mut Vec<DatanodeId>, committed: &[String]) {
    for c in committed {
        match wire::datanode_id("committed", c) {
            Ok(d) if !acked.contains(&d) => acked.push(d),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "ignoring a malformed ack entry"),
        }
    }
}

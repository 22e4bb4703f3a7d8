//! Helpers at the edge of every rpc the library makes: a unary namenode call with its
//! timeout and status mapping, and the checks of replies that both single uploads and
//! small-file batches read (a pipeline with its token, a datanode's ack).

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

/// A pipeline as the namenode issued it: its datanodes in order and the WRITE token
/// (opaque here: the datanodes check it) that makes them accept it.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub(crate) nodes: Vec<Location>,
    pub(crate) token: pb::BlockToken,
}

/// A pipeline from the namenode's reply to `rpc`, every location validated; empty if
/// the reply has none, and a malformed reply if it has nodes but no token.
pub(crate) fn parse_pipeline(
    rpc: &str,
    locations: &[pb::DatanodeLocation],
    token: Option<&pb::BlockToken>,
) -> Result<Pipeline> {
    let nodes = locations
        .iter()
        .map(Location::try_from)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|s| Error::Internal(format!("{rpc} reply: {}", s.message())))?;
    let token = match token {
        Some(t) => t.clone(),
        None if nodes.is_empty() => pb::BlockToken::default(),
        None => return Err(bad_reply(&format!("{rpc}: a pipeline without a token"))),
    };
    Ok(Pipeline { nodes, token })
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

//! Helpers at the edge of every rpc the library makes: a unary namenode call that
//! follows the leader, with its timeout and status mapping, and the checks of replies that both single uploads and
//! small-file batches read (a pipeline with its token, a datanode's ack).

use std::sync::Arc;

use kdfs_core::DatanodeId;
use kdfs_proto::namenodes::{self, Retry};
use kdfs_proto::pb;
use kdfs_proto::pb::namenode_client::NamenodeClient;
use kdfs_proto::pb::object_namespace_client::ObjectNamespaceClient;
use kdfs_proto::wire::{self, Location};
use tonic::transport::Channel;
use tonic::{Response, Status};
use tracing::warn;

use super::{Client, NAMENODE_CALL_TIMEOUT};
use crate::error::{Error, Result};

impl Client {
    /// Runs a unary `Namenode` rpc on the namenode leader (following it, for at most
    /// [`kdfs_proto::namenodes::DEFAULT_DEADLINE`]), each attempt within
    /// [`NAMENODE_CALL_TIMEOUT`], and maps its status. `call` sends `req` on a client.
    pub(crate) async fn namenode_call<Req, T, F, Fut>(
        &self,
        context: &'static str,
        retry: Retry,
        req: Req,
        call: F,
    ) -> Result<T>
    where
        Req: Clone,
        F: Fn(NamenodeClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.follow(context, retry, namenodes::namenode_client, req, call)
            .await
    }

    /// As [`Client::namenode_call`], for the `ObjectNamespace` service.
    pub(crate) async fn objects_call<Req, T, F, Fut>(
        &self,
        context: &'static str,
        retry: Retry,
        req: Req,
        call: F,
    ) -> Result<T>
    where
        Req: Clone,
        F: Fn(ObjectNamespaceClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.follow(context, retry, namenodes::objects_client, req, call)
            .await
    }

    async fn follow<C, Req, T, F, Fut>(
        &self,
        context: &'static str,
        retry: Retry,
        client: fn(Channel) -> C,
        req: Req,
        call: F,
    ) -> Result<T>
    where
        Req: Clone,
        F: Fn(C, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.inner
            .namenodes
            .call(retry, |channel| {
                let mut request = tonic::Request::new(req.clone());
                request.set_timeout(NAMENODE_CALL_TIMEOUT);
                let sent = call(client(channel), request);
                async move {
                    match tokio::time::timeout(NAMENODE_CALL_TIMEOUT, sent).await {
                        Ok(answer) => answer,
                        Err(_) => Err(timed_out(context)),
                    }
                }
            })
            .await
            .map_err(|status| Error::namenode(context, status))
    }
}

/// A call this process gave up waiting for (made here, so it may have run).
fn timed_out(context: &str) -> Status {
    let mut status = Status::deadline_exceeded(format!(
        "{context} timed out after {NAMENODE_CALL_TIMEOUT:?}"
    ));
    status.set_source(Arc::new(std::io::Error::from(std::io::ErrorKind::TimedOut)));
    status
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

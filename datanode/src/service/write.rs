//! `WriteBlock`: one block through the pipeline. Each node writes the stream locally
//! while forwarding the same messages to its successor; after the trailer it verifies
//! and commits, waits for the successor's answer, and replies with every node that
//! committed, in pipeline order. Also the pieces `WriteBlocks` shares: reading a write
//! stream's messages and header, and building one block's answer.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use kdfs_core::BlockId;
use kdfs_proto::block_token::{Access, Grant, MAX_PIPELINE};
use kdfs_proto::framed;
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::pb::{self, NodeFailure, WriteBlockRequest, WriteBlockResponse};
use kdfs_proto::wire::{self, Location};
use tonic::{Status, Streaming};

use super::Node;
use super::forward::{Answer, Downstream, answer_of, failure};
use crate::error::{Error, Result};
use crate::store::{AsyncBlockWriter, Commit};

/// A write stream's header, checked (its token too).
pub(super) struct Header {
    /// The rest of the pipeline after this node.
    pub(super) downstream: Vec<Location>,
    pub(super) upload_id: String,
    pub(super) max_length: u64,
    /// The token, forwarded unchanged, and what it grants.
    pub(super) token: Option<pb::BlockToken>,
    pub(super) grant: Grant,
}

impl Header {
    /// Names the upload on the handler's span (a transfer has none).
    pub(super) fn record_upload(&self) {
        if !self.upload_id.is_empty() {
            tracing::Span::current().record("upload", self.upload_id.as_str());
        }
    }
}

impl Node {
    /// The next message of a write stream, `None` at its end. A sender silent for
    /// `write_idle_timeout` is given up on. Cancellation-safe.
    pub(super) async fn next_message(
        &self,
        inbound: &mut Streaming<WriteBlockRequest>,
        rpc: &str,
    ) -> Result<Option<Msg>, Status> {
        match tokio::time::timeout(self.write_idle_timeout, inbound.message()).await {
            Err(_) => {
                tracing::info!("write stream idle too long: aborted");
                Err(Status::deadline_exceeded(format!(
                    "no {rpc} message for {:?}: aborted",
                    self.write_idle_timeout
                )))
            }
            Ok(Ok(Some(WriteBlockRequest { msg: Some(m) }))) => Ok(Some(m)),
            Ok(Ok(Some(_))) => Err(Status::invalid_argument(format!("an empty {rpc} message"))),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(status)) => {
                tracing::info!(error = %status, "write stream broke: aborted");
                Err(status)
            }
        }
    }

    /// Reads and checks the header that opens a write stream: a pipeline of at most
    /// `MAX_PIPELINE` nodes, and a token that grants it (a transfer's only where
    /// `transfers`). Nothing is reserved or dialed before this passes.
    pub(super) async fn read_header(
        &self,
        inbound: &mut Streaming<WriteBlockRequest>,
        rpc: &'static str,
        transfers: bool,
    ) -> Result<Header, Status> {
        let Some(Msg::Header(h)) = self.next_message(inbound, rpc).await? else {
            return Err(Status::invalid_argument(format!(
                "the first {rpc} message must be the header"
            )));
        };
        if h.downstream.len() >= MAX_PIPELINE {
            return Err(Status::invalid_argument(format!(
                "a pipeline has at most {MAX_PIPELINE} datanodes"
            )));
        }
        let downstream = h
            .downstream
            .iter()
            .map(Location::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        if downstream.iter().any(|l| l.id == self.id) {
            return Err(Status::invalid_argument(
                "the pipeline names this datanode twice",
            ));
        }
        let grant = self.authorize(rpc, h.token.as_ref(), |g| {
            g.check_write(&self.id, &downstream, &h.upload_id, h.max_length, transfers)
        })?;
        Ok(Header {
            downstream,
            upload_id: h.upload_id,
            max_length: h.max_length,
            token: h.token,
            grant,
        })
    }

    /// Starts forwarding to the successor, if this node has one.
    pub(super) fn forward_to<R: framed::Answer>(
        &self,
        header: &mut Header,
    ) -> Result<Option<Downstream<R>>, Status> {
        if header.downstream.is_empty() {
            return Ok(None);
        }
        Downstream::start(
            &self.peers,
            &header.downstream,
            std::mem::take(&mut header.upload_id),
            header.max_length,
            header.token.take(),
            self.write_idle_timeout,
        )
        .map(Some)
    }

    /// Ends the forwarded stream and waits for the successor's answer (see
    /// [`Downstream::finish`]), timing it; the tail has nothing to wait for (`tail`).
    pub(super) async fn downstream_answer<R: framed::Answer, T>(
        &self,
        down: Option<Downstream<R>>,
        check: impl FnOnce(R) -> Result<T, Status>,
        tail: T,
    ) -> Result<T, Vec<NodeFailure>> {
        let Some(d) = down else { return Ok(tail) };
        let sent = std::time::Instant::now();
        let r = d.finish(check).await;
        self.metrics.downstream_ack_seconds.observe(sent.elapsed());
        r
    }

    /// Counts the bytes of a data message and forwards them.
    pub(super) async fn received<R: framed::Answer>(
        &self,
        down: &mut Option<Downstream<R>>,
        data: &Bytes,
    ) {
        self.metrics
            .bytes_received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Some(d) = down.as_mut() {
            d.forward(Msg::Data(data.clone())).await;
        }
    }

    /// One block's answer: this node, if it committed, ahead of the nodes after it, and
    /// this node's failure, if any, ahead of theirs. Counts the block in the metrics.
    /// The local error comes back too when no node holds the block.
    pub(super) fn block_answer(
        &self,
        id: BlockId,
        length: u64,
        local: Result<Commit>,
        (down_committed, down_failed): Answer,
    ) -> (WriteBlockResponse, Option<Error>) {
        if !down_failed.is_empty() {
            self.metrics
                .downstream_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        let mut committed = Vec::with_capacity(1 + down_committed.len());
        let mut failed = Vec::new();
        let mut lost = None;
        match local {
            Ok(c) => {
                self.metrics
                    .writes_committed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(block = %id, length = c.length, existed = c.existed, "block committed");
                committed.push(self.id.to_string());
            }
            Err(e) => {
                self.metrics.writes_failed.fetch_add(1, Ordering::Relaxed);
                if down_committed.is_empty() {
                    tracing::info!(block = %id, error = %e, "block write failed");
                } else {
                    tracing::warn!(block = %id, error = %e, "local commit failed; downstream holds the block");
                }
                let out_of_space = matches!(e, Error::OutOfSpace { .. });
                failed.push(failure(&self.id.to_string(), e.to_string(), out_of_space));
                lost = down_committed.is_empty().then_some(e);
            }
        }
        committed.extend(down_committed);
        failed.extend(down_failed);
        let answer = WriteBlockResponse {
            committed,
            failed,
            length,
        };
        (answer, lost)
    }

    /// Receives one pipelined block write (see the module docs).
    pub(super) async fn write_block(
        &self,
        mut inbound: Streaming<WriteBlockRequest>,
    ) -> Result<WriteBlockResponse, Status> {
        let mut header = self.read_header(&mut inbound, "WriteBlock", true).await?;
        header.record_upload();
        let max_length = header.max_length;
        let grant = header.grant.clone();
        // Refused here, before any byte is accepted, if the block cannot fit.
        let mut local = Some(AsyncBlockWriter::start(&self.store, max_length).await?);
        let mut local_err: Option<Error> = None;
        let mut down = self.forward_to::<WriteBlockResponse>(&mut header)?;
        let mut length = 0u64;
        let trailer = loop {
            let Some(msg) = self.next_message(&mut inbound, "WriteBlock").await? else {
                return Err(Status::cancelled(
                    "write stream ended before its trailer: aborted",
                ));
            };
            match msg {
                Msg::Data(data) => {
                    length += data.len() as u64;
                    if length > max_length {
                        return Err(Error::TooLong { max: max_length }.into());
                    }
                    self.received(&mut down, &data).await;
                    if let Some(w) = local.as_mut()
                        && let Err(e) = w.write(data).await
                    {
                        tracing::warn!(error = %e, "local block write failed; still forwarding");
                        local = None;
                        local_err = Some(e);
                    }
                }
                Msg::Trailer(t) => break t,
                Msg::Header(_) => {
                    return Err(Status::invalid_argument("a second WriteBlock header"));
                }
            }
        };
        let id = wire::block_id("trailer.block_id", &trailer.block_id)?;
        tracing::Span::current().record("block", tracing::field::display(id));
        // A transfer carries the one block its token names: anything else aborts here
        // (the local temp file and the downstream call are dropped, nothing commits).
        if grant.access == Access::Transfer {
            grant
                .check_block(&id)
                .map_err(|e| self.refused("WriteBlock", e))?;
        }
        if let Some(d) = down.as_mut() {
            d.forward(Msg::Trailer(trailer)).await;
        }
        let local_commit = async {
            match (local, local_err) {
                (Some(w), _) => w.commit(id).await,
                (None, Some(e)) => Err(e),
                (None, None) => Err(Error::Aborted),
            }
        };
        let downstream_result =
            self.downstream_answer(down, |r| Ok(answer_of(r)), Answer::default());
        let (local_result, down_result) = tokio::join!(local_commit, downstream_result);
        let down_result = down_result.unwrap_or_else(|failed| (Vec::new(), failed));
        match self.block_answer(id, length, local_result, down_result) {
            (_, Some(lost)) => Err(lost.into()),
            (answer, None) => Ok(answer),
        }
    }
}

//! One attempt to write a block down one pipeline: a `WriteBlock` stream to the head
//! (header, 1 MiB data messages, trailer) through [`kdfs_proto::framed`], so the bytes
//! go out without a copy (docs/decisions/0005-framed-writes.md). A send that stalls
//! breaks the stream; the attempt's [`Outcome`] is then read from the call's result.

use std::time::Duration;

use kdfs_core::BlockId;
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::wire::{self, Location};
use kdfs_proto::{framed, pb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::AbortOnDropHandle;
use tracing::warn;

use super::recovery::{NodeFailure, Outcome};
use super::rpc::{Pipeline, add_acks, bad_reply};
use super::spool::Retained;
use super::{Client, QUEUE_CHUNKS};
use crate::error::Result;

/// One attempt to write a block down one pipeline.
pub(crate) struct Attempt {
    pub(crate) pipeline: Vec<Location>,
    /// `None` once the stream broke (the receiver is gone or stalled).
    tx: Option<mpsc::Sender<pb::WriteBlockRequest>>,
    call: AbortOnDropHandle<std::result::Result<pb::WriteBlockResponse, tonic::Status>>,
    stall: Duration,
}

impl Attempt {
    /// Opens a WriteBlock stream to the pipeline's head for a block of at most
    /// `max_length` bytes of upload `upload_id`, with the pipeline's token.
    pub(crate) async fn start(
        client: &Client,
        upload_id: &str,
        issued: Pipeline,
        max_length: u64,
    ) -> Result<Self> {
        let Pipeline {
            nodes: pipeline,
            token,
        } = issued;
        let head = pipeline
            .first()
            .ok_or_else(|| bad_reply("AllocateBlock returned an empty pipeline"))?;
        let channel = client.inner.pool.channel(&head.address)?;
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        // Through `framed`: the block's bytes go out without a copy.
        let call = AbortOnDropHandle::new(tokio::spawn(framed::client_streaming(
            channel,
            ReceiverStream::new(rx),
        )));
        let mut a = Self {
            tx: Some(tx),
            call,
            stall: client.inner.options.stall_timeout,
            pipeline,
        };
        let header = pb::WriteHeader {
            downstream: a.pipeline[1..]
                .iter()
                .map(pb::DatanodeLocation::from)
                .collect(),
            upload_id: upload_id.to_owned(),
            max_length,
            token: Some(token),
        };
        a.send(Msg::Header(header)).await;
        Ok(a)
    }

    /// Sends one message; a failure or a stall marks the stream broken (the outcome
    /// is then read from the call's result).
    pub(crate) async fn send(&mut self, msg: Msg) {
        let Some(tx) = &self.tx else { return };
        let req = pb::WriteBlockRequest { msg: Some(msg) };
        match tokio::time::timeout(self.stall, tx.send(req)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.tx = None,
            Err(_) => {
                warn!(head = %self.pipeline[0].address, "block write stalled");
                self.tx = None;
                self.call.abort();
            }
        }
    }

    /// Sends the trailer and waits for the ack.
    pub(crate) async fn finish(mut self, id: BlockId) -> Outcome {
        self.send(Msg::Trailer(pb::WriteTrailer {
            block_id: wire::raw(id.as_bytes()),
        }))
        .await;
        let broken = self.tx.is_none();
        drop(self.tx.take());
        // The ack comes after every node verified, fsynced and heard from its successor.
        let wait = self.stall * 2;
        let failed = |reason: String, out_of_space: bool| Outcome::Broken {
            reason,
            out_of_space,
        };
        match tokio::time::timeout(wait, &mut self.call).await {
            Err(_) => failed(format!("no ack within {wait:?}"), false),
            Ok(Err(e)) if broken => failed(format!("stream broke: {e}"), false),
            Ok(Err(e)) => failed(format!("write task: {e}"), false),
            // A failure of the whole call says whether the head refused the block for
            // lack of room.
            Ok(Ok(Err(status))) => failed(
                format!("{}: {}", status.code(), status.message()),
                status.code() == tonic::Code::ResourceExhausted,
            ),
            Ok(Ok(Ok(resp))) => {
                let mut committed = Vec::new();
                add_acks(&mut committed, &resp.committed);
                Outcome::Acked {
                    length: resp.length,
                    committed,
                    failed: resp
                        .failed
                        .into_iter()
                        .map(|f| NodeFailure {
                            node: f.node,
                            reason: f.reason,
                            out_of_space: f.out_of_space,
                        })
                        .collect(),
                }
            }
        }
    }

    /// Sends every chunk of `retained` again, in order, down this pipeline.
    pub(crate) async fn replay(
        &mut self,
        retained: &mut Retained,
    ) -> std::result::Result<(), String> {
        for i in 0..retained.len() {
            let c = retained.get(i).await?;
            self.send(Msg::Data(c)).await;
        }
        Ok(())
    }
}

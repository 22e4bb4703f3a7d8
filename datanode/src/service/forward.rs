//! The forwarding half of a pipeline write: a `WriteBlock` or `WriteBlocks` call to the
//! next datanode, fed through a bounded queue, and how its answer (or its failure)
//! becomes this node's `committed` / `failed` lists.

use std::time::Duration;

use kdfs_proto::framed;
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::pb::{
    self, NodeFailure, WriteBlockRequest, WriteBlockResponse, WriteBlocksResponse, WriteHeader,
};
use kdfs_proto::pool::ChannelPool;
use kdfs_proto::wire::Location;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Messages queued towards a successor (1 MiB each): bounded so that a slow successor
/// back-pressures this node and, through HTTP/2 flow control, its predecessor. Small,
/// because every write stream holds this much, plus its HTTP/2 windows and the local
/// writer's queue (two streams per node while an upload overlaps its blocks), and a
/// datanode's peak memory is what its streams hold
/// (docs/decisions/0007-transport-windows.md).
pub const FORWARD_QUEUE_DEPTH: usize = 2;

/// A failed node's entry in a write's answer.
pub(super) fn failure(node: &str, reason: impl Into<String>, out_of_space: bool) -> NodeFailure {
    NodeFailure {
        node: node.to_owned(),
        reason: reason.into(),
        out_of_space,
    }
}

/// The forwarding half of a pipeline write: a `WriteBlock` or `WriteBlocks` call to
/// the successor (answering `R`) fed through a bounded queue. Dropping it aborts the
/// call (the successor then aborts too).
pub(super) struct Downstream<R> {
    next: Location,
    rest: Vec<Location>,
    tx: Option<mpsc::Sender<WriteBlockRequest>>,
    call: JoinHandle<Result<R, Status>>,
    /// Why the successor was given up on, if it stalled.
    stalled: Option<String>,
    idle: Duration,
}

impl<R: framed::Answer> Downstream<R> {
    /// Calls the first of `downstream` (which must be a pipeline a verified `token`
    /// grants), sending it the header for the rest.
    pub(super) fn start(
        peers: &ChannelPool,
        downstream: &[Location],
        upload_id: String,
        max_length: u64,
        token: Option<pb::BlockToken>,
        idle: Duration,
    ) -> Result<Self, Status> {
        let (next, rest) = downstream
            .split_first()
            .expect("called with a non-empty pipeline");
        let channel = peers.channel(&next.address).map_err(|e| {
            Status::invalid_argument(format!("bad peer address {:?}: {}", e.address, e.source))
        })?;
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE_DEPTH);
        let header = WriteBlockRequest {
            msg: Some(Msg::Header(WriteHeader {
                downstream: rest.iter().map(pb::DatanodeLocation::from).collect(),
                upload_id,
                max_length,
                token,
            })),
        };
        tx.try_send(header)
            .expect("a fresh queue has room for the header");
        // Through `framed`: forwarded block bytes are not copied again
        // (docs/decisions/0005-framed-writes.md).
        let call = tokio::spawn(framed::client_streaming::<R, _>(
            channel,
            ReceiverStream::new(rx),
        ));
        Ok(Self {
            next: next.clone(),
            rest: rest.to_vec(),
            tx: Some(tx),
            call,
            stalled: None,
            idle,
        })
    }

    /// Forwards a message, waiting while the successor is slow. A successor that has
    /// gone stops being fed; its call's result says why.
    /// A successor that accepts nothing for `idle` (alive, so keep-alives
    /// pass, but stuck) is given up on, so it cannot wedge the whole pipeline.
    pub(super) async fn forward(&mut self, msg: Msg) {
        let Some(tx) = &self.tx else { return };
        let sent =
            tokio::time::timeout(self.idle, tx.send(WriteBlockRequest { msg: Some(msg) })).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.tx = None, // The call ended; its result says why.
            Err(_) => self.give_up("accepted no data"),
        }
    }

    fn give_up(&mut self, why: &str) {
        tracing::warn!(next = %self.next.address, why, "giving up on a stalled successor");
        self.tx = None;
        self.stalled = Some(format!("{why} for {:?}: stalled", self.idle));
        self.call.abort();
    }

    /// Ends the stream and waits for the successor's answer, which `check` validates.
    /// A failed successor (or an answer `check` refuses) becomes a `failed` entry for
    /// it and for every node after it (they were not reached).
    pub(super) async fn finish<T>(
        mut self,
        check: impl FnOnce(R) -> Result<T, Status>,
    ) -> Result<T, Vec<NodeFailure>> {
        self.tx = None;
        let result = if self.stalled.is_some() {
            Err(Status::deadline_exceeded("stalled"))
        } else {
            // The successor's answer covers its own successors' commits: allow more
            // than one idle period before calling it stalled.
            match tokio::time::timeout(2 * self.idle, &mut self.call).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(Status::internal(format!("forwarding task failed: {e}"))),
                Err(_) => {
                    self.give_up("sent no answer");
                    Err(Status::deadline_exceeded("stalled"))
                }
            }
        };
        let status = match result.and_then(check) {
            Ok(answer) => return Ok(answer),
            Err(status) => status,
        };
        let next = self.next.id.to_string();
        let reason = match &self.stalled {
            Some(why) => format!("{}: {why}", self.next.address),
            None => format!(
                "{} ({}): {}",
                self.next.address,
                status.code(),
                status.message()
            ),
        };
        let out_of_space =
            self.stalled.is_none() && status.code() == tonic::Code::ResourceExhausted;
        let mut failed = vec![failure(&next, reason, out_of_space)];
        failed.extend(self.rest.iter().map(|l| {
            failure(
                &l.id.to_string(),
                format!("not reached: upstream {next} failed"),
                false,
            )
        }));
        Err(failed)
    }
}

impl<R> Drop for Downstream<R> {
    fn drop(&mut self) {
        self.call.abort();
    }
}

/// Who committed a block past this node and who failed.
pub(super) type Answer = (Vec<String>, Vec<NodeFailure>);

pub(super) fn answer_of(r: WriteBlockResponse) -> Answer {
    (r.committed, r.failed)
}

/// A successor's `WriteBlocks` answer, if it has one entry per block sent, of the
/// lengths sent.
pub(super) fn check_batch_answer(
    r: WriteBlocksResponse,
    lengths: &[u64],
) -> Result<Vec<WriteBlockResponse>, Status> {
    let same = r.blocks.len() == lengths.len()
        && r.blocks.iter().zip(lengths).all(|(b, l)| b.length == *l);
    if !same {
        return Err(Status::internal(format!(
            "answered for {} blocks, not the {} sent",
            r.blocks.len(),
            lengths.len()
        )));
    }
    Ok(r.blocks)
}

//! The datanode's gRPC service: pipelined block writes, verified range reads, and
//! replication transfers.
//!
//! `WriteBlock` is a chain: each node writes the stream locally while forwarding the
//! same messages to its successor, through bounded queues on both sides (a slow disk or
//! a slow successor slows the sender; memory stays flat). After the trailer it verifies
//! and commits, waits for the successor's answer, and replies with every node that
//! committed, in pipeline order. A successor that fails does not fail this node's write;
//! it is named in `failed`. A broken upstream stream aborts everything downstream (no
//! trailer ever reaches it, so nothing can commit).
//!
//! `WriteBlocks` carries a batch of small blocks through the same chain in one stream
//! per hop: the blocks are held in memory, and once the stream has ended with its end
//! marker they are verified and committed together (one durability step for all, see
//! `Store::commit_batch`); the answer has one entry per block.
//!
//! Cancellation: once the trailer arrived, the local commit runs in a blocking task that
//! finishes even if the caller vanishes; before that, dropping the handler aborts the
//! local write and the downstream call.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kdfs_core::{BlockId, DatanodeId};
use kdfs_proto::framed;
use kdfs_proto::pb::datanode_server::{Datanode, DatanodeServer};
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::pb::{
    self, NodeFailure, ReadBlockRequest, ReadBlockResponse, ReplicateBlock, TransferBlockResponse,
    WriteBlockRequest, WriteBlockResponse, WriteBlocksResponse, WriteHeader, WriteTrailer,
};
use kdfs_proto::tls::{self, Tls};
use kdfs_proto::transport::{self, MAX_BATCH_BYTES, MAX_BATCH_FILES, MAX_BATCHED_BLOCK};
use kdfs_proto::wire::{self, Location};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result};
use crate::metrics::{InFlight, Metrics};
use crate::store::{AsyncBlockWriter, Commit, Piece, RangeReader, Store};

/// Messages queued towards a successor (1 MiB each): bounded so that a slow successor
/// back-pressures this node and, through HTTP/2 flow control, its predecessor. Small,
/// because every write stream holds this much, plus its HTTP/2 windows and the local
/// writer's queue (two streams per node while an upload overlaps its blocks). 2, not
/// 4: a datanode's peak RSS had reached 64.7 MiB on a slow host (BENCHMARKS.md).
pub const FORWARD_QUEUE_DEPTH: usize = 2;
/// Read pieces queued towards a reader.
pub const READ_QUEUE_DEPTH: usize = 4;

/// One lazily connecting, pooled channel per peer address; through mTLS when the node
/// has certificates (the peer's certificate must name the address dialed).
#[derive(Debug, Clone)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<Arc<Tls>>,
}

impl Peers {
    pub fn new(tls: Option<Arc<Tls>>) -> Self {
        Self {
            channels: Arc::default(),
            tls,
        }
    }

    /// The channel to the datanode at `address` (dials on first use).
    pub fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut map = self.channels.lock().expect("peer map lock poisoned");
        Ok(match map.get(address) {
            Some(c) => c.clone(),
            None => {
                let c = tls::channel(address, self.tls.as_ref()).map_err(|e| {
                    Status::invalid_argument(format!("bad peer address {address:?}: {e}"))
                })?;
                map.insert(address.to_owned(), c.clone());
                c
            }
        })
    }
}

/// What the service, the namenode link and the HTTP endpoints share.
#[derive(Debug)]
pub struct Node {
    pub id: DatanodeId,
    pub store: Store,
    pub peers: Peers,
    pub metrics: Metrics,
    /// A write whose sender goes silent this long is aborted (releasing its reservation
    /// and temp file), and a successor that accepts nothing this long is given up on:
    /// a live but stuck peer is not caught by HTTP/2 keep-alives.
    pub write_idle_timeout: Duration,
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct DatanodeService {
    node: Arc<Node>,
}

impl DatanodeService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The service wrapped for a tonic server, with kdfs's message size limits.
    pub fn into_server(self) -> DatanodeServer<Self> {
        DatanodeServer::new(self)
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(transport::MAX_MESSAGE_SIZE)
    }
}

fn failure(node: &str, reason: impl Into<String>, out_of_space: bool) -> NodeFailure {
    NodeFailure {
        node: node.to_owned(),
        reason: reason.into(),
        out_of_space,
    }
}

/// The forwarding half of a pipeline write: a `WriteBlock` or `WriteBlocks` call to
/// the successor (answering `R`) fed through a bounded queue. Dropping it aborts the
/// call (the successor then aborts too).
struct Downstream<R> {
    next: Location,
    rest: Vec<Location>,
    tx: Option<mpsc::Sender<WriteBlockRequest>>,
    call: JoinHandle<Result<R, Status>>,
    /// Why the successor was given up on, if it stalled.
    stalled: Option<String>,
    idle: Duration,
}

impl<R: framed::Answer> Downstream<R> {
    fn start(
        peers: &Peers,
        downstream: &[Location],
        upload_id: String,
        max_length: u64,
        idle: Duration,
    ) -> Result<Self, Status> {
        let (next, rest) = downstream
            .split_first()
            .expect("called with a non-empty pipeline");
        let channel = peers.channel(&next.address)?;
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE_DEPTH);
        let header = WriteBlockRequest {
            msg: Some(Msg::Header(WriteHeader {
                downstream: rest.iter().map(pb::DatanodeLocation::from).collect(),
                upload_id,
                max_length,
            })),
        };
        tx.try_send(header)
            .expect("a fresh queue has room for the header");
        // Through `framed`: forwarded block bytes are not copied again.
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
    async fn forward(&mut self, msg: Msg) {
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
    async fn finish<T>(
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
type Answer = (Vec<String>, Vec<NodeFailure>);

fn answer_of(r: WriteBlockResponse) -> Answer {
    (r.committed, r.failed)
}

/// A successor's `WriteBlocks` answer, if it has one entry per block sent, of the
/// lengths sent.
fn check_batch_answer(
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

/// A write stream's header, checked.
struct Header {
    /// The rest of the pipeline after this node.
    downstream: Vec<Location>,
    upload_id: String,
    max_length: u64,
}

impl Node {
    /// The next message of a write stream, `None` at its end. A sender silent for
    /// `write_idle_timeout` is given up on. Cancellation-safe.
    async fn next_message(
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

    /// Reads and checks the header that opens a write stream.
    async fn read_header(
        &self,
        inbound: &mut Streaming<WriteBlockRequest>,
        rpc: &str,
    ) -> Result<Header, Status> {
        let Some(Msg::Header(h)) = self.next_message(inbound, rpc).await? else {
            return Err(Status::invalid_argument(format!(
                "the first {rpc} message must be the header"
            )));
        };
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
        Ok(Header {
            downstream,
            upload_id: h.upload_id,
            max_length: h.max_length,
        })
    }

    /// Starts forwarding to the successor, if this node has one.
    fn forward_to<R: framed::Answer>(
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
            self.write_idle_timeout,
        )
        .map(Some)
    }

    /// Ends the forwarded stream and waits for the successor's answer (see
    /// [`Downstream::finish`]), timing it; the tail has nothing to wait for (`tail`).
    async fn downstream_answer<R: framed::Answer, T>(
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
    async fn received<R: framed::Answer>(&self, down: &mut Option<Downstream<R>>, data: &Bytes) {
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
    fn block_answer(
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
    async fn write_block(
        &self,
        mut inbound: Streaming<WriteBlockRequest>,
    ) -> Result<WriteBlockResponse, Status> {
        let mut header = self.read_header(&mut inbound, "WriteBlock").await?;
        let max_length = header.max_length;
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

    /// Receives a pipelined batch of small blocks (`WriteBlocks`): the blocks are held in
    /// memory (at most the header's `max_length` ≤ `MAX_BATCH_BYTES`, reserved up
    /// front) and, once the stream ends, verified and committed together by one
    /// blocking call with one durability step for all ([`BatchWriter::commit_all`]);
    /// meanwhile every message has been forwarded as it came. A block that fails here fails
    /// alone; a malformed stream fails as a whole (blocks committed before stay, as
    /// orphans for the namenode).
    async fn write_blocks(
        &self,
        mut inbound: Streaming<WriteBlockRequest>,
    ) -> Result<Vec<WriteBlockResponse>, Status> {
        const RPC: &str = "WriteBlocks";
        let mut header = self.read_header(&mut inbound, RPC).await?;
        let max_length = header.max_length;
        if max_length > MAX_BATCH_BYTES {
            return Err(Status::invalid_argument(format!(
                "max_length {max_length} exceeds a batch's {MAX_BATCH_BYTES} bytes"
            )));
        }
        // Refused here, before any byte is accepted, if the batch cannot fit.
        let room = self.store.begin_batch(max_length)?;
        let mut down = self.forward_to::<WriteBlocksResponse>(&mut header)?;
        // The block being received, and those complete.
        let mut held: Vec<Bytes> = Vec::new();
        let mut held_len = 0u64;
        let mut blocks: Vec<(Vec<Bytes>, BlockId)> = Vec::new();
        let mut lengths: Vec<u64> = Vec::new();
        let mut total = 0u64;
        // The end marker came: the batch is whole. A stream that ends without it was
        // aborted upstream (a closed forward queue ends the stream cleanly too).
        let mut ended = false;
        while let Some(msg) = self.next_message(&mut inbound, RPC).await? {
            if ended {
                return Err(Status::invalid_argument(
                    "a message after the batch's end marker",
                ));
            }
            match msg {
                Msg::Trailer(t) if t.block_id.is_empty() => {
                    if !held.is_empty() {
                        return Err(Status::invalid_argument("the end marker inside a block"));
                    }
                    // Forwarded once the stream has ended here too, so that a
                    // message after it fails the batch downstream as well.
                    ended = true;
                }
                Msg::Data(data) => {
                    if held.is_empty() && lengths.len() == MAX_BATCH_FILES {
                        return Err(Status::invalid_argument(format!(
                            "more than {MAX_BATCH_FILES} blocks in one batch"
                        )));
                    }
                    held_len += data.len() as u64;
                    total += data.len() as u64;
                    if held_len > MAX_BATCHED_BLOCK {
                        return Err(Status::invalid_argument(format!(
                            "a batched block exceeds {MAX_BATCHED_BLOCK} bytes"
                        )));
                    }
                    if total > max_length {
                        return Err(Error::TooLong { max: max_length }.into());
                    }
                    self.received(&mut down, &data).await;
                    held.push(data);
                }
                Msg::Trailer(t) => {
                    if held_len == 0 {
                        return Err(Status::invalid_argument("a batched block without bytes"));
                    }
                    let id = wire::block_id("trailer.block_id", &t.block_id)?;
                    if let Some(d) = down.as_mut() {
                        d.forward(Msg::Trailer(t)).await;
                    }
                    blocks.push((std::mem::take(&mut held), id));
                    lengths.push(held_len);
                    held_len = 0;
                }
                Msg::Header(_) => {
                    return Err(Status::invalid_argument("a second WriteBlocks header"));
                }
            }
        }
        if !held.is_empty() {
            return Err(Status::cancelled(
                "write stream ended inside a block: aborted",
            ));
        }
        if !ended {
            return Err(Status::cancelled(
                "batch stream ended before its end marker: aborted",
            ));
        }
        if let Some(d) = down.as_mut() {
            d.forward(Msg::Trailer(WriteTrailer::default())).await;
        }
        let ids: Vec<BlockId> = blocks.iter().map(|(_, id)| *id).collect();
        let commits = async { ids.into_iter().zip(room.commit_all(blocks).await) };
        let tail = vec![WriteBlockResponse::default(); lengths.len()];
        let downstream_result =
            self.downstream_answer(down, |r| check_batch_answer(r, &lengths), tail);
        let (local, down_result) = tokio::join!(commits, downstream_result);
        let mut down_blocks = down_result.map(Vec::into_iter);
        let mut answers = Vec::with_capacity(lengths.len());
        for ((id, result), &length) in local.into_iter().zip(&lengths) {
            let down = match &mut down_blocks {
                Ok(blocks) => answer_of(blocks.next().expect("checked: one answer per block")),
                Err(failed) => (Vec::new(), failed.clone()),
            };
            answers.push(self.block_answer(id, length, result, down).0);
        }
        Ok(answers)
    }

    /// Streams a verified local replica of `id` through the write chain `targets`.
    /// Fails (and nothing is committed anywhere) if the replica is missing or corrupt.
    pub async fn transfer(
        &self,
        id: BlockId,
        targets: &[Location],
    ) -> Result<TransferBlockResponse, Status> {
        let _in_flight = InFlight::new(&self.metrics);
        let result = self.transfer_inner(id, targets).await;
        match &result {
            Ok(r) if !r.committed.is_empty() => {
                self.metrics
                    .transfers_completed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(block = %id, committed = ?r.committed, failed = r.failed.len(), "block replicated");
            }
            Ok(r) => {
                self.metrics
                    .transfers_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(block = %id, failed = ?r.failed.iter().map(|f| &f.reason).collect::<Vec<_>>(), "replication reached no target");
            }
            Err(e) => {
                self.metrics
                    .transfers_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(block = %id, error = %e, "replication failed");
            }
        }
        result
    }

    async fn transfer_inner(
        &self,
        id: BlockId,
        targets: &[Location],
    ) -> Result<TransferBlockResponse, Status> {
        if targets.is_empty() {
            return Err(Status::invalid_argument(
                "a transfer needs at least one target",
            ));
        }
        if targets.iter().any(|t| t.id == self.id) {
            return Err(Status::invalid_argument(
                "a transfer cannot target its source",
            ));
        }
        let store = self.store.clone();
        let reader = tokio::task::spawn_blocking(move || store.read_range(&id, 0, 0))
            .await
            .map_err(|e| Status::internal(format!("reader task: {e}")))??;
        let mut down = Downstream::<WriteBlockResponse>::start(
            &self.peers,
            targets,
            String::new(),
            reader.block_len(),
            self.write_idle_timeout,
        )?;
        let mut reader = Some(reader);
        while let Some(r) = reader.take() {
            let (r, piece) = next_piece(r).await;
            match piece {
                None => break,
                Some(Ok(p)) => {
                    self.metrics
                        .bytes_replicated
                        .fetch_add(p.data.len() as u64, Ordering::Relaxed);
                    down.forward(Msg::Data(p.data)).await;
                    reader = Some(r);
                }
                // Dropping `down` resets the stream: no trailer, so nobody commits.
                Some(Err(e)) => return Err(e.into()),
            }
        }
        down.forward(Msg::Trailer(WriteTrailer {
            block_id: wire::raw(id.as_bytes()),
        }))
        .await;
        let (committed, failed) = down
            .finish(|r| Ok(answer_of(r)))
            .await
            .unwrap_or_else(|failed| (Vec::new(), failed));
        Ok(TransferBlockResponse { committed, failed })
    }
}

/// Reads the next verified piece on the blocking pool.
pub async fn next_piece(mut r: RangeReader) -> (RangeReader, Option<Result<Piece>>) {
    match tokio::task::spawn_blocking(move || {
        let p = r.next();
        (r, p)
    })
    .await
    {
        Ok(x) => x,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[tonic::async_trait]
impl Datanode for DatanodeService {
    async fn write_block(
        &self,
        request: Request<Streaming<WriteBlockRequest>>,
    ) -> Result<Response<WriteBlockResponse>, Status> {
        let _in_flight = InFlight::new(&self.node.metrics);
        let started = std::time::Instant::now();
        let r = self.node.write_block(request.into_inner()).await;
        self.node.metrics.write_seconds.observe(started.elapsed());
        r.map(Response::new)
    }

    async fn write_blocks(
        &self,
        request: Request<Streaming<WriteBlockRequest>>,
    ) -> Result<Response<WriteBlocksResponse>, Status> {
        let _in_flight = InFlight::new(&self.node.metrics);
        let started = std::time::Instant::now();
        let r = self.node.write_blocks(request.into_inner()).await;
        self.node
            .metrics
            .write_batch_seconds
            .observe(started.elapsed());
        r.map(|blocks| Response::new(WriteBlocksResponse { blocks }))
    }

    type ReadBlockStream = ReadStream;

    async fn read_block(
        &self,
        request: Request<ReadBlockRequest>,
    ) -> Result<Response<Self::ReadBlockStream>, Status> {
        let r = request.into_inner();
        let id = wire::block_id("block_id", &r.block_id)?;
        let store = self.node.store.clone();
        // CRC32C per chunk here; the whole-block SHA-256 is the reader's (see
        // `RangeReader::without_block_hash`). The first piece is read by the same
        // blocking call that opens the block: a small block costs one hand-off.
        let (reader, first) = tokio::task::spawn_blocking(move || {
            let mut r = store
                .read_range(&id, r.offset, r.length)?
                .without_block_hash();
            let first = r.next();
            Ok::<_, Error>((r, first))
        })
        .await
        .map_err(|e| Status::internal(format!("reader task: {e}")))?
        .inspect_err(|e| {
            if matches!(e, Error::Corrupt { .. }) {
                tracing::warn!(block = %id, error = %e, "read of a corrupt replica refused");
            }
        })?;
        // A range read by its first piece (a small block) goes out as it is.
        let first = match first {
            Some(Ok(p)) if reader.remaining() == 0 => {
                let msg = served(&self.node.metrics, p);
                return Ok(Response::new(ReadStream::One(Some(msg))));
            }
            other => other,
        };
        let (tx, rx) = mpsc::channel(READ_QUEUE_DEPTH);
        let node = self.node.clone();
        tokio::spawn(async move {
            let _in_flight = InFlight::new(&node.metrics);
            let mut current = Some((reader, first));
            while let Some((r, piece)) = current.take() {
                let msg = match piece {
                    None => break,
                    Some(Ok(p)) => Ok(served(&node.metrics, p)),
                    Some(Err(e)) => {
                        tracing::warn!(block = %id, error = %e, "read failed mid-stream");
                        Err(Status::from(e))
                    }
                };
                let more = msg.is_ok() && r.remaining() > 0;
                if tx.send(msg).await.is_err() || !more {
                    break; // The reader went away, or the range is done.
                }
                current = Some(next_piece(r).await);
            }
        });
        Ok(Response::new(ReadStream::Pieces(ReceiverStream::new(rx))))
    }

    async fn transfer_block(
        &self,
        request: Request<ReplicateBlock>,
    ) -> Result<Response<TransferBlockResponse>, Status> {
        let r = request.into_inner();
        let id = wire::block_id("block_id", &r.block_id)?;
        let targets = r
            .targets
            .iter()
            .map(Location::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        self.node.transfer(id, &targets).await.map(Response::new)
    }
}

/// The `ReadBlock` message of a verified piece, counted as served.
fn served(metrics: &Metrics, p: crate::store::Piece) -> ReadBlockResponse {
    metrics
        .bytes_served
        .fetch_add(p.data.len() as u64, Ordering::Relaxed);
    ReadBlockResponse {
        offset: p.offset,
        crc32c: p.crc32c,
        data: p.data,
    }
}

/// A `ReadBlock` answer: a range read by its first piece (a small block) as that one
/// message, without a task or a channel; any other range as the pieces its task reads
/// one after another (at most `READ_QUEUE_DEPTH` ahead of the sender).
pub enum ReadStream {
    One(Option<ReadBlockResponse>),
    Pieces(ReceiverStream<Result<ReadBlockResponse, Status>>),
}

impl futures::Stream for ReadStream {
    type Item = Result<ReadBlockResponse, Status>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.get_mut() {
            Self::One(m) => std::task::Poll::Ready(m.take().map(Ok)),
            Self::Pieces(s) => std::pin::Pin::new(s).poll_next(cx),
        }
    }
}

/// Bytes of a write request's data message (for tests and clients building streams).
pub fn data_msg(data: Bytes) -> WriteBlockRequest {
    WriteBlockRequest {
        msg: Some(Msg::Data(data)),
    }
}

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
//! Cancellation: once the trailer arrived, the local commit runs in a blocking task that
//! finishes even if the caller vanishes; before that, dropping the handler aborts the
//! local write and the downstream call.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kdfs_core::{BlockId, DatanodeId};
use kdfs_proto::pb::datanode_client::DatanodeClient;
use kdfs_proto::pb::datanode_server::{Datanode, DatanodeServer};
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::pb::{
    self, NodeFailure, ReadBlockRequest, ReadBlockResponse, ReplicateBlock, TransferBlockResponse,
    WriteBlockRequest, WriteBlockResponse, WriteHeader, WriteTrailer,
};
use kdfs_proto::tls::{self, Tls};
use kdfs_proto::transport;
use kdfs_proto::wire::{self, Location};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result};
use crate::metrics::{InFlight, Metrics};
use crate::store::{AsyncBlockWriter, Piece, RangeReader, Store};

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

    /// A client for the datanode at `address` (dials on first use).
    pub fn client(&self, address: &str) -> Result<DatanodeClient<Channel>, Status> {
        let mut map = self.channels.lock().expect("peer map lock poisoned");
        let channel = match map.get(address) {
            Some(c) => c.clone(),
            None => {
                let c = tls::channel(address, self.tls.as_ref()).map_err(|e| {
                    Status::invalid_argument(format!("bad peer address {address:?}: {e}"))
                })?;
                map.insert(address.to_owned(), c.clone());
                c
            }
        };
        Ok(DatanodeClient::new(channel)
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(transport::MAX_MESSAGE_SIZE))
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

/// The forwarding half of a pipeline write: a call to the successor fed through a
/// bounded queue. Dropping it aborts the call (the successor then aborts too).
struct Downstream {
    next: Location,
    rest: Vec<Location>,
    tx: Option<mpsc::Sender<WriteBlockRequest>>,
    call: JoinHandle<Result<WriteBlockResponse, Status>>,
    /// Why the successor was given up on, if it stalled.
    stalled: Option<String>,
    idle: Duration,
}

impl Downstream {
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
        let mut client = peers.client(&next.address)?;
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
        let call = tokio::spawn(async move {
            client
                .write_block(ReceiverStream::new(rx))
                .await
                .map(Response::into_inner)
        });
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

    /// Ends the stream and waits for the successor's answer; a failed successor becomes
    /// a `failed` entry for it and for every node after it (they were not reached).
    async fn finish(mut self) -> (Vec<String>, Vec<NodeFailure>) {
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
        match result {
            Ok(resp) => (resp.committed, resp.failed),
            Err(status) => {
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
                (Vec::new(), failed)
            }
        }
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        self.call.abort();
    }
}

impl Node {
    /// Receives one pipelined block write (see the module docs).
    async fn write_block(
        &self,
        mut inbound: Streaming<WriteBlockRequest>,
    ) -> Result<WriteBlockResponse, Status> {
        let me = self.id.to_string();
        let header = match inbound.message().await? {
            Some(WriteBlockRequest {
                msg: Some(Msg::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first WriteBlock message must be the header",
                ));
            }
        };
        let downstream = header
            .downstream
            .iter()
            .map(Location::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        if downstream.iter().any(|l| l.id == self.id) {
            return Err(Status::invalid_argument(
                "the pipeline names this datanode twice",
            ));
        }
        let max_length = header.max_length;
        // Refused here, before any byte is accepted, if the block cannot fit.
        let mut local = Some(AsyncBlockWriter::start(&self.store, max_length).await?);
        let mut local_err: Option<Error> = None;
        let mut down = if downstream.is_empty() {
            None
        } else {
            Some(Downstream::start(
                &self.peers,
                &downstream,
                header.upload_id,
                max_length,
                self.write_idle_timeout,
            )?)
        };
        let mut length = 0u64;
        let trailer = loop {
            let next = tokio::time::timeout(self.write_idle_timeout, inbound.message()).await;
            let Ok(next) = next else {
                tracing::info!("write stream idle too long: aborted");
                return Err(Status::deadline_exceeded(format!(
                    "no WriteBlock message for {:?}: aborted",
                    self.write_idle_timeout
                )));
            };
            let msg = match next {
                Ok(Some(WriteBlockRequest { msg: Some(m) })) => m,
                Ok(_) => {
                    return Err(Status::cancelled(
                        "write stream ended before its trailer: aborted",
                    ));
                }
                Err(status) => {
                    tracing::info!(error = %status, "write stream broke: aborted");
                    return Err(status);
                }
            };
            match msg {
                Msg::Data(data) => {
                    length += data.len() as u64;
                    if length > max_length {
                        return Err(Error::TooLong { max: max_length }.into());
                    }
                    self.metrics
                        .bytes_received
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Some(d) = down.as_mut() {
                        d.forward(Msg::Data(data.clone())).await;
                    }
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
        let downstream_result = async {
            match down {
                Some(d) => {
                    let sent = std::time::Instant::now();
                    let r = d.finish().await;
                    self.metrics.downstream_ack_seconds.observe(sent.elapsed());
                    r
                }
                None => (Vec::new(), Vec::new()),
            }
        };
        let (local_result, (down_committed, down_failed)) =
            tokio::join!(local_commit, downstream_result);
        if !down_failed.is_empty() {
            self.metrics
                .downstream_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        let mut committed = Vec::with_capacity(1 + down_committed.len());
        let mut failed = Vec::new();
        match local_result {
            Ok(c) => {
                self.metrics
                    .writes_committed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(block = %id, length = c.length, existed = c.existed, "block committed");
                committed.push(me);
            }
            Err(e) => {
                self.metrics.writes_failed.fetch_add(1, Ordering::Relaxed);
                if down_committed.is_empty() {
                    tracing::info!(block = %id, error = %e, "block write failed");
                    return Err(e.into());
                }
                tracing::warn!(block = %id, error = %e, "local commit failed; downstream holds the block");
                let out_of_space = matches!(e, Error::OutOfSpace { .. });
                failed.push(failure(&me, e.to_string(), out_of_space));
            }
        }
        committed.extend(down_committed);
        failed.extend(down_failed);
        Ok(WriteBlockResponse {
            committed,
            failed,
            length,
        })
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
        let mut down = Downstream::start(
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
        let (committed, failed) = down.finish().await;
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

    type ReadBlockStream = ReceiverStream<Result<ReadBlockResponse, Status>>;

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
        let (tx, rx) = mpsc::channel(READ_QUEUE_DEPTH);
        let node = self.node.clone();
        tokio::spawn(async move {
            let _in_flight = InFlight::new(&node.metrics);
            let mut current = Some((reader, first));
            while let Some((r, piece)) = current.take() {
                let msg = match piece {
                    None => break,
                    Some(Ok(p)) => {
                        node.metrics
                            .bytes_served
                            .fetch_add(p.data.len() as u64, Ordering::Relaxed);
                        Ok(ReadBlockResponse {
                            offset: p.offset,
                            crc32c: p.crc32c,
                            data: p.data,
                        })
                    }
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
        Ok(Response::new(ReceiverStream::new(rx)))
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

/// Bytes of a write request's data message (for tests and clients building streams).
pub fn data_msg(data: Bytes) -> WriteBlockRequest {
    WriteBlockRequest {
        msg: Some(Msg::Data(data)),
    }
}

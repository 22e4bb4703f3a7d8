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
//!
//! Every write, read and transfer must carry a block access token the namenode signed
//! for it (`tokens`; docs/security.md): checked once per stream, before anything is
//! reserved, read or dialed, so only pipelines the namenode issued are accepted.
//!
//! One file per rpc: `write` (`WriteBlock`, and the stream handling `WriteBlocks`
//! shares), `batch` (`WriteBlocks`), `read` (`ReadBlock`), `transfer`
//! (`TransferBlock`); `forward` is the call to the next node of a pipeline; `authz`
//! the table of which role may call each rpc. Every
//! handler runs in a span named after its rpc, carrying the block id (and the upload
//! id where the request has one), so one upload can be followed across nodes.

pub mod authz;
mod batch;
mod forward;
mod read;
mod tokens;
mod transfer;
mod write;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kdfs_core::DatanodeId;
use kdfs_proto::block_token::KeyRing;
use kdfs_proto::pb::datanode_server::{Datanode, DatanodeServer};
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::pb::{
    ReadBlockRequest, ReplicateBlock, TransferBlockResponse, WriteBlockRequest, WriteBlockResponse,
    WriteBlocksResponse,
};
use kdfs_proto::pool::ChannelPool;
use kdfs_proto::transport;
use kdfs_proto::wire::{self, Location};
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::{InFlight, Metrics};
use crate::store::Store;

pub use self::forward::FORWARD_QUEUE_DEPTH;
pub use self::read::{READ_QUEUE_DEPTH, ReadStream, next_piece};

/// What the service, the namenode link and the HTTP endpoints share.
#[derive(Debug)]
pub struct Node {
    pub id: DatanodeId,
    pub store: Store,
    /// Channels to the other datanodes this node forwards to (one per address, dialed
    /// on first use; through mTLS when the node has certificates). Only addresses a
    /// verified token names are dialed; the pool is bounded.
    pub peers: ChannelPool,
    /// The namenode's block keys, to verify block access tokens with (filled by the
    /// namenode link; empty until the first registration).
    pub keys: KeyRing,
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

#[tonic::async_trait]
impl Datanode for DatanodeService {
    #[tracing::instrument(name = "WriteBlock", skip_all, fields(upload, block))]
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

    #[tracing::instrument(name = "WriteBlocks", skip_all, fields(upload))]
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

    #[tracing::instrument(name = "ReadBlock", skip_all, fields(block))]
    async fn read_block(
        &self,
        request: Request<ReadBlockRequest>,
    ) -> Result<Response<Self::ReadBlockStream>, Status> {
        let r = request.into_inner();
        let id = wire::block_id("block_id", &r.block_id)?;
        tracing::Span::current().record("block", tracing::field::display(id));
        self.node.read_block(id, r).await.map(Response::new)
    }

    #[tracing::instrument(name = "TransferBlock", skip_all, fields(block))]
    async fn transfer_block(
        &self,
        request: Request<ReplicateBlock>,
    ) -> Result<Response<TransferBlockResponse>, Status> {
        let r = request.into_inner();
        let id = wire::block_id("block_id", &r.block_id)?;
        tracing::Span::current().record("block", tracing::field::display(id));
        let targets = r
            .targets
            .iter()
            .map(Location::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        self.node
            .transfer(id, &targets, r.token)
            .await
            .map(Response::new)
    }
}

/// Bytes of a write request's data message (for tests and clients building streams).
pub fn data_msg(data: Bytes) -> WriteBlockRequest {
    WriteBlockRequest {
        msg: Some(Msg::Data(data)),
    }
}

//! Uploads: a stream of bytes in, a committed file out (DESIGN.md §6).
//!
//! ```text
//!  source ──► Splitter ──► block task i ───► WriteBlock stream ──► head ─► mid ─► tail
//!  (caller's    │ chunks    (hash block,      (header, 1 MiB data
//!   task)       │           keep chunks        messages, trailer)
//!               ▼           until acked)
//!          file hasher task
//! ```
//!
//! The caller's task only receives bytes and cuts them into `CHUNK_SIZE` pieces on
//! block boundaries; the block's SHA-256 is computed in its block task and the file's
//! SHA-256 in a hasher task, because hashing in the receiving task halves throughput
//! (CRATES.md). A file known to fit in one block (the source's announced length is at
//! most a block) has no hasher task: its id is its only block's hash. Bytes move as
//! `Bytes` (reference-counted): the chunk a block task keeps for recovery is the same
//! allocation that was sent.
//!
//! # Memory bound
//!
//! A block task keeps every chunk of its block until the pipeline acknowledges it, so
//! that a failed pipeline can be replaced without re-reading the source (HDFS keeps a
//! window of unacknowledged packets for the same reason; a whole block is the natural
//! window here because the datanode verifies and commits whole blocks). The first
//! [`MEMORY_PREFIX`] bytes of a block stay in memory; the rest is written, by a
//! blocking task, from the start of an unlinked temp file in
//! [`crate::ClientOptions::spool_dir`] and read back only if the block must be re-sent
//! (the early HDFS client staged blocks on local disk the same way). When the block is
//! done the file goes back to the client's [`SpoolFiles`] (at most
//! [`SPOOL_FILES_KEPT`] idle) for a later block to overwrite: its pages are then
//! already in the page cache, which costs far less than fresh ones. One upload therefore holds at most
//! `MEMORY_PREFIX × blocks_in_flight` bytes plus a few chunks in channels, whatever the
//! file's and the block's size; without a usable spool directory it holds
//! `block_size × blocks_in_flight`. The block's SHA-256 was computed over the original
//! bytes, so a spool that changed them makes every datanode refuse the re-sent block. Across uploads, a client-wide byte budget (a
//! semaphore counted in KiB, [`crate::ClientOptions::upload_budget`], 512 MiB by
//! default) must grant a block its `block_size` (or, for a source of bounded length,
//! what the block can hold: [`Client::upload_at_most`]) before the block starts; excess
//! is returned as soon as the block's real length is known. A block is granted its
//! whole reservation at once, so uploads waiting for budget never hold part of it and
//! cannot deadlock each other; while an upload waits, it stops reading its source and
//! the HTTP client is slowed by TCP back-pressure.
//!
//! Block 0's first pipeline comes with the `BeginUpload` reply when the namenode could
//! choose one (and is used if under [`FIRST_PIPELINE_FRESH`] old), which saves a small
//! upload one namenode round trip; later blocks and every retry call `AllocateBlock`.
//!
//! # Recovery
//!
//! The datanodes' ack lists who committed and who failed. At least `min_replicas`
//! committed: the block is accepted (the namenode heals it to `replication` later).
//! Fewer: the retained chunks are re-sent to a new pipeline from `AllocateBlock` that
//! excludes every node that failed (the head, if the whole call failed) or already
//! holds the block, asking for the replicas still missing (or, if the cluster cannot
//! give that many, just those `min_replicas` still needs), up to `pipeline_attempts`
//! pipelines per block. The error names how many replicas were obtained.
//!
//! # Cancellation
//!
//! Dropping the future returned by [`Client::upload`] aborts its block tasks and
//! hasher (they live in a `JoinSet` / abort-on-drop handles), and a drop guard sends
//! `AbandonUpload` (best effort; the lease expiring is the fallback), so no file record
//! is created. Once every block is acknowledged, `CommitFile` runs in its own task so a
//! disconnect cannot leave the commit half-known.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use kdfs_core::{BlockId, DatanodeId, FileId};
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::wire::{self, Location};
use kdfs_proto::{framed, pb, transport};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use crate::client::{BUDGET_UNIT, Client, FileRecord, NAMENODE_CALL_TIMEOUT, bad_reply, unary};
use crate::error::{BoxError, Error, Result};

/// Chunks queued between the receiving task and a block task or the file hasher.
const QUEUE_CHUNKS: usize = 4;
/// Bytes of each block kept in memory for a re-send; the rest goes to the spool file.
/// 2 MiB since spool files are reused (their writes no longer fill fresh page-cache
/// pages): with 4 MiB, and [`crate::download::READER_QUEUE`] at 4, the gateway's peak
/// RSS for a 1 GiB transfer reached 53–65 MiB, with both at 2 it was 45–52 MiB.
pub const MEMORY_PREFIX: u64 = 2 << 20;
/// Lease renewals happen this many times per lease TTL.
const RENEWALS_PER_TTL: u32 = 3;
/// A block's first AllocateBlock is tried this often when too few nodes are writable,
/// waiting this long (doubling) in between.
const ALLOCATE_TRIES: u32 = 3;
const ALLOCATE_RETRY_DELAY: Duration = Duration::from_millis(250);
/// Block 0's pipeline from BeginUpload is used only this soon after it came (a slow
/// client's first bytes get a pipeline chosen with the namenode's newer view).
const FIRST_PIPELINE_FRESH: Duration = Duration::from_secs(2);

/// The outcome of a successful upload.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub record: FileRecord,
    /// The content was already stored (the first upload's name is kept).
    pub existed: bool,
    /// Fewest replicas acknowledged for any block of this upload (the replication
    /// factor for an empty file, which has no blocks).
    pub replicas: u32,
}

/// A piece of the source, as the splitter hands it to block tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// At most `CHUNK_SIZE` bytes of the current block.
    Chunk(Bytes),
    /// The current block is complete.
    EndOfBlock,
}

/// Cuts a byte stream into blocks of `block_size`, each sent as chunks of at most
/// `chunk_size` bytes. Incoming buffers that already fill a chunk are split without
/// copying; small buffers (multipart parsers yield a few KiB at a time) are coalesced.
#[derive(Debug)]
pub(crate) struct Splitter {
    block_size: u64,
    chunk_size: usize,
    /// Bytes already emitted in the current block.
    in_block: u64,
    buf: BytesMut,
}

impl Splitter {
    pub(crate) fn new(block_size: u64, chunk_size: usize) -> Self {
        assert!(
            block_size > 0 && chunk_size > 0,
            "sizes are checked by the caller"
        );
        Self {
            block_size,
            chunk_size,
            in_block: 0,
            buf: BytesMut::new(),
        }
    }

    /// Size the next chunk must reach before it is emitted.
    fn target(&self) -> usize {
        let left = self.block_size - self.in_block;
        (self.chunk_size as u64).min(left) as usize
    }

    fn emit(&mut self, chunk: Bytes, out: &mut Vec<Piece>) {
        self.in_block += chunk.len() as u64;
        out.push(Piece::Chunk(chunk));
        if self.in_block == self.block_size {
            self.in_block = 0;
            out.push(Piece::EndOfBlock);
        }
    }

    pub(crate) fn push(&mut self, mut data: Bytes, out: &mut Vec<Piece>) {
        while !data.is_empty() {
            let target = self.target();
            if self.buf.is_empty() && data.len() >= target {
                let chunk = data.split_to(target);
                self.emit(chunk, out);
            } else {
                let take = (target - self.buf.len()).min(data.len());
                if self.buf.capacity() == 0 {
                    self.buf.reserve(target);
                }
                self.buf.extend_from_slice(&data.split_to(take));
                if self.buf.len() == target {
                    let chunk = self.buf.split().freeze();
                    self.emit(chunk, out);
                }
            }
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<Piece>) {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.emit(chunk, out);
        }
        if self.in_block > 0 {
            self.in_block = 0;
            out.push(Piece::EndOfBlock);
        }
    }
}

/// What every block task of one upload shares.
struct UploadCtx {
    client: Client,
    upload_id: String,
    block_size: u64,
    replication: usize,
    min_replicas: usize,
    stall: Duration,
    attempts: usize,
    spool_dir: Option<PathBuf>,
    memory_prefix: u64,
    /// Block 0's pipeline from BeginUpload and when it came, taken by block 0's first
    /// attempt if still fresh.
    first_pipeline: std::sync::Mutex<Option<(Vec<Location>, Instant)>>,
    /// The most bytes the source can hold, when known (see [`Client::upload_at_most`]).
    at_most: Option<u64>,
}

impl UploadCtx {
    /// The most bytes block `index` can hold: a whole block, or less when the source's
    /// length is bounded (every block before it is full, so it starts at
    /// `index × block_size`). What its budget and each datanode reserve for it.
    fn block_max_len(&self, index: u64) -> u64 {
        block_max_len(self.block_size, self.at_most, index)
    }
}

fn block_max_len(block_size: u64, at_most: Option<u64>, index: u64) -> u64 {
    match at_most {
        Some(n) => block_size.min(n.saturating_sub(index.saturating_mul(block_size))),
        None => block_size,
    }
}

/// A block acknowledged by at least `min_replicas` datanodes.
struct Committed {
    id: BlockId,
    length: u64,
    replicas: Vec<DatanodeId>,
}

/// Sends `AbandonUpload` when dropped unless disarmed: the one place that makes a
/// dropped or failed upload release its lease at once.
pub(crate) struct AbandonOnDrop {
    pub(crate) client: Client,
    pub(crate) upload_id: String,
    pub(crate) armed: bool,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut nn = self.client.nn();
        let upload_id = std::mem::take(&mut self.upload_id);
        metrics::counter!("kdfs_gateway_uploads_abandoned_total").increment(1);
        rt.spawn(async move {
            let req = pb::AbandonUploadRequest {
                upload_id: upload_id.clone(),
            };
            match tokio::time::timeout(NAMENODE_CALL_TIMEOUT, nn.abandon_upload(req)).await {
                Ok(Ok(_)) => debug!(upload = %upload_id, "upload abandoned"),
                Ok(Err(e)) => {
                    warn!(upload = %upload_id, error = %e, "abandoning upload failed; its lease will expire")
                }
                Err(_) => warn!(upload = %upload_id, "abandoning upload timed out; its lease will expire"),
            }
        });
    }
}

impl Client {
    /// Stores the bytes of `source` as a file named `name` of type `content_type`.
    ///
    /// Memory stays bounded whatever the size (see the module docs). Not
    /// cancellation-safe by design: dropping the future abandons the upload.
    pub async fn upload<S, E>(&self, source: S, name: &str, content_type: &str) -> Result<Uploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        self.upload_at_most(source, name, content_type, None).await
    }

    /// As [`Client::upload`], for a source known to hold at most `at_most` bytes (an
    /// HTTP body's Content-Length): a block that cannot be whole then reserves only
    /// what it can hold, from the client's budget and on each datanode, instead of a
    /// whole block (a 4 KiB file would otherwise hold 64 MiB of room on three disks
    /// while it is written). A source longer than `at_most` fails the upload.
    ///
    /// A source of at most [`transport::MAX_BATCHED_BLOCK`] bytes is read whole and
    /// stored in a batch with the client's other small uploads ([`crate::batch`]),
    /// unless [`crate::ClientOptions::batch_small_files`] is off.
    pub async fn upload_at_most<S, E>(
        &self,
        source: S,
        name: &str,
        content_type: &str,
        at_most: Option<u64>,
    ) -> Result<Uploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        match at_most {
            Some(n)
                if self.inner.options.batch_small_files && n <= transport::MAX_BATCHED_BLOCK =>
            {
                self.upload_small(source, name, content_type, n).await
            }
            _ => self.upload_alone(source, name, content_type, at_most).await,
        }
    }

    /// A source of at most `at_most` (≤ `MAX_BATCHED_BLOCK`) bytes: read whole under
    /// the upload budget, then stored in a batch, or alone if the batch could not.
    async fn upload_small<S, E>(
        &self,
        source: S,
        name: &str,
        content_type: &str,
        at_most: u64,
    ) -> Result<Uploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let inner = &self.inner;
        let permit = inner
            .budget
            .clone()
            .acquire_many_owned(inner.budget_units_for(at_most))
            .await
            .map_err(|_| Error::Internal("upload budget closed".into()))?;
        let data = crate::batch::read_whole(source, at_most).await?;
        if !data.is_empty()
            && let Some(done) = self.upload_batched(data.clone(), name, content_type).await
        {
            return done;
        }
        // An empty file, or one the batch could not store: the pipeline with recovery.
        drop(permit);
        let size = data.len() as u64;
        let source = futures::stream::once(async move { Ok::<_, BoxError>(data) });
        self.upload_alone(source, name, content_type, Some(size))
            .await
    }

    /// One upload with its own lease and pipelines (see the module docs).
    async fn upload_alone<S, E>(
        &self,
        source: S,
        name: &str,
        content_type: &str,
        at_most: Option<u64>,
    ) -> Result<Uploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let begin = unary(
            "BeginUpload",
            self.nn().begin_upload(pb::BeginUploadRequest {
                name: name.to_owned(),
                content_type: content_type.to_owned(),
                replication: self.inner.options.replication,
                // Block 0's pipeline then needs room for only this much.
                max_size: at_most.unwrap_or(0),
            }),
        )
        .await?;
        if begin.block_size == 0 || begin.upload_id.is_empty() {
            return Err(bad_reply("BeginUpload without a lease or block size"));
        }
        let min_replicas = (begin.min_replicas.max(1)) as usize;
        let replication = (begin.replication as usize).max(min_replicas);
        let mut guard = AbandonOnDrop {
            client: self.clone(),
            upload_id: begin.upload_id.clone(),
            armed: true,
        };
        let renewer = CancellationToken::new();
        let _stop_renewing = renewer.clone().drop_guard();
        tokio::spawn(renew_lease(
            self.clone(),
            begin.upload_id.clone(),
            Duration::from_millis(begin.lease_ttl_ms.max(300)),
            renewer,
        ));
        let first_pipeline = parse_pipeline("BeginUpload", &begin.pipeline)?;
        let ctx = Arc::new(UploadCtx {
            client: self.clone(),
            upload_id: begin.upload_id.clone(),
            block_size: begin.block_size,
            replication,
            min_replicas,
            stall: self.inner.options.stall_timeout,
            attempts: self.inner.options.pipeline_attempts.max(1),
            spool_dir: self.inner.options.spool_dir.clone(),
            memory_prefix: self.inner.options.memory_prefix,
            first_pipeline: std::sync::Mutex::new(
                (!first_pipeline.is_empty()).then(|| (first_pipeline, Instant::now())),
            ),
            at_most,
        });
        debug!(upload = %ctx.upload_id, block_size = ctx.block_size, replication, min_replicas, "upload begun");

        // A file that fits in one block (its length bounded by the body's) is that
        // block's bytes: its id is the block's hash, and it is hashed once, not twice.
        let one_block = at_most.is_some_and(|n| n <= ctx.block_size);
        let (hash_tx, hasher) = if one_block {
            (None, None)
        } else {
            let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_CHUNKS * 2);
            let hasher = AbortOnDropHandle::new(tokio::spawn(async move {
                let mut h = Sha256::new();
                while let Some(b) = rx.recv().await {
                    h.update(&b);
                }
                FileId::from_bytes(h.finalize().into())
            }));
            (Some(tx), Some(hasher))
        };

        let mut driver = Driver {
            ctx: ctx.clone(),
            tasks: JoinSet::new(),
            done: BTreeMap::new(),
            current: None,
            next_index: 0,
            hash_tx,
        };
        let mut splitter = Splitter::new(ctx.block_size, transport::CHUNK_SIZE);
        let mut pieces = Vec::new();
        let mut size = 0u64;
        let mut source = std::pin::pin!(source);
        loop {
            let Some(item) = source.next().await else {
                break;
            };
            let data = item.map_err(|e| Error::Source(e.into()))?;
            size += data.len() as u64;
            if let Some(n) = at_most
                && size > n
            {
                return Err(longer_than(n));
            }
            splitter.push(data, &mut pieces);
            for p in pieces.drain(..) {
                driver.feed(p).await?;
            }
        }
        splitter.finish(&mut pieces);
        for p in pieces.drain(..) {
            driver.feed(p).await?;
        }
        let blocks = driver.finish().await?;
        let file_id = match (hasher, blocks.as_slice()) {
            (Some(hasher), _) => hasher
                .await
                .map_err(|e| Error::Internal(format!("file hasher: {e}")))?,
            (None, []) => FileId::of(&[]),
            (None, [block]) => FileId::from_bytes(*block.id.as_bytes()),
            (None, _) => {
                return Err(Error::Internal(
                    "an upload of at most one block made several".into(),
                ));
            }
        };
        metrics::counter!("kdfs_gateway_upload_bytes_total").increment(size);

        let replicas = blocks
            .iter()
            .map(|b| b.replicas.len() as u32)
            .min()
            .unwrap_or(replication as u32);
        let req = pb::CommitFileRequest {
            upload_id: ctx.upload_id.clone(),
            file_id: wire::raw(file_id.as_bytes()),
            size,
            blocks: blocks
                .iter()
                .map(|b| pb::CommittedBlock {
                    id: wire::raw(b.id.as_bytes()),
                    length: b.length,
                    replicas: b.replicas.iter().map(|d| d.to_string()).collect(),
                })
                .collect(),
        };
        // The commit runs to completion in its own task even if this future is dropped;
        // the guard moves with it, so a failed commit still abandons the lease.
        let mut nn = self.nn();
        let commit = tokio::spawn(async move {
            let r = unary("CommitFile", nn.commit_file(req)).await;
            if r.is_ok() {
                guard.armed = false;
            }
            drop(guard);
            r
        });
        let resp = commit
            .await
            .map_err(|e| Error::Internal(format!("commit task: {e}")))??;
        let record = resp
            .file
            .as_ref()
            .ok_or_else(|| bad_reply("CommitFile without a record"))
            .and_then(FileRecord::try_from)?;
        if record.id != file_id {
            return Err(bad_reply("CommitFile returned another file id"));
        }
        metrics::counter!("kdfs_gateway_uploads_total").increment(1);
        info!(file = %file_id, size, blocks = blocks.len(), replicas, existed = resp.existed, "upload committed");
        Ok(Uploaded {
            record,
            existed: resp.existed,
            replicas,
        })
    }
}

/// Renews a lease every TTL/3 until cancelled.
async fn renew_lease(client: Client, upload_id: String, ttl: Duration, stop: CancellationToken) {
    let mut every = ttl / RENEWALS_PER_TTL;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let req = pb::RenewLeaseRequest {
            upload_id: upload_id.clone(),
        };
        match tokio::time::timeout(NAMENODE_CALL_TIMEOUT, client.nn().renew_lease(req)).await {
            Ok(Ok(r)) => {
                let ttl = Duration::from_millis(r.into_inner().lease_ttl_ms.max(300));
                every = ttl / RENEWALS_PER_TTL;
            }
            Ok(Err(e)) => warn!(upload = %upload_id, error = %e, "lease renewal failed"),
            Err(_) => warn!(upload = %upload_id, "lease renewal timed out"),
        }
    }
}

/// Hands pieces to block tasks, keeping at most `blocks_in_flight` of them running.
struct Driver {
    ctx: Arc<UploadCtx>,
    tasks: JoinSet<Result<(u64, Committed)>>,
    done: BTreeMap<u64, Committed>,
    current: Option<mpsc::Sender<Piece>>,
    next_index: u64,
    /// The file hasher's queue; `None` for a file of one block (its id is the block's).
    hash_tx: Option<mpsc::Sender<Bytes>>,
}

impl Driver {
    async fn feed(&mut self, piece: Piece) -> Result<()> {
        match piece {
            Piece::Chunk(chunk) => {
                if self.current.is_none() {
                    self.start_block().await?;
                }
                if let Some(hash_tx) = &self.hash_tx {
                    hash_tx
                        .send(chunk.clone())
                        .await
                        .map_err(|_| Error::Internal("file hasher stopped".into()))?;
                }
                let tx = self.current.as_ref().expect("a block was just started");
                if tx.send(Piece::Chunk(chunk)).await.is_err() {
                    // The block task ended early: it failed; its error is the one to report.
                    return Err(self.first_failure().await);
                }
            }
            Piece::EndOfBlock => {
                if let Some(tx) = self.current.take() {
                    // A closed channel means the task already failed; `finish` reports it.
                    let _ = tx.send(Piece::EndOfBlock).await;
                }
            }
        }
        Ok(())
    }

    fn absorb(
        &mut self,
        joined: std::result::Result<Result<(u64, Committed)>, tokio::task::JoinError>,
    ) -> Result<()> {
        let (index, block) = joined.map_err(|e| Error::Internal(format!("block task: {e}")))??;
        self.done.insert(index, block);
        Ok(())
    }

    async fn start_block(&mut self) -> Result<()> {
        while let Some(j) = self.tasks.try_join_next() {
            self.absorb(j)?;
        }
        let limit = self.ctx.client.inner.options.blocks_in_flight.max(1);
        while self.tasks.len() >= limit {
            let j = self.tasks.join_next().await.expect("the set is not empty");
            self.absorb(j)?;
        }
        let inner = &self.ctx.client.inner;
        let index = self.next_index;
        let max_len = self.ctx.block_max_len(index);
        let units = inner.budget_units_for(max_len);
        let permit = inner
            .budget
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| Error::Internal("upload budget closed".into()))?;
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        self.next_index += 1;
        let ctx = self.ctx.clone();
        self.tasks.spawn(async move {
            write_block(ctx, index, rx, permit)
                .await
                .map(|c| (index, c))
        });
        self.current = Some(tx);
        Ok(())
    }

    /// The error of the first block task that failed (called when one hung up early).
    async fn first_failure(&mut self) -> Error {
        while let Some(j) = self.tasks.join_next().await {
            if let Err(e) = self.absorb(j) {
                return e;
            }
        }
        Error::Internal("a block task stopped without an error".into())
    }

    async fn finish(mut self) -> Result<Vec<Committed>> {
        drop(self.current.take());
        while let Some(j) = self.tasks.join_next().await {
            self.absorb(j)?;
        }
        let blocks: Vec<Committed> = std::mem::take(&mut self.done).into_values().collect();
        if blocks.len() as u64 != self.next_index {
            return Err(Error::Internal("a block went missing".into()));
        }
        Ok(blocks)
    }
}

/// One attempt to write a block down one pipeline.
struct Attempt {
    pipeline: Vec<Location>,
    /// `None` once the stream broke (the receiver is gone or stalled).
    tx: Option<mpsc::Sender<pb::WriteBlockRequest>>,
    call: AbortOnDropHandle<std::result::Result<pb::WriteBlockResponse, tonic::Status>>,
    stall: Duration,
}

impl Attempt {
    /// Opens a WriteBlock stream to the pipeline's head for a block of at most
    /// `max_length` bytes.
    async fn start(ctx: &UploadCtx, pipeline: Vec<Location>, max_length: u64) -> Result<Self> {
        let head = pipeline
            .first()
            .ok_or_else(|| bad_reply("AllocateBlock returned an empty pipeline"))?;
        let channel = ctx.client.inner.pool.channel(&head.address)?;
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        // Through `framed`: the block's bytes go out without a copy.
        let call = AbortOnDropHandle::new(tokio::spawn(framed::client_streaming(
            channel,
            ReceiverStream::new(rx),
        )));
        let mut a = Self {
            tx: Some(tx),
            call,
            stall: ctx.stall,
            pipeline,
        };
        let header = pb::WriteHeader {
            downstream: a.pipeline[1..]
                .iter()
                .map(pb::DatanodeLocation::from)
                .collect(),
            upload_id: ctx.upload_id.clone(),
            max_length,
        };
        a.send(Msg::Header(header)).await;
        Ok(a)
    }

    /// Sends one message; a failure or a stall marks the stream broken (the outcome
    /// is then read from the call's result).
    async fn send(&mut self, msg: Msg) {
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

    /// Sends the trailer and waits for the ack. A failure of the whole call says
    /// whether the head refused the block for lack of room.
    async fn finish(
        mut self,
        id: BlockId,
    ) -> std::result::Result<pb::WriteBlockResponse, (String, bool)> {
        self.send(Msg::Trailer(pb::WriteTrailer {
            block_id: wire::raw(id.as_bytes()),
        }))
        .await;
        let broken = self.tx.is_none();
        drop(self.tx.take());
        // The ack comes after every node verified, fsynced and heard from its successor.
        let wait = self.stall * 2;
        match tokio::time::timeout(wait, &mut self.call).await {
            Err(_) => Err((format!("no ack within {wait:?}"), false)),
            Ok(Err(e)) if broken => Err((format!("stream broke: {e}"), false)),
            Ok(Err(e)) => Err((format!("write task: {e}"), false)),
            Ok(Ok(Err(status))) => Err((
                format!("{}: {}", status.code(), status.message()),
                status.code() == tonic::Code::ResourceExhausted,
            )),
            Ok(Ok(Ok(resp))) => Ok(resp),
        }
    }
}

/// Writes one block: streams it as it arrives, keeps its chunks until it is
/// acknowledged, and recovers from failed pipelines (see the module docs).
async fn write_block(
    ctx: Arc<UploadCtx>,
    index: u64,
    mut input: mpsc::Receiver<Piece>,
    mut permit: OwnedSemaphorePermit,
) -> Result<Committed> {
    let pipeline = allocate_patiently(&ctx, index).await?;
    let mut attempt = Attempt::start(&ctx, pipeline, ctx.block_max_len(index)).await?;
    let mut retained = Retained::new(
        ctx.spool_dir.clone(),
        ctx.memory_prefix,
        ctx.client.inner.spool_files.clone(),
    );
    let mut hasher = Sha256::new();
    let mut length = 0u64;
    loop {
        match input.recv().await {
            Some(Piece::Chunk(c)) => {
                hasher.update(&c);
                length += c.len() as u64;
                attempt.send(Msg::Data(c.clone())).await;
                retained.push(c).await;
            }
            Some(Piece::EndOfBlock) => break,
            // The upload was dropped or failed before the block ended.
            None => return Err(Error::Internal("upload stopped mid-block".into())),
        }
    }
    // Give back the part of the reservation this (last, short) block does not use.
    let used = length.div_ceil(BUDGET_UNIT) as usize;
    if permit.num_permits() > used {
        let excess = permit.num_permits() - used;
        drop(permit.split(excess));
    }
    let id = BlockId::from_bytes(hasher.finalize().into());

    let mut committed: Vec<DatanodeId> = Vec::new();
    // Nodes named as failed by a pipeline (suspects: maybe just cut off by another
    // node's failure), and heads whose whole call failed (surely unusable for now).
    let mut failed: BTreeSet<DatanodeId> = BTreeSet::new();
    let mut dead: BTreeSet<DatanodeId> = BTreeSet::new();
    let mut last_error = String::new();
    // Whether every failed attempt failed because a node had no room for the block:
    // then giving up is "out of space" (507), not a shortage of datanodes (503). The
    // namenode's view of free space is a heartbeat old, so a node it picked may refuse.
    let mut only_space = true;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let pipeline = attempt.pipeline.clone();
        match attempt.finish(id).await {
            Ok(resp) if resp.length != length => {
                last_error = format!("pipeline wrote {} bytes, sent {length}", resp.length);
                only_space = false;
                failed.extend(pipeline.iter().map(|l| l.id));
            }
            Ok(resp) => {
                add_acks(&mut committed, &resp.committed);
                // Exclude the nodes the pipeline named as failed. A node after a failed
                // one did not fail itself (it just never got the bytes), so it stays
                // eligible. With no names, blame the first node that did not commit.
                let named: Vec<DatanodeId> = resp
                    .failed
                    .iter()
                    .filter_map(|f| {
                        pipeline
                            .iter()
                            .find(|l| l.id.to_string() == f.node || l.address == f.node)
                            .map(|l| l.id)
                    })
                    .collect();
                if named.is_empty() {
                    if let Some(l) = pipeline.iter().find(|l| !committed.contains(&l.id)) {
                        failed.insert(l.id);
                    }
                } else {
                    failed.extend(named);
                }
                // The first failure is the cause; the ones after it were not reached.
                match resp.failed.first() {
                    Some(f) => {
                        last_error = format!("{}: {}", f.node, f.reason);
                        only_space &= f.out_of_space;
                    }
                    None if committed.len() < ctx.min_replicas => only_space = false,
                    None => {}
                }
            }
            Err((e, out_of_space)) => {
                // The head failed (or the stream to it): nothing of this attempt is durable.
                last_error = format!("{}: {e}", pipeline[0].address);
                only_space &= out_of_space;
                dead.insert(pipeline[0].id);
            }
        }
        if committed.len() >= ctx.min_replicas {
            if committed.len() < ctx.replication {
                info!(block = %id, index, replicas = committed.len(), wanted = ctx.replication,
                    "block accepted with fewer replicas than wanted; the namenode will heal it");
            }
            metrics::counter!("kdfs_gateway_blocks_written_total").increment(1);
            drop(retained);
            drop(permit);
            return Ok(Committed {
                id,
                length,
                replicas: committed,
            });
        }
        let not_enough = |last_error: String| {
            let e = Error::NotEnoughReplicas {
                index,
                obtained: committed.len(),
                needed: ctx.min_replicas,
                attempts,
                last_error,
            };
            if only_space {
                Error::NoSpace(format!(
                    "every pipeline attempt was refused for lack of room: {e}"
                ))
            } else {
                e
            }
        };
        if attempts >= ctx.attempts {
            return Err(not_enough(last_error));
        }
        warn!(block = %id, index, committed = committed.len(), needed = ctx.min_replicas,
            error = %last_error, "pipeline failed; re-sending the block to a new pipeline");
        metrics::counter!("kdfs_gateway_pipeline_recoveries_total").increment(1);
        // Ask for enough to reach `replication`, excluding every suspect; if the
        // cluster cannot give that, settle for what `min_replicas` still needs, and
        // then give the suspects (not the dead heads) another chance.
        let mut strict: BTreeSet<DatanodeId> = failed.union(&dead).copied().collect();
        strict.extend(committed.iter().copied());
        let mut lenient: BTreeSet<DatanodeId> = dead.clone();
        lenient.extend(committed.iter().copied());
        let wanted = (ctx.replication - committed.len()) as u32;
        let needed = (ctx.min_replicas - committed.len()) as u32;
        let mut pipeline = Err(Error::NotEnoughDatanodes(String::new()));
        for (exclude, replicas) in [
            (&strict, wanted),
            (&strict, needed),
            (&lenient, wanted),
            (&lenient, needed),
        ] {
            pipeline = allocate(&ctx, index, exclude, replicas, length).await;
            if !matches!(pipeline, Err(Error::NotEnoughDatanodes(_))) {
                break;
            }
        }
        let pipeline = match pipeline {
            Ok(p) => p,
            // No node has room for the rest: that is out of space (507), not a
            // shortage of live datanodes (503).
            Err(Error::NoSpace(msg)) => {
                return Err(Error::NoSpace(format!(
                    "block {index} got {} of the {} replicas required: {last_error}; no new pipeline: {msg}",
                    committed.len(),
                    ctx.min_replicas
                )));
            }
            Err(e @ Error::NotEnoughDatanodes(_)) => {
                return Err(not_enough(format!("{last_error}; no new pipeline: {e}")));
            }
            Err(e) => return Err(e),
        };
        // The block's length is known now: a new pipeline reserves exactly that.
        attempt = Attempt::start(&ctx, pipeline, length).await?;
        if let Err(why) = retained.replay(&mut attempt).await {
            return Err(not_enough(format!(
                "{last_error}; cannot re-send the block: {why}"
            )));
        }
    }
}

/// Set once a spool file could not be created, so the fallback is logged only once.
static SPOOL_WARNED: AtomicBool = AtomicBool::new(false);

/// Idle spool files a client keeps for later blocks (each up to a block's size on disk).
pub const SPOOL_FILES_KEPT: usize = 4;

/// Spool files of finished blocks, kept so that the next block overwrites pages that
/// are already in the page cache instead of filling fresh ones: on these VMs a write
/// into fresh page-cache pages cost ~2 ns/byte, an overwrite of cached pages a
/// sixteenth of that (BENCHMARKS.md, "Datanode block writes past the page cache"; the
/// gateway's upload CPU fell by a sixth with reuse, "Reads past the page cache, reused
/// spool files, …"). The files stay unlinked; what a block reads back is only what it
/// wrote itself (its chunks' offsets and lengths).
#[derive(Debug, Default)]
pub(crate) struct SpoolFiles {
    idle: std::sync::Mutex<Vec<File>>,
}

impl SpoolFiles {
    fn take(&self) -> Option<File> {
        self.idle.lock().expect("spool file list poisoned").pop()
    }

    /// Keeps `file` for another block, unless enough are kept already.
    fn give_back(&self, file: File) {
        let mut idle = self.idle.lock().expect("spool file list poisoned");
        if idle.len() < SPOOL_FILES_KEPT {
            idle.push(file);
        }
    }

    /// Idle files kept now (tests).
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().expect("spool file list poisoned").len()
    }
}

/// A block's chunks, kept until the block is acknowledged (see "Memory bound").
struct Retained {
    /// The first chunks (at least up to `prefix` bytes), in memory.
    head: Vec<Bytes>,
    head_bytes: u64,
    prefix: u64,
    /// Where the rest goes; `None` keeps everything in memory.
    dir: Option<PathBuf>,
    /// The client's idle spool files: one is taken for this block's spool and given
    /// back when the block is done with it.
    files: Arc<SpoolFiles>,
    spool: Option<Spool>,
    /// Why the spool lost bytes: the block can then not be re-sent.
    broken: Option<String>,
}

/// The chunks after the memory prefix, written from offset 0 of an unlinked file (new,
/// or one a finished block gave back) by a blocking task.
struct Spool {
    tx: Option<mpsc::Sender<Bytes>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<File>>>,
    file: Option<Arc<File>>,
    /// Offset and length of every spooled chunk.
    chunks: Vec<(u64, usize)>,
    len: u64,
}

impl Drop for Retained {
    /// Gives the spool file back for another block once its writer is done (a file
    /// whose writer failed is dropped with its error).
    fn drop(&mut self) {
        let Some(spool) = self.spool.take() else {
            return;
        };
        if self.broken.is_some() {
            return;
        }
        let files = self.files.clone();
        drop(spool.tx); // The writer ends after what it was sent.
        if let Some(task) = spool.task {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Ok(Ok(file)) = task.await {
                        files.give_back(file);
                    }
                });
            }
        } else if let Some(file) = spool.file.and_then(|f| Arc::try_unwrap(f).ok()) {
            files.give_back(file);
        }
    }
}

impl Retained {
    fn new(dir: Option<PathBuf>, prefix: u64, files: Arc<SpoolFiles>) -> Self {
        Self {
            head: Vec::new(),
            head_bytes: 0,
            prefix,
            dir,
            files,
            spool: None,
            broken: None,
        }
    }

    fn keep_in_memory(&mut self, chunk: Bytes) {
        self.head_bytes += chunk.len() as u64;
        self.head.push(chunk);
    }

    async fn push(&mut self, chunk: Bytes) {
        if self.spool.is_none() && (self.dir.is_none() || self.head_bytes < self.prefix) {
            return self.keep_in_memory(chunk);
        }
        if self.spool.is_none() {
            let created = match self.files.take() {
                Some(file) => Ok(file),
                None => {
                    let dir = self.dir.clone().expect("checked above");
                    tokio::task::spawn_blocking(move || tempfile::tempfile_in(&dir))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                }
            };
            match created {
                Ok(file) => {
                    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_CHUNKS);
                    let task = tokio::task::spawn_blocking(move || {
                        let mut at = 0u64;
                        while let Some(b) = rx.blocking_recv() {
                            file.write_all_at(&b, at)?;
                            at += b.len() as u64;
                        }
                        Ok(file)
                    });
                    self.spool = Some(Spool {
                        tx: Some(tx),
                        task: Some(task),
                        file: None,
                        chunks: Vec::new(),
                        len: 0,
                    });
                }
                Err(why) => {
                    if !SPOOL_WARNED.swap(true, Ordering::Relaxed) {
                        warn!(dir = %self.dir.as_ref().expect("checked above").display(), error = %why,
                            "cannot create a spool file: blocks awaiting their ack stay in memory");
                    }
                    self.dir = None;
                    return self.keep_in_memory(chunk);
                }
            }
        }
        let spool = self.spool.as_mut().expect("created above");
        spool.chunks.push((spool.len, chunk.len()));
        spool.len += chunk.len() as u64;
        let sent = match &spool.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if !sent && self.broken.is_none() {
            // The writer stopped: its error says why.
            spool.tx = None;
            let why = match spool.task.take() {
                Some(t) => match t.await {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "spool writer stopped".to_owned(),
                    Err(e) => e.to_string(),
                },
                None => "spool writer stopped".to_owned(),
            };
            warn!(error = %why, "spooling a block failed: it cannot be re-sent if its pipeline fails");
            self.broken = Some(format!("spool file: {why}"));
        }
    }

    /// Number of chunks kept.
    fn len(&self) -> usize {
        self.head.len() + self.spool.as_ref().map_or(0, |s| s.chunks.len())
    }

    /// Chunk `i` (in the order pushed), read back from the spool if it is there.
    async fn get(&mut self, i: usize) -> std::result::Result<Bytes, String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        if let Some(c) = self.head.get(i) {
            return Ok(c.clone());
        }
        let spool = self.spool.as_mut().ok_or("no such chunk")?;
        let (offset, len) = *spool
            .chunks
            .get(i - self.head.len())
            .ok_or("no such chunk")?;
        if spool.file.is_none() {
            // Everything is pushed by now: let the writer finish and take its file.
            spool.tx = None;
            let task = spool.task.take().ok_or("spool writer lost")?;
            let file = match task.await {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => return Err(format!("spool file: {e}")),
                Err(e) => return Err(format!("spool writer: {e}")),
            };
            spool.file = Some(Arc::new(file));
        }
        let file = spool.file.clone().expect("set above");
        tokio::task::spawn_blocking(move || {
            let mut buf = BytesMut::zeroed(len);
            file.read_exact_at(&mut buf, offset).map(|()| buf.freeze())
        })
        .await
        .map_err(|e| format!("spool reader: {e}"))?
        .map_err(|e| format!("reading the spool file: {e}"))
    }

    /// Sends every retained chunk again, in order, down `attempt`.
    async fn replay(&mut self, attempt: &mut Attempt) -> std::result::Result<(), String> {
        for i in 0..self.len() {
            let c = self.get(i).await?;
            attempt.send(Msg::Data(c)).await;
        }
        Ok(())
    }
}

/// The first pipeline of a block. "Not enough live datanodes" is retried a few times
/// over about a second: under load a node can miss a heartbeat and be stale for a
/// moment; a cluster that really lacks nodes still fails fast enough for a 503.
async fn allocate_patiently(ctx: &UploadCtx, index: u64) -> Result<Vec<Location>> {
    if index == 0 {
        let given = ctx.first_pipeline.lock().expect("lock poisoned").take();
        if let Some((pipeline, at)) = given
            && at.elapsed() < FIRST_PIPELINE_FRESH
        {
            return Ok(pipeline);
        }
    }
    let room = ctx.block_max_len(index);
    let mut delay = ALLOCATE_RETRY_DELAY;
    for _ in 1..ALLOCATE_TRIES {
        match allocate(ctx, index, &BTreeSet::new(), 0, room).await {
            Err(Error::NotEnoughDatanodes(e)) => {
                debug!(index, error = %e, "no pipeline yet; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            r => return r,
        }
    }
    allocate(ctx, index, &BTreeSet::new(), 0, room).await
}

/// The error of a source that holds more than the `at_most` bytes it announced.
pub(crate) fn longer_than(at_most: u64) -> Error {
    Error::Source(format!("the source is longer than the {at_most} bytes it announced").into())
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

/// Asks the namenode for a pipeline for block `index` on nodes with room for
/// `max_length` bytes (what the attempt will reserve on each).
async fn allocate(
    ctx: &UploadCtx,
    index: u64,
    exclude: &BTreeSet<DatanodeId>,
    replicas: u32,
    max_length: u64,
) -> Result<Vec<Location>> {
    let resp = unary(
        "AllocateBlock",
        ctx.client.nn().allocate_block(pb::AllocateBlockRequest {
            upload_id: ctx.upload_id.clone(),
            block_index: index,
            exclude: exclude.iter().map(|d| d.to_string()).collect(),
            replicas,
            max_length,
        }),
    )
    .await?;
    let pipeline = parse_pipeline("AllocateBlock", &resp.pipeline)?;
    if pipeline.is_empty() {
        return Err(bad_reply("AllocateBlock returned an empty pipeline"));
    }
    Ok(pipeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_source_reserves_at_most_what_each_block_can_hold() {
        let b = 1 << 20;
        assert_eq!(block_max_len(b, None, 0), b);
        assert_eq!(block_max_len(b, None, 7), b);
        // A 4 KiB file in a multipart body of 4,300 bytes.
        assert_eq!(block_max_len(b, Some(4300), 0), 4300);
        // 2.5 blocks: two whole ones, then the half.
        let n = 2 * b + b / 2;
        assert_eq!(block_max_len(b, Some(n), 0), b);
        assert_eq!(block_max_len(b, Some(n), 1), b);
        assert_eq!(block_max_len(b, Some(n), 2), b / 2);
        // Past the bound (never started: no byte can arrive there).
        assert_eq!(block_max_len(b, Some(n), 3), 0);
        assert_eq!(block_max_len(b, Some(n), u64::MAX), 0);
    }

    /// Feeds `inputs` (sizes of incoming buffers) through a splitter and returns the
    /// blocks as lists of chunk sizes.
    fn split(block: u64, chunk: usize, inputs: &[usize]) -> Vec<Vec<usize>> {
        let mut s = Splitter::new(block, chunk);
        let mut out = Vec::new();
        let mut n = 0u8;
        for &len in inputs {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    n = n.wrapping_add(1);
                    n
                })
                .collect();
            s.push(Bytes::from(data), &mut out);
        }
        s.finish(&mut out);
        let mut blocks = vec![];
        let mut cur = vec![];
        let mut all = Vec::new();
        for p in out {
            match p {
                Piece::Chunk(c) => {
                    assert!(!c.is_empty(), "no empty chunks");
                    all.extend_from_slice(&c);
                    cur.push(c.len());
                }
                Piece::EndOfBlock => blocks.push(std::mem::take(&mut cur)),
            }
        }
        assert!(cur.is_empty(), "every chunk belongs to a closed block");
        // Order and content are preserved.
        let total: usize = inputs.iter().sum();
        let mut n = 0u8;
        let want: Vec<u8> = (0..total)
            .map(|_| {
                n = n.wrapping_add(1);
                n
            })
            .collect();
        assert_eq!(all, want);
        blocks
    }

    /// (block size, chunk size, incoming buffers, expected blocks of chunk sizes)
    type Case = (u64, usize, &'static [usize], &'static [&'static [usize]]);

    #[test]
    fn splitting_into_blocks_and_chunks() {
        let cases: &[Case] = &[
            (10, 4, &[], &[]),
            (10, 4, &[0], &[]),
            (10, 4, &[1], &[&[1]]),
            (10, 4, &[10], &[&[4, 4, 2]]),
            (10, 4, &[9], &[&[4, 4, 1]]),
            (10, 4, &[11], &[&[4, 4, 2], &[1]]),
            (10, 4, &[25], &[&[4, 4, 2], &[4, 4, 2], &[4, 1]]),
            // Small buffers are coalesced up to the chunk size.
            (10, 4, &[1, 1, 1, 1, 1], &[&[4, 1]]),
            (10, 4, &[3, 3, 3, 3], &[&[4, 4, 2], &[2]]),
            // A chunk never straddles a block boundary.
            (6, 4, &[5, 5], &[&[4, 2], &[4]]),
            (8, 8, &[3, 3, 3, 3, 3, 3], &[&[8], &[8], &[2]]),
            (4, 8, &[20], &[&[4], &[4], &[4], &[4], &[4]]),
        ];
        for &(block, chunk, inputs, want) in cases {
            let got = split(block, chunk, inputs);
            let want: Vec<Vec<usize>> = want.iter().map(|b| b.to_vec()).collect();
            assert_eq!(got, want, "block {block}, chunk {chunk}, inputs {inputs:?}");
        }
    }

    #[tokio::test]
    async fn retained_chunks_come_back_from_memory_and_spool() {
        let dir = tempfile::tempdir().unwrap();
        let chunks: Vec<Bytes> = (0..6u8)
            .map(|i| Bytes::from(vec![i; 1000 + i as usize]))
            .collect();
        for (spool_dir, prefix) in [
            (Some(dir.path().to_path_buf()), 0),
            (Some(dir.path().to_path_buf()), 2500),
            (None, 0),
            (Some(dir.path().join("missing")), 0),
        ] {
            let mut r = Retained::new(spool_dir.clone(), prefix, Arc::default());
            for c in &chunks {
                r.push(c.clone()).await;
            }
            assert_eq!(r.len(), chunks.len());
            let spooled = r.spool.as_ref().map_or(0, |s| s.chunks.len());
            let want_spooled = match (&spool_dir, prefix) {
                (Some(d), 0) if d.exists() => 6,
                (Some(d), _) if d.exists() => 3, // 1000 + 1001 + 1002 reach 2500
                _ => 0,
            };
            assert_eq!(spooled, want_spooled, "{spool_dir:?} {prefix}");
            // Twice: a second re-send reads the same bytes again.
            for _ in 0..2 {
                for (i, c) in chunks.iter().enumerate() {
                    assert_eq!(&r.get(i).await.unwrap(), c, "chunk {i}");
                }
            }
        }
    }

    /// Waits (with a deadline) until `files` holds `n` idle spool files.
    async fn idle_files(files: &SpoolFiles, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while files.idle() != n {
            assert!(
                Instant::now() < deadline,
                "{} idle spool files, not {n}",
                files.idle()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_spool_file_given_back_serves_the_next_block_its_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let files = Arc::new(SpoolFiles::default());
        let spool = Some(dir.path().to_path_buf());
        // A long block leaves its bytes in the file it gives back.
        let mut a = Retained::new(spool.clone(), 0, files.clone());
        for i in 0..4u8 {
            a.push(Bytes::from(vec![0xA0 + i; 5000])).await;
        }
        assert_eq!(&a.get(3).await.unwrap()[..], &[0xA3; 5000][..]);
        drop(a); // Given back after its last get (the writer was joined then).
        idle_files(&files, 1).await;
        // A shorter block overwrites the same file from its start and reads back only
        // its own chunks, also after the writer is joined by a first re-send.
        let mut b = Retained::new(spool.clone(), 0, files.clone());
        let chunks: Vec<Bytes> = (0..3u8)
            .map(|i| Bytes::from(vec![0xB0 + i; 700 + i as usize]))
            .collect();
        for c in &chunks {
            b.push(c.clone()).await;
        }
        idle_files(&files, 0).await; // b took it.
        for _ in 0..2 {
            for (i, c) in chunks.iter().enumerate() {
                assert_eq!(&b.get(i).await.unwrap(), c, "chunk {i}");
            }
        }
        // A block dropped while its writer may still run gives the file back too, and
        // no more than SPOOL_FILES_KEPT are kept.
        drop(b);
        idle_files(&files, 1).await;
        let many: Vec<Retained> = futures::future::join_all((0..SPOOL_FILES_KEPT + 2).map(|_| {
            let (spool, files) = (spool.clone(), files.clone());
            async move {
                let mut r = Retained::new(spool, 0, files);
                r.push(Bytes::from_static(b"x")).await;
                r
            }
        }))
        .await;
        drop(many);
        idle_files(&files, SPOOL_FILES_KEPT).await;
        // Nothing was left under the spool directory: the files are unlinked.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn large_buffers_are_split_without_copying() {
        let data = Bytes::from(vec![7u8; 10]);
        let ptr = data.as_ptr();
        let mut s = Splitter::new(100, 4);
        let mut out = Vec::new();
        s.push(data, &mut out);
        match &out[0] {
            Piece::Chunk(c) => assert_eq!(c.as_ptr(), ptr, "first chunk shares the buffer"),
            p => panic!("unexpected {p:?}"),
        }
    }
}

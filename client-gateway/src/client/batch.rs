//! Small files in batches: concurrent small uploads share their namenode calls and
//! their pipeline streams.
//!
//! ```text
//!  upload A ─┐                       one BeginUpload (a lease and a pipeline)
//!  upload B ─┼─► queue ─► batch ───► one WriteBlocks stream: head ─► mid ─► tail
//!  upload C ─┘                       one CommitFiles
//! ```
//!
//! An upload whose source is bounded by at most [`transport::MAX_BATCHED_BLOCK`] bytes
//! (a small file in a multipart body) is read whole and hashed (its only block's
//! SHA-256 is its id), then queued for the client's batcher. One batch is out at a time
//! ([`BATCHES_IN_FLIGHT`]). Once it has ended, the batcher takes every file queued (up
//! to [`transport::MAX_BATCH_FILES`] files and [`transport::MAX_BATCH_BYTES`] bytes) and
//! waits, at most the client's `batch_linger` after the last batch ended, until as many
//! files are here as that batch carried (`Pace`): the uploads it answered usually
//! come back with their next file at once, and one large batch costs far less per file
//! than two small ones. A lone upload, or one after a pause, goes out at once. The
//! batch is one upload: one `BeginUpload` (asked for as its first file is taken), one
//! `WriteBlocks` stream down the pipeline it came with, carrying every block, and one
//! `CommitFiles`. What a small upload costs is mostly the gRPC stack's work per call
//! and per stream and two `syncfs` per datanode and batch; a batch pays them once
//! (docs/decisions/0008-small-file-batches.md). With a linger of zero a batch frees its
//! slot once its blocks are written and the next one leaves with whatever is queued.
//!
//! # Failures
//!
//! A batch is a fast path, never the only one. A file it could not store (no pipeline
//! now, a broken stream, fewer than `min_replicas` acks for its block, a batch call that
//! failed) goes back to its caller, which uploads it alone through the pipeline with
//! recovery of [`super::upload`], and so gets that path's answer (503, 507, …); when
//! no namenode (leader) could be reached every file gets that 503 at once. A file
//! the namenode refused at `CommitFiles` (its name, or a delete of the same content
//! racing with it) gets that refusal, as `CommitFile` would have given it; one that met
//! a record of its id with other blocks goes alone too, to settle that conflict. The blocks of
//! a batch that did not commit are left to the namenode's orphan collection, as those
//! of any abandoned upload.
//!
//! Once a file's bytes are read and queued, its upload finishes even if its caller goes
//! away (a batch never waits on one of its callers).
//!
//! # Memory
//!
//! A queued file holds its bytes (at most `MAX_BATCHED_BLOCK`) under the client's
//! upload budget, as a block of a streamed upload does; the queue holds at most
//! [`QUEUE`] files and a full queue makes uploads wait to join it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use kdfs_core::{BlockId, DatanodeId, FileId};
use kdfs_proto::namenodes::Retry;
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::wire;
use kdfs_proto::{framed, pb, transport};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::field::Empty;
use tracing::{Span, debug, info, instrument, warn};

use super::lease::AbandonOnDrop;
use super::model::{FileRecord, Uploaded};
use super::rpc::{Pipeline, add_acks, bad_reply, parse_pipeline};
use super::{Client, Inner};
use crate::error::{Error, Result};

/// Batches writing their blocks at once; files arriving meanwhile wait for the next
/// one, so a batch grows with the load: fewer, larger batches cost less CPU per file
/// (docs/decisions/0008-small-file-batches.md). A batch that hangs frees its slot after
/// [`SLOT_HELD`].
pub const BATCHES_IN_FLIGHT: usize = 1;
/// A batch slower than this frees its slot for the next batch.
pub const SLOT_HELD: Duration = Duration::from_secs(1);
/// Files waiting for a batch, at most.
pub const QUEUE: usize = 2 * transport::MAX_BATCH_FILES;
/// Files up to this size are hashed on the async worker; larger ones on a blocking
/// thread, so hashing a large one does not hold up the other tasks of its worker.
const HASH_INLINE: usize = 64 << 10;
/// The lease's name: every file of a batch brings its own to `CommitFiles`.
const LEASE_NAME: &str = "small-file batch";

/// The client's batcher, started by the first small upload (it needs a runtime).
#[derive(Default)]
pub(crate) struct Batcher {
    queue: OnceLock<mpsc::Sender<Queued>>,
    batches: AtomicU64,
    stored: AtomicU64,
}

/// What a client's batcher did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches written (each one `BeginUpload`, `WriteBlocks` and `CommitFiles`).
    pub batches: u64,
    /// Files those batches committed.
    pub files: u64,
}

/// A small file waiting for a batch, and where its outcome goes: `None` means the
/// batch did not store it and its caller must upload it alone.
struct Queued {
    name: String,
    content_type: String,
    data: Bytes,
    id: BlockId,
    /// Committed for the bucket/key namespace (`object_content`).
    object_content: bool,
    reply: oneshot::Sender<Option<Result<Uploaded>>>,
}

impl Client {
    /// Stores a small file (1 to `MAX_BATCHED_BLOCK` bytes) in a batch with the other
    /// small uploads of this client. `None`: the batch could not store it; the caller
    /// uploads it alone.
    pub(crate) async fn upload_batched(
        &self,
        data: Bytes,
        name: &str,
        content_type: &str,
        object_content: bool,
    ) -> Option<Result<Uploaded>> {
        debug_assert!(!data.is_empty() && data.len() as u64 <= transport::MAX_BATCHED_BLOCK);
        let id = if data.len() <= HASH_INLINE {
            BlockId::of(&data)
        } else {
            let d = data.clone();
            tokio::task::spawn_blocking(move || BlockId::of(&d))
                .await
                .ok()?
        };
        // A small file's id is its only block's hash.
        Span::current().record("file", tracing::field::display(id));
        let (reply, outcome) = oneshot::channel();
        let queued = Queued {
            name: name.to_owned(),
            content_type: content_type.to_owned(),
            data,
            id,
            object_content,
            reply,
        };
        self.inner
            .batcher
            .queue(&self.inner)
            .send(queued)
            .await
            .ok()?;
        // A batch task that died (its runtime shut down) drops the sender: upload alone.
        outcome.await.ok().flatten()
    }
}

impl Client {
    /// What this client's batcher did so far.
    pub fn batch_stats(&self) -> BatchStats {
        let b = &self.inner.batcher;
        BatchStats {
            batches: b.batches.load(Ordering::Relaxed),
            files: b.stored.load(Ordering::Relaxed),
        }
    }
}

impl Batcher {
    fn queue(&self, inner: &Arc<Inner>) -> &mpsc::Sender<Queued> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            // Weak: the task must not keep the client alive; it ends with the client.
            tokio::spawn(gather(Arc::downgrade(inner), rx));
            tx
        })
    }
}

/// The batcher task: waits for a free slot, then takes every queued file as a batch
/// (after lingering for the files the last batch's uploads bring back, see [`Pace`]).
async fn gather(inner: Weak<Inner>, mut queue: mpsc::Receiver<Queued>) {
    let Some(linger) = inner.upgrade().map(|i| i.options.batch_linger) else {
        return;
    };
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let pace = Arc::new(Pace::new());
    let mut held_over: Option<Queued> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held_over.take() {
            Some(q) => q,
            None => match queue.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        // Dropping the batch (the client is gone) answers its callers `None`.
        let Some(inner) = inner.upgrade() else { return };
        let client = Client { inner };
        // The lease is asked for now, while the batch gathers its files.
        let lease = tokio::spawn({
            let client = client.clone();
            async move { client.begin_batch().await }
        });
        let bytes = first.data.len() as u64;
        let mut taking = Taking {
            batch: vec![first],
            bytes,
            held_over: &mut held_over,
        };
        while let Ok(q) = queue.try_recv() {
            if !taking.add(q) {
                break;
            }
        }
        if !linger.is_zero() {
            // Until as many files as the last batch carried are here, at most until
            // `linger` after it ended.
            let (want, until) = pace.expect(linger);
            let until = tokio::time::Instant::from_std(until);
            while taking.open() && taking.batch.len() < want {
                tokio::select! {
                    q = queue.recv() => match q {
                        Some(q) => if !taking.add(q) { break },
                        None => break,
                    },
                    () = tokio::time::sleep_until(until) => break,
                }
            }
        }
        let (batch, bytes) = (taking.batch, taking.bytes);
        let pace = pace.clone();
        tokio::spawn(async move {
            // Lingering, a batch keeps its slot until it has committed: the next one
            // then gathers the files its answers bring back instead of splitting them.
            let slot = Slot {
                permit: std::sync::Mutex::new(Some(slot)),
                early: linger.is_zero(),
            };
            // A batch that hangs (a datanode that stopped answering) gives its slot
            // back after SLOT_HELD, so other small uploads do not wait behind it.
            let outcomes = {
                let mut write = std::pin::pin!(client.write_batch(lease, &batch, bytes, &slot));
                tokio::select! {
                    o = &mut write => o,
                    () = tokio::time::sleep(SLOT_HELD) => {
                        slot.release();
                        write.await
                    }
                }
            };
            pace.ended(batch.len());
            slot.release();
            for (q, outcome) in batch.into_iter().zip(outcomes) {
                let _ = q.reply.send(outcome);
            }
        });
    }
}

/// A batch's `BeginUpload`, asked for when its first file is taken.
type Lease = tokio::task::JoinHandle<Result<pb::BeginUploadResponse>>;

/// The files of the batch being gathered.
struct Taking<'a> {
    batch: Vec<Queued>,
    bytes: u64,
    /// A file that did not fit: it starts the next batch.
    held_over: &'a mut Option<Queued>,
}

impl Taking<'_> {
    /// Takes `q` if it fits; `false` once the batch is full.
    fn add(&mut self, q: Queued) -> bool {
        if self.bytes + q.data.len() as u64 > transport::MAX_BATCH_BYTES {
            *self.held_over = Some(q);
            return false;
        }
        self.bytes += q.data.len() as u64;
        self.batch.push(q);
        self.open()
    }

    fn open(&self) -> bool {
        self.held_over.is_none() && self.batch.len() < transport::MAX_BATCH_FILES
    }
}

/// When the last batch ended and how many files it carried. Most small uploads come
/// from clients that send their next file once answered, so a batch's answers bring
/// about as many files back a moment later: the next batch waits for them, at most
/// the client's `batch_linger` (`--batch-linger`), instead of leaving with the first
/// few and splitting the clients into two smaller batches. Larger batches are cheaper
/// per file: a batch's fixed costs (its calls, streams and two `syncfs` per datanode)
/// dominate a small file's (docs/decisions/0008-small-file-batches.md). A lone upload,
/// or one after a pause, does not wait.
struct Pace(std::sync::Mutex<(usize, std::time::Instant)>);

impl Pace {
    fn new() -> Self {
        Self(std::sync::Mutex::new((0, std::time::Instant::now())))
    }

    /// Files to wait for, and until when.
    fn expect(&self, linger: Duration) -> (usize, std::time::Instant) {
        let (files, ended) = *self.0.lock().expect("pace lock is never poisoned");
        (files, ended + linger)
    }

    fn ended(&self, files: usize) {
        *self.0.lock().expect("pace lock is never poisoned") = (files, std::time::Instant::now());
    }
}

/// A batch's slot: given back once its blocks are written (`early`, so that its commit
/// overlaps the next batch's writes) or once it has committed, or after
/// [`SLOT_HELD`], whichever comes first.
struct Slot {
    permit: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
    early: bool,
}

impl Slot {
    fn release(&self) {
        self.permit
            .lock()
            .expect("slot lock is never poisoned")
            .take();
    }

    /// The batch's blocks are written.
    fn written(&self) {
        if self.early {
            self.release();
        }
    }
}

impl Client {
    /// Writes and commits one batch; one outcome per file, in order.
    /// `bytes` is the sum of the files' sizes.
    #[instrument(name = "batch", skip_all, fields(files = batch.len(), bytes, upload = Empty))]
    async fn write_batch(
        &self,
        lease: Lease,
        batch: &[Queued],
        bytes: u64,
        slot: &Slot,
    ) -> Vec<Option<Result<Uploaded>>> {
        let mut outcomes: Vec<Option<Result<Uploaded>>> = batch.iter().map(|_| None).collect();
        metrics::counter!("kdfs_gateway_upload_batches_total").increment(1);
        self.inner.batcher.batches.fetch_add(1, Ordering::Relaxed);
        match self
            .try_batch(lease, batch, bytes, slot, &mut outcomes)
            .await
        {
            Ok(()) => {
                let stored = outcomes.iter().filter(|o| o.is_some()).count();
                debug!(stored, "batch done");
            }
            // No namenode leader: alone they would wait for one again, each in turn.
            Err(Error::NamenodeUnreachable(why)) => {
                warn!(error = %why, "batch failed: the namenode is unreachable");
                for o in outcomes.iter_mut().filter(|o| o.is_none()) {
                    *o = Some(Err(Error::NamenodeUnreachable(why.clone())));
                }
            }
            Err(e) => {
                warn!(error = %e, "batch failed; its files are uploaded alone");
            }
        }
        let alone = outcomes.iter().filter(|o| o.is_none()).count();
        metrics::counter!("kdfs_gateway_batched_files_alone_total").increment(alone as u64);
        outcomes
    }

    /// A batch's lease and pipeline, for as much as a batch may carry.
    async fn begin_batch(&self) -> Result<pb::BeginUploadResponse> {
        self.namenode_call(
            "BeginUpload",
            Retry::Idempotent,
            pb::BeginUploadRequest {
                name: LEASE_NAME.into(),
                content_type: String::new(),
                replication: self.inner.options.replication,
                max_size: transport::MAX_BATCH_BYTES,
            },
            |mut c, r| async move { c.begin_upload(r).await },
        )
        .await
    }

    /// Fills `outcomes` for the files the batch stored or the namenode refused.
    async fn try_batch(
        &self,
        lease: Lease,
        batch: &[Queued],
        bytes: u64,
        slot: &Slot,
        outcomes: &mut [Option<Result<Uploaded>>],
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let begin = lease
            .await
            .map_err(|e| Error::Internal(format!("batch lease task: {e}")))??;
        if begin.block_size == 0 || begin.upload_id.is_empty() {
            return Err(bad_reply("BeginUpload without a lease or block size"));
        }
        Span::current().record("upload", begin.upload_id.as_str());
        let mut lease = AbandonOnDrop {
            client: self.clone(),
            upload_id: begin.upload_id.clone(),
            armed: true,
        };
        let min_replicas = (begin.min_replicas.max(1)) as usize;
        let pipeline = parse_pipeline("BeginUpload", &begin.pipeline, begin.token.as_ref())?;
        if pipeline.nodes.is_empty() {
            return Err(Error::NotEnoughDatanodes(
                "no pipeline for the batch now".into(),
            ));
        }
        // Files larger than a block (a cluster with tiny blocks) go alone.
        let fits: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].data.len() as u64 <= begin.block_size)
            .collect();
        if fits.is_empty() {
            return Ok(());
        }
        phase_done("begin", started);
        let writing = std::time::Instant::now();
        let acks = self
            .write_blocks(&begin.upload_id, &pipeline, batch, &fits)
            .await?;
        slot.written();
        phase_done("write", writing);
        let mut files = Vec::with_capacity(fits.len());
        let mut committing = Vec::with_capacity(fits.len());
        for (&i, ack) in fits.iter().zip(&acks) {
            if ack.len() < min_replicas {
                continue;
            }
            let q = &batch[i];
            files.push(pb::FileToCommit {
                name: q.name.clone(),
                content_type: q.content_type.clone(),
                object_content: q.object_content,
                file_id: wire::raw(q.id.as_bytes()),
                size: q.data.len() as u64,
                blocks: vec![pb::CommittedBlock {
                    id: wire::raw(q.id.as_bytes()),
                    length: q.data.len() as u64,
                    replicas: ack.iter().map(|d| d.to_string()).collect(),
                }],
            });
            committing.push((i, ack.len() as u32));
        }
        if files.is_empty() {
            return Err(Error::NotEnoughReplicas {
                index: 0,
                obtained: acks.iter().map(Vec::len).max().unwrap_or(0),
                needed: min_replicas,
                attempts: 1,
                last_error: "no block of the batch was acknowledged by enough datanodes".into(),
            });
        }
        let committing_at = std::time::Instant::now();
        let resp = self
            .namenode_call(
                "CommitFiles",
                Retry::Idempotent,
                pb::CommitFilesRequest {
                    upload_id: begin.upload_id.clone(),
                    files,
                },
                |mut c, r| async move { c.commit_files(r).await },
            )
            .await?;
        // The namenode ended the lease with the call.
        lease.armed = false;
        phase_done("commit", committing_at);
        if resp.results.len() != committing.len() {
            return Err(bad_reply(
                "CommitFiles answered for another number of files",
            ));
        }
        for ((i, replicas), result) in committing.into_iter().zip(resp.results) {
            let q = &batch[i];
            outcomes[i] = file_outcome(q, replicas, result);
        }
        let committed = outcomes.iter().filter(|o| matches!(o, Some(Ok(_)))).count();
        metrics::counter!("kdfs_gateway_uploads_total").increment(committed as u64);
        let b = &self.inner.batcher;
        b.stored.fetch_add(committed as u64, Ordering::Relaxed);
        metrics::counter!("kdfs_gateway_upload_bytes_total").increment(bytes);
        info!(files = committed, bytes, "batch of small files committed");
        Ok(())
    }

    /// Streams the blocks `fits` of `batch` down `issued` (with its token) in one
    /// `WriteBlocks` call; the nodes that acknowledged each block, in the order of `fits`.
    async fn write_blocks(
        &self,
        upload_id: &str,
        issued: &Pipeline,
        batch: &[Queued],
        fits: &[usize],
    ) -> Result<Vec<Vec<DatanodeId>>> {
        let pipeline = &issued.nodes;
        let head = &pipeline[0];
        let max_length = fits.iter().map(|&i| batch[i].data.len() as u64).sum();
        let mut messages = Vec::with_capacity(1 + 2 * fits.len());
        messages.push(Msg::Header(pb::WriteHeader {
            downstream: pipeline[1..]
                .iter()
                .map(pb::DatanodeLocation::from)
                .collect(),
            upload_id: upload_id.to_owned(),
            max_length,
            token: Some(issued.token.clone()),
        }));
        for &i in fits {
            messages.push(Msg::Data(batch[i].data.clone()));
            messages.push(Msg::Trailer(pb::WriteTrailer {
                block_id: wire::raw(batch[i].id.as_bytes()),
            }));
        }
        // The end marker: without it the datanodes take the batch as aborted.
        messages.push(Msg::Trailer(pb::WriteTrailer::default()));
        let stream = futures::stream::iter(
            messages
                .into_iter()
                .map(|m| pb::WriteBlockRequest { msg: Some(m) }),
        );
        let channel = self.inner.pool.channel(&head.address)?;
        // The ack comes after every node verified, fsynced and heard from its successor.
        let wait = self.inner.options.stall_timeout * 2;
        let call = framed::client_streaming::<pb::WriteBlocksResponse, _>(channel, stream);
        let resp = match tokio::time::timeout(wait, call).await {
            Err(_) => {
                let status = tonic::Status::deadline_exceeded(format!(
                    "{}: no ack within {wait:?}",
                    head.address
                ));
                return Err(Error::Rpc {
                    context: "WriteBlocks",
                    status,
                });
            }
            Ok(Err(status)) => {
                return Err(Error::Rpc {
                    context: "WriteBlocks",
                    status,
                });
            }
            Ok(Ok(r)) => r,
        };
        if resp.blocks.len() != fits.len() {
            return Err(Error::Internal(format!(
                "WriteBlocks: {} answered for {} blocks, {} were sent",
                head.address,
                resp.blocks.len(),
                fits.len()
            )));
        }
        let mut acks = Vec::with_capacity(fits.len());
        for (&i, block) in fits.iter().zip(&resp.blocks) {
            let mut committed: Vec<DatanodeId> = Vec::new();
            if block.length == batch[i].data.len() as u64 {
                add_acks(&mut committed, &block.committed);
            }
            if let Some(f) = block.failed.first() {
                debug!(block = %batch[i].id, node = %f.node, reason = %f.reason, "batched block failed on a node");
            }
            acks.push(committed);
        }
        Ok(acks)
    }
}

/// Records how long a phase of a batch took (`kdfs_gateway_batch_phase_seconds`):
/// `begin` (BeginUpload), `write` (the WriteBlocks stream to its ack), `commit`
/// (CommitFiles).
fn phase_done(phase: &'static str, since: std::time::Instant) {
    metrics::histogram!("kdfs_gateway_batch_phase_seconds", "phase" => phase)
        .record(since.elapsed().as_secs_f64());
}

/// What the namenode said about one file of a batch; `None` for a file that met a
/// record of its id with other blocks (a conflict): it is uploaded alone, whose commit
/// settles the conflict under a lease of its own (`conflict`).
fn file_outcome(q: &Queued, replicas: u32, r: pb::FileCommitResult) -> Option<Result<Uploaded>> {
    if r.conflict.is_some() {
        warn!(file = %q.id, "a record of this content's id holds other blocks; uploading it alone");
        return None;
    }
    Some(file_result(q, replicas, r))
}

fn file_result(q: &Queued, replicas: u32, r: pb::FileCommitResult) -> Result<Uploaded> {
    if r.code != 0 {
        let status = tonic::Status::new(tonic::Code::from(r.code), r.message);
        return Err(Error::namenode("CommitFiles", status));
    }
    let record = r
        .file
        .as_ref()
        .ok_or_else(|| bad_reply("CommitFiles without a record"))
        .and_then(FileRecord::try_from)?;
    if record.id != FileId::from_bytes(*q.id.as_bytes()) {
        return Err(bad_reply("CommitFiles returned another file id"));
    }
    Ok(Uploaded {
        record,
        existed: r.existed,
        replicas,
    })
}

//! Uploads: a stream of bytes in, a committed file out.
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
//! block boundaries (`splitter`); the block's SHA-256 is computed in its block
//! task (`block`) and the file's SHA-256 in a hasher task, because hashing in
//! the receiving task would halve throughput. A file known to fit in one block (the
//! source's announced length is at most a block) has no hasher task: its id is its only
//! block's hash. Bytes move as `Bytes` (reference-counted): the chunk a block task keeps
//! for recovery is the same allocation that was sent.
//!
//! # Memory bound
//!
//! A block task keeps every chunk of its block until the pipeline acknowledges it, so
//! that a failed pipeline can be replaced without re-reading the source (HDFS keeps a
//! window of unacknowledged packets for the same reason; a whole block is the natural
//! window here because the datanode verifies and commits whole blocks). Beyond its
//! first [`MEMORY_PREFIX`] bytes a block goes to a spool file
//! (`spool`). One upload therefore holds at most
//! `MEMORY_PREFIX × blocks_in_flight` bytes plus a few chunks in channels, whatever the
//! file's and the block's size; without a usable spool directory it holds
//! `block_size × blocks_in_flight`. Across uploads, a client-wide byte budget
//! ([`crate::ClientOptions::upload_budget`], 512 MiB by default; `budget`) counts
//! each block's bytes as they arrive, so a client that announces a large body and goes
//! silent holds only what it sent; the oldest block may always grow, so half-full
//! blocks cannot deadlock each other. While an upload waits for budget, it stops
//! reading its source and the HTTP client is slowed by TCP back-pressure.
//!
//! Block 0's first pipeline comes with the `BeginUpload` reply when the namenode could
//! choose one (and is used if still fresh), which saves a small upload one namenode
//! round trip; later blocks and every retry call `AllocateBlock`.
//!
//! # Recovery
//!
//! The datanodes' ack lists who committed and who failed. At least `min_replicas`
//! committed: the block is accepted (the namenode heals it to `replication` later).
//! Fewer: the retained chunks are re-sent to a new pipeline, up to `pipeline_attempts`
//! pipelines per block; `recovery` holds the rules (which nodes to exclude,
//! how many replicas to ask for, which error to give up with).
//!
//! # Cancellation
//!
//! Dropping the future returned by [`Client::upload`] aborts its block tasks and
//! hasher (they live in a `JoinSet` / abort-on-drop handles), and a drop guard sends
//! `AbandonUpload` (best effort; the lease expiring is the fallback), so no file record
//! is created. Once every block is acknowledged, `CommitFile` runs in its own task so a
//! disconnect cannot leave the commit half-known.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use kdfs_core::FileId;
use kdfs_proto::namenodes::Retry;
use kdfs_proto::{pb, transport, wire};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::field::Empty;
use tracing::{Span, debug, info, instrument};

use super::block::UploadCtx;
use super::conflict::Verdict;
use super::driver::Driver;
use super::lease::{AbandonOnDrop, renew_lease};
use super::model::{FileRecord, Uploaded};
use super::rpc::{bad_reply, parse_pipeline};
use super::source::{longer_than, read_whole};
use super::splitter::Splitter;
use super::{Client, QUEUE_CHUNKS};
use crate::error::{BoxError, Error, Result};

pub use super::spool::{MEMORY_PREFIX, SPOOL_FILES_KEPT};

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
    /// stored in a batch with the client's other small uploads ([`super::batch`]),
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
        self.upload_as(source, name, content_type, at_most, false)
            .await
    }

    /// As [`Client::upload_at_most`], for the content of an object or a multipart
    /// part of the bucket/key namespace ([`super::objects`]): the file is held only by
    /// the keys and parts that come to point to it, and deleted with the last one (or
    /// when none claims it within the namenode's `--object-claim-grace`). Content that
    /// is also stored through the hash API stays stored for it.
    pub async fn upload_object_content<S, E>(
        &self,
        source: S,
        content_type: &str,
        at_most: Option<u64>,
    ) -> Result<Uploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        self.upload_as(source, "", content_type, at_most, true)
            .await
    }

    #[instrument(skip_all, fields(name = %name, at_most = ?at_most, upload = Empty, file = Empty))]
    async fn upload_as<S, E>(
        &self,
        source: S,
        name: &str,
        content_type: &str,
        at_most: Option<u64>,
        object_content: bool,
    ) -> Result<Uploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        match at_most {
            Some(n)
                if self.inner.options.batch_small_files && n <= transport::MAX_BATCHED_BLOCK =>
            {
                self.upload_small(source, name, content_type, n, object_content)
                    .await
            }
            _ => {
                self.upload_alone(source, name, content_type, at_most, object_content)
                    .await
            }
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
        object_content: bool,
    ) -> Result<Uploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let mut claim = self.inner.budget.claim();
        let data = read_whole(source, at_most, &mut claim).await?;
        if !data.is_empty()
            && let Some(done) = self
                .upload_batched(data.clone(), name, content_type, object_content)
                .await
        {
            return done;
        }
        // An empty file, or one the batch could not store: the pipeline with recovery.
        drop(claim);
        let size = data.len() as u64;
        let source = futures::stream::once(async move { Ok::<_, BoxError>(data) });
        self.upload_alone(source, name, content_type, Some(size), object_content)
            .await
    }

    /// One upload with its own lease and pipelines (see the module docs).
    async fn upload_alone<S, E>(
        &self,
        source: S,
        name: &str,
        content_type: &str,
        at_most: Option<u64>,
        object_content: bool,
    ) -> Result<Uploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BoxError>,
    {
        let begin = self
            .namenode_call(
                "BeginUpload",
                Retry::Idempotent,
                pb::BeginUploadRequest {
                    name: name.to_owned(),
                    content_type: content_type.to_owned(),
                    replication: self.inner.options.replication,
                    // Block 0's pipeline then needs room for only this much.
                    max_size: at_most.unwrap_or(0),
                },
                |mut c, r| async move { c.begin_upload(r).await },
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
        Span::current().record("upload", begin.upload_id.as_str());
        let first_pipeline = parse_pipeline("BeginUpload", &begin.pipeline, begin.token.as_ref())?;
        let ctx = Arc::new(UploadCtx {
            client: self.clone(),
            upload_id: begin.upload_id.clone(),
            block_size: begin.block_size,
            replication,
            min_replicas,
            attempts: self.inner.options.pipeline_attempts.max(1),
            spool_dir: self.inner.options.spool_dir.clone(),
            memory_prefix: self.inner.options.memory_prefix,
            first_pipeline: std::sync::Mutex::new(
                (!first_pipeline.nodes.is_empty()).then(|| (first_pipeline, Instant::now())),
            ),
            at_most,
        });
        debug!(
            block_size = ctx.block_size,
            replication, min_replicas, "upload begun"
        );

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

        let mut driver = Driver::new(ctx.clone(), hash_tx);
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
        Span::current().record("file", tracing::field::display(file_id));
        metrics::counter!("kdfs_gateway_upload_bytes_total").increment(size);

        let replicas = blocks
            .iter()
            .map(|b| b.replicas.len() as u32)
            .min()
            .unwrap_or(replication as u32);
        let mut req = pb::CommitFileRequest {
            replaces: None,
            object_content,
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
        let mut attempts = 0;
        let mut kept = false;
        let (resp, record) = loop {
            let (resp, back) = commit_detached(self.clone(), req.clone(), guard).await?;
            guard = back;
            let Some(conflict) = &resp.conflict else {
                let record = resp
                    .file
                    .as_ref()
                    .ok_or_else(|| bad_reply("CommitFile without a record"))
                    .and_then(FileRecord::try_from)?;
                break (resp, record);
            };
            // Another record holds this id: keep it only if it is this content.
            let existing = FileRecord::try_from(conflict)?;
            if existing.id != file_id {
                return Err(bad_reply("CommitFile's conflict names another file id"));
            }
            attempts += 1;
            if attempts > MAX_CONFLICTS {
                return Err(Error::Internal(format!(
                    "the record of {file_id} kept changing while this upload replaced it"
                )));
            }
            match self
                .settle_conflict(file_id, size, &blocks, existing)
                .await?
            {
                // Our lease ends (the guard abandons it) and our blocks become orphans.
                Verdict::Keep(record) => {
                    kept = true;
                    let resp = pb::CommitFileResponse {
                        existed: true,
                        ..Default::default()
                    };
                    break (resp, record);
                }
                Verdict::Replace(old) => {
                    req.replaces = Some(pb::BlockList {
                        blocks: old
                            .iter()
                            .map(|b| pb::BlockEntry {
                                id: wire::raw(b.id.as_bytes()),
                                length: b.length,
                                ..Default::default()
                            })
                            .collect(),
                    });
                }
            }
        };
        drop(guard);
        if record.id != file_id {
            return Err(bad_reply("CommitFile returned another file id"));
        }
        // We hashed these bytes ourselves, and the namenode answers `existed` only for a
        // record of this very block list; a kept record of another cut was proven by the
        // read that kept it, not as this list, so it is left out.
        if !kept && blocks.len() > 1 {
            self.inner
                .proven
                .prove(file_id, blocks.iter().map(|b| (&b.id, b.length)));
        }
        metrics::counter!("kdfs_gateway_uploads_total").increment(1);
        info!(
            size,
            blocks = blocks.len(),
            replicas,
            existed = resp.existed,
            "upload committed"
        );
        Ok(Uploaded {
            record,
            existed: resp.existed,
            replicas,
        })
    }
}

/// Conflicts an upload settles before it gives up: each means the record under its id
/// changed between the namenode's answer and the replacing commit.
const MAX_CONFLICTS: usize = 3;

/// Runs `CommitFile` to completion in its own task even if the caller's future is
/// dropped; the lease guard goes with it and is disarmed once a record is committed. A
/// conflict commits nothing and leaves the lease open, so the guard comes back armed
/// with the answer (and abandons the lease if the caller is gone).
async fn commit_detached(
    client: Client,
    req: pb::CommitFileRequest,
    mut guard: AbandonOnDrop,
) -> Result<(pb::CommitFileResponse, AbandonOnDrop)> {
    tokio::spawn(async move {
        // Idempotent: a second commit of the same record after a leader change answers
        // `existed`.
        let r = client
            .namenode_call(
                "CommitFile",
                Retry::Idempotent,
                req,
                |mut c, r| async move { c.commit_file(r).await },
            )
            .await;
        if r.as_ref().is_ok_and(|r| r.conflict.is_none()) {
            guard.armed = false;
        }
        r.map(|r| (r, guard))
    })
    .await
    .map_err(|e| Error::Internal(format!("commit task: {e}")))?
}

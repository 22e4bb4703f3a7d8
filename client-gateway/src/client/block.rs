//! One block of an upload: its task receives the block's chunks, hashes them, streams
//! them down a pipeline ([`super::attempt`]), keeps them until acknowledged
//! ([`super::spool`]) and, when a pipeline fails, asks the namenode for a new one and
//! re-sends them as the [`super::recovery`] policy says.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdfs_core::{BlockId, DatanodeId};
use kdfs_proto::namenodes::Retry;
use kdfs_proto::pb;
use kdfs_proto::pb::write_block_request::Msg;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::field::Empty;
use tracing::{Span, debug, info, instrument, warn};

use super::Client;
use super::attempt::Attempt;
use super::budget::Claim;
use super::recovery::{Next, Recovery};
use super::rpc::{Pipeline, bad_reply, parse_pipeline};
use super::splitter::Piece;
use super::spool::Retained;
use crate::error::{Error, Result};

/// A block's first AllocateBlock is tried this often when too few nodes are writable,
/// waiting this long (doubling) in between.
const ALLOCATE_TRIES: u32 = 3;
const ALLOCATE_RETRY_DELAY: Duration = Duration::from_millis(250);
/// Block 0's pipeline from BeginUpload is used only this soon after it came (a slow
/// client's first bytes get a pipeline chosen with the namenode's newer view).
const FIRST_PIPELINE_FRESH: Duration = Duration::from_secs(2);

/// What every block task of one upload shares.
pub(crate) struct UploadCtx {
    pub(crate) client: Client,
    pub(crate) upload_id: String,
    pub(crate) block_size: u64,
    pub(crate) replication: usize,
    pub(crate) min_replicas: usize,
    /// Pipelines tried per block.
    pub(crate) attempts: usize,
    pub(crate) spool_dir: Option<PathBuf>,
    pub(crate) memory_prefix: u64,
    /// Block 0's pipeline from BeginUpload and when it came, taken by block 0's first
    /// attempt if still fresh.
    pub(crate) first_pipeline: std::sync::Mutex<Option<(Pipeline, Instant)>>,
    /// The most bytes the source can hold, when known (see [`Client::upload_at_most`]).
    pub(crate) at_most: Option<u64>,
}

impl UploadCtx {
    /// The most bytes block `index` can hold: a whole block, or less when the source's
    /// length is bounded (every block before it is full, so it starts at
    /// `index × block_size`). What its budget and each datanode reserve for it.
    pub(crate) fn block_max_len(&self, index: u64) -> u64 {
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
pub(crate) struct Committed {
    pub(crate) id: BlockId,
    pub(crate) length: u64,
    pub(crate) replicas: Vec<DatanodeId>,
}

/// Writes one block: streams it as it arrives, keeps its chunks until it is
/// acknowledged, and re-sends them to new pipelines as [`Recovery`] decides. Runs in
/// the upload's span (see `driver`), so its own span adds only the block.
#[instrument(skip_all, fields(index, block = Empty))]
pub(crate) async fn write_block(
    ctx: Arc<UploadCtx>,
    index: u64,
    mut input: mpsc::Receiver<Piece>,
    mut claim: Claim,
) -> Result<Committed> {
    let pipeline = allocate_patiently(&ctx, index).await?;
    let mut attempt = Attempt::start(
        &ctx.client,
        &ctx.upload_id,
        pipeline,
        ctx.block_max_len(index),
    )
    .await?;
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
                // Counted once it has arrived, not before (see `budget`).
                claim.grow(c.len() as u64).await;
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
    let id = BlockId::from_bytes(hasher.finalize().into());
    Span::current().record("block", tracing::field::display(id));

    let mut recovery = Recovery::new(index, ctx.replication, ctx.min_replicas, ctx.attempts);
    loop {
        let pipeline = attempt.pipeline.clone();
        let outcome = attempt.finish(id).await;
        let requests = match recovery.record(&pipeline, length, outcome) {
            Next::Accept(replicas) => {
                if replicas.len() < ctx.replication {
                    info!(
                        replicas = replicas.len(),
                        wanted = ctx.replication,
                        "block accepted with fewer replicas than wanted; the namenode will heal it"
                    );
                }
                metrics::counter!("kdfs_gateway_blocks_written_total").increment(1);
                drop(retained);
                drop(claim);
                return Ok(Committed {
                    id,
                    length,
                    replicas,
                });
            }
            Next::GiveUp(e) => return Err(e),
            Next::Reallocate(requests) => requests,
        };
        warn!(committed = recovery.committed().len(), needed = ctx.min_replicas,
            error = %recovery.last_error(), "pipeline failed; re-sending the block to a new pipeline");
        metrics::counter!("kdfs_gateway_pipeline_recoveries_total").increment(1);
        let mut pipeline = Err(Error::NotEnoughDatanodes(String::new()));
        for (exclude, replicas) in &requests {
            pipeline = allocate(&ctx, index, exclude, *replicas, length).await;
            if !matches!(pipeline, Err(Error::NotEnoughDatanodes(_))) {
                break;
            }
        }
        let pipeline = pipeline.map_err(|e| recovery.no_pipeline(e))?;
        // The block's length is known now: a new pipeline reserves exactly that.
        attempt = Attempt::start(&ctx.client, &ctx.upload_id, pipeline, length).await?;
        if let Err(why) = attempt.replay(&mut retained).await {
            return Err(recovery.cannot_resend(&why));
        }
    }
}

/// The first pipeline of a block. "Not enough live datanodes" is retried a few times
/// over about a second: under load a node can miss a heartbeat and be stale for a
/// moment; a cluster that really lacks nodes still fails fast enough for a 503.
pub(crate) async fn allocate_patiently(ctx: &UploadCtx, index: u64) -> Result<Pipeline> {
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
                debug!(error = %e, "no pipeline yet; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            r => return r,
        }
    }
    allocate(ctx, index, &BTreeSet::new(), 0, room).await
}

/// Asks the namenode for a pipeline for block `index` on nodes with room for
/// `max_length` bytes (what the attempt will reserve on each).
async fn allocate(
    ctx: &UploadCtx,
    index: u64,
    exclude: &BTreeSet<DatanodeId>,
    replicas: u32,
    max_length: u64,
) -> Result<Pipeline> {
    let resp = ctx
        .client
        .namenode_call(
            "AllocateBlock",
            Retry::Idempotent,
            pb::AllocateBlockRequest {
                upload_id: ctx.upload_id.clone(),
                block_index: index,
                exclude: exclude.iter().map(|d| d.to_string()).collect(),
                replicas,
                max_length,
            },
            |mut c, r| async move { c.allocate_block(r).await },
        )
        .await?;
    let pipeline = parse_pipeline("AllocateBlock", &resp.pipeline, resp.token.as_ref())?;
    if pipeline.nodes.is_empty() {
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
}

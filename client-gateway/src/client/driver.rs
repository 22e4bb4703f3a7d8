//! The driver of one upload: hands the splitter's pieces to block tasks (at most
//! `blocks_in_flight` running, each with its own claim on the client's upload budget,
//! which grows as the block's bytes arrive), feeds the file hasher, and collects the
//! committed blocks in order.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::QUEUE_CHUNKS;
use super::block::{Committed, UploadCtx, write_block};
use super::splitter::Piece;
use crate::error::{Error, Result};

/// Hands pieces to block tasks, keeping at most `blocks_in_flight` of them running.
pub(crate) struct Driver {
    ctx: Arc<UploadCtx>,
    tasks: JoinSet<Result<(u64, Committed)>>,
    done: BTreeMap<u64, Committed>,
    current: Option<mpsc::Sender<Piece>>,
    next_index: u64,
    /// The file hasher's queue; `None` for a file of one block (its id is the block's).
    hash_tx: Option<mpsc::Sender<Bytes>>,
}

impl Driver {
    /// A driver for the upload of `ctx`; `hash_tx` feeds the file hasher, if any.
    pub(crate) fn new(ctx: Arc<UploadCtx>, hash_tx: Option<mpsc::Sender<Bytes>>) -> Self {
        Self {
            ctx,
            tasks: JoinSet::new(),
            done: BTreeMap::new(),
            current: None,
            next_index: 0,
            hash_tx,
        }
    }

    /// Hands on one piece, starting a block task at a block's first chunk.
    pub(crate) async fn feed(&mut self, piece: Piece) -> Result<()> {
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
        let index = self.next_index;
        let claim = self.ctx.client.inner.budget.claim();
        let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
        self.next_index += 1;
        let ctx = self.ctx.clone();
        // In the upload's span, so the block's span is a child of it.
        self.tasks.spawn(
            async move { write_block(ctx, index, rx, claim).await.map(|c| (index, c)) }
                .in_current_span(),
        );
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

    /// Waits for every block task; the committed blocks in order.
    pub(crate) async fn finish(mut self) -> Result<Vec<Committed>> {
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

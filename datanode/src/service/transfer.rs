//! `TransferBlock` (and the namenode's replicate command): a verified local replica
//! streamed through a write chain of other datanodes.

use std::sync::atomic::Ordering;

use kdfs_core::BlockId;
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::pb::{self, TransferBlockResponse, WriteBlockResponse, WriteTrailer};
use kdfs_proto::wire::{self, Location};
use tonic::Status;

use super::Node;
use super::forward::{Downstream, answer_of};
use super::read::next_piece;
use crate::metrics::InFlight;

impl Node {
    /// Streams a verified local replica of `id` through the write chain `targets`, as
    /// the namenode's TRANSFER `token` allows (it travels with the stream). Fails (and
    /// nothing is committed anywhere) if the token does not grant it, or the replica
    /// is missing or corrupt. Its callers' spans name the block.
    pub async fn transfer(
        &self,
        id: BlockId,
        targets: &[Location],
        token: Option<pb::BlockToken>,
    ) -> Result<TransferBlockResponse, Status> {
        let _in_flight = InFlight::new(&self.metrics);
        let result = self.transfer_inner(id, targets, token).await;
        match &result {
            Ok(r) if !r.committed.is_empty() => {
                self.metrics
                    .transfers_completed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(committed = ?r.committed, failed = r.failed.len(), "block replicated");
            }
            Ok(r) => {
                self.metrics
                    .transfers_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(failed = ?r.failed.iter().map(|f| &f.reason).collect::<Vec<_>>(), "replication reached no target");
            }
            Err(e) => {
                self.metrics
                    .transfers_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "replication failed");
            }
        }
        result
    }

    async fn transfer_inner(
        &self,
        id: BlockId,
        targets: &[Location],
        token: Option<pb::BlockToken>,
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
        let grant = self.authorize("TransferBlock", token.as_ref(), |g| {
            g.check_transfer_source(&self.id, &id, targets)
        })?;
        let store = self.store.clone();
        let reader = tokio::task::spawn_blocking(move || store.read_range(&id, 0, 0))
            .await
            .map_err(|e| Status::internal(format!("reader task: {e}")))??;
        if reader.block_len() > grant.max_length {
            return Err(self.refused(
                "TransferBlock",
                kdfs_proto::block_token::TokenError::Denied(format!(
                    "the replica is {} bytes, the token allows {}",
                    reader.block_len(),
                    grant.max_length
                )),
            ));
        }
        let mut down = Downstream::<WriteBlockResponse>::start(
            &self.peers,
            targets,
            String::new(),
            reader.block_len(),
            token,
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

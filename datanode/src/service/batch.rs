//! `WriteBlocks`: a batch of small blocks through the same pipeline in one stream per
//! hop, held in memory and committed together once the stream has ended with its end
//! marker (one durability step for all, see `crate::store::BatchWriter`); the answer
//! has one entry per block.

use bytes::Bytes;
use kdfs_core::BlockId;
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::pb::{WriteBlockRequest, WriteBlockResponse, WriteBlocksResponse, WriteTrailer};
use kdfs_proto::transport::{MAX_BATCH_BYTES, MAX_BATCH_FILES, MAX_BATCHED_BLOCK};
use kdfs_proto::wire;
use tonic::{Status, Streaming};

use super::Node;
use super::forward::{answer_of, check_batch_answer};
use crate::error::Error;

impl Node {
    /// Receives a pipelined batch of small blocks (`WriteBlocks`): the blocks are held in
    /// memory (at most the header's `max_length` ≤ `MAX_BATCH_BYTES`, reserved up
    /// front) and, once the stream ends, verified and committed together by one
    /// blocking call with one durability step for all ([`crate::store::BatchWriter::commit_all`]);
    /// meanwhile every message has been forwarded as it came. A block that fails here fails
    /// alone; a malformed stream fails as a whole (blocks committed before stay, as
    /// orphans for the namenode).
    pub(super) async fn write_blocks(
        &self,
        mut inbound: Streaming<WriteBlockRequest>,
    ) -> Result<Vec<WriteBlockResponse>, Status> {
        const RPC: &str = "WriteBlocks";
        let mut header = self.read_header(&mut inbound, RPC, false).await?;
        header.record_upload();
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
}

//! `ReadBlock`: a verified range of a local replica, streamed in pieces.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use kdfs_core::BlockId;
use kdfs_proto::pb::{ReadBlockRequest, ReadBlockResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use super::Node;
use crate::error::{Error, Result};
use crate::metrics::{InFlight, Metrics};
use crate::store::{Piece, RangeReader};

/// Read pieces queued towards a reader.
pub const READ_QUEUE_DEPTH: usize = 4;

impl Node {
    /// Opens the range `r` asks for of block `id` (parsed from it) and streams it.
    pub(super) async fn read_block(
        self: &Arc<Self>,
        id: BlockId,
        r: ReadBlockRequest,
    ) -> Result<ReadStream, Status> {
        self.authorize("ReadBlock", r.token.as_ref(), |g| g.check_read(&id))?;
        let store = self.store.clone();
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
                tracing::warn!(error = %e, "read of a corrupt replica refused");
            }
        })?;
        // A range read by its first piece (a small block) goes out as it is.
        let first = match first {
            Some(Ok(p)) if reader.remaining() == 0 => {
                let msg = served(&self.metrics, p);
                return Ok(ReadStream::One(Some(msg)));
            }
            other => other,
        };
        let (tx, rx) = mpsc::channel(READ_QUEUE_DEPTH);
        let node = self.clone();
        tokio::spawn(
            async move {
                let _in_flight = InFlight::new(&node.metrics);
                let mut current = Some((reader, first));
                while let Some((r, piece)) = current.take() {
                    let msg = match piece {
                        None => break,
                        Some(Ok(p)) => Ok(served(&node.metrics, p)),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "read failed mid-stream");
                            Err(Status::from(e))
                        }
                    };
                    let more = msg.is_ok() && r.remaining() > 0;
                    if tx.send(msg).await.is_err() || !more {
                        break; // The reader went away, or the range is done.
                    }
                    current = Some(next_piece(r).await);
                }
            }
            .in_current_span(),
        );
        Ok(ReadStream::Pieces(ReceiverStream::new(rx)))
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

/// The `ReadBlock` message of a verified piece, counted as served.
fn served(metrics: &Metrics, p: Piece) -> ReadBlockResponse {
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

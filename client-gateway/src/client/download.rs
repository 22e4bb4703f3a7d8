//! Downloads: a file id and a byte range in, a stream of verified bytes out.
//!
//! The range is mapped onto blocks (`plan`); one reader task per block reads it from
//! its best replica, checks each message's CRC32C and offset, and fails over to the
//! next replica **at the same offset** on an error, a stall, or a checksum or offset
//! mismatch, reporting a bad replica to the namenode. The current block and
//! `read_ahead` following blocks are read at once through small bounded channels
//! ([`READER_QUEUE`] messages each): the next block's request is under way while the
//! current one streams, and memory stays at a few MiB per download whatever the size.
//!
//! # What is verified before it is sent
//!
//! A datanode can serve wrong bytes with matching CRCs (it computes them), so nothing
//! it says is trusted until it matches an id: a block's id is its bytes' SHA-256, a
//! file's id the SHA-256 of all its bytes (issue 24 finding 7, docs/security.md).
//!
//! - Every block a read touches is read **whole**, from its first byte, and hashed;
//!   only the range's bytes of it are sent, and the last of them is held back
//!   ([`Emitter`]) until the block's SHA-256 equals its id. On a mismatch the replica
//!   is reported, and the block is read again from another replica if nothing of it
//!   went out yet; otherwise the stream ends with an error instead of the held-back
//!   bytes. A range thus costs a read of every block it touches (a small range of a
//!   64 MiB block reads 64 MiB) and never delivers its last byte unverified.
//! - A whole-file read of several blocks is also hashed as a whole (in a task of its
//!   own, beside the stream), and the file's final piece is held back until that
//!   SHA-256 equals the file id: a record claiming another content's id never completes.
//! - A file of one block is that block's bytes, so its id must be the block's id (an
//!   empty file's, the SHA-256 of nothing): a record that says otherwise is never
//!   served (`check_file_id`, once per read).
//!
//! The HTTP client therefore sees a complete body only if every byte of it was
//! verified; a mismatch found at the end becomes a truncated body (the gateway stops
//! short of its Content-Length), never a silently wrong one.
//!
//! A file of one small block ([`READ_BEFORE_ANSWER`]) is read and verified whole before
//! its answer starts instead ([`Client::read_small`]): it costs no task or channel hop,
//! and a failure is the answer's status.
//!
//! Timeouts are per message (stall detection), never around a whole transfer.
//! Dropping the returned stream aborts the driver and every reader task.

use std::collections::VecDeque;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use kdfs_core::{BlockId, FileId};
use kdfs_proto::pb;
use kdfs_proto::wire::{self, Location};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, error, instrument, warn};

use super::Client;
use super::model::{FileInfo, LocatedBlock};
use crate::error::{Error, Result};

/// Messages (about 1 MiB each) buffered per block reader, on top of the HTTP/2 stream
/// window (`kdfs_proto::transport::STREAM_WINDOW`) already in flight per read.
pub const READER_QUEUE: usize = 2;
/// A file of one block of at most this many bytes is read before its answer starts
/// ([`Client::read_small`]).
pub const READ_BEFORE_ANSWER: u64 = 64 << 10;

/// A half-open byte range `start..end` of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// One read of part of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockRead {
    /// Index of the block in the file.
    pub index: usize,
    /// First byte within the block.
    pub offset: u64,
    /// Bytes to read.
    pub len: u64,
}

/// Maps `range` of a file whose blocks have `lengths` onto per-block reads, in order.
/// Blocks outside the range and empty reads are left out; a range past the end is
/// clipped.
pub(crate) fn plan(lengths: &[u64], range: ByteRange) -> Vec<BlockRead> {
    let mut reads = Vec::new();
    let mut block_start = 0u64;
    for (index, &len) in lengths.iter().enumerate() {
        let block_end = block_start + len;
        let from = range.start.max(block_start);
        let to = range.end.min(block_end);
        if from < to {
            reads.push(BlockRead {
                index,
                offset: from - block_start,
                len: to - from,
            });
        }
        block_start = block_end;
    }
    reads
}

/// The body of a download: verified bytes in order. Dropping it stops all its work.
pub struct Download {
    rx: mpsc::Receiver<Result<Bytes>>,
    _driver: AbortOnDropHandle<()>,
}

impl Stream for Download {
    type Item = Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Client {
    /// Looks the file up and streams `range` of it (the whole file if `None`).
    #[instrument(skip_all, fields(file = %id))]
    pub async fn download(
        &self,
        id: FileId,
        range: Option<ByteRange>,
    ) -> Result<(FileInfo, Download)> {
        let info = self.get(id).await?;
        check_file_id(&info)?;
        let range = range.unwrap_or(ByteRange {
            start: 0,
            end: info.record.size,
        });
        if range.start > range.end || range.end > info.record.size {
            return Err(Error::InvalidInput(format!(
                "range {}..{} outside a file of {} bytes",
                range.start, range.end, info.record.size
            )));
        }
        let body = self.read(&info, range);
        Ok((info, body))
    }

    /// `range` (already checked against the size) of a looked-up file of one block of
    /// at most [`READ_BEFORE_ANSWER`] bytes, read before the answer starts: the whole
    /// block from one replica after another until one's bytes match the block's
    /// SHA-256 (a range too), then the range cut out of it. No driver or reader task, no
    /// channel hop per message; a corrupt replica is reported and the next one tried
    /// (a streamed block's can only end its stream); a block no replica could serve
    /// becomes the answer's status instead of a body broken off after a 200. `None`
    /// for any other file (stream it with [`Client::read`]), except that a file of at
    /// most one block whose id is not its content's is refused here, before any answer.
    #[instrument(skip_all, fields(file = %info.record.id))]
    pub async fn read_small(&self, info: &FileInfo, range: ByteRange) -> Option<Result<Bytes>> {
        if let Err(e) = check_file_id(info) {
            return Some(Err(e));
        }
        let [block] = info.blocks.as_slice() else {
            return None;
        };
        if block.length > READ_BEFORE_ANSWER {
            return None;
        }
        let [r] = plan(&[block.length], range)[..] else {
            return Some(Ok(Bytes::new())); // An empty range.
        };
        let mut errors: Vec<String> = Vec::new();
        for replica in &block.replicas {
            if !errors.is_empty() {
                metrics::counter!("kdfs_gateway_read_failovers_total").increment(1);
            }
            let mut pos = 0;
            let mut hasher = Sha256::new();
            let mut pieces = Vec::new();
            let read = read_replica(
                self,
                block,
                replica,
                &mut pos,
                block.length,
                Some(&mut hasher),
                &mut Out::Buffer(&mut pieces),
            )
            .await;
            let failure = match read {
                Ok(()) => {
                    let got = BlockId::from_bytes(hasher.finalize().into());
                    if got == block.id {
                        let whole = match pieces.len() {
                            1 => pieces.pop().expect("one piece"),
                            _ => Bytes::from(pieces.concat()),
                        };
                        let bytes = whole.slice(r.offset as usize..(r.offset + r.len) as usize);
                        metrics::counter!("kdfs_gateway_download_bytes_total")
                            .increment(bytes.len() as u64);
                        return Some(Ok(bytes));
                    }
                    ReplicaFailure::Bad(format!("block content hashes to {got}"))
                }
                Err(f) => f,
            };
            if !note_failure(self, block, replica, failure, &mut errors) {
                unreachable!("a read into a buffer has a consumer");
            }
        }
        Some(Err(unreadable(block, &errors)))
    }

    /// Streams `range` (already checked against the size) of a looked-up file whose id
    /// was already checked against its blocks: [`Client::download`] does, and
    /// [`Client::read_small`] does for every file before it answers `None`. Every block
    /// is verified before its last byte goes out, and a whole file of several blocks
    /// against its id before its final piece does (see the module docs).
    pub fn read(&self, info: &FileInfo, range: ByteRange) -> Download {
        let whole_file = range.start == 0 && range.end == info.record.size;
        // A file of one block has its block's id (checked), which its block's hash proves.
        // A block list this gateway already proved to be the content needs no second pass.
        let mut file_id = None;
        if whole_file && info.blocks.len() > 1 {
            let proven = self
                .inner
                .proven
                .is_proven(info.record.id, block_list(&info.blocks));
            let check = if proven { "proven" } else { "hashed" };
            metrics::counter!("kdfs_gateway_whole_file_checks_total", "check" => check)
                .increment(1);
            file_id = (!proven).then_some(info.record.id);
        }
        self.stream(info, range, file_id)
    }

    /// As [`Client::read`], with the whole-content check against `file_id` (which must
    /// be asked only for a whole-file range) or none: every block is still verified.
    pub(crate) fn stream(
        &self,
        info: &FileInfo,
        range: ByteRange,
        file_id: Option<FileId>,
    ) -> Download {
        let lengths: Vec<u64> = info.blocks.iter().map(|b| b.length).collect();
        let reads = plan(&lengths, range);
        let blocks = info.blocks.clone();
        let (tx, rx) = mpsc::channel(2);
        let client = self.clone();
        let span = tracing::info_span!("read", file = %info.record.id);
        let check = file_id.map(FileCheck::start);
        let driver = tokio::spawn(drive(client, blocks, reads, check, tx).instrument(span));
        Download {
            rx,
            _driver: AbortOnDropHandle::new(driver),
        }
    }
}

/// Refuses a record whose id its blocks prove false: a one-block file's id must be its
/// block's id, an empty file's the SHA-256 of nothing. Longer files pass (their id is
/// the hash of every block's bytes in order, which no single block proves).
fn check_file_id(info: &FileInfo) -> Result<()> {
    let id = info.record.id;
    let (block, proof) = match info.blocks.as_slice() {
        [] => ("no block".to_owned(), FileId::of(&[])),
        [b] => (b.id.to_string(), FileId::from_bytes(*b.id.as_bytes())),
        _ => return Ok(()),
    };
    if id == proof {
        return Ok(());
    }
    error!(file = %id, %block, "file record's id is not its content's; refusing to serve it");
    Err(Error::Unreadable {
        block,
        reason: format!("the file's id {id} is not the SHA-256 of its content ({proof})"),
    })
}

/// Runs block readers (current + read-ahead) and forwards their bytes in order, the
/// final piece through `check` when the whole file is checked against its id.
async fn drive(
    client: Client,
    blocks: Vec<LocatedBlock>,
    reads: Vec<BlockRead>,
    mut check: Option<FileCheck>,
    out: mpsc::Sender<Result<Bytes>>,
) {
    let window = 1 + client.inner.options.read_ahead;
    let mut reads = reads.into_iter();
    let mut running: VecDeque<(mpsc::Receiver<Result<Bytes>>, AbortOnDropHandle<()>)> =
        VecDeque::new();
    loop {
        while running.len() < window {
            let Some(r) = reads.next() else { break };
            let (tx, rx) = mpsc::channel(READER_QUEUE);
            let block = blocks[r.index].clone();
            let task = tokio::spawn(read_block(client.clone(), block, r, tx).in_current_span());
            running.push_back((rx, AbortOnDropHandle::new(task)));
        }
        let Some((mut rx, _task)) = running.pop_front() else {
            break;
        };
        while let Some(item) = rx.recv().await {
            let piece = match item {
                Ok(b) => b,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            };
            metrics::counter!("kdfs_gateway_download_bytes_total").increment(piece.len() as u64);
            let ready = match check.as_mut() {
                Some(c) => c.pass(piece).await,
                None => Some(piece),
            };
            if let Some(b) = ready
                && out.send(Ok(b)).await.is_err()
            {
                return;
            }
        }
    }
    if let Some(c) = check {
        let id = c.id;
        let _ = match c.finish().await {
            Ok(last) => {
                client.inner.proven.prove(id, block_list(&blocks));
                match last {
                    Some(last) => out.send(Ok(last)).await,
                    None => Ok(()),
                }
            }
            Err(e) => out.send(Err(e)).await,
        };
    }
}

/// A located block list as [`super::proven`] keys it.
fn block_list(blocks: &[LocatedBlock]) -> impl Iterator<Item = (&BlockId, u64)> {
    blocks.iter().map(|b| (&b.id, b.length))
}

/// Pieces queued for a whole-file hasher: a slower hasher slows the stream down
/// rather than growing memory.
const HASH_QUEUE: usize = 4;

/// The whole-content check of a whole-file read: every piece goes to a hasher task of
/// its own (hashing in the driver would put a second SHA-256 pass in the stream's
/// path), and the latest piece is held back, so the final one goes out only once the
/// content hashes to the file id.
struct FileCheck {
    id: FileId,
    tx: mpsc::Sender<Bytes>,
    hasher: AbortOnDropHandle<FileId>,
    held: Option<Bytes>,
}

impl FileCheck {
    fn start(id: FileId) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(HASH_QUEUE);
        let hasher = tokio::spawn(
            async move {
                let mut h = Sha256::new();
                while let Some(b) = rx.recv().await {
                    h.update(&b);
                }
                FileId::from_bytes(h.finalize().into())
            }
            .in_current_span(),
        );
        Self {
            id,
            tx,
            hasher: AbortOnDropHandle::new(hasher),
            held: None,
        }
    }

    /// Takes the next piece in file order; gives back the one before it, now free to go.
    async fn pass(&mut self, piece: Bytes) -> Option<Bytes> {
        // The hasher stops early only by panicking, which `finish` reports.
        let _ = self.tx.send(piece.clone()).await;
        self.held.replace(piece)
    }

    /// The held-back final piece, once everything passed hashes to the file id.
    async fn finish(self) -> Result<Option<Bytes>> {
        drop(self.tx);
        let content = self
            .hasher
            .await
            .map_err(|e| Error::Internal(format!("file hasher: {e}")))?;
        if content != self.id {
            error!(file = %self.id, %content, "a file's blocks are not the content its id names; its download is broken off");
            return Err(Error::NotItsContent {
                file: self.id,
                content,
            });
        }
        Ok(self.held)
    }
}

/// Why one replica stopped serving.
enum ReplicaFailure {
    /// The replica is bad (corrupt, missing): report it.
    Bad(String),
    /// The node or the transfer failed; the replica may be fine.
    Transient(String),
    /// Our consumer went away: stop everything.
    Gone,
}

/// Logs a replica's failure (reporting a bad replica to the namenode) and adds it to
/// `errors`, the reasons [`unreadable`] lists. `false`: our consumer went away.
fn note_failure(
    client: &Client,
    block: &LocatedBlock,
    replica: &Location,
    failure: ReplicaFailure,
    errors: &mut Vec<String>,
) -> bool {
    match failure {
        ReplicaFailure::Gone => return false,
        ReplicaFailure::Bad(reason) => {
            warn!(block = %block.id, node = %replica.id, %reason, "bad replica; failing over");
            client.report_bad_replica(block.id, replica, reason.clone());
            errors.push(format!("{}: {reason}", replica.address));
        }
        ReplicaFailure::Transient(reason) => {
            warn!(block = %block.id, node = %replica.address, %reason, "replica read failed; failing over");
            errors.push(format!("{}: {reason}", replica.address));
        }
    }
    true
}

/// The error of a block no replica could serve, with each replica's reason.
fn unreadable(block: &LocatedBlock, errors: &[String]) -> Error {
    let reason = if block.replicas.is_empty() {
        "no live replica".to_owned()
    } else {
        format!("every replica failed: {}", errors.join("; "))
    };
    Error::Unreadable {
        block: block.id.to_string(),
        reason,
    }
}

/// Reads `block` whole and sends the bytes of `r`, the last of them only once the
/// block's SHA-256 matched its id. An error or stall fails over to the next replica at
/// the same offset; a block that hashes wrong is read again from the next replica if
/// nothing of it went out yet, and otherwise ends the stream with an error.
#[instrument(skip_all, fields(block = %block.id, index = r.index))]
async fn read_block(
    client: Client,
    block: LocatedBlock,
    r: BlockRead,
    tx: mpsc::Sender<Result<Bytes>>,
) {
    let end = block.length;
    let mut emit = Emitter::new(&tx, r.offset..r.offset + r.len);
    let mut pos = 0;
    let mut hasher = Sha256::new();
    let mut served_by: Vec<&Location> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for replica in &block.replicas {
        if !errors.is_empty() {
            metrics::counter!("kdfs_gateway_read_failovers_total").increment(1);
        }
        let before = pos;
        let outcome = read_replica(
            &client,
            &block,
            replica,
            &mut pos,
            end,
            Some(&mut hasher),
            &mut Out::Stream(&mut emit),
        )
        .await;
        if pos > before {
            served_by.push(replica);
        }
        if let Err(failure) = outcome {
            if !note_failure(&client, &block, replica, failure, &mut errors) {
                return;
            }
            continue;
        }
        let got = BlockId::from_bytes(std::mem::take(&mut hasher).finalize().into());
        if got == block.id {
            emit.release().await;
            return;
        }
        metrics::counter!("kdfs_gateway_block_hash_mismatches_total").increment(1);
        let reason = format!("block content hashes to {got}");
        // Only a replica that served the whole block can be blamed for it.
        if let [only] = served_by.as_slice() {
            client.report_bad_replica(block.id, only, reason.clone());
        }
        if emit.sent {
            error!(block = %block.id, %reason, "a block's bytes already went out unverified; breaking the download off");
            let _ = tx
                .send(Err(Error::Unreadable {
                    block: block.id.to_string(),
                    reason,
                }))
                .await;
            return;
        }
        warn!(block = %block.id, node = %replica.address, %reason, "bad replica; reading the block again from the next");
        errors.push(format!("{}: {reason}", replica.address));
        emit.discard();
        pos = 0;
        served_by.clear();
    }
    let _ = tx.send(Err(unreadable(&block, &errors))).await;
}

/// Where a streamed block's verified messages go: the bytes of `want` (offsets in the
/// block) to the download's stream, the latest of them held back until the block is
/// verified ([`Emitter::release`]), so at most one message waits here.
struct Emitter<'a> {
    tx: &'a mpsc::Sender<Result<Bytes>>,
    want: Range<u64>,
    held: Option<Bytes>,
    /// Something of this block went out before the block was verified.
    sent: bool,
}

impl<'a> Emitter<'a> {
    fn new(tx: &'a mpsc::Sender<Result<Bytes>>, want: Range<u64>) -> Self {
        Self {
            tx,
            want,
            held: None,
            sent: false,
        }
    }

    /// Takes the message at `at` in the block; sends the part of `want` held back
    /// before it. `false`: the consumer went away.
    async fn put(&mut self, at: u64, data: Bytes) -> bool {
        let from = self.want.start.max(at);
        let to = self.want.end.min(at + data.len() as u64);
        if from >= to {
            return true;
        }
        let part = data.slice((from - at) as usize..(to - at) as usize);
        match self.held.replace(part) {
            Some(earlier) => {
                self.sent = true;
                self.tx.send(Ok(earlier)).await.is_ok()
            }
            None => true,
        }
    }

    /// The block is verified: the held-back bytes go out.
    async fn release(&mut self) {
        if let Some(last) = self.held.take() {
            let _ = self.tx.send(Ok(last)).await;
        }
    }

    /// The block is being read again from its start: what is held back is dropped.
    fn discard(&mut self) {
        debug_assert!(
            !self.sent,
            "a block is only read again if nothing of it went out"
        );
        self.held = None;
    }
}

/// Where a replica's verified messages go.
enum Out<'a, 'b> {
    /// To the download's stream, through a block's [`Emitter`].
    Stream(&'a mut Emitter<'b>),
    /// Kept (a small block, [`Client::read_small`]).
    Buffer(&'a mut Vec<Bytes>),
}

impl Out<'_, '_> {
    /// The message at `at` in the block. `false`: the consumer went away.
    async fn put(&mut self, at: u64, data: Bytes) -> bool {
        match self {
            Out::Stream(emit) => emit.put(at, data).await,
            Out::Buffer(kept) => {
                kept.push(data);
                true
            }
        }
    }
}

/// Streams `*pos..end` of a block from one replica, advancing `*pos` per verified message.
async fn read_replica(
    client: &Client,
    block: &LocatedBlock,
    replica: &Location,
    pos: &mut u64,
    end: u64,
    mut hasher: Option<&mut Sha256>,
    out: &mut Out<'_, '_>,
) -> std::result::Result<(), ReplicaFailure> {
    let stall = client.inner.options.stall_timeout;
    let mut dn = client
        .inner
        .pool
        .datanode(&replica.address)
        .map_err(|e| ReplicaFailure::Transient(Error::from(e).to_string()))?;
    let req = pb::ReadBlockRequest {
        block_id: wire::raw(block.id.as_bytes()),
        offset: *pos,
        length: end - *pos,
        token: block.token.clone(),
    };
    let status_failure = |s: tonic::Status| match s.code() {
        tonic::Code::DataLoss | tonic::Code::NotFound => {
            ReplicaFailure::Bad(format!("{}: {}", s.code(), s.message()))
        }
        _ => ReplicaFailure::Transient(format!("{}: {}", s.code(), s.message())),
    };
    let mut stream = match tokio::time::timeout(stall, dn.read_block(req)).await {
        Err(_) => {
            return Err(ReplicaFailure::Transient(format!(
                "no answer within {stall:?}"
            )));
        }
        Ok(Err(s)) => return Err(status_failure(s)),
        Ok(Ok(r)) => r.into_inner(),
    };
    while *pos < end {
        let msg = match tokio::time::timeout(stall, stream.message()).await {
            Err(_) => return Err(ReplicaFailure::Transient(format!("stalled for {stall:?}"))),
            Ok(Err(s)) => return Err(status_failure(s)),
            Ok(Ok(None)) => {
                return Err(ReplicaFailure::Transient(format!(
                    "stream ended at offset {} of {end}",
                    *pos
                )));
            }
            Ok(Ok(Some(m))) => m,
        };
        if msg.offset != *pos {
            return Err(ReplicaFailure::Bad(format!(
                "sent offset {} where {} was expected",
                msg.offset, *pos
            )));
        }
        let len = msg.data.len() as u64;
        if len == 0 || len > end - *pos {
            return Err(ReplicaFailure::Bad(format!(
                "sent {len} bytes at offset {} (range ends at {end})",
                *pos
            )));
        }
        if crc32c::crc32c(&msg.data) != msg.crc32c {
            metrics::counter!("kdfs_gateway_crc_mismatches_total").increment(1);
            return Err(ReplicaFailure::Bad(format!(
                "CRC32C mismatch at offset {}",
                *pos
            )));
        }
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&msg.data);
        }
        let at = *pos;
        *pos += len;
        if !out.put(at, msg.data).await {
            return Err(ReplicaFailure::Gone);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(blocks: &[u64], range: (u64, u64), want: &[(usize, u64, u64)]) {
        let got = plan(
            blocks,
            ByteRange {
                start: range.0,
                end: range.1,
            },
        );
        let want: Vec<BlockRead> = want
            .iter()
            .map(|&(index, offset, len)| BlockRead { index, offset, len })
            .collect();
        assert_eq!(got, want, "blocks {blocks:?}, range {range:?}");
    }

    /// Which records a reader serves under their id (hash squatting).
    #[test]
    fn a_record_whose_blocks_disprove_its_id_is_not_served() {
        fn check(id: &[u8], blocks: &[&[u8]], ok: bool) {
            let mut offset = 0;
            let blocks: Vec<LocatedBlock> = blocks
                .iter()
                .map(|c| {
                    let b = LocatedBlock {
                        id: BlockId::of(c),
                        offset,
                        length: c.len() as u64,
                        replicas: vec![],
                        token: None,
                    };
                    offset += b.length;
                    b
                })
                .collect();
            let info = FileInfo {
                record: super::super::model::FileRecord {
                    id: FileId::of(id),
                    name: "f".into(),
                    size: offset,
                    content_type: String::new(),
                    created_ms: 0,
                    replication: 1,
                    blocks: vec![],
                },
                blocks,
            };
            let got = check_file_id(&info);
            assert_eq!(got.is_ok(), ok, "{id:?} for {:?}: {got:?}", info.blocks);
            if !ok {
                assert!(matches!(got, Err(Error::Unreadable { .. })), "{got:?}");
            }
        }
        check(b"", &[], true);
        check(b"victim", &[], false);
        check(b"mine", &[b"mine"], true);
        check(b"victim", &[b"mine"], false);
        // A longer file's id is not checked here.
        check(b"victim", &[b"mi", b"ne"], true);
    }

    #[test]
    fn range_to_block_mapping() {
        // Empty file and empty ranges read nothing.
        check(&[], (0, 0), &[]);
        check(&[10, 10], (5, 5), &[]);
        // Whole file.
        check(&[10], (0, 10), &[(0, 0, 10)]);
        check(&[10, 10, 3], (0, 23), &[(0, 0, 10), (1, 0, 10), (2, 0, 3)]);
        // Inside one block.
        check(&[10, 10], (2, 7), &[(0, 2, 5)]);
        check(&[10, 10], (12, 13), &[(1, 2, 1)]);
        // Exactly one block, at a boundary.
        check(&[10, 10, 10], (10, 20), &[(1, 0, 10)]);
        // Across a boundary.
        check(&[10, 10, 10], (9, 11), &[(0, 9, 1), (1, 0, 1)]);
        check(&[10, 10, 10], (5, 25), &[(0, 5, 5), (1, 0, 10), (2, 0, 5)]);
        // Last byte; first byte.
        check(&[10, 10, 3], (22, 23), &[(2, 2, 1)]);
        check(&[10, 10, 3], (0, 1), &[(0, 0, 1)]);
        // Past the end is clipped.
        check(&[10, 3], (11, 100), &[(1, 1, 2)]);
    }
}

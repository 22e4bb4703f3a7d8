//! The write path driven from async code: [`AsyncBlockWriter`] keeps the runtime's
//! threads off the disk while a `WriteBlock` stream arrives.

use std::io;

use bytes::Bytes;
use kdfs_core::BlockId;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::reservation::Reservation;
use super::{Commit, Store, task_error};
use crate::error::{Error, Result};

/// Data messages queued between a network task and its blocking writer: the bound that
/// makes a slow disk slow the sender down (back-pressure) instead of growing memory.
pub const WRITE_QUEUE_DEPTH: usize = 2;

/// What the network side hands the blocking writer task.
enum WriteMsg {
    Data(Bytes),
    /// Expected id and the digest the hasher computed.
    Commit(BlockId, BlockId),
}

/// Bytes an [`AsyncBlockWriter`] holds in memory before it starts its blocking tasks:
/// a block that ends within them (a small file) is written, hashed and committed by one
/// blocking call instead of through queues to two threads.
const LAZY_BYTES: usize = 1 << 20;

/// A [`super::BlockWriter`] driven from async code. The first `LAZY_BYTES` are held in
/// memory; a block that ends there is written and committed by one blocking call.
/// Past them the bytes go through bounded queues to two blocking tasks, one writing and
/// checksumming them and one computing their SHA-256, so the runtime's threads never
/// wait on the disk, hashing overlaps the writes, and a slow disk slows the sender.
///
/// Room is reserved at [`AsyncBlockWriter::start`], so a block that cannot fit is
/// refused before any byte is accepted. Dropping the writer without
/// [`AsyncBlockWriter::commit`] aborts the write (temp file removed, room released).
/// Once `commit` has handed the digest to the writer, the commit finishes even if the
/// awaiting future is dropped.
#[derive(Debug)]
pub struct AsyncBlockWriter {
    store: Store,
    state: WriterState,
}

#[derive(Debug)]
enum WriterState {
    /// Nothing on disk yet.
    Held {
        reservation: Reservation,
        held: Vec<Bytes>,
        len: usize,
    },
    Streaming {
        tx: mpsc::Sender<WriteMsg>,
        task: tokio::task::JoinHandle<Result<Commit>>,
        hash_tx: mpsc::Sender<Bytes>,
        hash_task: tokio::task::JoinHandle<BlockId>,
    },
    /// Between the two, or after a failure.
    Broken,
}

impl std::fmt::Debug for WriteMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Data(b) => write!(f, "Data({} bytes)", b.len()),
            Self::Commit(id, _) => write!(f, "Commit({id})"),
        }
    }
}

async fn task_failure(task: &mut tokio::task::JoinHandle<Result<Commit>>) -> Error {
    match task.await {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => Error::Aborted,
        Err(e) => task_error(e),
    }
}

impl AsyncBlockWriter {
    /// Reserves room; refuses before any byte is accepted if the block cannot fit.
    pub async fn start(store: &Store, max_len: u64) -> Result<Self> {
        // One statvfs under the reservation lock: short enough for a runtime thread.
        let reservation = store.reserve(max_len)?;
        Ok(Self {
            store: store.clone(),
            state: WriterState::Held {
                reservation,
                held: Vec::new(),
                len: 0,
            },
        })
    }

    /// Queues bytes; waits while a queue is full. On a failed write returns its error.
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        if let WriterState::Held {
            reservation,
            held,
            len,
        } = &mut self.state
        {
            if (*len + data.len()) as u64 > reservation.bytes {
                return Err(Error::TooLong {
                    max: reservation.bytes,
                });
            }
            if *len + data.len() <= LAZY_BYTES {
                *len += data.len();
                held.push(data);
                return Ok(());
            }
            self.stream().await?;
        }
        self.send(data).await
    }

    /// Hands bytes to the writer and hasher tasks (once streaming).
    async fn send(&mut self, data: Bytes) -> Result<()> {
        let WriterState::Streaming {
            tx, task, hash_tx, ..
        } = &mut self.state
        else {
            return Err(Error::Aborted);
        };
        // The writer first: it may refuse (too long, disk error) before anything is hashed.
        if tx.send(WriteMsg::Data(data.clone())).await.is_err() {
            return Err(task_failure(task).await);
        }
        if hash_tx.send(data).await.is_err() {
            return Err(Error::io("hasher task", io::Error::other("hasher stopped")));
        }
        Ok(())
    }

    /// Creates the temp file and starts the writer and hasher tasks, handing them the
    /// bytes held so far.
    async fn stream(&mut self) -> Result<()> {
        let WriterState::Held {
            reservation, held, ..
        } = std::mem::replace(&mut self.state, WriterState::Broken)
        else {
            return Ok(());
        };
        let s = self.store.clone();
        let mut writer = tokio::task::spawn_blocking(move || s.begin_reserved(reservation, true))
            .await
            .map_err(task_error)??
            .without_hashing();
        let (tx, mut rx) = mpsc::channel::<WriteMsg>(WRITE_QUEUE_DEPTH);
        let task = tokio::task::spawn_blocking(move || {
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    WriteMsg::Data(b) => writer.write(&b)?,
                    WriteMsg::Commit(expected, actual) => {
                        return writer.commit_digest(expected, actual);
                    }
                }
            }
            Err(Error::Aborted)
        });
        let (hash_tx, mut hash_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE_DEPTH);
        let hash_task = tokio::task::spawn_blocking(move || {
            let mut h = Sha256::new();
            while let Some(b) = hash_rx.blocking_recv() {
                h.update(&b);
            }
            BlockId::from_bytes(h.finalize().into())
        });
        self.state = WriterState::Streaming {
            tx,
            task,
            hash_tx,
            hash_task,
        };
        for b in held {
            self.send(b).await?;
        }
        Ok(())
    }

    /// Verifies and commits everything queued so far.
    pub async fn commit(self, expected: BlockId) -> Result<Commit> {
        match self.state {
            WriterState::Held {
                reservation, held, ..
            } => {
                let store = self.store;
                // Buffered: a small block stays in the page cache for the reads that
                // usually follow, and its page-cache cost is small.
                tokio::task::spawn_blocking(move || {
                    let mut w = store.begin_reserved(reservation, false)?;
                    for b in &held {
                        w.write(b)?;
                    }
                    w.commit(expected)
                })
                .await
                .map_err(task_error)?
            }
            WriterState::Streaming {
                tx,
                mut task,
                hash_tx,
                hash_task,
            } => {
                drop(hash_tx); // The hasher finishes once it has consumed everything queued.
                let actual = hash_task.await.map_err(task_error)?;
                if tx.send(WriteMsg::Commit(expected, actual)).await.is_err() {
                    return Err(task_failure(&mut task).await);
                }
                task.await.map_err(task_error)?
            }
            WriterState::Broken => Err(Error::Aborted),
        }
    }
}

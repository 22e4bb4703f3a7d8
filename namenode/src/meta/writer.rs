//! The group-commit writer: every change to the store goes through one thread that
//! drains every request waiting in its queue into one redb transaction and one fsync,
//! then applies the in-memory effects ([`OnDurable`]) in the same order and only then
//! answers the callers. Many small commits per second thus share a handful of fsyncs
//! (docs/decisions/0001-redb-namenode-metadata.md).
//!
//! Lease rows nobody waits for ride along with the next change somebody waits for
//! ([`Writer::enqueue`], `gather`), and a lease row written and ended within one
//! batch is not written at all (`transient_leases`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::{SmallVec, smallvec};
use tokio::sync::{mpsc, oneshot, watch};

use super::ops::{self, Effect, Op};
use super::store::Store;
use super::tables::Tables;
use crate::error::{Error, Result};

/// Most requests one group commit carries: bounds the latency of the first one. A
/// submission of several ops ([`Writer::submit_all`]) is taken whole, so a batch can
/// pass it by that submission's size less one.
pub const MAX_BATCH: usize = 2048;
/// Submissions that may wait for the writer before callers are slowed down.
pub const WRITER_QUEUE: usize = 8192;
/// Longest a change nobody waits for (a lease row of [`Writer::enqueue`]) is held back
/// so that it rides along with the next change somebody waits for, instead of costing
/// a transaction and an fsync of its own.
pub const LAZY_WAIT: Duration = Duration::from_millis(20);

struct Request {
    op: Op,
    /// Somebody waits for this change to be durable ([`Writer::submit`]).
    waited_for: bool,
    reply: oneshot::Sender<Result<Effect>>,
}

/// One entry of the writer's queue: the requests of one submission, which the writer
/// takes whole, so they land in the same group commit.
type Submission = SmallVec<[Request; 1]>;

/// The handle callers use to submit durable changes to the group-commit writer.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Submission>,
    /// The writer's progress as a sequence number: odd from the moment a batch starts
    /// being written until every change of it has been applied to memory
    /// ([`OnDurable`]), even in between. See [`Writer::settled`].
    progress: Arc<watch::Sender<u64>>,
}

/// The answer to one submitted op, once it is durable (and applied to memory).
pub type Reply = oneshot::Sender<Result<Effect>>;

/// Where the writer sends a gathered batch with HA: to the Raft group
/// (`crate::ha::propose`), which answers every reply once the batch's log entry is
/// committed and applied here, or fails them if it cannot commit.
pub trait Replicate: Send + 'static {
    /// Proposes `ops` as one log entry, in the order of the calls; one reply per op.
    fn propose(&mut self, ops: Vec<Op>, replies: Vec<Reply>);
}

/// Called on the writer thread, in commit order, once a batch is durable.
pub type OnDurable = Box<dyn Fn(&Op, &Effect) + Send + Sync + 'static>;

impl Writer {
    /// Starts the writer thread. It stops when every `Writer` handle is dropped, after
    /// finishing what was queued; the returned receiver fires then (the database is
    /// closed once it fired and every other `Arc<Store>` is gone).
    pub fn spawn(store: Arc<Store>, on_durable: OnDurable) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        let progress = Arc::new(watch::Sender::new(0));
        let writer_progress = progress.clone();
        std::thread::Builder::new()
            .name("kdfs-meta-writer".into())
            .spawn(move || {
                writer_loop(store, rx, on_durable, &writer_progress);
                let _ = done_tx.send(());
            })
            .expect("spawning the metadata writer thread");
        (Self { tx, progress }, done_rx)
    }

    /// Starts a writer whose batches go to the Raft group: the same queue, gathering
    /// and batch sizes as [`Writer::spawn`], but each batch is handed to `replicate`
    /// instead of written here. Whoever applies the entries moves `progress` (see
    /// [`Writer::settled`]). Stops when every handle is dropped.
    pub fn spawn_replicated(
        mut replicate: Box<dyn Replicate>,
        progress: Arc<watch::Sender<u64>>,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Submission>(WRITER_QUEUE);
        std::thread::Builder::new()
            .name("kdfs-meta-proposer".into())
            .spawn(move || {
                let timer = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a timer for the metadata proposer thread");
                let mut batch = Vec::with_capacity(MAX_BATCH);
                let mut open = true;
                while open {
                    match rx.blocking_recv() {
                        Some(first) => batch.extend(first),
                        None => break,
                    }
                    open = gather(&timer, &mut rx, &mut batch);
                    let (ops, replies) = batch.drain(..).map(|r| (r.op, r.reply)).unzip();
                    replicate.propose(ops, replies);
                }
            })
            .expect("spawning the metadata proposer thread");
        Self { tx, progress }
    }

    /// Waits (at most `limit`) until the batch being written when it was called, if
    /// any, has been applied to memory. A change is visible in the store a moment
    /// before it is applied to memory; a reader that found the two disagreeing (a live
    /// record whose blocks are not in the block map) calls this and reads again, and
    /// then sees both agree. Returns whether it settled within `limit`.
    pub async fn settled(&self, limit: Duration) -> bool {
        let mut rx = self.progress.subscribe();
        let now = *rx.borrow_and_update();
        if now.is_multiple_of(2) {
            return true;
        }
        matches!(
            tokio::time::timeout(limit, rx.wait_for(|s| *s > now)).await,
            Ok(Ok(_))
        )
    }

    /// Submits `op` and waits until it is durable and applied. Cancellation-safe in
    /// the sense that matters: once submitted, the change is made (or fails) whether
    /// or not this future is still polled.
    pub async fn submit(&self, op: Op) -> Result<Effect> {
        self.submit_all(vec![op])
            .await?
            .pop()
            .expect("one result per op")
    }

    /// Submits `ops` together and waits until they are durable and applied: they go
    /// into one group commit, in this order, so a batch of commits costs one
    /// transaction and one fsync. One result per op; the outer error only if the
    /// writer stopped. Cancellation-safe as [`Writer::submit`].
    pub async fn submit_all(&self, ops: Vec<Op>) -> Result<Vec<Result<Effect>>> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let (submission, replies): (Submission, Vec<_>) = ops
            .into_iter()
            .map(|op| {
                let (reply, rx) = oneshot::channel();
                let req = Request {
                    op,
                    waited_for: true,
                    reply,
                };
                (req, rx)
            })
            .unzip();
        self.send(submission).await?;
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(rx.await.map_err(|_| stopped())?);
        }
        Ok(out)
    }

    /// Queues `op` without waiting for it to be durable: it lands in a group commit
    /// within [`LAZY_WAIT`], in queue order (so no later than any later change that
    /// depends on it). Only waits for queue space, which is the back-pressure.
    pub async fn enqueue(&self, op: Op) -> Result<()> {
        let (reply, _) = oneshot::channel();
        self.send(smallvec![Request {
            op,
            waited_for: false,
            reply,
        }])
        .await
    }

    async fn send(&self, submission: Submission) -> Result<()> {
        self.tx.send(submission).await.map_err(|_| stopped())
    }
}

fn stopped() -> Error {
    Error::Unavailable("metadata writer stopped".into())
}

fn writer_loop(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<Submission>,
    on_durable: OnDurable,
    progress: &watch::Sender<u64>,
) {
    // Only for timed receives; every other wait of this thread is a plain block.
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a timer for the metadata writer thread");
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut open = true;
    while open {
        match rx.blocking_recv() {
            Some(first) => batch.extend(first),
            None => break,
        }
        open = gather(&timer, &mut rx, &mut batch);
        let size = batch.len();
        progress.send_modify(|s| *s += 1); // Odd: the store may now run ahead of memory.
        match write_batch(&store, &batch) {
            Ok(results) => {
                metrics::counter!("kdfs_namenode_group_commits_total").increment(1);
                metrics::histogram!("kdfs_namenode_group_commit_size").record(size as f64);
                for (req, res) in batch.drain(..).zip(results) {
                    if let Ok(effect) = &res {
                        on_durable(&req.op, effect);
                    }
                    let _ = req.reply.send(res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = size, "metadata commit failed");
                let msg = e.to_string();
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(Error::Unavailable(format!(
                        "metadata commit failed: {msg}"
                    ))));
                }
            }
        }
        progress.send_modify(|s| *s += 1); // Even: memory has caught up.
    }
}

/// Moves every queued submission into `batch` (until it holds [`MAX_BATCH`]
/// requests); `false` once every sender is gone.
fn drain(rx: &mut mpsc::Receiver<Submission>, batch: &mut Vec<Request>) -> bool {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(s) => batch.extend(s),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

/// Completes a group commit's batch, which holds its first request: everything queued
/// and, while nobody in the batch waits for it (lease rows only), whatever arrives
/// within [`LAZY_WAIT`] until a request somebody waits for does. A small upload's
/// lease row then lands in the same batch as its commit, where neither is written
/// (`transient_leases`), and a lone client pays one fsync per file instead of two.
/// Once somebody waits, the batch is written at once: lingering longer would share
/// fsyncs further but not the writer's CPU per create, which is what bounds it
/// (docs/decisions/0001-redb-namenode-metadata.md). Returns `false` once every sender
/// is gone (the batch is then the last one).
fn gather(
    timer: &tokio::runtime::Runtime,
    rx: &mut mpsc::Receiver<Submission>,
    batch: &mut Vec<Request>,
) -> bool {
    let start = Instant::now();
    if !drain(rx, batch) {
        return false;
    }
    while batch.len() < MAX_BATCH && !batch.iter().any(|r| r.waited_for) {
        let Some(left) = LAZY_WAIT.checked_sub(start.elapsed()) else {
            return true;
        };
        // The timeout is made inside `block_on`: a timer needs the runtime's context.
        match timer.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
            Ok(Some(s)) => batch.extend(s),
            Ok(None) => return false,
            Err(_) => return true,
        }
        if !drain(rx, batch) {
            return false;
        }
    }
    true
}

/// Which ops of a batch need no lease-table work: a lease written and ended within
/// the same batch (the usual small upload: BeginUpload's row and CommitFile land in
/// one group commit) never reaches the disk, as both happen in one transaction.
/// Lease ids are fresh UUIDs, so such a row cannot have existed before the batch.
fn transient_leases<'a>(ops: impl Iterator<Item = &'a Op>) -> Vec<bool> {
    let mut put: HashMap<&str, usize> = HashMap::new();
    let mut skip = Vec::new();
    for (i, op) in ops.enumerate() {
        skip.push(false);
        match op.lease() {
            Some((id, true)) => {
                put.insert(id, i);
            }
            Some((id, false)) => {
                if let Some(p) = put.remove(id) {
                    skip[p] = true;
                    skip[i] = true;
                }
            }
            None => {}
        }
    }
    skip
}

/// Applies every request of a batch in one transaction. A request that fails on its
/// own (unknown file) fails alone: ops check before they change anything.
fn write_batch(store: &Store, batch: &[Request]) -> Result<Vec<Result<Effect>>> {
    let txn = store.begin_write()?;
    let results = apply_batch(&txn, batch.iter().map(|r| &r.op))?;
    txn.commit()?;
    Ok(results)
}

/// Applies one group commit's ops inside `txn` (not committed here), one result per
/// op. The replicated state machine applies each log entry's batch through this too
/// (`replica.rs`), so every namenode changes its store exactly as a single one would.
pub(super) fn apply_batch<'a>(
    txn: &redb::WriteTransaction,
    ops: impl Iterator<Item = &'a Op> + Clone,
) -> Result<Vec<Result<Effect>>> {
    let skip = transient_leases(ops.clone());
    let results = {
        let mut tables = Tables::open(txn)?;
        ops.zip(skip)
            .map(|(op, skip)| ops::apply(&mut tables, op, skip))
            .collect::<Vec<_>>()
    };
    // Only "not found", a commit's conflict and the refusals of the namespace are
    // decided before an op changes anything; any other failure may have left an op
    // half-applied, so it aborts the whole batch.
    if let Some(Err(e)) = results
        .iter()
        .find(|r| matches!(r, Err(e) if !decided_first(e)))
    {
        return Err(Error::Corrupt(e.to_string()));
    }
    Ok(results)
}

/// The errors an op returns before it changes anything (see `ops.rs`).
fn decided_first(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound(_) | Error::Conflict(_) | Error::Namespace(_) | Error::InUse(_)
    )
}

#[cfg(test)]
mod tests {
    use super::super::records::{FileRecord, Lease};
    use super::super::store::Lookup;
    use super::*;

    fn commit(record: FileRecord, upload_id: &str) -> Op {
        Op::Commit {
            record,
            replaces: None,
            object_content: false,
            replicas: vec![],
            upload_id: upload_id.into(),
        }
    }

    fn req(op: Op) -> Request {
        Request {
            op,
            waited_for: true,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn transient_lease_table() {
        let put = |id: &str| Op::PutLease(Lease::test(id));
        let end = |id: &str| Op::EndLease(id.into());
        let delete = || Op::Delete {
            id: FileRecord::test(1, &[]).id,
            now_ms: 0,
        };
        let check = |ops: Vec<Op>, expected: &[bool]| {
            assert_eq!(transient_leases(ops.iter()), expected, "{ops:?}");
        };
        check(vec![], &[]);
        check(
            vec![put("a"), commit(FileRecord::test(1, &[1]), "a")],
            &[true, true],
        );
        check(vec![put("a"), end("a")], &[true, true]);
        check(vec![put("a"), end("b")], &[false, false]);
        check(vec![end("a"), put("a")], &[false, false]);
        check(vec![put("a"), delete(), end("a")], &[true, false, true]);
        // A second commit naming the same lease finds no row to end.
        check(
            vec![
                put("a"),
                commit(FileRecord::test(1, &[1]), "a"),
                commit(FileRecord::test(2, &[2]), "a"),
            ],
            &[true, true, false],
        );
    }

    #[test]
    fn a_lease_written_and_ended_in_one_batch_leaves_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let leases = |s: &Store| -> Vec<String> {
            s.load().unwrap().leases.into_iter().map(|l| l.id).collect()
        };
        let batch = [
            req(Op::PutLease(Lease::test("a"))),
            req(Op::PutLease(Lease::test("b"))),
            req(commit(FileRecord::test(1, &[1]), "a")),
        ];
        let out = write_batch(&store, &batch).unwrap();
        assert!(matches!(
            out[2],
            Ok(Effect::Committed { existed: false, .. })
        ));
        assert_eq!(leases(&store), vec!["b"]);
        assert_eq!(store.load().unwrap().files, 1);
        // A lease written by an earlier batch is removed from the table.
        write_batch(&store, &[req(Op::EndLease("b".into()))]).unwrap();
        assert!(leases(&store).is_empty());
    }

    #[test]
    fn an_unknown_file_fails_alone_in_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let batch = [
            req(Op::Delete {
                id: FileRecord::test(9, &[]).id,
                now_ms: 1,
            }),
            req(commit(FileRecord::test(1, &[1]), "")),
        ];
        let out = write_batch(&store, &batch).unwrap();
        assert!(matches!(out[0], Err(Error::NotFound(_))));
        assert!(matches!(out[1], Ok(Effect::Committed { .. })));
        assert_eq!(store.counts().unwrap(), (1, 0));
    }

    #[tokio::test]
    async fn ops_submitted_together_share_one_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (w, done) = Writer::spawn(store.clone(), Box::new(|_, _| {}));
        let mut ops: Vec<Op> = (1..=100)
            .map(|n| commit(FileRecord::test(n, &[n]), "u"))
            .collect();
        ops.push(commit(FileRecord::test(7, &[7]), "u"));
        let out = w.submit_all(ops).await.unwrap();
        assert_eq!(out.len(), 101);
        assert!(
            out[..100]
                .iter()
                .all(|e| matches!(e, Ok(Effect::Committed { existed: false, .. })))
        );
        assert!(
            matches!(out[100], Ok(Effect::Committed { existed: true, .. })),
            "the same file twice in one batch: the second finds the first"
        );
        // Every batch moves the progress counter by two, the second step just after
        // the replies.
        assert!(w.settled(Duration::from_secs(5)).await);
        assert_eq!(*w.progress.borrow(), 2, "one group commit");
        assert!(w.submit_all(Vec::new()).await.unwrap().is_empty());
        assert_eq!(store.load().unwrap().files, 100);
        drop((w, store));
        done.await.unwrap();
    }

    #[tokio::test]
    async fn enqueued_changes_land_without_anyone_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (w, done) = Writer::spawn(store.clone(), Box::new(|_, _| {}));
        w.enqueue(Op::PutLease(Lease::test("lazy"))).await.unwrap();
        // Dropping the last handle lets the writer finish what was queued.
        drop(w);
        done.await.unwrap();
        let leases: Vec<String> = store
            .load()
            .unwrap()
            .leases
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(leases, vec!["lazy"]);
    }

    #[tokio::test]
    async fn commit_delete_and_refcounts_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cluster_id;
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            cluster_id = store.load().unwrap().cluster_id;
            let (w, done) = Writer::spawn(store.clone(), Box::new(|_, _| {}));
            w.submit(commit(FileRecord::test(1, &[1, 2]), ""))
                .await
                .unwrap();
            w.submit(commit(FileRecord::test(2, &[2, 3]), ""))
                .await
                .unwrap();
            let again = w
                .submit(commit(FileRecord::test(1, &[1, 2]), ""))
                .await
                .unwrap();
            assert!(matches!(again, Effect::Committed { existed: true, .. }));
            let delete = |n: u8, now_ms: u64| Op::Delete {
                id: FileRecord::test(n, &[]).id,
                now_ms,
            };
            w.submit(delete(1, 5000)).await.unwrap();
            let twice = w.submit(delete(1, 6000)).await.unwrap();
            assert!(matches!(twice, Effect::Deleted { record: None, .. }));
            let unknown = w.submit(delete(9, 6000)).await;
            assert!(matches!(unknown, Err(Error::NotFound(_))));
            drop((w, store));
            done.await.unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.cluster_id, cluster_id);
        assert_eq!(loaded.files, 1);
        let mut refs: Vec<_> = loaded
            .refs
            .iter()
            .map(|r| (r.0.as_bytes()[0], r.1))
            .collect();
        refs.sort();
        assert_eq!(refs, vec![(2, 1), (3, 1)]);
        assert_eq!(
            loaded.dead_blocks.len(),
            1,
            "block 1 is only in the tombstone"
        );
        assert!(matches!(
            store.lookup(&FileRecord::test(1, &[]).id).unwrap(),
            Some(Lookup::Deleted {
                deleted_ms: 5000,
                ..
            })
        ));
        let (page, next) = store.list(None, 10, 1000, |_| true).unwrap();
        assert_eq!(page.len(), 1);
        assert!(next.is_none());
    }
}

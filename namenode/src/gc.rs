//! Garbage collection of replicas no live file references, sent as deletes that can
//! never destroy a replica written after they were decided.
//!
//! Three sources of garbage:
//! - **Dead blocks**: their last referencing file was deleted. Every node known to
//!   hold one gets a delete command once the delete grace (`--delete-grace`) has
//!   passed; a node that reports one later (it was away during the delete) gets one
//!   as soon as the grace allows. Remembered for the tombstone retention. The grace
//!   spares the datanodes work when the same content is uploaded again soon after:
//!   the re-upload's commit references the blocks before any delete has gone out.
//! - **Orphans**: replicas reported that no file or tombstone knows, typically blocks
//!   of an upload that has not committed yet, or never will. They are deleted only
//!   once they have been unreferenced for a lease TTL *and* every open upload began
//!   after they appeared (an older upload might still commit them).
//! - Over-replication trims are not garbage and are handled by `replication/`; they
//!   go out with the same generation as these deletes.
//!
//! **Generations, not a fence.** Content addressing means a new upload of deleted
//! content writes the very same block ids, so a delete of block B reaching datanode N
//! after an upload wrote B there would destroy an acknowledged replica. It cannot:
//! every delete names a write generation N reported before every upload still open
//! began ([`crate::generations`]), and N removes a replica only if its generation is
//! below it, under the block's commit lock. Every replica an open upload wrote is at
//! or above it, so the commit trusts its acks and a re-upload is never refused. A
//! delete whose replica the namenode already knows to be too new (from an incremental
//! report) is held back until it may go; one N refuses is reported again and decided
//! anew.

use std::collections::{BTreeMap, HashMap};

use kdfs_core::BlockId;

use crate::blockmap::{IdBuild, Locs, NodeIdx};
use crate::generations::GenerationLog;

/// Most block ids one delete command carries.
pub const MAX_DELETES_PER_COMMAND: usize = 10_000;
/// Due deletes looked at per command, at most: those held back (their replica is
/// newer than the generation a delete may name) are looked at again next time.
const MAX_DUE_SCANNED: usize = 4 * MAX_DELETES_PER_COMMAND;
/// A replica's generation the namenode does not know (the datanode decides).
pub const UNKNOWN_GENERATION: u64 = 0;

/// A delete command for one node: remove `blocks` where their write generation is
/// below `below`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deletes {
    pub below: u64,
    pub blocks: Vec<BlockId>,
}

/// A reported replica nothing references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub since_ms: u64,
    pub length: u64,
    pub locs: Locs,
}

/// What to do with a reported replica no live file references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its file was deleted: delete it (once safe mode allows).
    Delete,
    /// Unknown: keep it for now, it may belong to an upload in progress.
    Wait,
}

/// Garbage-collection state.
#[derive(Debug, Default)]
pub struct Gc {
    dead: HashMap<BlockId, u64, IdBuild>,
    orphans: HashMap<BlockId, Orphan, IdBuild>,
    /// Deletes waiting for delivery, per node, ordered by the time they become due,
    /// with the replica's generation if a report named it.
    pending: BTreeMap<NodeIdx, BTreeMap<(u64, BlockId), u64>>,
    grace_ms: u64,
    /// The write generations each node reported, for what its deletes may name.
    generations: HashMap<NodeIdx, GenerationLog>,
}

impl Gc {
    /// Deletes of dead blocks wait `grace_ms` after the file's deletion.
    pub fn new(grace_ms: u64) -> Self {
        Self {
            grace_ms,
            ..Self::default()
        }
    }

    fn queue(&mut self, node: NodeIdx, due_ms: u64, id: BlockId, generation: u64) {
        self.pending
            .entry(node)
            .or_default()
            .insert((due_ms, id), generation);
    }

    /// `node` (re)registered reporting `generation`: what it reported before (maybe
    /// of a wiped disk under the same id) no longer counts.
    pub fn node_registered(&mut self, node: NodeIdx, now_ms: u64, generation: u64) {
        let mut log = GenerationLog::default();
        log.record(now_ms, generation);
        self.generations.insert(node, log);
    }

    /// `node` reported its write generation counter (a heartbeat).
    pub fn generation_reported(&mut self, node: NodeIdx, now_ms: u64, generation: u64) {
        self.generations
            .entry(node)
            .or_default()
            .record(now_ms, generation);
    }

    /// The generation a delete sent to `node` now may name (see [`GenerationLog::below`]).
    pub fn delete_below(&self, node: NodeIdx, oldest_lease_begin_ms: Option<u64>) -> Option<u64> {
        self.generations
            .get(&node)
            .and_then(|l| l.below(oldest_lease_begin_ms))
    }

    /// A block's last reference went away at `now_ms`; `locs` held it.
    pub fn block_dead(&mut self, id: BlockId, locs: &[NodeIdx], now_ms: u64) {
        self.dead.insert(id, now_ms);
        for n in locs {
            self.queue(*n, now_ms + self.grace_ms, id, UNKNOWN_GENERATION);
        }
    }

    /// Loads a dead block from the tombstones at start.
    pub fn load_dead(&mut self, id: BlockId, deleted_ms: u64) {
        self.dead.insert(id, deleted_ms);
    }

    /// Judges a replica `node` reported, at `generation` if known, of a block no live
    /// file references. A replica of deleted content is deleted (after the grace); if
    /// it was just written (`fresh`: an incremental report), an upload in progress may
    /// be writing that content again, so it is also remembered as an orphan, for that
    /// upload's commit to adopt. Its delete waits until it may name a generation above
    /// the replica's, which it may not while the upload that wrote it is open.
    pub fn unreferenced_replica(
        &mut self,
        node: NodeIdx,
        id: BlockId,
        length: u64,
        generation: u64,
        now_ms: u64,
        fresh: bool,
    ) -> Verdict {
        if let Some(&died) = self.dead.get(&id) {
            self.queue(node, died + self.grace_ms, id, generation);
            if !fresh {
                return Verdict::Delete;
            }
        }
        let o = self.orphans.entry(id).or_insert_with(|| Orphan {
            since_ms: now_ms,
            length,
            locs: Locs::new(),
        });
        if !o.locs.contains(&node) {
            o.locs.push(node);
        }
        Verdict::Wait
    }

    /// `node` no longer holds `id` (it reported its removal, or it died).
    pub fn replica_gone(&mut self, node: NodeIdx, id: &BlockId) {
        if let Some(o) = self.orphans.get_mut(id) {
            o.locs.retain(|n| *n != node);
            if o.locs.is_empty() {
                self.orphans.remove(id);
            }
        }
    }

    /// A node died: its pending deletes are moot (it re-reports if it returns).
    pub fn node_dead(&mut self, node: NodeIdx) {
        self.pending.remove(&node);
        self.orphans.retain(|_, o| {
            o.locs.retain(|n| *n != node);
            !o.locs.is_empty()
        });
    }

    /// A block became referenced again (a commit): it is no longer garbage. Returns the
    /// nodes that reported it as an orphan, which are real replicas.
    pub fn referenced(&mut self, id: &BlockId) -> Locs {
        self.dead.remove(id);
        self.orphans.remove(id).map(|o| o.locs).unwrap_or_default()
    }

    /// The deletes due by `now_ms` for `node`'s next reply, whose command names
    /// `below` (from [`Gc::delete_below`]). `wanted` says whether a block is referenced
    /// now (then its delete is dropped: the block came back). A delete of a replica
    /// known to be at or above `below` stays queued: the datanode would refuse it.
    pub fn take_deletes(
        &mut self,
        node: NodeIdx,
        now_ms: u64,
        below: u64,
        wanted: impl Fn(&BlockId) -> bool,
    ) -> Deletes {
        let mut out = Deletes {
            below,
            blocks: Vec::new(),
        };
        let Some(queue) = self.pending.get_mut(&node) else {
            return out;
        };
        let mut held = Vec::new();
        let mut scanned = 0;
        while out.blocks.len() < MAX_DELETES_PER_COMMAND && scanned < MAX_DUE_SCANNED {
            match queue.first_key_value() {
                Some(((due, _), _)) if *due <= now_ms => {}
                _ => break,
            }
            let Some(((due, id), generation)) = queue.pop_first() else {
                break;
            };
            scanned += 1;
            if wanted(&id) {
                continue;
            }
            if generation != UNKNOWN_GENERATION && generation >= below {
                held.push(((due, id), generation));
                continue;
            }
            out.blocks.push(id);
        }
        queue.extend(held);
        if queue.is_empty() {
            self.pending.remove(&node);
        }
        for id in &out.blocks {
            self.replica_gone(node, id);
        }
        out
    }

    /// Moves orphans that can no longer belong to any upload to the delete queues.
    /// `oldest_lease_begin_ms` is the start of the oldest open upload, if any.
    /// Returns how many blocks were doomed.
    #[tracing::instrument(
        name = "gc_sweep_orphans",
        skip_all,
        fields(orphans = self.orphans.len())
    )]
    pub fn sweep_orphans(
        &mut self,
        now_ms: u64,
        grace_ms: u64,
        oldest_lease_begin_ms: Option<u64>,
    ) -> usize {
        let mut doomed = Vec::new();
        self.orphans.retain(|id, o| {
            let old_enough = o.since_ms + grace_ms <= now_ms;
            let no_older_upload = oldest_lease_begin_ms.is_none_or(|b| b > o.since_ms);
            if old_enough && no_older_upload {
                doomed.push((*id, std::mem::take(&mut o.locs)));
                false
            } else {
                true
            }
        });
        let n = doomed.len();
        for (id, locs) in doomed {
            for node in locs {
                self.queue(node, now_ms, id, UNKNOWN_GENERATION);
            }
        }
        n
    }

    /// Forgets reported generations no delete can name any more, and dead blocks
    /// whose tombstones were purged (`dead_before_ms`).
    pub fn prune(&mut self, oldest_lease_begin_ms: Option<u64>, dead_before_ms: u64) {
        for log in self.generations.values_mut() {
            log.prune(oldest_lease_begin_ms);
        }
        self.dead.retain(|_, t| *t >= dead_before_ms);
    }

    #[cfg(test)]
    pub fn is_dead(&self, id: &BlockId) -> bool {
        self.dead.contains_key(id)
    }

    #[cfg(test)]
    pub fn orphan(&self, id: &BlockId) -> Option<&Orphan> {
        self.orphans.get(id)
    }

    #[cfg(test)]
    pub fn pending_for(&self, node: NodeIdx) -> usize {
        self.pending.get(&node).map_or(0, BTreeMap::len)
    }

    /// Counts for metrics: dead blocks, orphans, pending deletes.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.dead.len(),
            self.orphans.len(),
            self.pending.values().map(BTreeMap::len).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> BlockId {
        BlockId::from_slice(&[n; 32]).unwrap()
    }

    /// A collector whose nodes 0..6 reported generation 100 at 0 ms.
    fn gc(grace_ms: u64) -> Gc {
        let mut gc = Gc::new(grace_ms);
        for n in 0..6 {
            gc.node_registered(n, 0, 100);
        }
        gc
    }

    /// What `node` is sent at `now_ms` with the oldest open upload begun at `oldest`.
    fn take_at(gc: &mut Gc, node: NodeIdx, now_ms: u64, oldest: Option<u64>) -> Option<Deletes> {
        let below = gc.delete_below(node, oldest)?;
        Some(gc.take_deletes(node, now_ms, below, |_| false))
    }

    fn take(gc: &mut Gc, node: NodeIdx, now_ms: u64) -> Vec<BlockId> {
        take_at(gc, node, now_ms, None)
            .map(|d| d.blocks)
            .unwrap_or_default()
    }

    #[test]
    fn dead_blocks_are_deleted_everywhere_including_nodes_that_return_later() {
        let mut gc = gc(0);
        gc.block_dead(b(1), &[0, 1], 1000);
        let first = take_at(&mut gc, 0, 1000, None).unwrap();
        assert_eq!(
            first,
            Deletes {
                below: 100,
                blocks: vec![b(1)]
            }
        );
        assert_eq!(take(&mut gc, 0, 1000), vec![]);
        // Node 5 was away during the delete and reports the block later.
        assert_eq!(
            gc.unreferenced_replica(5, b(1), 10, UNKNOWN_GENERATION, 90_000, false),
            Verdict::Delete
        );
        assert_eq!(take(&mut gc, 5, 90_000), vec![b(1)]);
    }

    #[test]
    fn dead_block_deletes_wait_for_the_grace() {
        let mut gc = gc(30_000);
        gc.block_dead(b(1), &[0, 1], 1000);
        assert_eq!(take(&mut gc, 0, 30_999), vec![]);
        assert_eq!(take(&mut gc, 0, 31_000), vec![b(1)]);
    }

    #[test]
    fn undelivered_deletes_of_a_block_referenced_again_are_dropped() {
        let mut gc = gc(0);
        gc.block_dead(b(1), &[0], 1000);
        gc.referenced(&b(1));
        assert_eq!(
            gc.take_deletes(0, 2000, 100, |id| *id == b(1)).blocks,
            vec![]
        );
        assert_eq!(gc.pending_for(0), 0);
    }

    #[test]
    fn a_delete_names_a_generation_reported_before_every_open_upload() {
        let mut gc = gc(0);
        gc.generation_reported(0, 5_000, 150);
        gc.generation_reported(0, 8_000, 170);
        gc.block_dead(b(1), &[0], 1000);
        // An upload that began at 6 s may have written b(1) on node 0 since 5 s.
        let d = take_at(&mut gc, 0, 9_000, Some(6_000)).unwrap();
        assert_eq!(
            d,
            Deletes {
                below: 150,
                blocks: vec![b(1)]
            }
        );
        // An upload older than anything the node reported: nothing may go yet.
        gc.block_dead(b(2), &[1], 1000);
        assert_eq!(take_at(&mut gc, 1, 9_000, Some(0)), None);
        assert_eq!(gc.pending_for(1), 1);
        assert_eq!(take(&mut gc, 1, 9_000), vec![b(2)]);
    }

    #[test]
    fn a_replica_known_to_be_newer_waits_until_a_delete_may_name_it() {
        // b(1) died; node 0 then reports a fresh write of it at generation 130 (a
        // re-upload in progress, which began at 2 s).
        let mut gc = gc(0);
        gc.block_dead(b(1), &[0], 1000);
        assert_eq!(
            gc.unreferenced_replica(0, b(1), 10, 130, 3_000, true),
            Verdict::Wait
        );
        gc.generation_reported(0, 4_000, 140);
        let held = take_at(&mut gc, 0, 5_000, Some(2_000)).unwrap();
        assert_eq!(
            held,
            Deletes {
                below: 100,
                blocks: vec![]
            }
        );
        assert_eq!(gc.pending_for(0), 1);
        // The upload ended without a commit: the delete may name 140 now.
        let d = take_at(&mut gc, 0, 6_000, None).unwrap();
        assert_eq!(
            d,
            Deletes {
                below: 140,
                blocks: vec![b(1)]
            }
        );
        assert!(
            gc.orphan(&b(1)).is_none(),
            "delivered: not an orphan any more"
        );
    }

    #[test]
    fn delete_held_back_table() {
        // A dead block's replica on node 0 at `generation`; node 0 reported 100 at 0 s
        // and 200 at 10 s; the oldest open upload began at `oldest`. Does the delete
        // go out now (at 20 s), and naming what?
        for (what, generation, oldest, sent) in [
            (
                "unknown generation, no upload",
                UNKNOWN_GENERATION,
                None,
                Some(200),
            ),
            ("old replica, no upload", 150, None, Some(200)),
            (
                "old replica, an upload since 5 s",
                50,
                Some(5_000),
                Some(100),
            ),
            (
                "a re-upload's replica, its upload open",
                150,
                Some(5_000),
                None,
            ),
            ("a replica at the watermark itself", 200, None, None),
            (
                "unknown generation, an upload since 5 s",
                UNKNOWN_GENERATION,
                Some(5_000),
                Some(100),
            ),
        ] {
            let mut gc = Gc::new(0);
            gc.node_registered(0, 0, 100);
            gc.generation_reported(0, 10_000, 200);
            gc.block_dead(b(1), &[], 1000);
            gc.unreferenced_replica(0, b(1), 10, generation, 1000, false);
            let d = take_at(&mut gc, 0, 20_000, oldest).unwrap();
            let got = (!d.blocks.is_empty()).then_some(d.below);
            assert_eq!(got, sent, "{what}");
        }
    }

    #[test]
    fn orphans_wait_for_the_grace_and_for_older_uploads() {
        let mut gc = gc(0);
        assert_eq!(
            gc.unreferenced_replica(3, b(2), 10, UNKNOWN_GENERATION, 1000, false),
            Verdict::Wait
        );
        // Too young.
        assert_eq!(gc.sweep_orphans(5000, 60_000, None), 0);
        // Old enough, but an upload that began before it appeared is still open.
        assert_eq!(gc.sweep_orphans(100_000, 60_000, Some(500)), 0);
        assert_eq!(take(&mut gc, 3, 100_000), vec![]);
        // That upload is gone.
        assert_eq!(gc.sweep_orphans(100_000, 60_000, Some(90_000)), 1);
        assert_eq!(take(&mut gc, 3, 100_000), vec![b(2)]);
        assert!(gc.orphan(&b(2)).is_none());
    }

    #[test]
    fn a_commit_adopts_orphans() {
        let mut gc = gc(0);
        gc.unreferenced_replica(3, b(2), 10, 7, 1000, false);
        gc.unreferenced_replica(4, b(2), 10, 7, 1000, false);
        assert_eq!(gc.referenced(&b(2)).as_slice(), &[3, 4]);
        assert_eq!(gc.sweep_orphans(u64::MAX / 2, 0, None), 0);
    }

    #[test]
    fn orphan_sweep_table() {
        // An orphan seen at 1 s, swept at `now_ms` with a 60 s grace while the oldest
        // open upload began at `oldest`: is it doomed?
        for (what, now_ms, oldest, doomed) in [
            ("too young", 60_999, None, false),
            ("old enough, no upload open", 61_000, None, true),
            ("an upload older than the orphan", 61_000, Some(500), false),
            ("an upload as old as the orphan", 61_000, Some(1000), false),
            ("every upload began later", 61_000, Some(1001), true),
        ] {
            let mut gc = gc(0);
            gc.unreferenced_replica(3, b(2), 10, UNKNOWN_GENERATION, 1000, false);
            let n = gc.sweep_orphans(now_ms, 60_000, oldest);
            assert_eq!(n == 1, doomed, "{what}");
            assert_eq!(gc.pending_for(3) == 1, doomed, "{what}");
            assert_eq!(gc.orphan(&b(2)).is_none(), doomed, "{what}");
        }
    }

    #[test]
    fn a_dead_node_takes_its_pending_deletes_and_orphan_replicas_along() {
        let mut gc = gc(30_000);
        gc.block_dead(b(1), &[0, 1], 1000);
        gc.unreferenced_replica(0, b(2), 10, UNKNOWN_GENERATION, 1000, false);
        gc.unreferenced_replica(1, b(2), 10, UNKNOWN_GENERATION, 1000, false);
        gc.node_dead(0);
        assert_eq!(gc.pending_for(0), 0);
        assert_eq!(gc.pending_for(1), 1);
        assert_eq!(gc.orphan(&b(2)).unwrap().locs.as_slice(), &[1]);
        gc.replica_gone(1, &b(2));
        assert!(gc.orphan(&b(2)).is_none());
        assert_eq!(gc.counts(), (1, 0, 1));
        // Dead blocks are forgotten with their purged tombstones.
        gc.prune(None, 1001);
        assert!(!gc.is_dead(&b(1)));
    }

    #[test]
    fn a_registration_forgets_what_the_node_reported_before() {
        let mut gc = gc(0);
        gc.generation_reported(0, 5_000, 1 << 41);
        // The same id comes back with a fresh disk: its counter starts low again.
        gc.node_registered(0, 6_000, (1 << 40) + 1);
        assert_eq!(gc.delete_below(0, None), Some((1 << 40) + 1));
        assert_eq!(gc.delete_below(0, Some(5_500)), None);
    }
}

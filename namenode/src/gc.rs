//! Garbage collection of replicas no live file references, and the fence that keeps a
//! delete in flight from destroying a new upload of the same content.
//!
//! Three sources of garbage:
//! - **Dead blocks**: their last referencing file was deleted. Every node known to
//!   hold one gets a delete command once the delete grace (`--delete-grace`) has
//!   passed; a node that reports one in a full report later (it was away during the
//!   delete) gets one at once. Remembered for the tombstone retention. The grace is
//!   what makes "delete, then upload the same content again" safe in the common
//!   case: the re-upload's commit (or its datanodes' incremental reports of the fresh
//!   writes) arrives before any delete has gone out, and cancels it.
//! - **Orphans**: replicas reported that no file or tombstone knows, typically blocks
//!   of an upload that has not committed yet, or never will. They are deleted only
//!   once they have been unreferenced for a lease TTL *and* every open upload began
//!   after they appeared (an older upload might still commit them).
//! - Over-replication trims are not garbage and are handled by `replication/`.
//!
//! **The fence.** Content-addressing means a new upload of deleted content writes the
//! very same block ids. If a delete command for block B reaches datanode N after an
//! upload wrote B to N, that replica is gone although the upload's pipeline
//! acknowledged it. So every delivered delete is logged with its time, and at commit a
//! pipeline ack of B on N counts only if no delete of B was delivered to N after the
//! upload began (minus [`DELETE_EXECUTION_MARGIN_MS`] for commands still queued on the
//! datanode). Commands not yet delivered are re-checked at delivery and dropped if the
//! block is referenced again, so they never fire. The log is pruned once no open
//! upload is old enough to be affected.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kdfs_core::BlockId;
use smallvec::SmallVec;

use crate::blockmap::{IdBuild, Locs, NodeIdx};

/// How long after its delivery a datanode may still execute a delete command.
pub const DELETE_EXECUTION_MARGIN_MS: u64 = 10_000;
/// Most block ids one delete command carries.
pub const MAX_DELETES_PER_COMMAND: usize = 10_000;

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
    /// Deletes waiting for delivery, per node, ordered by the time they become due.
    pending: BTreeMap<NodeIdx, BTreeSet<(u64, BlockId)>>,
    grace_ms: u64,
    delivered: HashMap<BlockId, SmallVec<[(NodeIdx, u64); 2]>, IdBuild>,
}

impl Gc {
    /// Deletes of dead blocks wait `grace_ms` after the file's deletion.
    pub fn new(grace_ms: u64) -> Self {
        Self {
            grace_ms,
            ..Self::default()
        }
    }

    fn queue(&mut self, node: NodeIdx, due_ms: u64, id: BlockId) {
        self.pending.entry(node).or_default().insert((due_ms, id));
    }

    /// A block's last reference went away at `now_ms`; `locs` held it.
    pub fn block_dead(&mut self, id: BlockId, locs: &[NodeIdx], now_ms: u64) {
        self.dead.insert(id, now_ms);
        for n in locs {
            self.queue(*n, now_ms + self.grace_ms, id);
        }
    }

    /// Loads a dead block from the tombstones at start.
    pub fn load_dead(&mut self, id: BlockId, deleted_ms: u64) {
        self.dead.insert(id, deleted_ms);
    }

    /// Judges a replica `node` reported of a block no live file references. `fresh`
    /// says it was just written (an incremental report): then it most likely belongs
    /// to an upload in progress, even if its content was deleted before, and it is
    /// treated as an orphan (and any delete of it not yet sent to `node` is dropped).
    pub fn unreferenced_replica(
        &mut self,
        node: NodeIdx,
        id: BlockId,
        length: u64,
        now_ms: u64,
        fresh: bool,
    ) -> Verdict {
        if let Some(&died) = self.dead.get(&id) {
            let due = died + self.grace_ms;
            if !fresh {
                self.queue(node, due, id);
                return Verdict::Delete;
            }
            if let Some(set) = self.pending.get_mut(&node) {
                set.remove(&(due, id));
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

    /// The fence: may a pipeline ack of `id` on `node`, from an upload that began at
    /// `lease_begin_ms`, be trusted?
    pub fn ack_trusted(&self, id: &BlockId, node: NodeIdx, lease_begin_ms: u64) -> bool {
        self.delivered.get(id).is_none_or(|log| {
            log.iter()
                .all(|(n, t)| *n != node || t + DELETE_EXECUTION_MARGIN_MS < lease_begin_ms)
        })
    }

    /// Delete commands for `node`'s next reply: those due by `now_ms`. `wanted` says
    /// whether a block is referenced now (then its delete is dropped: the block came
    /// back).
    pub fn take_deletes(
        &mut self,
        node: NodeIdx,
        now_ms: u64,
        wanted: impl Fn(&BlockId) -> bool,
    ) -> Vec<BlockId> {
        let Some(set) = self.pending.get_mut(&node) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while out.len() < MAX_DELETES_PER_COMMAND {
            match set.first() {
                Some((due, _)) if *due <= now_ms => {}
                _ => break,
            }
            let Some((_, id)) = set.pop_first() else {
                break;
            };
            if wanted(&id) {
                continue;
            }
            out.push(id);
        }
        if set.is_empty() {
            self.pending.remove(&node);
        }
        for id in &out {
            self.delivered.entry(*id).or_default().push((node, now_ms));
            self.replica_gone(node, id);
        }
        out
    }

    /// Records a delete of a referenced block's surplus replica sent to `node` (an
    /// over-replication trim), so the fence covers it too.
    pub fn log_delivery(&mut self, id: BlockId, node: NodeIdx, now_ms: u64) {
        self.delivered.entry(id).or_default().push((node, now_ms));
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
            let no_older_upload =
                oldest_lease_begin_ms.is_none_or(|b| b > o.since_ms + DELETE_EXECUTION_MARGIN_MS);
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
                self.queue(node, now_ms, id);
            }
        }
        n
    }

    /// Forgets delete deliveries no open upload can be affected by, and dead blocks
    /// whose tombstones were purged (`dead_before_ms`).
    pub fn prune(&mut self, now_ms: u64, oldest_lease_begin_ms: Option<u64>, dead_before_ms: u64) {
        let horizon = oldest_lease_begin_ms.unwrap_or(now_ms).min(now_ms);
        self.delivered.retain(|_, log| {
            log.retain(|(_, t)| *t + DELETE_EXECUTION_MARGIN_MS >= horizon);
            !log.is_empty()
        });
        self.dead.retain(|_, t| *t >= dead_before_ms);
    }

    #[cfg(test)]
    pub fn is_dead(&self, id: &BlockId) -> bool {
        self.dead.contains_key(id)
    }

    pub fn orphan(&self, id: &BlockId) -> Option<&Orphan> {
        self.orphans.get(id)
    }

    #[cfg(test)]
    pub fn pending_for(&self, node: NodeIdx) -> usize {
        self.pending.get(&node).map_or(0, BTreeSet::len)
    }

    /// Counts for metrics: dead blocks, orphans, pending deletes.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.dead.len(),
            self.orphans.len(),
            self.pending.values().map(BTreeSet::len).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> BlockId {
        BlockId::from_slice(&[n; 32]).unwrap()
    }

    #[test]
    fn dead_blocks_are_deleted_everywhere_including_nodes_that_return_later() {
        let mut gc = Gc::default();
        gc.block_dead(b(1), &[0, 1], 1000);
        assert_eq!(gc.take_deletes(0, 1000, |_| false), vec![b(1)]);
        assert_eq!(gc.take_deletes(0, 1000, |_| false), vec![]);
        // Node 5 was away during the delete and reports the block later.
        assert_eq!(
            gc.unreferenced_replica(5, b(1), 10, 90_000, false),
            Verdict::Delete
        );
        assert_eq!(gc.take_deletes(5, 90_000, |_| false), vec![b(1)]);
    }

    #[test]
    fn dead_block_deletes_wait_for_the_grace_and_fresh_writes_cancel_them() {
        let mut gc = Gc::new(30_000);
        gc.block_dead(b(1), &[0, 1], 1000);
        assert_eq!(gc.take_deletes(0, 30_999, |_| false), vec![]);
        // Node 1 reports a fresh write of the same content: a re-upload.
        assert_eq!(
            gc.unreferenced_replica(1, b(1), 10, 2000, true),
            Verdict::Wait
        );
        assert_eq!(gc.take_deletes(0, 31_000, |_| false), vec![b(1)]);
        assert_eq!(gc.take_deletes(1, 31_000, |_| false), vec![]);
        assert!(gc.orphan(&b(1)).is_some());
    }

    #[test]
    fn undelivered_deletes_of_a_block_referenced_again_are_dropped() {
        let mut gc = Gc::default();
        gc.block_dead(b(1), &[0], 1000);
        gc.referenced(&b(1));
        assert_eq!(gc.take_deletes(0, 2000, |id| *id == b(1)), vec![]);
    }

    #[test]
    fn the_fence_distrusts_acks_a_delivered_delete_may_have_destroyed() {
        let mut gc = Gc::default();
        gc.block_dead(b(1), &[0], 1000);
        assert_eq!(gc.take_deletes(0, 50_000, |_| false), vec![b(1)]);
        // An upload that began before the delete was delivered: node 0's ack is suspect.
        assert!(!gc.ack_trusted(&b(1), 0, 45_000));
        // Other nodes are not affected.
        assert!(gc.ack_trusted(&b(1), 1, 45_000));
        // An upload that began well after the delivery wrote after the delete ran.
        assert!(gc.ack_trusted(&b(1), 0, 50_000 + DELETE_EXECUTION_MARGIN_MS + 1));
        // Pruned once no open upload is that old.
        gc.prune(200_000, None, 0);
        assert!(gc.ack_trusted(&b(1), 0, 0));
    }

    #[test]
    fn orphans_wait_for_the_grace_and_for_older_uploads() {
        let mut gc = Gc::default();
        assert_eq!(
            gc.unreferenced_replica(3, b(2), 10, 1000, false),
            Verdict::Wait
        );
        // Too young.
        assert_eq!(gc.sweep_orphans(5000, 60_000, None), 0);
        // Old enough, but an upload that began before it appeared is still open.
        assert_eq!(gc.sweep_orphans(100_000, 60_000, Some(500)), 0);
        assert_eq!(gc.take_deletes(3, 100_000, |_| false), vec![]);
        // That upload is gone.
        assert_eq!(gc.sweep_orphans(100_000, 60_000, Some(90_000)), 1);
        assert_eq!(gc.take_deletes(3, 100_000, |_| false), vec![b(2)]);
        assert!(gc.orphan(&b(2)).is_none());
    }

    #[test]
    fn a_commit_adopts_orphans() {
        let mut gc = Gc::default();
        gc.unreferenced_replica(3, b(2), 10, 1000, false);
        gc.unreferenced_replica(4, b(2), 10, 1000, false);
        assert_eq!(gc.referenced(&b(2)).as_slice(), &[3, 4]);
        assert_eq!(gc.sweep_orphans(u64::MAX / 2, 0, None), 0);
    }

    #[test]
    fn fence_table() {
        // A delete of b(1) delivered to node 0 at 50 s; may an ack of b(1) from
        // `node`, by an upload that began at `begin_ms`, be trusted?
        let margin = DELETE_EXECUTION_MARGIN_MS;
        let mut gc = Gc::default();
        gc.block_dead(b(1), &[0], 1000);
        gc.take_deletes(0, 50_000, |_| false);
        for (what, id, node, begin_ms, trusted) in [
            ("began before the delivery", b(1), 0, 45_000, false),
            ("began at the delivery", b(1), 0, 50_000, false),
            ("began within the margin", b(1), 0, 50_000 + margin, false),
            ("began after the margin", b(1), 0, 50_001 + margin, true),
            ("another node", b(1), 1, 45_000, true),
            ("another block", b(2), 0, 45_000, true),
        ] {
            assert_eq!(gc.ack_trusted(&id, node, begin_ms), trusted, "{what}");
        }
        // A trim logged the same way is fenced too.
        gc.log_delivery(b(2), 3, 60_000);
        assert!(!gc.ack_trusted(&b(2), 3, 59_000));
    }

    #[test]
    fn orphan_sweep_table() {
        // An orphan seen at 1 s, swept at `now_ms` with a 60 s grace while the oldest
        // open upload began at `oldest`: is it doomed?
        let margin = DELETE_EXECUTION_MARGIN_MS;
        for (what, now_ms, oldest, doomed) in [
            ("too young", 60_999, None, false),
            ("old enough, no upload open", 61_000, None, true),
            ("an upload older than the orphan", 61_000, Some(500), false),
            (
                "an upload within the margin",
                61_000,
                Some(1000 + margin),
                false,
            ),
            (
                "every upload began later",
                61_000,
                Some(1001 + margin),
                true,
            ),
        ] {
            let mut gc = Gc::default();
            gc.unreferenced_replica(3, b(2), 10, 1000, false);
            let n = gc.sweep_orphans(now_ms, 60_000, oldest);
            assert_eq!(n == 1, doomed, "{what}");
            assert_eq!(gc.pending_for(3) == 1, doomed, "{what}");
            assert_eq!(gc.orphan(&b(2)).is_none(), doomed, "{what}");
        }
    }

    #[test]
    fn a_dead_node_takes_its_pending_deletes_and_orphan_replicas_along() {
        let mut gc = Gc::new(30_000);
        gc.block_dead(b(1), &[0, 1], 1000);
        gc.unreferenced_replica(0, b(2), 10, 1000, false);
        gc.unreferenced_replica(1, b(2), 10, 1000, false);
        gc.node_dead(0);
        assert_eq!(gc.pending_for(0), 0);
        assert_eq!(gc.pending_for(1), 1);
        assert_eq!(gc.orphan(&b(2)).unwrap().locs.as_slice(), &[1]);
        gc.replica_gone(1, &b(2));
        assert!(gc.orphan(&b(2)).is_none());
        assert_eq!(gc.counts(), (1, 0, 1));
        // Dead blocks are forgotten with their purged tombstones.
        gc.prune(100_000, None, 1001);
        assert!(!gc.is_dead(&b(1)));
    }
}

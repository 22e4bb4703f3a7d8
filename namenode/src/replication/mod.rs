//! Re-replication: keeps every referenced block at its wanted replica count.
//!
//! HDFS-style priority queues ([`Priority`]): blocks down to one live replica first,
//! then other under-replicated blocks, then blocks with corrupt replicas to clean up,
//! then over-replicated blocks to trim. Work is bounded: each datanode serves at most
//! `streams` copies as a source and receives at most `streams` as a target at a time.
//! A copy not confirmed (by the target's block report) before its deadline is
//! abandoned and retried from another source to another target. Trims never go below
//! the wanted count and never remove the last replica.
//!
//! Events mark blocks *dirty* (a node died, a replica went missing or corrupt, a
//! commit was short of replicas, a report added a surplus replica); each tick of the
//! worker classifies the dirty blocks into the queues and schedules what the limits
//! allow. The result is a list of commands for the heartbeat replies of the sources.
//!
//! The parts, each depending only on those above it:
//! - `priority.rs`: the pure classification of a block ([`priority`](priority::priority), `judge`).
//! - `queues.rs`: the dirty list and the priority queues.
//! - `inflight.rs`: copies under way and the per-node stream counts.
//! - `failures.rs`: nodes to avoid and the retry wait after failed copies.
//! - `planner.rs`: choosing a copy's source and targets.
//! - this file: [`Replication`], which reacts to events; `tick.rs`: its tick.

mod failures;
mod inflight;
mod planner;
mod priority;
mod queues;
mod tick;

use std::collections::HashMap;

use kdfs_core::BlockId;
use smallvec::SmallVec;

use crate::blockmap::{BlockMap, IdBuild, NodeIdx};

pub use priority::{Leaving, Priority};

use failures::Failures;
use inflight::InFlight;
use priority::{Judgement, judge};
use queues::Queues;

/// Dirty blocks classified per tick: a node holding a million blocks dying is
/// worked through over several ticks instead of one long lock hold.
pub const MAX_CLASSIFY_PER_TICK: usize = 100_000;
/// Queue entries looked at per tick, so one tick stays short on a huge backlog.
pub const MAX_SCHEDULE_PER_TICK: usize = 20_000;

/// Re-replication state.
#[derive(Debug)]
pub struct Replication {
    streams: u32,
    timeout_ms: u64,
    queues: Queues,
    inflight: InFlight,
    failures: Failures,
    /// Replicas found corrupt, to delete once the block is healthy again.
    corrupt: HashMap<BlockId, SmallVec<[NodeIdx; 2]>, IdBuild>,
    /// Nodes leaving (decommissioning or in maintenance), as of the last tick.
    leaving: Leaving,
}

/// Counts for `/info` and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub queued: [usize; 4],
    pub pending: usize,
    pub dirty: usize,
}

impl Replication {
    pub fn new(streams: u32, timeout_ms: u64) -> Self {
        Self {
            streams: streams.max(1),
            timeout_ms,
            queues: Queues::default(),
            inflight: InFlight::default(),
            failures: Failures::default(),
            corrupt: HashMap::default(),
            leaving: Leaving::default(),
        }
    }

    /// Asks for `ids` to be looked at on the next tick.
    pub fn mark_dirty(&mut self, ids: impl IntoIterator<Item = BlockId>) {
        self.queues.mark_dirty(ids);
    }

    /// A replica of `id` on `node` failed verification.
    pub fn mark_corrupt(&mut self, id: BlockId, node: NodeIdx) {
        let c = self.corrupt.entry(id).or_default();
        if !c.contains(&node) {
            c.push(node);
        }
        self.queues.mark_dirty([id]);
    }

    /// Sets the nodes leaving (before a tick).
    pub fn set_leaving(&mut self, leaving: Leaving) {
        self.leaving = leaving;
    }

    /// Replicas that count, and the priority they give the block. Only confirmed
    /// replicas (`locs`) count; a block held only by unconfirmed ones (`unconfirmed`)
    /// is as urgent as a last replica, copied from them (its target checks the hash);
    /// unconfirmed ones of a block with enough confirmed replicas are surplus.
    fn judge(&self, id: &BlockId, locs: &[NodeIdx], unconfirmed: bool, target: usize) -> Judgement {
        let j = judge(locs, target, self.corrupt.contains_key(id), &self.leaving);
        let priority = match j.priority {
            None if j.live == 0 && unconfirmed && j.want > 0 => Some(Priority::OneReplica),
            // Enough confirmed replicas: the unconfirmed ones are surplus.
            None if unconfirmed && j.live >= j.want.max(1) => Some(Priority::Over),
            p => p,
        };
        Judgement { priority, ..j }
    }

    /// Whether a copy of `id` to `node` is under way (a replica `node` reports of it
    /// was placed there by the namenode).
    pub fn expects(&self, id: &BlockId, node: NodeIdx) -> bool {
        self.inflight
            .get(id)
            .is_some_and(|p| p.targets.contains(&node))
    }

    /// Forgets `node` in the lists that may name it after its death (its slot is
    /// being reused).
    pub fn forget_node(&mut self, node: NodeIdx) {
        self.corrupt.retain(|_, c| {
            c.retain(|n| *n != node);
            !c.is_empty()
        });
        self.failures.forget_node(node);
        self.leaving.retiring.remove(&node);
        self.leaving.maintenance.remove(&node);
    }

    /// `node` now holds `id`: completes that part of an outstanding copy.
    pub fn replica_added(&mut self, id: &BlockId, node: NodeIdx) {
        if self.inflight.target_done(id, node) {
            // After a reported failure the nodes to avoid stay until the block is
            // healthy (`classify` forgets them with the failure count).
            if !self.failures.has_failed(id) {
                self.failures.forget_avoided(id);
            }
            self.queues.mark_dirty([*id]);
        }
    }

    /// `node` no longer holds `id` (its replica was removed, found corrupt or reported
    /// bad). A copy it was to serve as the source cannot happen (its transfer fails on
    /// the datanode, and nothing tells us so): it is cancelled and the block looked at
    /// again on the next tick, so the block is not left short of replicas until the
    /// copy's timeout.
    pub fn replica_lost(&mut self, id: &BlockId, node: NodeIdx) {
        if self.inflight.get(id).is_some_and(|p| p.source == node) {
            self.cancel(id);
        }
    }

    /// `source` reports that its copy of `id` reached none of `failed` (`whole`: the
    /// transfer failed as a whole). Those targets leave the copy and are tried last for
    /// this block (as is the source after a whole failure); a copy with no target left
    /// is cancelled and the block planned again after
    /// [`retry_delay`](failures::retry_delay) rather than after the timeout: a target
    /// that keeps refusing (its disk full before its heartbeat says so) costs a few
    /// cheap refusals, not a copy per tick. A report about another copy (an older one
    /// from the same block, or from another source) is ignored.
    pub fn copy_failed(
        &mut self,
        now_ms: u64,
        id: &BlockId,
        source: NodeIdx,
        failed: &[NodeIdx],
        whole: bool,
    ) {
        let Some(gone) = self
            .inflight
            .fail_targets(id, source, |t| whole || failed.contains(&t))
        else {
            return;
        };
        self.failures
            .avoid(id, gone.iter().copied().chain(whole.then_some(source)));
        self.failures.failed(id, now_ms, self.timeout_ms);
    }

    /// After a full report of `node`: completes every outstanding copy to it that the
    /// block map now shows, and cancels every copy it was to serve whose replica the
    /// report no longer lists (as [`Replication::replica_lost`] does for incremental
    /// reports). Cheaper than checking each reported block: few copies are outstanding
    /// at any time.
    /// A target's replica is confirmed (the namenode placed it there), so its
    /// report's unconfirmed entry is promoted.
    pub fn confirm_from(&mut self, blocks: &BlockMap, node: NodeIdx) {
        let holds = |id: &BlockId| blocks.holds(id, node);
        let done = self
            .inflight
            .matching_blocks(|id, p| p.targets.contains(&node) && holds(id));
        for id in done {
            blocks.confirm(&id, node);
            self.replica_added(&id, node);
        }
        let lost = self
            .inflight
            .matching_blocks(|id, p| p.source == node && !holds(id));
        for id in lost {
            self.cancel(&id);
        }
    }

    /// A node died: its outstanding copies are cancelled and their blocks rechecked.
    pub fn node_dead(&mut self, node: NodeIdx) {
        let hit = self
            .inflight
            .matching(|p| p.source == node || p.targets.contains(&node));
        for id in hit {
            self.cancel(&id);
        }
        self.inflight.forget_node(node);
    }

    /// Drops the copy of `id`, if any, and looks at the block again next tick.
    fn cancel(&mut self, id: &BlockId) {
        if self.inflight.cancel(id) {
            self.queues.mark_dirty([*id]);
        }
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            queued: self.queues.lens(),
            pending: self.inflight.len(),
            dirty: self.queues.dirty_len(),
        }
    }
}

#[cfg(test)]
mod tests;

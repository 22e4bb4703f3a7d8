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

use std::collections::{HashMap, HashSet, VecDeque};

use kdfs_core::BlockId;
use smallvec::SmallVec;

use crate::blockmap::{BlockMap, IdBuild, NodeIdx};
use crate::cluster::Cmd;
use crate::placement::{self, Candidate};

/// Dirty blocks classified per tick: a node holding a million blocks dying is
/// worked through over several ticks instead of one long lock hold.
pub const MAX_CLASSIFY_PER_TICK: usize = 100_000;
/// Queue entries looked at per tick, so one tick stays short on a huge backlog.
pub const MAX_SCHEDULE_PER_TICK: usize = 20_000;

/// Why a block needs work, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// One live replica left: losing one more node loses data.
    OneReplica = 0,
    /// Fewer live replicas than wanted.
    Under = 1,
    /// Enough good replicas; corrupt ones are left to delete.
    Corrupt = 2,
    /// More replicas than wanted.
    Over = 3,
}

/// Classifies a block. `None`: nothing to do (or nothing possible: no replica left).
pub fn priority(live: usize, target: usize, corrupt: bool) -> Option<Priority> {
    if live == 0 {
        None
    } else if live < target && live == 1 {
        Some(Priority::OneReplica)
    } else if live < target {
        Some(Priority::Under)
    } else if corrupt {
        Some(Priority::Corrupt)
    } else if live > target {
        Some(Priority::Over)
    } else {
        None
    }
}

#[derive(Debug, Clone)]
struct Pending {
    source: NodeIdx,
    targets: SmallVec<[NodeIdx; 4]>,
    deadline_ms: u64,
}

/// The first wait before a block whose copy was reported failed is planned again.
pub const RETRY_BASE_MS: u64 = 1_000;

/// Failed copies of one block in a row, and when the next may be planned.
#[derive(Debug, Default, Clone, Copy)]
struct Retry {
    failures: u32,
    not_before_ms: u64,
    /// Already put back among the blocks to look at.
    released: bool,
}

/// Re-replication state.
#[derive(Debug)]
pub struct Replication {
    streams: u32,
    timeout_ms: u64,
    queues: [VecDeque<BlockId>; 4],
    queued: HashSet<BlockId, IdBuild>,
    /// Blocks to look at (duplicates are harmless: classification skips blocks
    /// already queued or being copied).
    dirty: VecDeque<BlockId>,
    pending: HashMap<BlockId, Pending, IdBuild>,
    source_load: HashMap<NodeIdx, u32>,
    target_load: HashMap<NodeIdx, u32>,
    /// Nodes that failed a copy of the block (timed out, or reported failing by the
    /// source): tried last. Forgotten once the block is healthy.
    avoid: HashMap<BlockId, SmallVec<[NodeIdx; 4]>, IdBuild>,
    /// Blocks whose copies were reported failed: when the next may be planned.
    retry: HashMap<BlockId, Retry, IdBuild>,
    /// Replicas found corrupt, to delete once the block is healthy again.
    corrupt: HashMap<BlockId, SmallVec<[NodeIdx; 2]>, IdBuild>,
    /// Nodes being decommissioned: their replicas serve as sources but do not count.
    retiring: HashSet<NodeIdx>,
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
            queues: Default::default(),
            queued: HashSet::default(),
            dirty: VecDeque::new(),
            pending: HashMap::default(),
            source_load: HashMap::new(),
            target_load: HashMap::new(),
            avoid: HashMap::default(),
            retry: HashMap::default(),
            corrupt: HashMap::default(),
            retiring: HashSet::new(),
        }
    }

    /// Asks for `ids` to be looked at on the next tick.
    pub fn mark_dirty(&mut self, ids: impl IntoIterator<Item = BlockId>) {
        self.dirty.extend(ids);
    }

    /// A replica of `id` on `node` failed verification.
    pub fn mark_corrupt(&mut self, id: BlockId, node: NodeIdx) {
        let c = self.corrupt.entry(id).or_default();
        if !c.contains(&node) {
            c.push(node);
        }
        self.dirty.push_back(id);
    }

    /// Sets the nodes being decommissioned (before a tick).
    pub fn set_retiring(&mut self, retiring: HashSet<NodeIdx>) {
        self.retiring = retiring;
    }

    /// Replicas that count, and the priority they give the block.
    fn judge(&self, id: &BlockId, locs: &[NodeIdx], target: usize) -> (usize, Option<Priority>) {
        let live = locs.iter().filter(|n| !self.retiring.contains(n)).count();
        let p = match priority(live, target, self.corrupt.contains_key(id)) {
            // Only retiring nodes hold it: as urgent as a last replica.
            None if live == 0 && !locs.is_empty() => Some(Priority::OneReplica),
            p => p,
        };
        (live, p)
    }

    /// Whether any copy is outstanding (lets report handling skip the lookups).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// `node` now holds `id`: completes that part of an outstanding copy.
    pub fn replica_added(&mut self, id: &BlockId, node: NodeIdx) {
        let Some(p) = self.pending.get_mut(id) else {
            return;
        };
        let Some(pos) = p.targets.iter().position(|t| *t == node) else {
            return;
        };
        p.targets.remove(pos);
        dec(&mut self.target_load, node);
        if p.targets.is_empty() {
            let source = p.source;
            self.pending.remove(id);
            dec(&mut self.source_load, source);
            // After a reported failure the nodes to avoid stay until the block is
            // healthy (`classify` forgets them with the failure count).
            if !self.retry.contains_key(id) {
                self.avoid.remove(id);
            }
            self.dirty.push_back(*id);
        }
    }

    /// `node` no longer holds `id` (its replica was removed, found corrupt or reported
    /// bad). A copy it was to serve as the source cannot happen (its transfer fails on
    /// the datanode, and nothing tells us so): it is cancelled and the block looked at
    /// again on the next tick, rather than after the copy's timeout. Without this, a
    /// copy scheduled from the second of two corrupt replicas between the two reports
    /// held the block short of replicas for the whole timeout (2 minutes by default).
    pub fn replica_lost(&mut self, id: &BlockId, node: NodeIdx) {
        if self.pending.get(id).is_some_and(|p| p.source == node) {
            self.cancel(id);
        }
    }

    /// `source` reports that its copy of `id` reached none of `failed` (`whole`: the
    /// transfer failed as a whole). Those targets leave the copy and are tried last for
    /// this block (as is the source after a whole failure); a copy with no target left
    /// is cancelled and the block planned again after [`RETRY_BASE_MS`], doubling with
    /// each failure in a row (at most the copy timeout), rather than after the timeout:
    /// a target that keeps refusing (its disk full before its heartbeat says so) costs
    /// a few cheap refusals, not a copy per tick. A report about another copy (an older
    /// one from the same block, or from another source) is ignored.
    pub fn copy_failed(
        &mut self,
        now_ms: u64,
        id: &BlockId,
        source: NodeIdx,
        failed: &[NodeIdx],
        whole: bool,
    ) {
        let Some(p) = self.pending.get_mut(id) else {
            return;
        };
        if p.source != source {
            return;
        }
        let mut gone = SmallVec::<[NodeIdx; 4]>::new();
        p.targets.retain(|t| {
            let hit = whole || failed.contains(t);
            if hit {
                gone.push(*t);
            }
            !hit
        });
        let empty = p.targets.is_empty();
        for t in &gone {
            dec(&mut self.target_load, *t);
        }
        self.avoid_for(id, gone.iter().copied().chain(whole.then_some(source)));
        let retry = self.retry.entry(*id).or_default();
        retry.failures = retry.failures.saturating_add(1);
        let delay = RETRY_BASE_MS
            .saturating_mul(1 << (retry.failures - 1).min(20))
            .min(self.timeout_ms);
        retry.not_before_ms = now_ms + delay;
        retry.released = false;
        if empty {
            self.pending.remove(id);
            dec(&mut self.source_load, source);
        }
    }

    /// Adds `nodes` to those tried last for `id`.
    fn avoid_for(&mut self, id: &BlockId, nodes: impl IntoIterator<Item = NodeIdx>) {
        let avoid = self.avoid.entry(*id).or_default();
        for n in nodes {
            if !avoid.contains(&n) {
                avoid.push(n);
            }
        }
    }

    /// Blocks whose wait after a failed copy is over go back to be looked at.
    fn release_retries(&mut self, now_ms: u64) {
        for (id, r) in self.retry.iter_mut() {
            if !r.released && r.not_before_ms <= now_ms {
                r.released = true;
                self.dirty.push_back(*id);
            }
        }
    }

    /// After a full report of `node`: completes every outstanding copy to it that the
    /// block map now shows, and cancels every copy it was to serve whose replica the
    /// report no longer lists (as [`Replication::replica_lost`] does for incremental
    /// reports). Cheaper than checking each reported block: few copies are outstanding
    /// at any time.
    pub fn confirm_from(&mut self, blocks: &BlockMap, node: NodeIdx) {
        let holds = |id: &BlockId| blocks.get(id).is_some_and(|i| i.locs.contains(&node));
        let done: Vec<BlockId> = self
            .pending
            .iter()
            .filter(|(id, p)| p.targets.contains(&node) && holds(id))
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.replica_added(&id, node);
        }
        let lost: Vec<BlockId> = self
            .pending
            .iter()
            .filter(|(id, p)| p.source == node && !holds(id))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.cancel(&id);
        }
    }

    /// A node died: its outstanding copies are cancelled and their blocks rechecked.
    pub fn node_dead(&mut self, node: NodeIdx) {
        let hit: Vec<BlockId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.source == node || p.targets.contains(&node))
            .map(|(id, _)| *id)
            .collect();
        for id in hit {
            self.cancel(&id);
        }
        self.source_load.remove(&node);
        self.target_load.remove(&node);
    }

    fn cancel(&mut self, id: &BlockId) {
        if let Some(p) = self.pending.remove(id) {
            dec(&mut self.source_load, p.source);
            for t in &p.targets {
                dec(&mut self.target_load, *t);
            }
            self.dirty.push_back(*id);
        }
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            queued: [0, 1, 2, 3].map(|i| self.queues[i].len()),
            pending: self.pending.len(),
            dirty: self.dirty.len(),
        }
    }

    /// One round: expire overdue copies, classify dirty blocks, schedule work within
    /// the stream limits. Returns the commands to deliver, per node.
    pub fn tick(
        &mut self,
        now_ms: u64,
        blocks: &BlockMap,
        nodes: &[Candidate],
        block_size: u64,
    ) -> Vec<(NodeIdx, Cmd)> {
        self.expire(now_ms);
        self.release_retries(now_ms);
        self.classify(now_ms, blocks);
        self.schedule(now_ms, blocks, nodes, block_size)
    }

    fn expire(&mut self, now_ms: u64) {
        let overdue: Vec<BlockId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            if let Some(p) = self.pending.get(&id) {
                tracing::info!(block = %id, source = p.source, "re-replication timed out, retrying elsewhere");
                let tried: SmallVec<[NodeIdx; 4]> = std::iter::once(p.source)
                    .chain(p.targets.iter().copied())
                    .collect();
                self.avoid_for(&id, tried);
            }
            self.cancel(&id);
        }
    }

    fn classify(&mut self, now_ms: u64, blocks: &BlockMap) {
        let n = self.dirty.len().min(MAX_CLASSIFY_PER_TICK);
        let batch: Vec<BlockId> = self.dirty.drain(..n).collect();
        for id in batch {
            let Some(info) = blocks.get(&id) else {
                self.corrupt.remove(&id);
                self.avoid.remove(&id);
                self.retry.remove(&id);
                continue;
            };
            if self.pending.contains_key(&id) || self.queued.contains(&id) {
                continue;
            }
            // Waiting after a failed copy: `release_retries` brings it back.
            if self
                .retry
                .get(&id)
                .is_some_and(|r| r.not_before_ms > now_ms)
            {
                continue;
            }
            match self.judge(&id, &info.locs, info.target as usize) {
                (_, Some(p)) => {
                    self.queued.insert(id);
                    self.queues[p as usize].push_back(id);
                }
                // Healthy: the nodes that failed its copies matter no more.
                (_, None) => {
                    self.avoid.remove(&id);
                    self.retry.remove(&id);
                }
            }
        }
    }

    fn schedule(
        &mut self,
        now_ms: u64,
        blocks: &BlockMap,
        nodes: &[Candidate],
        block_size: u64,
    ) -> Vec<(NodeIdx, Cmd)> {
        let mut out = Vec::new();
        let mut budget = MAX_SCHEDULE_PER_TICK;
        for q in 0..4 {
            let mut retry = VecDeque::new();
            while budget > 0 {
                let Some(id) = self.queues[q].pop_front() else {
                    break;
                };
                budget -= 1;
                self.queued.remove(&id);
                let Some(info) = blocks.get(&id) else {
                    continue;
                };
                let target = info.target as usize;
                let (live, p) = self.judge(&id, &info.locs, target);
                match p {
                    None => {}
                    Some(Priority::OneReplica | Priority::Under) => {
                        // Targets need room for the block itself, not a whole block.
                        let room = info.length.min(block_size);
                        match self.plan_copy(&id, &info.locs, target - live, nodes, room) {
                            Some((source, targets)) => {
                                *self.source_load.entry(source).or_default() += 1;
                                for t in &targets {
                                    *self.target_load.entry(*t).or_default() += 1;
                                }
                                self.pending.insert(
                                    id,
                                    Pending {
                                        source,
                                        targets: targets.iter().copied().collect(),
                                        deadline_ms: now_ms + self.timeout_ms,
                                    },
                                );
                                out.push((
                                    source,
                                    Cmd::Replicate {
                                        block: id,
                                        length: info.length,
                                        targets,
                                    },
                                ));
                            }
                            None => retry.push_back(id),
                        }
                    }
                    Some(Priority::Corrupt) => {
                        for n in self.corrupt.remove(&id).unwrap_or_default() {
                            if !info.locs.contains(&n) {
                                out.push((n, Cmd::DropCorrupt(vec![id])));
                            }
                        }
                    }
                    Some(Priority::Over) => {
                        let mut holders: Vec<&Candidate> = info
                            .locs
                            .iter()
                            .filter(|n| !self.retiring.contains(n))
                            .filter_map(|n| nodes.iter().find(|c| c.node == *n))
                            .collect();
                        // Trim where space is scarcest; keep at least `target` (≥ 1).
                        holders.sort_by_key(|c| (c.available, std::cmp::Reverse(c.node)));
                        let excess = live.saturating_sub(target.max(1));
                        for c in holders.into_iter().take(excess) {
                            blocks.remove_location(&id, c.node);
                            out.push((c.node, Cmd::Trim(vec![id])));
                        }
                    }
                }
            }
            for id in retry {
                self.queued.insert(id);
                self.queues[q].push_back(id);
            }
        }
        out
    }

    /// A source among the holders and `need` targets among the others, within the
    /// stream limits, avoiding nodes that already failed this block when possible.
    fn plan_copy(
        &self,
        id: &BlockId,
        holders: &[NodeIdx],
        need: usize,
        nodes: &[Candidate],
        room: u64,
    ) -> Option<(NodeIdx, Vec<NodeIdx>)> {
        let avoid = self.avoid.get(id);
        let avoided = |n: NodeIdx| avoid.is_some_and(|a| a.contains(&n));
        let source = holders
            .iter()
            .filter(|n| self.source_load.get(n).copied().unwrap_or(0) < self.streams)
            .filter_map(|n| nodes.iter().find(|c| c.node == *n))
            .min_by_key(|c| {
                (
                    avoided(c.node),
                    !c.writable,
                    self.source_load.get(&c.node).copied().unwrap_or(0),
                    c.load,
                )
            })?
            .node;
        let open: Vec<Candidate> = nodes
            .iter()
            .filter(|c| self.target_load.get(&c.node).copied().unwrap_or(0) < self.streams)
            .cloned()
            .collect();
        let mut exclude: HashSet<NodeIdx> = holders.iter().copied().collect();
        let request = |exclude: HashSet<NodeIdx>| placement::Request {
            wanted: need,
            min: 1,
            room,
            exclude,
        };
        // Prefer nodes that have not failed this block (nor held a corrupt replica of
        // it); fall back to them rather than leave the block short.
        let corrupt = self.corrupt.get(id);
        if avoid.is_some() || corrupt.is_some() {
            let mut strict = exclude.clone();
            strict.extend(avoid.into_iter().flatten().copied());
            strict.extend(corrupt.into_iter().flatten().copied());
            if let Ok(t) = placement::check(&open, &request(strict)) {
                return Some((source, t));
            }
        }
        exclude.insert(source);
        placement::check(&open, &request(exclude))
            .ok()
            .map(|t| (source, t))
    }
}

fn dec(m: &mut HashMap<NodeIdx, u32>, n: NodeIdx) {
    if let Some(v) = m.get_mut(&n) {
        *v = v.saturating_sub(1);
        if *v == 0 {
            m.remove(&n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> BlockId {
        BlockId::from_slice(&[n; 32]).unwrap()
    }

    fn nodes(n: u32) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                node: i,
                zone: String::new(),
                writable: true,
                available: 1 << 40,
                load: 0,
            })
            .collect()
    }

    /// A block map where block `id` wants `target` replicas and sits on `on`.
    fn with_block(m: &BlockMap, id: BlockId, target: u32, on: &[NodeIdx]) {
        m.add_ref(id, 100, target);
        for n in on {
            m.add_location(&id, *n);
        }
    }

    /// The command copying the 100-byte block `id` (see `with_block`) from `source`.
    fn copy(source: NodeIdx, id: BlockId, targets: Vec<NodeIdx>) -> (NodeIdx, Cmd) {
        (
            source,
            Cmd::Replicate {
                block: id,
                length: 100,
                targets,
            },
        )
    }

    fn copies(cmds: &[(NodeIdx, Cmd)]) -> Vec<BlockId> {
        cmds.iter()
            .filter_map(|(_, c)| match c {
                Cmd::Replicate { block, .. } => Some(*block),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn priority_table() {
        for (live, target, corrupt, want) in [
            (0, 3, false, None),
            (1, 3, false, Some(Priority::OneReplica)),
            (2, 3, false, Some(Priority::Under)),
            (2, 3, true, Some(Priority::Under)),
            (3, 3, true, Some(Priority::Corrupt)),
            (3, 3, false, None),
            (4, 3, false, Some(Priority::Over)),
            (1, 1, false, None),
        ] {
            assert_eq!(
                priority(live, target, corrupt),
                want,
                "{live}/{target} {corrupt}"
            );
        }
    }

    #[test]
    fn one_replica_blocks_go_first_and_streams_are_bounded() {
        let m = BlockMap::new();
        // Both blocks can only be copied from node 0, which serves one stream at a time.
        with_block(&m, b(1), 3, &[0, 1]);
        with_block(&m, b(2), 3, &[0]);
        let mut r = Replication::new(1, 60_000);
        r.mark_dirty([b(1), b(2)]);
        let mut cluster = nodes(4);
        cluster[1].writable = false; // stale: may not be a target, still a source
        let cmds = r.tick(0, &m, &cluster, 1);
        assert_eq!(copies(&cmds), vec![b(2)], "the one-replica block first");
        // b(1) found a source (node 1, stale but readable) and targets? Node 1 has
        // capacity as a source, so b(1) was scheduled from it only if targets were free:
        // targets 2 and 3 are busy receiving b(2) with one stream each.
        let Cmd::Replicate { targets, .. } = &cmds[0].1 else {
            panic!()
        };
        assert_eq!(targets.len(), 2);
        assert_eq!(r.stats().pending, 1);
        assert_eq!(r.stats().queued[Priority::Under as usize], 1);

        // Targets confirm: the stream limits free up and b(1) goes next.
        for t in targets {
            m.add_location(&b(2), *t);
            r.replica_added(&b(2), *t);
        }
        let cmds = r.tick(1, &m, &cluster, 1);
        assert_eq!(copies(&cmds), vec![b(1)]);
    }

    #[test]
    fn timed_out_copies_are_retried_with_another_target() {
        let m = BlockMap::new();
        with_block(&m, b(1), 2, &[0]);
        let mut r = Replication::new(2, 1000);
        r.mark_dirty([b(1)]);
        let cluster = nodes(3);
        let cmds = r.tick(0, &m, &cluster, 1);
        let Cmd::Replicate { targets, .. } = &cmds[0].1 else {
            panic!()
        };
        let first = targets[0];
        assert!(r.tick(500, &m, &cluster, 1).is_empty(), "still waiting");
        let cmds = r.tick(1000, &m, &cluster, 1);
        let Cmd::Replicate { targets, .. } = &cmds[0].1 else {
            panic!()
        };
        assert_ne!(targets[0], first);
    }

    #[test]
    fn over_replication_is_trimmed_to_target_never_below() {
        let m = BlockMap::new();
        with_block(&m, b(1), 2, &[0, 1, 2, 3]);
        let mut r = Replication::new(2, 1000);
        r.mark_dirty([b(1)]);
        let mut cluster = nodes(4);
        cluster[2].available = 1;
        cluster[3].available = 2;
        let cmds = r.tick(0, &m, &cluster, 1);
        let trimmed: Vec<NodeIdx> = cmds.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            trimmed,
            vec![2, 3],
            "the fullest nodes lose their surplus copy"
        );
        assert_eq!(m.get(&b(1)).unwrap().locs.len(), 2);
        r.mark_dirty([b(1)]);
        assert!(r.tick(1, &m, &cluster, 1).is_empty());
    }

    #[test]
    fn dead_sources_cancel_their_copies() {
        let m = BlockMap::new();
        with_block(&m, b(1), 2, &[0, 2]);
        m.remove_location(&b(1), 2);
        let mut r = Replication::new(2, 60_000);
        r.mark_dirty([b(1)]);
        let cluster = nodes(3);
        assert_eq!(r.tick(0, &m, &cluster, 1).len(), 1);
        r.node_dead(0);
        assert_eq!(r.stats().pending, 0);
        assert_eq!(r.stats().dirty, 1);
    }

    #[test]
    fn a_copy_whose_source_lost_its_replica_is_rescheduled_at_once() {
        // Three nodes, replication 3; node 0's replica is found corrupt: the copy to it
        // is planned from the first holder, node 1.
        let m = BlockMap::new();
        with_block(&m, b(1), 3, &[1, 2]);
        let mut r = Replication::new(2, 120_000);
        r.mark_corrupt(b(1), 0);
        let cmds = r.tick(0, &m, &nodes(3), 1);
        assert_eq!(cmds, vec![copy(1, b(1), vec![0])]);
        // Node 1's replica turns out corrupt too, before it served the copy.
        m.remove_location(&b(1), 1);
        r.replica_lost(&b(1), 1);
        r.mark_corrupt(b(1), 1);
        assert_eq!(r.stats().pending, 0, "the copy from node 1 is cancelled");
        // The next tick (not the timeout) copies from the last good replica to both.
        let cmds = r.tick(1, &m, &nodes(3), 1);
        let [(2, Cmd::Replicate { block, targets, .. })] = cmds.as_slice() else {
            panic!("one copy from node 2 expected, got {cmds:?}");
        };
        assert_eq!(*block, b(1));
        let mut targets = targets.clone();
        targets.sort_unstable();
        assert_eq!(targets, vec![0, 1]);
    }

    #[test]
    fn a_small_block_heals_onto_a_node_without_room_for_a_whole_block() {
        // The block is 100 bytes; node 2 has 1,000 bytes free, far less than a 64 MiB
        // block: room enough for this copy. Node 3 has 99 bytes: not enough.
        let m = BlockMap::new();
        with_block(&m, b(1), 2, &[0]);
        let mut cluster = nodes(4);
        cluster[1].writable = false;
        cluster[2].available = 1_000;
        cluster[3].available = 99;
        let mut r = Replication::new(2, 120_000);
        r.mark_dirty([b(1)]);
        let cmds = r.tick(0, &m, &cluster, 64 << 20);
        assert_eq!(cmds, vec![copy(0, b(1), vec![2])]);
    }

    #[test]
    fn losing_a_target_or_another_replica_keeps_the_copy() {
        let m = BlockMap::new();
        with_block(&m, b(1), 3, &[1, 2]);
        let mut r = Replication::new(2, 120_000);
        r.mark_dirty([b(1)]);
        let cmds = r.tick(0, &m, &nodes(3), 1);
        let (source, _) = cmds[0];
        let other = if source == 1 { 2 } else { 1 };
        r.replica_lost(&b(1), other);
        r.replica_lost(&b(1), 0);
        assert_eq!(r.stats().pending, 1);
    }

    #[test]
    fn a_reported_failed_copy_is_replanned_shortly_avoiding_the_failed_targets() {
        // Replication 3 on five nodes, one replica on node 0: a copy to two targets.
        let m = BlockMap::new();
        with_block(&m, b(1), 3, &[0]);
        let mut r = Replication::new(2, 120_000);
        r.mark_dirty([b(1)]);
        let cmds = r.tick(0, &m, &nodes(5), 1);
        let [(0, Cmd::Replicate { targets, .. })] = cmds.as_slice() else {
            panic!("one copy from node 0 expected, got {cmds:?}");
        };
        let (t1, t2) = (targets[0], targets[1]);
        // Stale or foreign reports change nothing: another source, another block.
        r.copy_failed(1, &b(1), 3, &[t1, t2], true);
        r.copy_failed(1, &b(2), 0, &[t1], false);
        assert_eq!(r.stats().pending, 1);
        // t1 failed, t2 committed (its report is still on the way): the copy waits for
        // t2 and nothing is planned in the meantime.
        r.copy_failed(1, &b(1), 0, &[t1], false);
        assert_eq!(r.stats().pending, 1);
        assert!(r.tick(2, &m, &nodes(5), 1).is_empty());
        m.add_location(&b(1), t2);
        r.replica_added(&b(1), t2);
        assert_eq!(r.stats().pending, 0);
        // Not before the retry delay; then the missing replica goes to a node other
        // than t1.
        assert!(r.tick(3, &m, &nodes(5), 1).is_empty());
        let cmds = r.tick(1 + RETRY_BASE_MS, &m, &nodes(5), 1);
        let [(_, Cmd::Replicate { targets, .. })] = cmds.as_slice() else {
            panic!("one copy expected, got {cmds:?}");
        };
        assert_eq!(targets.len(), 1);
        assert!(![0, t1, t2].contains(&targets[0]), "{targets:?}");
        // Once healthy, the block's failure history is forgotten.
        m.add_location(&b(1), targets[0]);
        r.replica_added(&b(1), targets[0]);
        r.tick(2 + RETRY_BASE_MS, &m, &nodes(5), 1);
        assert!(r.retry.is_empty() && r.avoid.is_empty());
    }

    #[test]
    fn a_whole_failed_copy_frees_its_streams_and_is_replanned_after_a_growing_delay() {
        let m = BlockMap::new();
        with_block(&m, b(1), 2, &[0]);
        // One stream per node: the failed copy must give its stream back.
        let mut r = Replication::new(1, 120_000);
        r.mark_dirty([b(1)]);
        let cmds = r.tick(0, &m, &nodes(3), 1);
        assert_eq!(cmds.len(), 1);
        let (_, Cmd::Replicate { targets, .. }) = &cmds[0] else {
            panic!("a copy expected");
        };
        let first = targets[0];
        r.copy_failed(10, &b(1), 0, &[], true);
        assert_eq!(r.stats().pending, 0);
        // Long before the 2-minute timeout, after the first delay: planned again; node
        // 0 is the only source, and the other spare is preferred to the failed target.
        assert!(r.tick(9 + RETRY_BASE_MS, &m, &nodes(3), 1).is_empty());
        let cmds = r.tick(10 + RETRY_BASE_MS, &m, &nodes(3), 1);
        let [(0, Cmd::Replicate { targets, .. })] = cmds.as_slice() else {
            panic!("one copy from node 0 expected, got {cmds:?}");
        };
        assert_ne!(targets[0], first);
        // A second failure in a row waits twice as long.
        let t = 20 + RETRY_BASE_MS;
        r.copy_failed(t, &b(1), 0, &[], true);
        assert!(
            r.tick(t + 2 * RETRY_BASE_MS - 1, &m, &nodes(3), 1)
                .is_empty()
        );
        assert_eq!(r.tick(t + 2 * RETRY_BASE_MS, &m, &nodes(3), 1).len(), 1);
    }

    #[test]
    fn a_full_report_without_the_source_replica_cancels_its_copy() {
        let m = BlockMap::new();
        with_block(&m, b(1), 3, &[0, 1]);
        let mut r = Replication::new(2, 120_000);
        r.mark_dirty([b(1)]);
        let cmds = r.tick(0, &m, &nodes(4), 1);
        let (source, _) = cmds[0];
        // A full report of another node changes nothing.
        r.confirm_from(&m, 3);
        assert_eq!(r.stats().pending, 1);
        // The source's full report no longer lists the block.
        m.remove_location(&b(1), source);
        r.confirm_from(&m, source);
        assert_eq!(r.stats().pending, 0);
        assert_eq!(r.stats().dirty, 1);
    }

    #[test]
    fn corrupt_replicas_are_deleted_once_the_block_is_healthy() {
        let m = BlockMap::new();
        with_block(&m, b(1), 2, &[0, 1]);
        let mut r = Replication::new(2, 60_000);
        r.mark_corrupt(b(1), 2);
        let cmds = r.tick(0, &m, &nodes(3), 1);
        assert_eq!(cmds, vec![(2, Cmd::DropCorrupt(vec![b(1)]))]);
    }
}

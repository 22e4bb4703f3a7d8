//! One round of the replication worker: expire overdue copies, classify dirty blocks
//! into the priority queues, and schedule what the stream limits allow.

use kdfs_core::BlockId;
use smallvec::SmallVec;

use super::planner::{Holders, Limits, plan_copy};
use super::priority::{Judgement, Priority};
use super::queues::QUEUES;
use super::{MAX_CLASSIFY_PER_TICK, MAX_SCHEDULE_PER_TICK, Replication};
use crate::blockmap::{BlockMap, NodeIdx};
use crate::cluster::Cmd;
use crate::placement::Candidate;

impl Replication {
    /// One round: expire overdue copies, classify dirty blocks, schedule work within
    /// the stream limits. Returns the commands to deliver, per node.
    #[tracing::instrument(
        name = "replication_tick",
        skip_all,
        fields(dirty = self.queues.dirty_len(), pending = self.inflight.len())
    )]
    pub fn tick(
        &mut self,
        now_ms: u64,
        blocks: &BlockMap,
        nodes: &[Candidate],
        block_size: u64,
    ) -> Vec<(NodeIdx, Cmd)> {
        self.expire(now_ms);
        let released = self.failures.release(now_ms);
        self.queues.mark_dirty(released);
        self.classify(now_ms, blocks);
        self.schedule(now_ms, blocks, nodes, block_size)
    }

    fn expire(&mut self, now_ms: u64) {
        for id in self.inflight.overdue(now_ms) {
            if let Some(p) = self.inflight.get(&id) {
                tracing::info!(block = %id, source = p.source, "re-replication timed out, retrying elsewhere");
                let tried: SmallVec<[NodeIdx; 4]> = std::iter::once(p.source)
                    .chain(p.targets.iter().copied())
                    .collect();
                self.failures.avoid(&id, tried);
            }
            self.cancel(&id);
        }
    }

    fn classify(&mut self, now_ms: u64, blocks: &BlockMap) {
        for id in self.queues.take_dirty(MAX_CLASSIFY_PER_TICK) {
            let Some(info) = blocks.get(&id) else {
                self.corrupt.remove(&id);
                self.failures.forget(&id);
                continue;
            };
            if self.inflight.contains(&id) || self.queues.is_queued(&id) {
                continue;
            }
            // Waiting after a failed copy: `Failures::release` brings it back.
            if self.failures.waiting(&id, now_ms) {
                continue;
            }
            let unconfirmed = !blocks.unconfirmed(&id).is_empty();
            match self
                .judge(&id, &info.locs, unconfirmed, info.target as usize)
                .priority
            {
                Some(p) => self.queues.enqueue(p, id),
                // Healthy: the nodes that failed its copies matter no more.
                None => self.failures.forget(&id),
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
        for q in 0..QUEUES {
            let mut retry: Vec<BlockId> = Vec::new();
            while budget > 0 {
                let Some(id) = self.queues.pop(q) else {
                    break;
                };
                budget -= 1;
                let Some(info) = blocks.get(&id) else {
                    continue;
                };
                let unconfirmed = blocks.unconfirmed(&id);
                let Judgement {
                    live,
                    want: target,
                    priority,
                } = self.judge(
                    &id,
                    &info.locs,
                    !unconfirmed.is_empty(),
                    info.target as usize,
                );
                match priority {
                    None => {}
                    Some(Priority::OneReplica | Priority::Under) => {
                        // Targets need room for the block itself, not a whole block.
                        let room = info.length.min(block_size);
                        let limits = Limits {
                            streams: self.streams,
                            inflight: &self.inflight,
                            avoid: self.failures.avoided(&id),
                            corrupt: self.corrupt.get(&id).map(|c| c.as_slice()),
                        };
                        let holders = Holders {
                            confirmed: &info.locs,
                            unconfirmed: &unconfirmed,
                        };
                        match plan_copy(limits, holders, target - live, nodes, room) {
                            Some((source, targets)) => {
                                self.inflight
                                    .start(id, source, &targets, now_ms + self.timeout_ms);
                                out.push((
                                    source,
                                    Cmd::Replicate {
                                        block: id,
                                        length: info.length,
                                        targets,
                                    },
                                ));
                            }
                            None => retry.push(id),
                        }
                    }
                    Some(Priority::Corrupt) => {
                        for n in self.corrupt.remove(&id).unwrap_or_default() {
                            if !info.locs.contains(&n) {
                                out.push((n, Cmd::DropCorrupt(vec![id])));
                            }
                        }
                    }
                    // Only confirmed replicas count and only they are trimmed: a
                    // forged report can never make a real replica surplus.
                    Some(Priority::Over) => {
                        let mut holders: Vec<&Candidate> = info
                            .locs
                            .iter()
                            .filter(|n| {
                                !self.leaving.retiring.contains(n)
                                    && !self.leaving.maintenance.contains(n)
                            })
                            .filter_map(|n| nodes.iter().find(|c| c.node == *n))
                            .collect();
                        // Trim where space is scarcest; keep at least `target` (≥ 1).
                        holders.sort_by_key(|c| (c.available, std::cmp::Reverse(c.node)));
                        // Not while a holder is in maintenance: the trim could leave
                        // fewer than `min_replicas` elsewhere and undo itself.
                        let away = info
                            .locs
                            .iter()
                            .any(|n| self.leaving.maintenance.contains(n));
                        let excess = if away {
                            0
                        } else {
                            live.saturating_sub(target.max(1))
                        };
                        for c in holders.into_iter().take(excess) {
                            blocks.remove_location(&id, c.node);
                            out.push((c.node, Cmd::Trim(vec![id])));
                        }
                        // Unconfirmed replicas go once the confirmed ones suffice (a real
                        // one, say of a node killed mid-pipeline, is surplus then).
                        if live >= target.max(1) {
                            for n in unconfirmed {
                                blocks.remove_location(&id, n);
                                out.push((n, Cmd::DropUnconfirmed(vec![id])));
                            }
                        }
                    }
                }
            }
            for id in retry {
                self.queues.push(q, id);
            }
        }
        out
    }
}

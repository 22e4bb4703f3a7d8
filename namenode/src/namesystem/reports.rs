//! What datanodes report about their replicas: full and incremental block reports,
//! a bad replica found by a reader, and copies that failed. Each report may answer
//! with the node's pending deletes.
//!
//! A reported replica is *confirmed* only if the namenode placed it there (a
//! pipeline's ack, a copy it ordered), the node held it before it died, or, in safe
//! mode after a restart, while a block has fewer confirmed replicas than wanted
//! (`BlockMap::report_replica`, `apply_full_report`). Anything else is unconfirmed:
//! never counted, never a reason to trim (docs/security.md, "Replica reports").

use kdfs_core::{BlockId, DatanodeId};

use super::{NameSystem, lock};
use crate::blockmap::{NodeIdx, Reported};
use crate::error::{Error, Result};
use crate::gc::{Deletes, UNKNOWN_GENERATION};
use crate::verify::Queued;

/// A replication a datanode reports as failed (with its heartbeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCopy {
    pub block: BlockId,
    /// Targets that hold no new replica.
    pub targets: Vec<DatanodeId>,
    /// The transfer failed as a whole (the source could not send it).
    pub whole: bool,
}

impl NameSystem {
    /// Refuses a report from a node that is not registered (or was declared dead),
    /// before anything of the report is read.
    pub fn check_reporter(&self, id: &DatanodeId) -> Result<()> {
        self.reporting_node(id).map(|_| ())
    }

    fn reporting_node(&self, id: &DatanodeId) -> Result<NodeIdx> {
        self.cluster().live_index(id).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "datanode {id} is not registered (or was declared dead): register first"
            ))
        })
    }

    /// Applies a complete full block report. Returns the replicas accepted and the
    /// resulting delete command, if one may go out.
    pub fn full_report(
        &self,
        id: &DatanodeId,
        blocks: Vec<(BlockId, u64)>,
    ) -> Result<(u64, Option<Deletes>)> {
        let idx = self.reporting_node(id)?;
        let now_ms = self.clock.now_ms();
        let started = std::time::Instant::now();
        let reported = blocks.len();
        // In safe mode after a restart nothing remembers where blocks were placed: full
        // reports confirm replicas of blocks short of their target.
        let outcome = self
            .shared
            .blocks
            .apply_full_report(idx, blocks, self.in_safe_mode());
        {
            let mut gc = lock(&self.shared.gc);
            for (b, len) in &outcome.unknown {
                gc.unreferenced_replica(idx, *b, *len, UNKNOWN_GENERATION, now_ms, false);
            }
        }
        {
            let mut repl = lock(&self.shared.repl);
            repl.confirm_from(&self.shared.blocks, idx);
            repl.mark_dirty(outcome.dirty.iter().copied());
        }
        let deletes = self.take_deletes(idx, now_ms);
        tracing::info!(
            node = %id,
            reported,
            accepted = outcome.accepted,
            unconfirmed = outcome.unconfirmed,
            unknown = outcome.unknown.len(),
            dropped = outcome.dropped,
            deletes = deletes.as_ref().map_or(0, |d| d.blocks.len()),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "full block report applied"
        );
        Ok((outcome.accepted, deletes))
    }

    /// Applies an incremental report (`added`: id, length, write generation); returns
    /// the delete command for the node, if one may go out.
    pub fn incremental_report(
        &self,
        id: &DatanodeId,
        added: &[(BlockId, u64, u64)],
        removed: &[BlockId],
        corrupt: &[BlockId],
    ) -> Result<Option<Deletes>> {
        let idx = self.reporting_node(id)?;
        let now_ms = self.clock.now_ms();
        let blocks = &self.shared.blocks;
        let mut dirty = Vec::new();
        let mut unknown = Vec::new();
        // Bytes the map gained and lost on this node, for `usage`: a replica already
        // mapped (acknowledged by its commit) is not counted again. An unreferenced
        // replica counts once a commit adopts it.
        let (mut gained, mut lost) = (Vec::new(), Vec::new());
        // Replicas of copies the namenode ordered to this node are confirmed.
        let placed: Vec<bool> = {
            let repl = lock(&self.shared.repl);
            added.iter().map(|(b, ..)| repl.expects(b, idx)).collect()
        };
        let mut unconfirmed = 0u64;
        for ((b, len, generation), placed) in added.iter().zip(placed) {
            let reported = if placed {
                blocks.add_location(b, idx).map(Reported::Confirmed)
            } else {
                blocks.report_replica(b, idx)
            };
            match reported {
                Some(Reported::Confirmed(a)) => {
                    if a.over {
                        dirty.push(*b);
                    }
                    if a.new {
                        gained.push(a.length);
                    }
                }
                Some(Reported::Unconfirmed) => {
                    unconfirmed += 1;
                    dirty.push(*b);
                }
                None => unknown.push((*b, *len, *generation)),
            }
        }
        if unconfirmed > 0 {
            tracing::info!(node = %id, unconfirmed, "replicas reported where the namenode never placed them: not counted");
            metrics::counter!("kdfs_namenode_unconfirmed_replicas_total").increment(unconfirmed);
        }
        for b in removed.iter().chain(corrupt) {
            if let Some(len) = blocks.remove_location(b, idx) {
                dirty.push(*b);
                lost.push(len);
            }
        }
        {
            let mut gc = lock(&self.shared.gc);
            for (b, len, generation) in unknown {
                gc.unreferenced_replica(idx, b, len, generation, now_ms, true);
            }
            for b in removed.iter().chain(corrupt) {
                gc.replica_gone(idx, b);
            }
        }
        {
            let mut repl = lock(&self.shared.repl);
            for (b, ..) in added {
                repl.replica_added(b, idx);
            }
            for b in removed.iter().chain(corrupt) {
                repl.replica_lost(b, idx);
            }
            for b in corrupt {
                if blocks.contains(b) {
                    repl.mark_corrupt(*b, idx);
                }
            }
            repl.mark_dirty(dirty);
        }
        if !gained.is_empty() || !lost.is_empty() {
            let mut usage = lock(&self.shared.usage);
            for len in gained {
                usage.gained(idx, len);
            }
            for len in lost {
                usage.lost(idx, len);
            }
        }
        if !corrupt.is_empty() {
            metrics::counter!("kdfs_namenode_corrupt_replicas_total")
                .increment(corrupt.len() as u64);
        }
        Ok(self.take_deletes(idx, now_ms))
    }

    /// A reader found a bad replica. The location is not dropped on its word (a flood
    /// of such reports would make files unreadable): the holder is asked to verify
    /// the replica on its next heartbeat, and one that really is corrupt is
    /// quarantined and reported by the datanode, then healed. Reports about a node
    /// or block the namenode does not know, or a replica it does not map there, are
    /// ignored; verifications are bounded and de-duplicated per node
    /// ([`crate::verify`]).
    pub fn bad_replica(&self, block: &BlockId, node: &DatanodeId, reason: &str) {
        let mut cluster = self.cluster();
        let Some(idx) = cluster.live_index(node) else {
            tracing::debug!(block = %block, node = %node, "bad replica reported for an unknown node: ignored");
            return;
        };
        if !self.shared.blocks.holds(block, idx) {
            tracing::debug!(block = %block, node = %node, "bad replica reported where none is mapped: ignored");
            return;
        }
        let queued = cluster
            .verify_queue(idx)
            .push(*block, tokio::time::Instant::now());
        drop(cluster);
        metrics::counter!("kdfs_namenode_bad_replica_reports_total").increment(1);
        match queued {
            Queued::Yes => {
                tracing::info!(block = %block, node = %node, reason, "bad replica reported; its holder will verify it");
            }
            Queued::Duplicate => {}
            Queued::Full => {
                tracing::info!(node = %node, "too many replicas of this node to verify: report ignored");
            }
        }
    }

    /// Replications that `id` (their source) reports as failed: the failed targets (and
    /// the source, when the whole transfer failed) are tried last for that block, and a
    /// copy with no target left is planned again after a short, growing delay instead
    /// of after its timeout (`Replication::copy_failed`). Reports about copies no
    /// longer outstanding change nothing.
    pub fn copies_failed(&self, id: &DatanodeId, failed: &[FailedCopy]) {
        if failed.is_empty() {
            return;
        }
        let (source, targets): (NodeIdx, Vec<Vec<NodeIdx>>) = {
            let cluster = self.cluster();
            let Some(source) = cluster.live_index(id) else {
                return;
            };
            let targets = failed
                .iter()
                .map(|f| {
                    f.targets
                        .iter()
                        .filter_map(|t| cluster.index_of(t))
                        .collect()
                })
                .collect();
            (source, targets)
        };
        let now_ms = self.clock.now_ms();
        let mut repl = lock(&self.shared.repl);
        for (f, targets) in failed.iter().zip(&targets) {
            tracing::info!(block = %f.block, source = %id, targets = f.targets.len(), whole = f.whole, "replication failed; planning it again shortly");
            repl.copy_failed(now_ms, &f.block, source, targets, f.whole);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_fixtures::*;

    #[tokio::test(start_paused = true)]
    async fn unknown_replicas_wait_for_uploads_that_began_before_them() {
        let sim = Sim::new(&["--lease-ttl", "30s"]).with_nodes(2);
        sim.tick();
        let lease = sim.ns.begin_upload("slow", "", 0).await.unwrap();
        // A block of the upload lands on node 0 and is reported before the commit.
        assert!(sim.report(0).with(b"in progress").full().is_empty());
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(5)).await;
            sim.ns.renew(&lease.id).unwrap();
            sim.beat(0);
            sim.beat(1);
            sim.ns.gc_tick(false).await.unwrap();
            assert!(
                deletes(&sim.beat(0)).is_empty(),
                "an older upload may still claim it"
            );
        }
        // The upload gives up: after the grace, the orphan goes.
        sim.ns.abandon(&lease.id).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        sim.ns.gc_tick(false).await.unwrap();
        assert_eq!(deletes(&sim.beat(0)), vec![block(b"in progress")]);
    }

    #[tokio::test(start_paused = true)]
    async fn corrupt_replicas_are_healed_then_removed() {
        let sim = Sim::new(&[]).with_nodes(3);
        sim.tick();
        sim.upload(b"data", &[0, 1]).await;
        sim.report(1).with(b"data").corrupt();
        assert_eq!(sim.locations(b"data").await, vec![sim.nodes[0]]);
        sim.tick();
        let copies = replications(&sim.beat(0));
        assert_eq!(
            copies,
            vec![(block(b"data"), vec![sim.nodes[2]])],
            "not back to the bad disk"
        );
        // Healed: the corrupt copy is deleted.
        sim.report(2).with(b"data").full();
        sim.tick();
        assert_eq!(deletes(&sim.beat(1)), vec![block(b"data")]);
        assert_eq!(sim.locations(b"data").await.len(), 2);
    }

    /// Two of three replicas are bad and their holders find them one at a time (each
    /// verifying after a reader's report): a copy planned between the two finds may
    /// take the second bad replica as its source. That copy cannot succeed (and no
    /// datanode says so), so it is planned again from the good replica at the next
    /// tick, not after the replication timeout.
    #[tokio::test(start_paused = true)]
    async fn a_copy_whose_source_is_found_corrupt_meanwhile_is_replanned_at_once() {
        let sim = Sim::new(&["--replication", "3"]).with_nodes(3);
        sim.tick();
        sim.upload(b"data", &[0, 1, 2]).await;
        sim.report(0).with(b"data").corrupt();
        sim.tick();
        let first: Vec<_> = [1, 2]
            .into_iter()
            .map(|n| (n, replications(&sim.beat(n))))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        let [(source, copies)] = first.as_slice() else {
            panic!("one copy expected, got {first:?}");
        };
        assert_eq!(copies, &vec![(block(b"data"), vec![sim.nodes[0]])]);
        // The source's replica is bad too (its verification finds it a moment later).
        let (source, good) = (*source, 3 - *source);
        sim.report(source).with(b"data").corrupt();
        sim.tick();
        let copies = replications(&sim.beat(good));
        let [(b, targets)] = copies.as_slice() else {
            panic!("a copy from the good replica at once expected, got {copies:?}");
        };
        assert_eq!(*b, block(b"data"));
        let mut targets = targets.clone();
        targets.sort();
        let mut want = vec![sim.nodes[0], sim.nodes[source]];
        want.sort();
        assert_eq!(targets, want, "both bad nodes get a good copy");
    }

    /// After a namenode restart nothing remembers placements: in safe mode full
    /// reports confirm replicas up to the target; a report beyond it is unconfirmed.
    #[tokio::test(start_paused = true)]
    async fn after_a_restart_safe_mode_reports_confirm_up_to_the_target() {
        let sim = Sim::new(&[]).with_nodes(3);
        sim.tick();
        sim.upload(b"kept", &[0, 1]).await;
        let sim = sim.restart().await;
        assert!(sim.ns.in_safe_mode());
        for n in 0..3 {
            sim.register(n);
            sim.report(n).with(b"kept").full();
        }
        let st = sim.ns.status();
        assert_eq!((st.stats.replicas, st.stats.unconfirmed), (2, 1));
    }
}

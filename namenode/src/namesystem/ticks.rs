//! One round of each background worker, called by the named workers `run` starts:
//! liveness (stale and dead nodes), safe mode, re-replication (with the periodic
//! rescan) and gc (leases, orphans, tombstones). Each runs to completion; the worker
//! decides when.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{NameSystem, fraction, lock};
use crate::cluster::{Cmd, NodeState};
use crate::error::Result;
use crate::meta::{Effect, Op};
use crate::replication::Leaving;

impl NameSystem {
    /// Liveness: moves nodes to stale and dead; a dead node's replicas leave the map
    /// and its blocks are queued for re-replication. Returns whether a node died.
    #[tracing::instrument(skip_all)]
    pub fn liveness_tick(&self) -> bool {
        let died = self.cluster().tick(
            Instant::now(),
            self.settings.stale_after,
            self.settings.dead_after,
        );
        self.nodes_died(&died, "missed heartbeats");
        // Registrations that never heartbeated are forgotten once dead: their slots
        // are reused, so registering cannot grow memory.
        let mut cluster = self.cluster();
        let forgotten = cluster.dead_pending();
        self.forget_nodes(&mut cluster, &forgotten);
        !died.is_empty()
    }

    /// Safe mode: leaves it once enough known blocks have been reported or the timeout
    /// passed. Returns whether it is still on.
    #[tracing::instrument(skip_all)]
    pub fn safe_mode_tick(&self) -> bool {
        if !self.in_safe_mode() {
            return false;
        }
        let stats = self.shared.blocks.stats(0);
        let frac = fraction(&stats);
        let elapsed = self.started.elapsed();
        // Once the threshold is reached, wait the extension too, so the datanodes
        // that report a moment later are in the map before re-replication judges
        // what is missing (otherwise every restart would copy blocks needlessly).
        let reached = {
            let mut at = lock(&self.threshold_reached);
            if frac >= self.settings.safe_mode_threshold {
                *at.get_or_insert_with(Instant::now)
            } else {
                *at = None;
                Instant::now() + Duration::from_secs(3600)
            }
        };
        let reason = if stats.blocks == 0 {
            Some("no blocks known")
        } else if reached.elapsed() >= self.settings.safe_mode_extension {
            Some("enough blocks reported")
        } else if elapsed >= self.settings.safe_mode_timeout {
            Some("timeout")
        } else {
            None
        };
        let Some(reason) = reason else {
            return true;
        };
        self.safe_mode.store(false, Ordering::Relaxed);
        tracing::info!(
            reason,
            reported_fraction = frac,
            blocks = stats.blocks,
            "leaving safe mode"
        );
        lock(&self.shared.repl).mark_dirty(self.shared.blocks.misreplicated());
        false
    }

    /// Re-replication round: schedules copies and trims onto the nodes' command queues.
    #[tracing::instrument(skip_all)]
    pub fn replication_tick(&self) -> usize {
        if self.in_safe_mode() {
            return 0;
        }
        let now_ms = self.clock.now_ms();
        let (candidates, leaving): (Vec<_>, _) = {
            let cluster = self.cluster();
            let candidates = cluster
                .candidates(&lock(&self.shared.usage))
                .into_iter()
                .filter(|c| {
                    cluster
                        .node(c.node)
                        .is_some_and(|n| n.state != NodeState::Dead)
                })
                .collect();
            let leaving = Leaving {
                retiring: cluster.retiring(),
                maintenance: cluster.in_maintenance(),
                min_replicas: self.settings.min_replicas as usize,
            };
            (candidates, leaving)
        };
        // Scheduling looks up blocks; it runs without the cluster lock. A node that
        // dies meanwhile has its new copies cancelled by `node_dead` or timed out.
        let mut repl = lock(&self.shared.repl);
        repl.set_leaving(leaving);
        let cmds = repl.tick(
            now_ms,
            &self.shared.blocks,
            &candidates,
            self.settings.block_size,
        );
        drop(repl);
        let mut cluster = self.cluster();
        let n = cmds.len();
        let copies = cmds
            .iter()
            .filter(|(_, c)| matches!(c, Cmd::Replicate { .. }))
            .count();
        if copies > 0 {
            metrics::counter!("kdfs_namenode_replications_scheduled_total")
                .increment(copies as u64);
        }
        for (idx, cmd) in cmds {
            if let Some(node) = cluster.node_mut(idx) {
                node.commands.push_back(cmd);
            }
        }
        if n > 0 {
            tracing::debug!(commands = n, "re-replication scheduled");
            metrics::counter!("kdfs_namenode_replication_commands_total").increment(n as u64);
        }
        n
    }

    /// Rechecks every block's replica count (a safety net behind the events).
    pub fn rescan(&self) {
        lock(&self.shared.repl).mark_dirty(self.shared.blocks.misreplicated());
    }

    /// Leases, orphans and tombstones: expires leases, queues deletes of orphans no
    /// upload can claim, forgets old delete deliveries, purges old tombstones.
    #[tracing::instrument(skip_all)]
    pub async fn gc_tick(&self, purge: bool) -> Result<()> {
        let now = self.clock.now_ms();
        let expired: Vec<String> = {
            let mut leases = lock(&self.leases);
            let ids: Vec<String> = leases
                .values()
                .filter(|l| l.expires_ms <= now)
                .map(|l| l.id.clone())
                .collect();
            for id in &ids {
                leases.remove(id);
            }
            ids
        };
        for id in expired {
            tracing::info!(upload = %id, "upload lease expired");
            self.writer.enqueue(Op::EndLease(id)).await?;
        }
        let retention = self.settings.tombstone_retention.as_millis() as u64;
        let before = now.saturating_sub(retention);
        let oldest = self.oldest_lease_begin();
        {
            let mut gc = lock(&self.shared.gc);
            if !self.in_safe_mode() {
                let n = gc.sweep_orphans(now, self.settings.lease_ttl.as_millis() as u64, oldest);
                if n > 0 {
                    tracing::info!(blocks = n, "unreferenced replicas queued for deletion");
                }
            }
            gc.prune(oldest, before);
        }
        if purge
            && let Effect::Purged(ids) = self
                .writer
                .submit(Op::PurgeTombstones { before_ms: before })
                .await?
            && !ids.is_empty()
        {
            tracing::info!(tombstones = ids.len(), "tombstones purged");
        }
        if purge {
            self.expire_namespace(now).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_fixtures::*;
    use crate::namesystem::reads::FileView;

    #[tokio::test(start_paused = true)]
    async fn an_unconfirmed_copy_is_retried_from_another_source_or_target() {
        let sim = Sim::new(&["--replication-timeout", "10s", "--replication", "3"]).with_nodes(4);
        sim.tick();
        sim.upload(b"data", &[0, 1]).await;
        sim.tick();
        let first = [0, 1]
            .iter()
            .flat_map(|n| replications(&sim.beat(*n)))
            .collect::<Vec<_>>();
        assert_eq!(first.len(), 1, "one copy for the one missing replica");
        let first_target = first[0].1[0];
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            for n in 0..4 {
                sim.beat(n);
            }
            sim.tick();
        }
        let retry = [0, 1]
            .iter()
            .flat_map(|n| replications(&sim.beat(*n)))
            .collect::<Vec<_>>();
        assert_eq!(retry.len(), 1, "retried after the timeout");
        assert_ne!(retry[0].1[0], first_target, "to another target");
    }

    #[tokio::test(start_paused = true)]
    async fn safe_mode_holds_back_deletes_and_copies_until_blocks_are_reported() {
        let sim = Sim::new(&["--safe-mode-extension", "2s"]).with_nodes(2);
        assert!(
            !sim.ns.safe_mode_tick(),
            "nothing known: safe mode ends at once"
        );
        sim.upload(b"one", &[0, 1]).await;
        sim.upload(b"two", &[0, 1]).await;

        let sim = sim.restart().await;
        assert!(sim.ns.safe_mode_tick());
        assert!(sim.ns.in_safe_mode());
        sim.register(0);
        sim.report(0).with(b"one").full();
        assert!(sim.ns.safe_mode_tick(), "half the blocks reported");
        assert_eq!(sim.ns.status().reported_fraction, 0.5);
        assert_eq!(
            sim.ns.replication_tick(),
            0,
            "no re-replication in safe mode"
        );
        sim.report(0).with(b"one").with(b"two").full();
        assert!(
            sim.ns.safe_mode_tick(),
            "all reported: the extension starts"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!sim.ns.safe_mode_tick(), "extension over");
        // Out of safe mode, the under-replicated blocks are queued at once.
        sim.register(1);
        assert_eq!(sim.ns.replication_tick(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn tombstones_are_purged_after_the_retention() {
        let sim = Sim::new(&["--tombstone-retention", "10s"]).with_nodes(2);
        sim.tick();
        sim.upload(b"short-lived", &[0, 1]).await;
        assert!(sim.ns.delete(file(b"short-lived")).await.unwrap());
        sim.ns.gc_tick(true).await.unwrap();
        assert!(matches!(
            sim.ns.get_file(&file(b"short-lived")).await.unwrap(),
            FileView::Deleted { .. }
        ));
        assert_eq!(sim.ns.store_counts().unwrap(), (0, 1));

        tokio::time::advance(Duration::from_secs(11)).await;
        sim.ns.gc_tick(true).await.unwrap();
        assert!(matches!(
            sim.ns.get_file(&file(b"short-lived")).await,
            Err(crate::Error::NotFound(_))
        ));
        assert_eq!(sim.ns.store_counts().unwrap(), (0, 0));
    }
}

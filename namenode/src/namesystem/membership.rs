//! Datanode membership: registration, heartbeats (which carry the node's queued
//! commands back, resolved for the wire), what happens when a node dies, and
//! forgetting nodes so that registrations cannot grow memory without bound.

use kdfs_core::{BlockId, DatanodeId};
use tokio::time::Instant;

use super::{Location, NameSystem, location, lock};
use crate::blockmap::NodeIdx;
use crate::cluster::{Beat, Cmd, Load, Registration};
use crate::error::Result;
use crate::gc::Deletes;
use crate::verify::VERIFY_PER_HEARTBEAT;

/// Queued commands (copies, trims) handed out per heartbeat reply, at most.
pub const MAX_COMMANDS_PER_REPLY: usize = 5_000;

/// A command resolved for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Delete(Deletes),
    /// Re-hash these replicas (a reader reported them bad).
    Verify(Vec<BlockId>),
    Replicate {
        block: BlockId,
        length: u64,
        targets: Vec<Location>,
    },
}

impl NameSystem {
    /// Registers a datanode; returns the cluster id it must persist.
    pub fn register(&self, id: DatanodeId, reg: &Registration) -> Result<String> {
        let idx = {
            let mut cluster = self.cluster();
            let known = cluster.index_of(&id);
            if known.is_none() {
                if let Some(e) = cluster.full_for(&id) {
                    metrics::counter!("kdfs_namenode_registrations_refused_total").increment(1);
                    return Err(e);
                }
                // Every slot taken: the node dead the longest is forgotten for it.
                if let Some(old) = cluster.slot_to_reclaim() {
                    self.forget_nodes(&mut cluster, &[old]);
                }
            }
            let idx = cluster.register(reg, id, Instant::now())?;
            // What it reported before may be of a wiped disk under the same id.
            lock(&self.shared.gc).node_registered(
                idx,
                self.clock.now_ms(),
                reg.load.write_generation,
            );
            // Its registration carries its own storage figures.
            lock(&self.shared.usage).reset(idx);
            drop(cluster);
            if known.is_some() {
                // A restarted datanode forgot the copies it was asked to make or
                // receive: reschedule them now rather than after their timeout.
                lock(&self.shared.repl).node_dead(idx);
            }
            idx
        };
        tracing::info!(
            node = %id,
            idx,
            address = %reg.address,
            zone = %reg.zone,
            pod = %reg.pod_name,
            kubernetes_node = %reg.node_name,
            "datanode registered"
        );
        Ok(self.cluster_id.clone())
    }

    /// Whether `id` is a known datanode (any state).
    pub fn knows(&self, id: &DatanodeId) -> bool {
        self.cluster().index_of(id).is_some()
    }

    /// Records a heartbeat and hands out the node's commands; `None` means it must
    /// register again.
    pub fn heartbeat(&self, id: &DatanodeId, load: Load) -> Option<Vec<Outgoing>> {
        let now_ms = self.clock.now_ms();
        // Leases alone, before the other locks.
        let oldest_upload = self.oldest_lease_begin();
        let mut cluster = self.cluster();
        let Beat::Known(idx) = cluster.heartbeat(id, load, Instant::now()) else {
            return None;
        };
        let below = {
            let mut gc = lock(&self.shared.gc);
            gc.generation_reported(idx, now_ms, load.write_generation);
            gc.delete_below(idx, oldest_upload)
        };
        // Its figures are the truth; what was learnt since the last one is in them.
        lock(&self.shared.usage).reset(idx);
        // Bounded per reply so a node back from a long pause gets its backlog over
        // several heartbeats rather than in one oversized message.
        let cmds: Vec<Cmd> = cluster
            .node_mut(idx)
            .map(|n| {
                let k = n.commands.len().min(MAX_COMMANDS_PER_REPLY);
                n.commands.drain(..k).collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut trims = Vec::new();
        let mut corrupt = Vec::new();
        let mut unconfirmed = Vec::new();
        for c in cmds {
            match c {
                Cmd::Replicate {
                    block,
                    length,
                    targets,
                } => out.push(Outgoing::Replicate {
                    block,
                    length,
                    targets: targets
                        .iter()
                        .filter_map(|t| cluster.node(*t).map(location))
                        .collect(),
                }),
                Cmd::Trim(ids) => trims.extend(ids),
                Cmd::DropCorrupt(ids) => corrupt.extend(ids),
                Cmd::DropUnconfirmed(ids) => unconfirmed.extend(ids),
            }
        }
        let verify = cluster.take_verifications(idx, Instant::now(), VERIFY_PER_HEARTBEAT);
        if !verify.is_empty() {
            out.push(Outgoing::Verify(verify));
        }
        // Trims name a generation too; with none to name yet they wait in the queue.
        let Some(below) = below else {
            if let Some(n) = cluster.node_mut(idx) {
                for (cmd, ids) in [
                    (Cmd::Trim as fn(Vec<BlockId>) -> Cmd, trims),
                    (Cmd::DropCorrupt, corrupt),
                    (Cmd::DropUnconfirmed, unconfirmed),
                ] {
                    if !ids.is_empty() {
                        n.commands.push_back(cmd(ids));
                    }
                }
            }
            return Some(out);
        };
        drop(cluster);
        let blocks = &self.shared.blocks;
        trims.retain(|b| match blocks.get(b) {
            Some(info) if info.locs.len() >= (info.target as usize).max(1) => true,
            Some(_) => {
                // Another replica was lost since the trim was planned: keep this one.
                // Its bytes never left the node, so `usage` does not count them again.
                blocks.add_location(b, idx);
                false
            }
            None => false,
        });
        trims.extend(corrupt);
        // An unconfirmed replica goes only while its block still has enough confirmed
        // ones; otherwise the node keeps it (and reports it again).
        unconfirmed.retain(|b| {
            blocks
                .get(b)
                .is_some_and(|info| info.locs.len() >= (info.target as usize).max(1))
        });
        trims.extend(unconfirmed);
        let mut deletes = self.take_deletes_below(idx, now_ms, below);
        deletes.blocks.extend(trims);
        if !deletes.blocks.is_empty() {
            out.insert(0, Outgoing::Delete(deletes));
        }
        Some(out)
    }

    /// A dead node's replicas leave the map and its blocks are queued for copies.
    pub(super) fn node_died(&self, idx: NodeIdx, reason: &str) {
        self.nodes_died(&[idx], reason);
    }

    /// [`NameSystem::node_died`] for several nodes, in one sweep of the block map.
    pub(super) fn nodes_died(&self, idxs: &[NodeIdx], reason: &str) {
        if idxs.is_empty() {
            return;
        }
        let lost = self.shared.blocks.remove_nodes(idxs);
        tracing::warn!(nodes = ?idxs, blocks = lost.len(), reason, "datanodes declared dead");
        {
            let mut gc = lock(&self.shared.gc);
            for idx in idxs {
                gc.node_dead(*idx);
            }
        }
        let mut repl = lock(&self.shared.repl);
        for idx in idxs {
            repl.node_dead(*idx);
        }
        repl.mark_dirty(lost);
    }

    /// Forgets dead nodes: their index leaves every structure that may still name it
    /// (the block map's memory, replication's lists), then their slots are freed for
    /// reuse and their ids are unknown (a heartbeat is told to register again).
    pub(super) fn forget_nodes(&self, cluster: &mut crate::cluster::Cluster, idxs: &[NodeIdx]) {
        if idxs.is_empty() {
            return;
        }
        self.shared.blocks.forget_nodes(idxs);
        {
            let mut repl = lock(&self.shared.repl);
            for idx in idxs {
                repl.forget_node(*idx);
            }
        }
        let mut usage = lock(&self.shared.usage);
        for idx in idxs {
            usage.reset(*idx);
            cluster.vacate(*idx);
        }
        tracing::debug!(
            nodes = idxs.len(),
            "dead datanodes forgotten, their slots freed"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_fixtures::*;
    use super::Outgoing;

    #[tokio::test(start_paused = true)]
    async fn a_dead_nodes_blocks_are_scheduled_within_one_heartbeat() {
        let sim = Sim::new(&[]).with_nodes(3);
        sim.tick();
        sim.upload(b"data", &[0, 1]).await;

        // Nodes 1 and 2 beat every second; node 0 is silent.
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(1)).await;
            sim.tick();
            assert!(
                replications(&sim.beat(1)).is_empty(),
                "nothing to do while 0 lives"
            );
            sim.beat(2);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        sim.tick(); // node 0 silent for 5 s: dead, its replica dropped, copy scheduled
        assert_eq!(sim.locations(b"data").await, vec![sim.nodes[1]]);
        let cmds = sim.beat(1);
        assert_eq!(
            replications(&cmds),
            vec![(block(b"data"), vec![sim.nodes[2]])]
        );

        // The target reports the copy: nothing more is scheduled.
        sim.report(2).with(b"data").full();
        sim.tick();
        assert!(sim.beat(1).is_empty());
        assert_eq!(sim.ns.status().stats.under_replicated, 0);
    }

    /// Finding 4: fake datanodes with plenty of room report a block they were never
    /// sent. Their replicas are not counted, so no real one is trimmed; reads list
    /// them last; being surplus, they are the ones told to go.
    #[tokio::test(start_paused = true)]
    async fn forged_replicas_are_never_counted_so_no_real_one_is_trimmed() {
        let sim = Sim::new(&[]).with_nodes(4);
        sim.tick();
        sim.upload(b"victim", &[0, 1]).await;
        let forge = |sim: &Sim| {
            for fake in [2, 3] {
                sim.report(fake).with(b"victim").written();
                sim.report(fake).with(b"victim").full();
            }
        };
        forge(&sim);
        let located = sim.locations(b"victim").await;
        assert_eq!(
            &located[..2],
            &[sim.nodes[0], sim.nodes[1]],
            "real replicas first"
        );
        assert_eq!(located.len(), 4, "the unconfirmed ones listed last");
        let st = sim.ns.status();
        assert_eq!((st.stats.replicas, st.stats.unconfirmed), (2, 2));
        let mut dropped = 0;
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            sim.tick();
            for n in 0..4 {
                let d = deletes(&sim.beat(n));
                assert!(n >= 2 || d.is_empty(), "real node {n} told to delete");
                dropped += d.len();
            }
            forge(&sim);
        }
        assert!(
            dropped > 0,
            "the surplus unconfirmed replicas were never dropped"
        );
        assert_eq!(
            &sim.locations(b"victim").await[..2],
            &[sim.nodes[0], sim.nodes[1]]
        );
        assert_eq!(sim.ns.status().stats.replicas, 2);
    }

    /// Finding 4: a reader's bad-replica report asks the holder to verify (once, however
    /// often it is reported) and never drops a location.
    #[tokio::test(start_paused = true)]
    async fn a_bad_replica_report_asks_its_holder_to_verify_it() {
        let sim = Sim::new(&[]).with_nodes(3);
        sim.tick();
        sim.upload(b"data", &[0, 1]).await;
        for _ in 0..10 {
            for n in [0, 1] {
                sim.ns.bad_replica(&block(b"data"), &sim.nodes[n], "test");
            }
            // Reports about replicas it does not hold, or unknown nodes, are ignored.
            sim.ns.bad_replica(&block(b"data"), &sim.nodes[2], "test");
            sim.ns
                .bad_replica(&block(b"data"), &kdfs_core::DatanodeId::random(), "test");
        }
        sim.tick();
        assert_eq!(sim.locations(b"data").await.len(), 2, "nothing dropped");
        for n in [0, 1] {
            assert_eq!(
                sim.beat(n),
                vec![Outgoing::Verify(vec![block(b"data")])],
                "node {n}"
            );
            assert!(sim.beat(n).is_empty(), "once");
        }
        assert!(sim.beat(2).is_empty());
        // The holder finds it corrupt: the usual path takes over.
        sim.report(1).with(b"data").corrupt();
        assert_eq!(sim.locations(b"data").await, vec![sim.nodes[0]]);
    }

    /// Finding 5: registrations that never heartbeat are capped, and forgotten (their
    /// slots reused) once dead.
    #[tokio::test(start_paused = true)]
    async fn pending_registrations_are_capped_and_forgotten_once_dead() {
        use crate::cluster::MAX_PENDING_REGISTRATIONS;
        let sim = Sim::new(&[]).with_nodes(2);
        let reg = crate::cluster::Registration {
            address: "127.0.0.1:9".into(),
            ..Default::default()
        };
        for _ in 0..MAX_PENDING_REGISTRATIONS {
            sim.ns
                .register(kdfs_core::DatanodeId::random(), &reg)
                .unwrap();
        }
        let refused = sim.ns.register(kdfs_core::DatanodeId::random(), &reg);
        assert!(matches!(
            refused,
            Err(crate::error::Error::ResourceExhausted(_))
        ));
        let st = sim.ns.status();
        assert_eq!(
            (st.counts.live, st.counts.pending),
            (2, MAX_PENDING_REGISTRATIONS)
        );
        assert!(st.nodes.len() <= crate::namesystem::status::MAX_STATUS_NODES);
        assert_eq!(
            st.nodes[0].node.id, sim.nodes[0],
            "writable nodes listed first"
        );
        // Pending nodes take no writes.
        let lease = sim.ns.begin_upload("f", "", 2).await.unwrap();
        let pipeline = sim.ns.allocate(&lease.id, &[], 0, 0).unwrap();
        assert!(pipeline.iter().all(|l| sim.nodes.contains(&l.id)));
        // Silent past the dead timeout: forgotten, slots free again.
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(1)).await;
            sim.beat(0);
            sim.beat(1);
            sim.tick();
        }
        let st = sim.ns.status();
        assert_eq!(
            (st.counts.live, st.counts.pending, st.counts.dead),
            (2, 0, 0)
        );
        sim.ns
            .register(kdfs_core::DatanodeId::random(), &reg)
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn surplus_replicas_are_trimmed_unless_another_was_lost_meanwhile() {
        let sim = Sim::new(&[]).with_nodes(3);
        sim.tick();
        // Three acks where two are wanted: every replica confirmed, one surplus.
        sim.upload(b"twice", &[0, 1, 2]).await;
        sim.upload(b"thrice", &[0, 1, 2]).await;
        // Heartbeats settle every node's storage figures (until then the uploads'
        // bytes make nodes 0 and 1 look fuller, and trims go where space is scarcest).
        for n in 0..3 {
            sim.beat(n);
        }
        sim.tick();
        // Node 0 loses its copy of "thrice" before node 2 picks up its trims.
        sim.ns
            .incremental_report(&sim.nodes[0], &[], &[block(b"thrice")], &[])
            .unwrap();
        let trimmed = deletes(&sim.beat(2));
        assert_eq!(
            trimmed,
            vec![block(b"twice")],
            "only the still-surplus copy goes"
        );
        assert_eq!(sim.locations(b"twice").await.len(), 2);
        assert_eq!(
            sim.locations(b"thrice").await.len(),
            2,
            "node 2's copy was kept"
        );
    }

    /// A trim names a generation like any delete: while an upload that began before
    /// everything the node reported is open, none can be named, and the trim waits in
    /// the node's queue instead of going out.
    #[tokio::test(start_paused = true)]
    async fn trims_wait_while_no_generation_may_be_named() {
        let sim = Sim::new(&[]).with_nodes(3);
        sim.tick();
        sim.upload(b"twice", &[0, 1, 2]).await;
        // An upload opened at the instant of every report so far.
        let lease = sim.ns.begin_upload("slow", "", 0).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut held = Vec::new();
        for n in 0..3 {
            held.extend(deletes(&sim.beat(n)));
        }
        sim.tick();
        for n in 0..3 {
            held.extend(deletes(&sim.beat(n)));
        }
        assert!(held.is_empty(), "no trim may go out yet: {held:?}");
        assert_eq!(sim.locations(b"twice").await.len(), 2, "one planned");
        // The upload ends: the queued trim goes with the next heartbeat.
        sim.ns.abandon(&lease.id).await.unwrap();
        let sent: Vec<_> = (0..3).flat_map(|n| deletes(&sim.beat(n))).collect();
        assert_eq!(sent, vec![block(b"twice")]);
    }
}

//! The cluster as `ClusterInfo` shows it (nodes, block counts, safe mode, queues) and
//! the same figures as `/metrics` gauges.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{NameSystem, fraction, lock};
use crate::blockmap::{NodeIdx, Stats};
use crate::cluster::{Counts, Node, NodeState};
use crate::replication::QueueStats;

/// One datanode in `ClusterInfo`.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub node: Node,
    pub blocks: u64,
    pub since_heartbeat: Duration,
}

/// `ClusterInfo`'s answer.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub cluster_id: String,
    pub safe_mode: bool,
    pub reported_fraction: f64,
    pub files: u64,
    pub bytes: u64,
    pub stats: Stats,
    /// At most the `node_limit` asked for, live ones first.
    pub nodes: Vec<NodeStatus>,
    /// Every known node, by state.
    pub counts: Counts,
    pub queues: QueueStats,
}

/// Node entries one `ClusterInfo` reply carries, at most (and when the caller does
/// not say): about 400 KB, far below the message limit however many registered.
pub const MAX_STATUS_NODES: usize = 1000;

/// Where a node goes in a capped listing: writable ones first, the dead last.
fn listing_rank(n: &Node) -> u8 {
    match n.state {
        NodeState::Live if n.heartbeated => 0,
        NodeState::Decommissioning | NodeState::Maintenance => 1,
        NodeState::Stale => 2,
        NodeState::Live => 3,
        NodeState::Dead => 4,
    }
}

impl NameSystem {
    /// The cluster with at most `node_limit` node entries (0: [`MAX_STATUS_NODES`]).
    pub fn status_limited(&self, node_limit: usize) -> ClusterStatus {
        let node_limit = match node_limit {
            0 => MAX_STATUS_NODES,
            n => n.min(MAX_STATUS_NODES),
        };
        // The map scan runs without the cluster lock so heartbeats are not held up.
        let count = self.cluster().len();
        let stats = self.shared.blocks.stats(count);
        let now = Instant::now();
        let cluster = self.cluster();
        let usage = lock(&self.shared.usage);
        // Storage as of the last heartbeat plus the replicas learnt of since, so a
        // node's new blocks show at once.
        let counts = cluster.state_counts();
        // At most `node_limit` entries, the most useful first: nodes that take writes,
        // then pending, stale and leaving ones, the dead last.
        let mut shown: Vec<(NodeIdx, &Node)> = cluster.nodes().collect();
        shown.sort_by_key(|(i, n)| (listing_rank(n), *i));
        shown.truncate(node_limit);
        let nodes = shown
            .into_iter()
            .map(|(i, n)| NodeStatus {
                node: Node {
                    load: usage.estimate(i, n.load),
                    commands: Default::default(),
                    ..n.clone()
                },
                blocks: stats.per_node.get(i as usize).copied().unwrap_or(0),
                since_heartbeat: now.saturating_duration_since(n.last_heartbeat),
            })
            .collect();
        drop(usage);
        drop(cluster);
        ClusterStatus {
            cluster_id: self.cluster_id.clone(),
            safe_mode: self.in_safe_mode(),
            reported_fraction: fraction(&stats),
            files: self.shared.files.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            queues: lock(&self.shared.repl).stats(),
            stats,
            nodes,
            counts,
        }
    }

    /// The cluster with at most [`MAX_STATUS_NODES`] node entries.
    pub fn status(&self) -> ClusterStatus {
        self.status_limited(0)
    }

    /// Live (incl. stale) and dead datanodes.
    pub fn node_counts(&self) -> (usize, usize) {
        self.cluster().counts()
    }

    /// Gauges for `/metrics`.
    pub fn export_metrics(&self) {
        let st = self.status();
        let (live, dead) = self.node_counts();
        metrics::gauge!("kdfs_namenode_datanodes", "state" => "live").set(live as f64);
        metrics::gauge!("kdfs_namenode_datanodes", "state" => "dead").set(dead as f64);
        for (state, n) in [
            ("maintenance", st.counts.maintenance),
            ("decommissioning", st.counts.decommissioning),
        ] {
            metrics::gauge!("kdfs_namenode_datanodes_leaving", "state" => state).set(n as f64);
        }
        metrics::gauge!("kdfs_namenode_blocks").set(st.stats.blocks as f64);
        metrics::gauge!("kdfs_namenode_replicas").set(st.stats.replicas as f64);
        metrics::gauge!("kdfs_namenode_under_replicated_blocks")
            .set(st.stats.under_replicated as f64);
        metrics::gauge!("kdfs_namenode_missing_blocks").set(st.stats.missing as f64);
        metrics::gauge!("kdfs_namenode_files").set(st.files as f64);
        metrics::gauge!("kdfs_namenode_bytes").set(st.bytes as f64);
        metrics::gauge!("kdfs_namenode_safe_mode").set(if st.safe_mode { 1.0 } else { 0.0 });
        metrics::gauge!("kdfs_namenode_open_leases").set(self.lease_count() as f64);
        metrics::gauge!("kdfs_namenode_replication_pending").set(st.queues.pending as f64);
        let (dead_blocks, orphans, pending_deletes) = lock(&self.shared.gc).counts();
        metrics::gauge!("kdfs_namenode_dead_blocks").set(dead_blocks as f64);
        metrics::gauge!("kdfs_namenode_orphan_blocks").set(orphans as f64);
        metrics::gauge!("kdfs_namenode_pending_deletes").set(pending_deletes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_fixtures::*;
    use crate::cluster::Load;

    #[tokio::test(start_paused = true)]
    async fn status_counts_nodes_files_and_blocks_per_node() {
        let sim = Sim::new(&[]).with_nodes(3);
        sim.tick();
        sim.upload(b"one", &[0, 1]).await;
        sim.upload(b"two", &[1, 2]).await;

        let st = sim.ns.status();
        assert_eq!(st.cluster_id, sim.ns.cluster_id());
        assert!(!st.safe_mode, "nothing was known at start");
        assert_eq!((st.files, st.bytes), (2, 6));
        assert_eq!(st.stats.blocks, 2);
        let per_node: Vec<u64> = sim
            .nodes
            .iter()
            .map(|id| st.nodes.iter().find(|n| n.node.id == *id).unwrap().blocks)
            .collect();
        assert_eq!(per_node, vec![1, 2, 1]);
        assert_eq!(sim.ns.node_counts(), (3, 0));
    }

    /// A node's storage counts a replica as soon as the namenode learns of it (a
    /// commit's acks, an incremental report), once, and the next heartbeat's figures
    /// replace the estimate.
    #[tokio::test(start_paused = true)]
    async fn storage_counts_new_replicas_at_once_until_the_next_heartbeat() {
        let sim = Sim::new(&[]).with_nodes(3);
        sim.tick();
        let used = |n| sim.load_of(n).used;
        let all = || (0..3).map(used).collect::<Vec<_>>();
        let added = |n: usize, content: &[u8]| {
            let b = (block(content), content.len() as u64, 0);
            sim.ns
                .incremental_report(&sim.nodes[n], &[b], &[], &[])
                .unwrap();
        };

        sim.upload(b"twelve bytes", &[0, 1]).await;
        assert_eq!(all(), vec![12, 12, 0], "each acked node, at once");
        let l = sim.load_of(0);
        assert_eq!((l.blocks, l.available), (1, (1 << 40) - 12));
        // Known replicas add nothing: the same content again, then its report.
        sim.upload(b"twelve bytes", &[0, 1]).await;
        added(0, b"twelve bytes");
        assert_eq!(all(), vec![12, 12, 0]);
        // A replica reported where the namenode never placed it is not counted.
        added(2, b"twelve bytes");
        assert_eq!(all(), vec![12, 12, 0]);

        // Reported before its commit (unreferenced until then): counted once, at the
        // commit that acknowledges it.
        added(2, b"early");
        assert_eq!(used(2), 0);
        sim.upload(b"early", &[2, 0]).await;
        added(2, b"early");
        assert_eq!(all(), vec![17, 12, 5]);

        // A removed replica lowers it.
        let gone = [block(b"twelve bytes")];
        sim.ns
            .incremental_report(&sim.nodes[1], &[], &gone, &[])
            .unwrap();
        assert_eq!(all(), vec![17, 0, 5]);

        // The heartbeat's figure is the truth (it counts sidecars too).
        let beat = Load {
            used: 4096,
            blocks: 2,
            ..Sim::load()
        };
        sim.ns.heartbeat(&sim.nodes[0], beat).unwrap();
        assert_eq!(sim.load_of(0), beat);
        sim.upload(b"later", &[0, 1]).await;
        assert_eq!(all(), vec![4101, 5, 5]);
    }
}

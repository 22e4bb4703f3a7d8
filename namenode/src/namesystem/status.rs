//! The cluster as `ClusterInfo` shows it (nodes, block counts, safe mode, queues) and
//! the same figures as `/metrics` gauges.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{NameSystem, fraction, lock};
use crate::blockmap::Stats;
use crate::cluster::Node;
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
    pub nodes: Vec<NodeStatus>,
    pub queues: QueueStats,
}

impl NameSystem {
    pub fn status(&self) -> ClusterStatus {
        // The map scan runs without the cluster lock so heartbeats are not held up.
        let count = self.cluster().len();
        let stats = self.shared.blocks.stats(count);
        let now = Instant::now();
        let nodes = self
            .cluster()
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| NodeStatus {
                node: n.clone(),
                blocks: stats.per_node.get(i).copied().unwrap_or(0),
                since_heartbeat: now.saturating_duration_since(n.last_heartbeat),
            })
            .collect();
        ClusterStatus {
            cluster_id: self.cluster_id.clone(),
            safe_mode: self.in_safe_mode(),
            reported_fraction: fraction(&stats),
            files: self.shared.files.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            queues: lock(&self.shared.repl).stats(),
            stats,
            nodes,
        }
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
}

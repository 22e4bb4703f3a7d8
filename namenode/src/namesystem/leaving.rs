//! Datanodes leaving (DESIGN.md §5, "Maintenance vs decommission"): maintenance (a
//! restart is expected: nothing is copied unless a block falls below `min_replicas`
//! elsewhere), decommission (for good: its blocks are copied away first), what a
//! datanode told SIGTERM is to do ([`NameSystem::leaving`]), and an operator's
//! decommission and its cancellation.

use std::sync::atomic::Ordering;

use kdfs_core::DatanodeId;
use tokio::time::Instant;

use super::{NameSystem, lock};
use crate::blockmap::NodeIdx;
use crate::cluster::NodeState;
use crate::error::{Error, Result};

/// What a datanode that got SIGTERM is to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// In maintenance: stop now, a restart is expected.
    Restart,
    /// Decommissioning: keep serving until `blocks_left` is 0 (drained).
    Drain { blocks_left: u64 },
    /// The pod watch has not yet seen why its pod stops: ask again shortly.
    Wait,
}

impl NameSystem {
    /// Puts a datanode in maintenance for `--maintenance-timeout` (e.g. its pod is
    /// terminating while its StatefulSet still wants it): no new writes, reads served
    /// while it is up, its replicas still count. Returns false if it was unknown,
    /// dead, decommissioning or already in maintenance.
    pub fn enter_maintenance(&self, id: &DatanodeId) -> bool {
        let until = Instant::now() + self.settings.maintenance_timeout;
        let idx = {
            let mut cluster = self.cluster();
            match cluster.index_of(id) {
                Some(idx) if cluster.enter_maintenance(idx, until) => idx,
                _ => return false,
            }
        };
        let held = self.shared.blocks.blocks_on(idx);
        tracing::info!(
            node = %id,
            blocks = held.len(),
            timeout_s = self.settings.maintenance_timeout.as_secs(),
            "datanode in maintenance"
        );
        // Blocks with fewer than `min_replicas` copies elsewhere are copied up to it.
        lock(&self.shared.repl).mark_dirty(held);
        true
    }

    /// Starts decommissioning a datanode (its pod is scaled away, or an operator asked):
    /// it gets no new writes, and its replicas are copied elsewhere while it still
    /// serves reads. Returns false if it was unknown, dead or already leaving for good.
    pub fn decommission(&self, id: &DatanodeId) -> bool {
        let idx = {
            let mut cluster = self.cluster();
            match cluster.index_of(id) {
                Some(idx) if cluster.decommission(idx) => idx,
                _ => return false,
            }
        };
        let held = self.shared.blocks.blocks_on(idx);
        tracing::info!(node = %id, blocks = held.len(), "datanode decommissioning");
        lock(&self.shared.repl).mark_dirty(held);
        true
    }

    /// An operator's decommission (`cancel`: its cancellation). Returns the node's state
    /// afterwards and how many of its blocks are not yet at full replication elsewhere.
    pub fn operator_decommission(&self, id: &DatanodeId, cancel: bool) -> Result<(NodeState, u64)> {
        let idx = {
            let cluster = self.cluster();
            let idx = cluster
                .index_of(id)
                .ok_or_else(|| Error::NotFound(format!("no datanode {id} is registered")))?;
            if cluster
                .node(idx)
                .is_some_and(|n| n.state == NodeState::Dead)
            {
                return Err(Error::FailedPrecondition(format!(
                    "datanode {id} is dead: its blocks are re-replicated already"
                )));
            }
            idx
        };
        if cancel {
            if self.cluster().recommission(idx) {
                tracing::info!(node = %id, "decommission cancelled: datanode live again");
                // Copies made meanwhile are surplus now.
                lock(&self.shared.repl).mark_dirty(self.shared.blocks.blocks_on(idx));
            }
        } else {
            self.decommission(id);
        }
        let state = self
            .cluster()
            .node(idx)
            .map_or(NodeState::Dead, |n| n.state);
        Ok((state, self.blocks_left(idx)))
    }

    /// What a datanode told to stop (SIGTERM) is to do. A node not leaving for good
    /// enters maintenance, unless it runs as a pod that the pod watch has not judged
    /// yet (then `Wait`: a scale-down must not be taken for a restart).
    pub fn leaving(&self, id: &DatanodeId) -> Result<Verdict> {
        let (idx, state, in_pod) = {
            let cluster = self.cluster();
            let idx = cluster
                .index_of(id)
                .ok_or_else(|| Error::NotFound(format!("no datanode {id} is registered")))?;
            let node = cluster.node(idx);
            (
                idx,
                node.map_or(NodeState::Dead, |n| n.state),
                node.is_some_and(|n| !n.pod_name.is_empty()),
            )
        };
        let pods_decide = in_pod && self.pods_watched.load(Ordering::Relaxed);
        Ok(match state {
            NodeState::Decommissioning => Verdict::Drain {
                blocks_left: self.blocks_left(idx),
            },
            NodeState::Maintenance | NodeState::Dead => Verdict::Restart,
            NodeState::Live | NodeState::Stale if pods_decide => Verdict::Wait,
            NodeState::Live | NodeState::Stale => {
                self.enter_maintenance(id);
                Verdict::Restart
            }
        })
    }

    /// Says that the Kubernetes pod watch runs: a stopping datanode's fate is then
    /// decided by its pod ([`NameSystem::leaving`] answers `Wait` until it is).
    pub fn set_pods_watched(&self, on: bool) {
        self.pods_watched.store(on, Ordering::Relaxed);
    }

    /// Blocks on `idx` that do not yet have their full replication on other nodes that
    /// stay (as many as can hold them: a cluster shrinking below the replication
    /// factor drains once every other node holds a copy). 0: drained.
    fn blocks_left(&self, idx: NodeIdx) -> u64 {
        let (leaving, staying) = {
            let cluster = self.cluster();
            let mut leaving = cluster.retiring();
            leaving.extend(cluster.in_maintenance());
            leaving.insert(idx);
            let staying = cluster
                .nodes()
                .filter(|(i, n)| n.writable() && !leaving.contains(i))
                .count();
            (leaving, staying)
        };
        let blocks = &self.shared.blocks;
        blocks
            .blocks_on(idx)
            .iter()
            .filter_map(|id| blocks.get(id))
            .filter(|info| {
                let elsewhere = info.locs.iter().filter(|n| !leaving.contains(n)).count();
                elsewhere < (info.target as usize).min(staying).max(1)
            })
            .count() as u64
    }
}

#[cfg(test)]
mod tests;

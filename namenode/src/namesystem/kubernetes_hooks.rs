//! What an orchestrator may tell the namesystem about its datanodes: which datanodes
//! run as a pod, their zone, or that one is gone for good (declared dead at once).
//! Called by the Kubernetes pod watch ([`crate::kubernetes`]), which also puts nodes in
//! maintenance or decommissions them (`leaving.rs`).

use kdfs_core::DatanodeId;

use super::NameSystem;
use crate::cluster::NodeState;

/// A datanode that runs as a given Kubernetes pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDatanode {
    pub id: DatanodeId,
    pub zone: String,
    pub state: NodeState,
    /// When it last registered, in Unix milliseconds.
    pub registered_ms: u64,
}

impl NameSystem {
    /// The datanodes (any state) that run as this Kubernetes pod, with their zones:
    /// those that registered with its `pod_name`, or whose advertise address is the
    /// pod's stable DNS name (`<pod>.<service>...`).
    pub fn datanodes_of_pod(&self, pod: &str) -> Vec<PodDatanode> {
        if pod.is_empty() {
            return Vec::new();
        }
        let now_ms = self.clock.now_ms();
        self.cluster()
            .nodes()
            .map(|(_, n)| n)
            .filter(|n| {
                n.pod_name == pod
                    || (n.pod_name.is_empty()
                        && n.address
                            .strip_prefix(pod)
                            .is_some_and(|rest| rest.starts_with('.')))
            })
            .map(|n| PodDatanode {
                id: n.id,
                zone: n.zone.clone(),
                state: n.state,
                registered_ms: now_ms.saturating_sub(n.registered_at.elapsed().as_millis() as u64),
            })
            .collect()
    }

    /// Sets a datanode's failure domain (e.g. from its Kubernetes node's zone label).
    pub fn set_zone(&self, id: &DatanodeId, zone: &str) -> bool {
        let mut cluster = self.cluster();
        let Some(idx) = cluster.index_of(id) else {
            return false;
        };
        match cluster.node_mut(idx) {
            Some(n) => {
                n.zone = zone.to_owned();
                true
            }
            None => false,
        }
    }

    /// Declares a datanode dead at once, without waiting for `--dead-after` (for an
    /// orchestrator that knows its pod is gone). Returns false if it was unknown or
    /// already dead. The caller should kick the replication worker.
    pub fn declare_dead(&self, id: &DatanodeId, reason: &str) -> bool {
        let idx = {
            let mut cluster = self.cluster();
            match cluster.index_of(id) {
                Some(idx) if cluster.declare_dead(idx) => idx,
                _ => return false,
            }
        };
        self.node_died(idx, reason);
        true
    }
}

#[cfg(test)]
mod pod_watch_tests;

#[cfg(test)]
mod tests {
    use kdfs_core::DatanodeId;

    use super::super::test_fixtures::*;

    #[tokio::test(start_paused = true)]
    async fn an_orchestrator_can_declare_a_node_dead_and_set_zones() {
        let sim = Sim::new(&[]).with_nodes(3);
        sim.tick();
        sim.upload(b"data", &[0, 1]).await;
        assert!(sim.ns.declare_dead(&sim.nodes[0], "pod deleted"));
        assert!(!sim.ns.declare_dead(&sim.nodes[0], "again"));
        sim.ns.replication_tick();
        assert_eq!(
            replications(&sim.beat(1)),
            vec![(block(b"data"), vec![sim.nodes[2]])]
        );
        assert!(sim.ns.set_zone(&sim.nodes[2], "zone-b"));
        let st = sim.ns.status();
        let node2 = st.nodes.iter().find(|n| n.node.id == sim.nodes[2]);
        assert_eq!(node2.unwrap().node.zone, "zone-b");
        assert!(!sim.ns.set_zone(&DatanodeId::random(), "z"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_decommissioning_node_gets_no_writes_and_its_blocks_are_copied_away() {
        let sim = Sim::new(&[]).with_nodes(3);
        sim.tick();
        sim.upload(b"data", &[0, 1]).await;
        assert!(sim.ns.decommission(&sim.nodes[0]));
        assert!(!sim.ns.decommission(&sim.nodes[0]));
        sim.beat(0); // heartbeats do not bring it back to live
        sim.tick();
        let copies: Vec<_> = [0, 1]
            .iter()
            .flat_map(|n| replications(&sim.beat(*n)))
            .collect();
        assert_eq!(copies, vec![(block(b"data"), vec![sim.nodes[2]])]);
        let lease = sim.ns.begin_upload("x", "", 0).await.unwrap();
        let pipeline = sim.ns.allocate(&lease.id, &[], 0, 0).unwrap();
        assert!(
            pipeline.iter().all(|l| l.id != sim.nodes[0]),
            "no writes to it"
        );
        assert_eq!(pipeline.len(), 2);
        let st = sim.ns.status();
        let node0 = st.nodes.iter().find(|n| n.node.id == sim.nodes[0]);
        assert_eq!(
            node0.unwrap().node.state,
            crate::cluster::NodeState::Decommissioning
        );
    }
}

//! Maintenance and decommission, driven step by step with paused time.

use kdfs_core::DatanodeId;

use super::super::test_fixtures::*;
use super::Verdict;
use crate::cluster::{NodeState, Registration};
use crate::error::Error;

/// Replication 3, `--min-replicas 2`, four datanodes, one block on nodes 0, 1 and 2.
async fn three_copies(extra: &[&str]) -> Sim {
    let mut args = vec!["--replication", "3", "--min-replicas", "2"];
    args.extend_from_slice(extra);
    let sim = Sim::new(&args).with_nodes(4);
    sim.tick();
    sim.upload(b"data", &[0, 1, 2]).await;
    sim.tick();
    sim
}

fn state(sim: &Sim, node: usize) -> NodeState {
    let st = sim.ns.status();
    let n = st.nodes.iter().find(|n| n.node.id == sim.nodes[node]);
    n.expect("known node").node.state
}

fn copies(got: &[Vec<crate::namesystem::membership::Outgoing>]) -> usize {
    got.iter().map(|c| replications(c).len()).sum()
}

fn trims(got: &[Vec<crate::namesystem::membership::Outgoing>]) -> usize {
    got.iter().map(|c| deletes(c).len()).sum()
}

#[tokio::test(start_paused = true)]
async fn maintenance_copies_nothing_and_a_return_leaves_it_without_copies() {
    let sim = three_copies(&[]).await;
    assert_eq!(sim.ns.leaving(&sim.nodes[0]).unwrap(), Verdict::Restart);
    assert_eq!(state(&sim, 0), NodeState::Maintenance);
    // Silent far beyond --dead-after (5 s): still in maintenance, nothing copied.
    let got = run_for(&sim, 60, &[1, 2, 3]).await;
    assert_eq!(state(&sim, 0), NodeState::Maintenance);
    assert_eq!(copies(&got), 0, "no copies during maintenance");
    // It is still a read location (listed after the live ones).
    let locs = sim.locations(b"data").await;
    assert!(locs.contains(&sim.nodes[0]), "{locs:?}");
    // No new writes go to it.
    let lease = sim.ns.begin_upload("x", "", 0).await.unwrap();
    let pipeline = sim.ns.allocate(&lease.id, &[], 0, 0).unwrap();
    assert!(
        pipeline.iter().all(|l| l.id != sim.nodes[0]),
        "{pipeline:?}"
    );

    // Back with the same id: live, and nothing is copied or trimmed.
    sim.register(0);
    sim.report(0).with(b"data").full();
    assert_eq!(state(&sim, 0), NodeState::Live);
    let got = run_for(&sim, 30, &[0, 1, 2, 3]).await;
    assert_eq!((copies(&got), trims(&got)), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_block_below_min_replicas_elsewhere_is_copied_up_to_min_replicas_only() {
    let sim = three_copies(&[]).await;
    assert!(sim.ns.enter_maintenance(&sim.nodes[0]));
    assert!(!sim.ns.enter_maintenance(&sim.nodes[0]), "once");
    // Node 1 dies: one copy left outside maintenance (node 2), below min-replicas 2.
    let got = run_for(&sim, 8, &[2, 3]).await;
    assert_eq!(state(&sim, 1), NodeState::Dead);
    let planned: Vec<_> = got.iter().flat_map(|c| replications(c)).collect();
    assert_eq!(
        planned,
        vec![(block(b"data"), vec![sim.nodes[3]])],
        "one copy, to min-replicas, not to the full 3"
    );
    sim.report(3).with(b"data").full();
    let got = run_for(&sim, 30, &[2, 3]).await;
    assert_eq!(copies(&got), 0, "at min-replicas elsewhere: nothing more");
    assert_eq!(state(&sim, 0), NodeState::Maintenance);
}

#[tokio::test(start_paused = true)]
async fn maintenance_ends_in_death_after_its_timeout() {
    let sim = three_copies(&["--maintenance-timeout", "30s"]).await;
    assert!(sim.ns.enter_maintenance(&sim.nodes[0]));
    let got = run_for(&sim, 29, &[1, 2, 3]).await;
    assert_eq!(state(&sim, 0), NodeState::Maintenance);
    assert_eq!(copies(&got), 0);
    let got = run_for(&sim, 2, &[1, 2, 3]).await;
    assert_eq!(state(&sim, 0), NodeState::Dead);
    let planned: Vec<_> = got.iter().flat_map(|c| replications(c)).collect();
    assert_eq!(planned, vec![(block(b"data"), vec![sim.nodes[3]])]);
}

#[tokio::test(start_paused = true)]
async fn a_decommission_drains_then_says_so() {
    let sim = three_copies(&[]).await;
    let (st, left) = sim.ns.operator_decommission(&sim.nodes[0], false).unwrap();
    assert_eq!((st, left), (NodeState::Decommissioning, 1));
    assert_eq!(
        sim.ns.leaving(&sim.nodes[0]).unwrap(),
        Verdict::Drain { blocks_left: 1 }
    );
    let got = run_for(&sim, 2, &[0, 1, 2, 3]).await;
    let planned: Vec<_> = got.iter().flat_map(|c| replications(c)).collect();
    assert_eq!(planned, vec![(block(b"data"), vec![sim.nodes[3]])]);
    sim.report(3).with(b"data").full();
    assert_eq!(
        sim.ns.leaving(&sim.nodes[0]).unwrap(),
        Verdict::Drain { blocks_left: 0 }
    );
    // Cancelled: live again, and the surplus copy is trimmed from someone.
    let (st, _) = sim.ns.operator_decommission(&sim.nodes[0], true).unwrap();
    assert_eq!(st, NodeState::Live);
    let got = run_for(&sim, 2, &[0, 1, 2, 3]).await;
    assert_eq!((copies(&got), trims(&got)), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_cluster_shrinking_below_the_replication_drains_once_every_other_node_holds_it() {
    // Replication 3 on 3 nodes: after node 0 leaves, two nodes can hold two copies.
    let sim = Sim::new(&["--replication", "3"]).with_nodes(3);
    sim.tick();
    sim.upload(b"data", &[0, 1, 2]).await;
    assert!(sim.ns.decommission(&sim.nodes[0]));
    assert_eq!(
        sim.ns.leaving(&sim.nodes[0]).unwrap(),
        Verdict::Drain { blocks_left: 0 }
    );
}

#[tokio::test(start_paused = true)]
async fn bad_decommission_requests_are_refused_and_change_nothing() {
    let sim = three_copies(&["--dead-after", "5s"]).await;
    let unknown = DatanodeId::random();
    assert!(matches!(
        sim.ns.operator_decommission(&unknown, false),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(sim.ns.leaving(&unknown), Err(Error::NotFound(_))));
    run_for(&sim, 6, &[1, 2, 3]).await;
    assert_eq!(state(&sim, 0), NodeState::Dead);
    assert!(matches!(
        sim.ns.operator_decommission(&sim.nodes[0], false),
        Err(Error::FailedPrecondition(_))
    ));
    // Cancelling a decommission that never began changes nothing.
    let (st, _) = sim.ns.operator_decommission(&sim.nodes[1], true).unwrap();
    assert_eq!(st, NodeState::Live);
}

#[tokio::test(start_paused = true)]
async fn a_pod_waits_for_the_pod_watch_to_judge_it() {
    let mut sim = Sim::new(&[]).with_nodes(1);
    let in_pod = sim.register_as(Registration {
        address: "datanode-1.datanode:9866".into(),
        pod_name: "datanode-1".into(),
        load: Sim::load(),
        ..Registration::default()
    });
    sim.ns.set_pods_watched(true);
    assert_eq!(sim.ns.leaving(&in_pod).unwrap(), Verdict::Wait);
    // A datanode that is no pod is not the watch's to judge.
    assert_eq!(sim.ns.leaving(&sim.nodes[0]).unwrap(), Verdict::Restart);
    // Once the watch judged it: restart (maintenance) or drain.
    assert!(sim.ns.enter_maintenance(&in_pod));
    assert_eq!(sim.ns.leaving(&in_pod).unwrap(), Verdict::Restart);
    assert!(sim.ns.decommission(&in_pod), "leaving for good wins");
    assert_eq!(
        sim.ns.leaving(&in_pod).unwrap(),
        Verdict::Drain { blocks_left: 0 }
    );
}

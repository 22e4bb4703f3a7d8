//! Issue 27: the leader of three namenodes cut off from the other two while the gateway
//! and the datanodes still reach it (the partition that tempts a deposed leader most:
//! writes still arrive at it). The other two elect a leader and serve; the old one stops
//! serving within its lease; a delete sent straight to it is never acknowledged (it
//! cannot commit without a majority); after healing it follows the new leader, and one
//! history remains: every write acknowledged during the partition is on every
//! namenode, the directly refused delete took no effect.

mod common;

use std::time::{Duration, Instant};

use common::ha::{FAILOVER_PATIENCE, assert_retryable_failures, verify_on_every_namenode};
use common::{CALL_TIMEOUT, namenode, raw_id, runtime};
use kdfs_proto::pb;
use kdfs_testkit::{Options, ProcessCluster, RaftRole, Workload, random_bytes};

/// The old leader must stop serving within this of the cut (its lease, an election
/// timeout or two, and the poll).
const STEP_DOWN_BOUND: Duration = Duration::from_secs(15);

#[test]
fn a_partitioned_leader_stops_serving_and_one_history_remains() {
    let opts = Options::default().namenodes(3);
    let block_size = opts.block_size as usize;
    let mut c = ProcessCluster::start(opts);
    let kept = c.upload(&random_bytes(300_000, 2_800));
    let old = c.wait_leader("a leader", FAILOVER_PATIENCE);
    let old_term = c.namenode_raft_figures(old).expect("raft figures").0;
    let load = Workload::start(&c.api, 2, 2_801, block_size);
    let t0 = Instant::now();
    c.wait_until("uploads before the partition", FAILOVER_PATIENCE, || {
        load.uploads_ok_since(t0) >= 3
    });

    let cut = Instant::now();
    c.partition_namenode(old);
    // A delete straight to the cut-off leader: whatever it still believes, it cannot
    // get a majority to commit it.
    let rt = runtime();
    let direct = rt.block_on(async {
        let mut nn = namenode(c.namenode_ports[old]);
        let call = nn.delete_file(pb::DeleteFileRequest {
            file_id: raw_id(&kept.hash).into(),
        });
        tokio::time::timeout(CALL_TIMEOUT * 2, call).await
    });
    match direct {
        Ok(Ok(_)) => panic!("the partitioned leader acknowledged a delete"),
        Ok(Err(status)) => assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "the partitioned leader refused the delete with {status:?}"
        ),
        Err(_) => panic!("the partitioned leader neither answered nor refused in time"),
    }
    let new = c.wait_leader("a leader among the other two", FAILOVER_PATIENCE);
    assert_ne!(new, old, "the cut-off namenode still leads");
    let elected = cut.elapsed();
    let stepped_down = c.wait_until("the cut-off leader stops serving", STEP_DOWN_BOUND, || {
        c.namenode_role(old) != Some(RaftRole::Leader) || !c.namenode_ready(old)
    });
    let during = Instant::now();
    c.wait_until("uploads during the partition", FAILOVER_PATIENCE, || {
        load.uploads_ok_since(during) >= 3
    });

    c.heal_namenodes();
    c.wait_until(
        "the old leader follows after healing",
        FAILOVER_PATIENCE,
        || c.namenode_role(old) == Some(RaftRole::Follower),
    );
    let outcome = load.finish();
    assert_retryable_failures(&outcome.ops);
    c.wait_caught_up("every namenode caught up after healing", FAILOVER_PATIENCE);
    let mut terms = Vec::new();
    c.wait_until(
        "one term, newer than the cut-off leader's, on every namenode",
        FAILOVER_PATIENCE,
        || {
            terms = (0..3)
                .filter_map(|i| c.namenode_raft_figures(i).map(|f| f.0))
                .collect();
            terms.len() == 3 && terms.iter().all(|&t| t == terms[0] && t > old_term)
        },
    );
    eprintln!(
        "ha partition: namenode {old} cut off; {new} leads after {:.2}s; {old} stopped \
         serving within {:.2}s; terms {old_term} -> {}",
        elected.as_secs_f64(),
        stepped_down.as_secs_f64(),
        terms[0]
    );
    let mut outcome = outcome;
    outcome.present.push(kept);
    verify_on_every_namenode(&mut c, &outcome, "ha partition");
}

//! Behaviour of [`Replication`](super::Replication) as events and ticks drive it: the
//! order of work, the stream limits, timeouts, failures and trims.

use super::failures::RETRY_BASE_MS;
use super::*;
use crate::cluster::Cmd;
use crate::placement::Candidate;

fn b(n: u8) -> BlockId {
    BlockId::from_slice(&[n; 32]).unwrap()
}

fn nodes(n: u32) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            node: i,
            zone: String::new(),
            writable: true,
            available: 1 << 40,
            load: 0,
        })
        .collect()
}

/// A block map where block `id` wants `target` replicas and sits on `on`.
fn with_block(m: &BlockMap, id: BlockId, target: u32, on: &[NodeIdx]) {
    m.add_ref(id, 100, target);
    for n in on {
        m.add_location(&id, *n);
    }
}

/// The command copying the 100-byte block `id` (see `with_block`) from `source`.
fn copy(source: NodeIdx, id: BlockId, targets: Vec<NodeIdx>) -> (NodeIdx, Cmd) {
    (
        source,
        Cmd::Replicate {
            block: id,
            length: 100,
            targets,
        },
    )
}

fn copies(cmds: &[(NodeIdx, Cmd)]) -> Vec<BlockId> {
    cmds.iter()
        .filter_map(|(_, c)| match c {
            Cmd::Replicate { block, .. } => Some(*block),
            _ => None,
        })
        .collect()
}

#[test]
fn one_replica_blocks_go_first_and_streams_are_bounded() {
    let m = BlockMap::new();
    // Both blocks can only be copied from node 0, which serves one stream at a time.
    with_block(&m, b(1), 3, &[0, 1]);
    with_block(&m, b(2), 3, &[0]);
    let mut r = Replication::new(1, 60_000);
    r.mark_dirty([b(1), b(2)]);
    let mut cluster = nodes(4);
    cluster[1].writable = false; // stale: may not be a target, still a source
    let cmds = r.tick(0, &m, &cluster, 1);
    assert_eq!(copies(&cmds), vec![b(2)], "the one-replica block first");
    // b(1) found a source (node 1, stale but readable) and targets? Node 1 has
    // capacity as a source, so b(1) was scheduled from it only if targets were free:
    // targets 2 and 3 are busy receiving b(2) with one stream each.
    let Cmd::Replicate { targets, .. } = &cmds[0].1 else {
        panic!()
    };
    assert_eq!(targets.len(), 2);
    assert_eq!(r.stats().pending, 1);
    assert_eq!(r.stats().queued[Priority::Under as usize], 1);

    // Targets confirm: the stream limits free up and b(1) goes next.
    for t in targets {
        m.add_location(&b(2), *t);
        r.replica_added(&b(2), *t);
    }
    let cmds = r.tick(1, &m, &cluster, 1);
    assert_eq!(copies(&cmds), vec![b(1)]);
}

#[test]
fn timed_out_copies_are_retried_with_another_target() {
    let m = BlockMap::new();
    with_block(&m, b(1), 2, &[0]);
    let mut r = Replication::new(2, 1000);
    r.mark_dirty([b(1)]);
    let cluster = nodes(3);
    let cmds = r.tick(0, &m, &cluster, 1);
    let Cmd::Replicate { targets, .. } = &cmds[0].1 else {
        panic!()
    };
    let first = targets[0];
    assert!(r.tick(500, &m, &cluster, 1).is_empty(), "still waiting");
    let cmds = r.tick(1000, &m, &cluster, 1);
    let Cmd::Replicate { targets, .. } = &cmds[0].1 else {
        panic!()
    };
    assert_ne!(targets[0], first);
}

#[test]
fn over_replication_is_trimmed_to_target_never_below() {
    let m = BlockMap::new();
    with_block(&m, b(1), 2, &[0, 1, 2, 3]);
    let mut r = Replication::new(2, 1000);
    r.mark_dirty([b(1)]);
    let mut cluster = nodes(4);
    cluster[2].available = 1;
    cluster[3].available = 2;
    let cmds = r.tick(0, &m, &cluster, 1);
    let trimmed: Vec<NodeIdx> = cmds.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        trimmed,
        vec![2, 3],
        "the fullest nodes lose their surplus copy"
    );
    assert_eq!(m.get(&b(1)).unwrap().locs.len(), 2);
    r.mark_dirty([b(1)]);
    assert!(r.tick(1, &m, &cluster, 1).is_empty());
}

#[test]
fn dead_sources_cancel_their_copies() {
    let m = BlockMap::new();
    with_block(&m, b(1), 2, &[0, 2]);
    m.remove_location(&b(1), 2);
    let mut r = Replication::new(2, 60_000);
    r.mark_dirty([b(1)]);
    let cluster = nodes(3);
    assert_eq!(r.tick(0, &m, &cluster, 1).len(), 1);
    r.node_dead(0);
    assert_eq!(r.stats().pending, 0);
    assert_eq!(r.stats().dirty, 1);
}

#[test]
fn a_copy_whose_source_lost_its_replica_is_rescheduled_at_once() {
    // Three nodes, replication 3; node 0's replica is found corrupt: the copy to it
    // is planned from the first holder, node 1.
    let m = BlockMap::new();
    with_block(&m, b(1), 3, &[1, 2]);
    let mut r = Replication::new(2, 120_000);
    r.mark_corrupt(b(1), 0);
    let cmds = r.tick(0, &m, &nodes(3), 1);
    assert_eq!(cmds, vec![copy(1, b(1), vec![0])]);
    // Node 1's replica turns out corrupt too, before it served the copy.
    m.remove_location(&b(1), 1);
    r.replica_lost(&b(1), 1);
    r.mark_corrupt(b(1), 1);
    assert_eq!(r.stats().pending, 0, "the copy from node 1 is cancelled");
    // The next tick (not the timeout) copies from the last good replica to both.
    let cmds = r.tick(1, &m, &nodes(3), 1);
    let [(2, Cmd::Replicate { block, targets, .. })] = cmds.as_slice() else {
        panic!("one copy from node 2 expected, got {cmds:?}");
    };
    assert_eq!(*block, b(1));
    let mut targets = targets.clone();
    targets.sort_unstable();
    assert_eq!(targets, vec![0, 1]);
}

#[test]
fn a_small_block_heals_onto_a_node_without_room_for_a_whole_block() {
    // The block is 100 bytes; node 2 has 1,000 bytes free, far less than a 64 MiB
    // block: room enough for this copy. Node 3 has 99 bytes: not enough.
    let m = BlockMap::new();
    with_block(&m, b(1), 2, &[0]);
    let mut cluster = nodes(4);
    cluster[1].writable = false;
    cluster[2].available = 1_000;
    cluster[3].available = 99;
    let mut r = Replication::new(2, 120_000);
    r.mark_dirty([b(1)]);
    let cmds = r.tick(0, &m, &cluster, 64 << 20);
    assert_eq!(cmds, vec![copy(0, b(1), vec![2])]);
}

#[test]
fn losing_a_target_or_another_replica_keeps_the_copy() {
    let m = BlockMap::new();
    with_block(&m, b(1), 3, &[1, 2]);
    let mut r = Replication::new(2, 120_000);
    r.mark_dirty([b(1)]);
    let cmds = r.tick(0, &m, &nodes(3), 1);
    let (source, _) = cmds[0];
    let other = if source == 1 { 2 } else { 1 };
    r.replica_lost(&b(1), other);
    r.replica_lost(&b(1), 0);
    assert_eq!(r.stats().pending, 1);
}

#[test]
fn a_reported_failed_copy_is_replanned_shortly_avoiding_the_failed_targets() {
    // Replication 3 on five nodes, one replica on node 0: a copy to two targets.
    let m = BlockMap::new();
    with_block(&m, b(1), 3, &[0]);
    let mut r = Replication::new(2, 120_000);
    r.mark_dirty([b(1)]);
    let cmds = r.tick(0, &m, &nodes(5), 1);
    let [(0, Cmd::Replicate { targets, .. })] = cmds.as_slice() else {
        panic!("one copy from node 0 expected, got {cmds:?}");
    };
    let (t1, t2) = (targets[0], targets[1]);
    // Stale or foreign reports change nothing: another source, another block.
    r.copy_failed(1, &b(1), 3, &[t1, t2], true);
    r.copy_failed(1, &b(2), 0, &[t1], false);
    assert_eq!(r.stats().pending, 1);
    // t1 failed, t2 committed (its report is still on the way): the copy waits for
    // t2 and nothing is planned in the meantime.
    r.copy_failed(1, &b(1), 0, &[t1], false);
    assert_eq!(r.stats().pending, 1);
    assert!(r.tick(2, &m, &nodes(5), 1).is_empty());
    m.add_location(&b(1), t2);
    r.replica_added(&b(1), t2);
    assert_eq!(r.stats().pending, 0);
    // Not before the retry delay; then the missing replica goes to a node other
    // than t1.
    assert!(r.tick(3, &m, &nodes(5), 1).is_empty());
    let cmds = r.tick(1 + RETRY_BASE_MS, &m, &nodes(5), 1);
    let [(_, Cmd::Replicate { targets, .. })] = cmds.as_slice() else {
        panic!("one copy expected, got {cmds:?}");
    };
    assert_eq!(targets.len(), 1);
    assert!(![0, t1, t2].contains(&targets[0]), "{targets:?}");
    // Once healthy, the block's failure history is forgotten.
    m.add_location(&b(1), targets[0]);
    r.replica_added(&b(1), targets[0]);
    r.tick(2 + RETRY_BASE_MS, &m, &nodes(5), 1);
    assert!(r.failures.is_empty());
}

#[test]
fn a_whole_failed_copy_frees_its_streams_and_is_replanned_after_a_growing_delay() {
    let m = BlockMap::new();
    with_block(&m, b(1), 2, &[0]);
    // One stream per node: the failed copy must give its stream back.
    let mut r = Replication::new(1, 120_000);
    r.mark_dirty([b(1)]);
    let cmds = r.tick(0, &m, &nodes(3), 1);
    assert_eq!(cmds.len(), 1);
    let (_, Cmd::Replicate { targets, .. }) = &cmds[0] else {
        panic!("a copy expected");
    };
    let first = targets[0];
    r.copy_failed(10, &b(1), 0, &[], true);
    assert_eq!(r.stats().pending, 0);
    // Long before the 2-minute timeout, after the first delay: planned again; node
    // 0 is the only source, and the other spare is preferred to the failed target.
    assert!(r.tick(9 + RETRY_BASE_MS, &m, &nodes(3), 1).is_empty());
    let cmds = r.tick(10 + RETRY_BASE_MS, &m, &nodes(3), 1);
    let [(0, Cmd::Replicate { targets, .. })] = cmds.as_slice() else {
        panic!("one copy from node 0 expected, got {cmds:?}");
    };
    assert_ne!(targets[0], first);
    // A second failure in a row waits twice as long.
    let t = 20 + RETRY_BASE_MS;
    r.copy_failed(t, &b(1), 0, &[], true);
    assert!(
        r.tick(t + 2 * RETRY_BASE_MS - 1, &m, &nodes(3), 1)
            .is_empty()
    );
    assert_eq!(r.tick(t + 2 * RETRY_BASE_MS, &m, &nodes(3), 1).len(), 1);
}

#[test]
fn a_full_report_without_the_source_replica_cancels_its_copy() {
    let m = BlockMap::new();
    with_block(&m, b(1), 3, &[0, 1]);
    let mut r = Replication::new(2, 120_000);
    r.mark_dirty([b(1)]);
    let cmds = r.tick(0, &m, &nodes(4), 1);
    let (source, _) = cmds[0];
    // A full report of another node changes nothing.
    r.confirm_from(&m, 3);
    assert_eq!(r.stats().pending, 1);
    // The source's full report no longer lists the block.
    m.remove_location(&b(1), source);
    r.confirm_from(&m, source);
    assert_eq!(r.stats().pending, 0);
    assert_eq!(r.stats().dirty, 1);
}

#[test]
fn corrupt_replicas_are_deleted_once_the_block_is_healthy() {
    let m = BlockMap::new();
    with_block(&m, b(1), 2, &[0, 1]);
    let mut r = Replication::new(2, 60_000);
    r.mark_corrupt(b(1), 2);
    let cmds = r.tick(0, &m, &nodes(3), 1);
    assert_eq!(cmds, vec![(2, Cmd::DropCorrupt(vec![b(1)]))]);
}

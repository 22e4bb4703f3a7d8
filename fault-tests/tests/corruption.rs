//! Scenario 5 (issue 7): bytes flipped in replicas on disk (several blocks, several
//! nodes). A corrupt replica is never served (every download still verifies); the
//! replicas reads stumble on are quarantined and re-replicated; the block scanner finds
//! the ones no read touched.

use std::collections::BTreeSet;
use std::time::Duration;

use kdfs_testkit::{Options, ProcessCluster, Stored, flip_byte, random_bytes};

#[test]
fn corrupt_replicas_are_never_served_quarantined_and_replaced() {
    // The scanner is idle (its first pass ran on empty disks) until phase 2.
    let mut c = ProcessCluster::start(Options::default());
    let x = c.upload(&random_bytes(1 << 20, 51)); // 4 blocks
    let y = c.upload(&random_bytes((3 << 18) - 5, 52)); // 3 blocks
    let files = [x.clone(), y.clone()];
    c.wait_until("full replication", Duration::from_secs(30), || {
        c.fully_replicated(&files, &[])
    });

    // Two of the three replicas of every block of x, one of every block of y, at the
    // first byte, in the middle, and at the last byte.
    let mut corrupted = Vec::new();
    let mut corrupt = |c: &ProcessCluster, file: &Stored, nodes: &dyn Fn(usize) -> Vec<usize>| {
        for (k, id) in c.block_ids(&file.hash).into_iter().enumerate() {
            for n in nodes(k) {
                let path = c.block_path(n, &id).expect("replica on disk");
                let len = std::fs::metadata(&path).expect("block metadata").len();
                let offset = [0, len / 2, len - 1][(k + n) % 3];
                flip_byte(&path, offset);
                corrupted.push((n, id.clone()));
            }
        }
    };
    corrupt(&c, &x, &|k| vec![k % 3, (k + 1) % 3]);
    corrupt(&c, &y, &|k| vec![(k + 2) % 3]);
    let corrupt_now: usize = (0..3).map(|i| c.corrupt_blocks_on_disk(i).len()).sum();
    assert_eq!(corrupt_now, corrupted.len(), "corruption not in place");

    // Phase 1: reads. Every byte served verifies, whichever replica is tried first.
    for _ in 0..3 {
        c.verify_all(&files);
    }
    let quarantined: Vec<usize> = (0..3).map(|i| c.quarantined(i)).collect();
    let hit: usize = quarantined.iter().sum();
    assert!(
        hit > 0,
        "reads over 2-of-3 corrupt replicas quarantined none"
    );
    // What reads found is replaced by good copies.
    c.wait_replicated(
        "replicas found corrupt by reads re-replicated",
        Duration::from_secs(60),
        &files,
        &[],
    );
    let left: usize = (0..3).map(|i| c.corrupt_blocks_on_disk(i).len()).sum();
    assert!(
        left + hit <= corrupted.len(),
        "{left} corrupt left, {hit} quarantined"
    );
    let after_reads: usize = (0..3).map(|i| c.corrupt_blocks_on_disk(i).len()).sum();
    eprintln!(
        "scenario 5: {} replicas corrupted; reads quarantined {hit} (per node {quarantined:?}), \
         {after_reads} left for the scanner",
        corrupted.len()
    );

    // Phase 2: the scanner (every second now) finds the rest; each is replaced.
    for i in 0..3 {
        c.add_datanode_arg(i, "--scan-interval", "1s");
        c.restart_datanode(i);
    }
    // Done when no disk holds a corrupt replica, every corrupted block is back at three
    // good copies on disk, and the namenode agrees.
    let ids: BTreeSet<&String> = corrupted.iter().map(|(_, id)| id).collect();
    let took = c.wait_until(
        "no corrupt replica left, every corrupted block at 3 good copies on disk",
        Duration::from_secs(90),
        || {
            (0..3).all(|i| c.corrupt_blocks_on_disk(i).is_empty())
                && ids
                    .iter()
                    .all(|id| (0..3).all(|i| c.block_path(i, id).is_some()))
        },
    );
    c.wait_replicated(
        "namenode sees 3 replicas",
        Duration::from_secs(30),
        &files,
        &[],
    );
    eprintln!(
        "scenario 5: scanner phase healed after {:.2}s",
        took.as_secs_f64()
    );
    let total_quarantined: usize = (0..3).map(|i| c.quarantined(i)).sum();
    assert!(
        total_quarantined >= corrupted.len(),
        "quarantine holds {total_quarantined}"
    );
    c.verify_all(&files);
}

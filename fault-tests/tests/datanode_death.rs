//! Scenario 1 (issue 7): SIGKILL an idle datanode. The namenode must declare it dead and
//! bring every block back to `replication` live replicas on the others; when the node
//! returns with its old replicas, the surplus copies are trimmed. Reports time to heal.

use std::time::{Duration, Instant};

use kdfs_testkit::{Options, ProcessCluster, Stored, random_bytes};

#[test]
fn sigkill_idle_datanode_is_declared_dead_and_healed() {
    let mut c = ProcessCluster::start(Options::default().datanodes(4).replication(3));
    let sizes = [1, 100 << 10, 256 << 10, (1 << 20) + 7, 3 << 20];
    let files: Vec<Stored> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| c.upload(&random_bytes(n, 100 + i as u64)))
        .collect();
    c.wait_until("initial full replication", Duration::from_secs(30), || {
        c.fully_replicated(&files, &[])
    });

    // The victim: the datanode holding the most blocks.
    let victim = (0..4)
        .max_by_key(|&i| c.blocks_on_disk(i).len())
        .expect("four datanodes");
    let held = c.blocks_on_disk(victim).len();
    assert!(held > 0, "the victim holds no block");
    let killed = Instant::now();
    c.kill_datanode(victim);

    c.wait_until("victim declared dead", Duration::from_secs(20), || {
        c.datanode_state(victim).as_deref() == Some("dead")
    });
    let dead_after = killed.elapsed();
    let what = format!("every block back to 3 replicas without datanode {victim}");
    c.wait_replicated(&what, Duration::from_secs(90), &files, &[victim]);
    let healed = killed.elapsed();
    eprintln!(
        "scenario 1: datanode {victim} held {held} blocks; declared dead after {:.2}s, \
         healed after {:.2}s (dead-after 2s, heartbeat 250ms)",
        dead_after.as_secs_f64(),
        healed.as_secs_f64()
    );
    c.verify_all(&files);

    // It comes back with its old replicas: the cluster converges to exactly 3 again.
    c.restart_datanode(victim);
    c.wait_replicated(
        "over-replicated copies trimmed after the victim returned",
        Duration::from_secs(60),
        &files,
        &[],
    );
    c.verify_all(&files);
}

//! Scenario 9 (issue 7): two datanodes down at once with replication 3 (of four). Reads
//! are still served from the last replicas, uploads still succeed with the two left
//! (min_replicas 2), and once both return the cluster converges to exactly three
//! replicas of every block.

use std::time::{Duration, Instant};

use kdfs_testkit::{Options, ProcessCluster, Stored, random_bytes};

#[test]
fn two_datanodes_down_reads_served_and_cluster_converges() {
    let mut c = ProcessCluster::start(Options::default().datanodes(4));
    let mut files: Vec<Stored> = (0..6)
        .map(|i| c.upload(&random_bytes((300 << 10) * (i + 1) + 11, 90 + i as u64)))
        .collect();
    c.wait_replicated("full replication", Duration::from_secs(30), &files, &[]);

    let killed = Instant::now();
    c.kill_datanode(0);
    c.kill_datanode(2);
    // At once, before the namenode knows: reads fail over from the dead replicas.
    c.verify_all(&files);
    c.wait_until("both declared dead", Duration::from_secs(20), || {
        c.datanode_state(0).as_deref() == Some("dead")
            && c.datanode_state(2).as_deref() == Some("dead")
    });
    let declared = killed.elapsed();
    c.verify_all(&files);
    // Writes go on with the two left (min_replicas 2).
    let during = c.upload(&random_bytes(900 << 10, 99));
    files.push(during);
    c.verify_all(&files);
    // Every block is on both survivors and nowhere else live.
    c.wait_until(
        "every block on both survivors",
        Duration::from_secs(60),
        || {
            files.iter().all(|f| {
                c.replicas(&f.hash).is_some_and(|blocks| {
                    blocks.iter().all(|r| {
                        r.len() == 2
                            && r.contains(&c.datanode_addrs[1])
                            && r.contains(&c.datanode_addrs[3])
                    })
                })
            })
        },
    );

    let returned = Instant::now();
    c.restart_datanode(0);
    c.restart_datanode(2);
    let took = c.wait_replicated(
        "converged to 3 replicas after both returned",
        Duration::from_secs(90),
        &files,
        &[],
    );
    eprintln!(
        "scenario 9: both declared dead {:.2}s after the kill; converged {:.2}s after they \
         returned ({:.2}s after the restarts were live)",
        declared.as_secs_f64(),
        returned.elapsed().as_secs_f64(),
        took.as_secs_f64()
    );
    c.verify_all(&files);
}

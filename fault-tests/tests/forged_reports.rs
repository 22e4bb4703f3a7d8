//! Issue 24, finding 4: forged replica reports must not destroy data.
//!
//! - Fake datanodes (gRPC clients that register with huge free space and serve
//!   nothing) report a victim's blocks as added, incrementally and in full reports:
//!   the namenode never counts those replicas, so it never trims a real one. Before
//!   the fix it saw six replicas and deleted the three real ones within seconds.
//! - `ReportBadReplica` for every replica of a file (as a gateway would) leaves the
//!   file readable: the holders verify their replicas instead of losing them. A
//!   replica that really is corrupt is verified, quarantined and healed.

mod common;

use std::time::Duration;

use common::{FakeDatanode, namenode, raw_id, runtime, timed};
use kdfs_proto::pb;
use kdfs_testkit::{Options, ProcessCluster, flip_byte, random_bytes, sha256_hex};

/// How often the fakes heartbeat and report: the test cluster's heartbeat interval
/// (so the namenode runs a replication round or two between two of their reports).
const FAKE_INTERVAL: Duration = Duration::from_millis(250);
/// Rounds of fake reports: 5 s, some 40 replication rounds of the namenode.
const ROUNDS: usize = 20;

/// A file's blocks: (hex id, length, replicas as (datanode id, address)).
type Located = Vec<(String, u64, Vec<(String, String)>)>;

fn located(c: &ProcessCluster, hash: &str) -> Located {
    let v = c
        .file(hash)
        .unwrap_or_else(|e| panic!("GET /files/{hash}: {e}"))
        .unwrap_or_else(|| panic!("file {hash} not found"));
    v["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .map(|b| {
            let replicas = b["replicas"]
                .as_array()
                .expect("replicas")
                .iter()
                .map(|r| {
                    (
                        r["id"].as_str().expect("replica id").to_owned(),
                        r["address"].as_str().expect("replica address").to_owned(),
                    )
                })
                .collect();
            (
                b["id"].as_str().expect("block id").to_owned(),
                b["length"].as_u64().expect("block length"),
                replicas,
            )
        })
        .collect()
}

/// Panics unless every real datanode holds an intact replica of every block.
fn assert_real_replicas_intact(c: &ProcessCluster, blocks: &[(String, u64)], when: &str) {
    for i in 0..c.datanodes.len() {
        for (id, _) in blocks {
            let path = c
                .block_path(i, id)
                .unwrap_or_else(|| panic!("{when}: datanode {i} lost its replica of {id}"));
            let bytes = std::fs::read(&path).expect("read a replica");
            assert_eq!(
                sha256_hex(&bytes),
                *id,
                "{when}: datanode {i}'s replica of {id}"
            );
        }
    }
}

#[test]
fn forged_reports_never_remove_real_replicas() {
    let c = ProcessCluster::start(Options::default());
    let victim = c.upload(&random_bytes((600 << 10) + 7, 2401)); // 3 blocks
    let files = [victim.clone()];
    c.wait_replicated(
        "the victim at 3 replicas",
        Duration::from_secs(30),
        &files,
        &[],
    );
    let blocks: Vec<(String, u64)> = located(&c, &victim.hash)
        .into_iter()
        .map(|(id, len, _)| (id, len))
        .collect();
    assert_real_replicas_intact(&c, &blocks, "before the attack");

    let rt = runtime();
    let _in_runtime = rt.enter();
    let nn = namenode(c.namenode_port);
    let mut fakes: Vec<FakeDatanode> = rt.block_on(async {
        futures::future::join_all((0..3).map(|n| FakeDatanode::register(&nn, n))).await
    });
    for round in 0..ROUNDS {
        rt.block_on(async {
            for f in &mut fakes {
                f.heartbeat().await;
                f.report_added(&blocks).await;
                if round % 4 == 0 {
                    f.full_report(&blocks).await;
                }
            }
        });
        assert_real_replicas_intact(
            &c,
            &blocks,
            &format!("after {round} rounds of forged reports"),
        );
        // A datanode's own pace (a fake heartbeats like a real one), not a wait for
        // something to happen: every round checks the disks.
        std::thread::sleep(FAKE_INTERVAL);
    }
    c.verify_all(&files);
    let info = c.info();
    assert_eq!(info["under_replicated"], 0, "{info}");
    assert!(
        c.namenodes[0]
            .log_text()
            .contains("replicas reported where the namenode never placed them"),
        "the namenode did not keep the forged replicas apart"
    );
    // Reads list the real replicas first (forged ones, when listed, after them).
    for (id, _, replicas) in located(&c, &victim.hash) {
        let real: Vec<bool> = replicas
            .iter()
            .map(|(_, addr)| c.datanode_index(addr).is_some())
            .collect();
        assert!(
            real.len() >= 3 && real[..3].iter().all(|r| *r),
            "{id}: {replicas:?}"
        );
    }
}

#[test]
fn bad_replica_reports_are_verified_not_believed() {
    let c = ProcessCluster::start(Options::default());
    let f = c.upload(&random_bytes((600 << 10) + 3, 2402)); // 3 blocks
    let g = c.upload(&random_bytes((300 << 10) + 9, 2403)); // 2 blocks
    let files = [f.clone(), g.clone()];
    c.wait_replicated(
        "both files at 3 replicas",
        Duration::from_secs(30),
        &files,
        &[],
    );

    let rt = runtime();
    let _in_runtime = rt.enter();
    let mut nn = namenode(c.namenode_port);
    let mut report = |block: &str, node: &str| {
        let req = pb::ReportBadReplicaRequest {
            block_id: raw_id(block).into(),
            datanode_id: node.to_owned(),
            reason: "test: reported bad".into(),
        };
        rt.block_on(timed(nn.report_bad_replica(req)))
            .expect("ReportBadReplica");
    };

    // Every replica of every block of f reported bad, three times over, as a
    // gateway (or anyone who may call the namenode) could.
    let f_blocks = located(&c, &f.hash);
    for _ in 0..3 {
        for (id, _, replicas) in &f_blocks {
            assert_eq!(replicas.len(), 3, "{id}");
            for (node, _) in replicas {
                report(id, node);
            }
        }
    }
    // Each holder re-hashed its replicas and found them good; the file stayed
    // readable and fully located throughout.
    c.verify_all(&files);
    c.wait_until(
        "every datanode verified the replicas reported bad",
        Duration::from_secs(30),
        || {
            c.datanodes.iter().all(|d| {
                d.log_text()
                    .matches("replica reported bad verified good")
                    .count()
                    >= f_blocks.len()
            })
        },
    );
    assert!(
        c.fully_replicated(&files, &[]),
        "{}",
        c.replication_summary(&files)
    );
    c.verify_all(&files);
    assert_eq!((0..3).map(|i| c.quarantined(i)).sum::<usize>(), 0);

    // A replica that really is corrupt, reported bad, is quarantined and healed.
    let (id, _, replicas) = &located(&c, &g.hash)[0];
    let (node, addr) = &replicas[1];
    let i = c.datanode_index(addr).expect("a real datanode");
    let path = c.block_path(i, id).expect("its replica");
    let len = std::fs::metadata(&path).expect("replica metadata").len();
    flip_byte(&path, len / 2);
    report(id, node);
    c.wait_until(
        "the corrupt replica quarantined and replaced by a good copy",
        Duration::from_secs(30),
        || {
            c.quarantined(i) >= 1
                && c.corrupt_blocks_on_disk(i).is_empty()
                && c.block_path(i, id).is_some()
        },
    );
    c.wait_replicated("g back at 3 replicas", Duration::from_secs(30), &files, &[]);
    c.verify_all(&files);
}

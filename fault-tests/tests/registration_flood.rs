//! Issue 24, finding 5: registrations and reports cannot grow the namenode without
//! bound.
//!
//! - 15,000 `Register` calls (long addresses and zones, never a heartbeat): before the
//!   fix `ClusterInfo` outgrew the 8 MiB message limit and the gateway's `/readyz` and
//!   `/info` answered 503. Now pending registrations are capped, forgotten once dead,
//!   and `ClusterInfo` carries counts and a bounded list.
//! - A `FullBlockReport` from a node that is not registered is refused at its first
//!   chunk: a stream that never ends is answered at once instead of being read
//!   forever.

mod common;

use std::time::{Duration, Instant};

use common::{CALL_TIMEOUT, datanode_id, namenode, runtime, timed};
use futures::StreamExt;
use kdfs_proto::pb;
use kdfs_testkit::{Options, ProcessCluster, random_bytes};
use prost::Message;

/// Registrations in the flood.
const FLOOD: u128 = 15_000;
/// Register calls in flight at once.
const CONCURRENCY: usize = 64;

#[test]
fn a_registration_flood_keeps_readiness_and_cluster_info_bounded() {
    let c = ProcessCluster::start(Options::default());
    let before = c.upload(&random_bytes(100 << 10, 2501));
    let rt = runtime();
    let _in_runtime = rt.enter();
    let nn = namenode(c.namenode_port);
    // About 650 bytes per node in ClusterInfo: 15,000 of them are ~9.7 MB.
    let host = format!("{}.example", "h".repeat(240));
    let (accepted, refused) = rt.block_on(async {
        let results: Vec<bool> = futures::stream::iter(0..FLOOD)
            .map(|n| {
                let mut nn = nn.clone();
                let req = pb::RegisterRequest {
                    datanode_id: datanode_id(1_000_000 + n),
                    cluster_id: String::new(),
                    address: format!("{host}:1"),
                    zone: "z".repeat(253),
                    capacity: 1 << 50,
                    used: 0,
                    available: 1 << 50,
                    version: "v".repeat(64),
                    pod_name: String::new(),
                    node_name: String::new(),
                    write_generation: 0,
                };
                async move {
                    match timed(nn.register(req)).await {
                        Ok(_) => true,
                        Err(s) if s.code() == tonic::Code::ResourceExhausted => false,
                        Err(s) => panic!("Register {n}: {s}"),
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let ok = results.iter().filter(|r| **r).count();
        (ok, results.len() - ok)
    });
    eprintln!("registration flood: {accepted} accepted, {refused} refused");

    // The gateway still answers, and ready: three real datanodes are live.
    c.wait_until(
        "/readyz ok during the flood",
        Duration::from_secs(10),
        || {
            reqwest::blocking::get(format!("{}/readyz", c.gateway_url()))
                .is_ok_and(|r| r.status().as_u16() == 200)
        },
    );
    let info = c.info();
    assert_eq!(info["live_datanodes"], 3, "{}", info["datanode_counts"]);
    assert!(refused > 0, "no registration was refused");
    assert!(info["datanodes"].as_array().expect("datanodes").len() <= 500);
    // The namenode's own answer is bounded whatever the caller asks for.
    let mut nn2 = nn.clone();
    let reply = rt
        .block_on(timed(nn2.cluster_info(pb::ClusterInfoRequest {
            node_limit: u32::MAX,
        })))
        .expect("ClusterInfo")
        .into_inner();
    assert!(
        reply.datanodes.len() <= 1000,
        "{} entries",
        reply.datanodes.len()
    );
    assert!(
        reply.encoded_len() < 1 << 20,
        "{} bytes",
        reply.encoded_len()
    );
    let known = reply.live_datanodes + reply.registering_datanodes + reply.dead_datanodes;
    assert!(known <= 1024 + 3 + 1024, "{known} nodes held");

    // Registrations that never heartbeat are forgotten once dead.
    c.wait_until("the flood forgotten", Duration::from_secs(30), || {
        let i = c.info();
        i["datanode_counts"]["registering"] == 0 && i["datanode_counts"]["dead"] == 0
    });
    let after = c.upload(&random_bytes(100 << 10, 2502));
    c.verify_all(&[before, after]);
}

#[test]
fn a_full_report_from_an_unregistered_node_is_refused_at_its_first_chunk() {
    let c = ProcessCluster::start(Options::default());
    let rt = runtime();
    let _in_runtime = rt.enter();
    let mut nn = namenode(c.namenode_port);
    let chunk = pb::FullBlockReportChunk {
        datanode_id: datanode_id(42),
        blocks: vec![pb::BlockEntry {
            id: vec![7u8; 32].into(),
            length: 1,
            ..Default::default()
        }],
    };
    // One chunk, then a stream that never ends.
    let stream = futures::stream::iter(vec![chunk]).chain(futures::stream::pending());
    let started = Instant::now();
    let answer = rt.block_on(tokio::time::timeout(
        CALL_TIMEOUT,
        nn.full_block_report(stream),
    ));
    let status = match answer {
        Err(_) => panic!("a report from an unregistered node was read for {CALL_TIMEOUT:?}"),
        Ok(Ok(_)) => panic!("a report from an unregistered node was accepted"),
        Ok(Err(s)) => s,
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(status.message().contains("not registered"), "{status}");
}

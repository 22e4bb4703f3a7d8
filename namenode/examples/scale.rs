//! Scale measurements for the namenode (run once, in release):
//!
//! ```text
//! cargo run --release -p kdfs-namenode --example scale
//! ```
//!
//! 1. Block-map memory: resident-set growth while 1M referenced blocks with three
//!    replicas each are loaded, per replica entry.
//! 2. Full block report of 1M blocks: applying it to the block map alone, and end to
//!    end through gRPC on 127.0.0.1 into a running namenode (decode + apply).
//! 3. Durable creates per second: 64 (then 256) concurrent gateways each doing
//!    BeginUpload + CommitFile of a one-block file against a running namenode; the
//!    commit waits for its fsynced group commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use kdfs_core::{BlockId, DatanodeId};
use kdfs_namenode::blockmap::BlockMap;
use kdfs_namenode::{Config, run};
use kdfs_proto::pb::{self, namenode_client::NamenodeClient};
use kdfs_proto::transport;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const BLOCKS: u64 = 1_000_000;
const REPLICAS: u32 = 3;
const COMMITTERS: usize = 64;
const CREATE_SECONDS: u64 = 5;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The current value of a counter of this process's namenode.
fn metric(name: &str) -> f64 {
    kdfs_namenode::http::prometheus()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn block(i: u64) -> BlockId {
    BlockId::from_slice(&Sha256::digest(i.to_le_bytes())).expect("32 bytes")
}

fn raw(b: &[u8; 32]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(b)
}

#[tokio::main]
async fn main() {
    kdfs_core::telemetry::init(kdfs_core::telemetry::LogFormat::Plain);
    let ids: Vec<BlockId> = (0..BLOCKS).map(block).collect();

    // 1. Memory per replica entry.
    let before = rss_bytes();
    let map = BlockMap::new();
    for id in &ids {
        map.add_ref(*id, 64 << 20, REPLICAS);
        for n in 0..REPLICAS {
            map.add_location(id, n);
        }
    }
    let after = rss_bytes();
    let replicas = BLOCKS * REPLICAS as u64;
    println!(
        "block map: {BLOCKS} blocks x {REPLICAS} replicas: RSS +{:.1} MiB = {:.1} bytes per block, {:.1} bytes per replica entry",
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / BLOCKS as f64,
        (after - before) as f64 / replicas as f64
    );

    // 2a. A full report of 1M blocks applied to the map (node 3 holds all of them).
    let report: Vec<(BlockId, u64)> = ids.iter().map(|b| (*b, 64 << 20)).collect();
    let t = Instant::now();
    let out = map.apply_full_report(3, report.clone());
    println!(
        "full report, block map only: {} blocks in {:.0} ms (accepted {})",
        BLOCKS,
        t.elapsed().as_secs_f64() * 1000.0,
        out.accepted
    );
    let t = Instant::now();
    let out = map.apply_full_report(3, report);
    println!(
        "full report again (all already mapped): {:.0} ms (accepted {})",
        t.elapsed().as_secs_f64() * 1000.0,
        out.accepted
    );
    drop(map);

    // A running namenode for the end-to-end measurements.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::parse_from([
        "kdfs-namenode",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--replication",
        "2",
    ]);
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap().to_string();
    let token = CancellationToken::new();
    let server = tokio::spawn(run(config, grpc, http, token.clone()));
    let channel = loop {
        match transport::endpoint(&addr).unwrap().connect().await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let client =
        NamenodeClient::new(channel).max_decoding_message_size(transport::MAX_MESSAGE_SIZE);
    let mut nodes = Vec::new();
    for i in 0..3 {
        let id = DatanodeId::random();
        client
            .clone()
            .register(pb::RegisterRequest {
                datanode_id: id.to_string(),
                address: format!("127.0.0.1:{}", 40000 + i),
                capacity: 1 << 50,
                available: 1 << 50,
                ..Default::default()
            })
            .await
            .unwrap();
        nodes.push(id);
    }

    // The fake datanodes keep heartbeating so they stay live however slow this runs.
    for id in nodes.clone() {
        let mut c = client.clone();
        let token = token.clone();
        tokio::spawn(async move {
            while !token.is_cancelled() {
                let _ = c
                    .heartbeat(pb::HeartbeatRequest {
                        datanode_id: id.to_string(),
                        capacity: 1 << 50,
                        available: 1 << 50,
                        ..Default::default()
                    })
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    // 3. Durable creates per second, at two levels of concurrency.
    for (round, committers) in [COMMITTERS, 4 * COMMITTERS].into_iter().enumerate() {
        let groups_before = metric("kdfs_namenode_group_commits_total");
        let done = Arc::new(AtomicU64::new(0));
        let stop = Instant::now() + Duration::from_secs(CREATE_SECONDS);
        let mut tasks = Vec::new();
        let t = Instant::now();
        for w in 0..committers {
            let mut c = client.clone();
            let done = done.clone();
            let acks: Vec<String> = nodes.iter().take(2).map(|n| n.to_string()).collect();
            tasks.push(tokio::spawn(async move {
                let mut i: u64 = 0;
                while Instant::now() < stop {
                    let content = format!("tiny file {round} {w} {i}");
                    i += 1;
                    let lease = c
                        .begin_upload(pb::BeginUploadRequest {
                            name: content.clone(),
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    let digest = Sha256::digest(content.as_bytes());
                    c.commit_file(pb::CommitFileRequest {
                        upload_id: lease.upload_id,
                        file_id: raw(&digest.into()),
                        size: content.len() as u64,
                        blocks: vec![pb::CommittedBlock {
                            id: raw(&digest.into()),
                            length: content.len() as u64,
                            replicas: acks.clone(),
                        }],
                    })
                    .await
                    .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = done.load(Ordering::Relaxed);
        let groups = metric("kdfs_namenode_group_commits_total") - groups_before;
        println!(
            "durable creates: {n} files in {:.1} s with {committers} concurrent committers = {:.0} creates/s \
             ({groups:.0} group commits, {:.1} creates per fsync)",
            t.elapsed().as_secs_f64(),
            n as f64 / t.elapsed().as_secs_f64(),
            n as f64 / groups.max(1.0)
        );
    }

    // 2b. 1M referenced blocks (20 files of 50,000 one-byte blocks, acknowledged by
    // two nodes), then a full report of all of them from the third node through gRPC.
    const PER_FILE: usize = 50_000;
    let acks: Vec<String> = nodes.iter().take(2).map(|n| n.to_string()).collect();
    let t = Instant::now();
    for (f, part) in ids.chunks(PER_FILE).enumerate() {
        let mut c = client.clone();
        let lease = c
            .begin_upload(pb::BeginUploadRequest {
                name: format!("big-{f}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        c.commit_file(pb::CommitFileRequest {
            upload_id: lease.upload_id,
            file_id: raw(&Sha256::digest(format!("big file {f}")).into()),
            size: part.len() as u64,
            blocks: part
                .iter()
                .map(|b| pb::CommittedBlock {
                    id: raw(b.as_bytes()),
                    length: 1,
                    replicas: acks.clone(),
                })
                .collect(),
        })
        .await
        .unwrap();
    }
    println!(
        "committed {BLOCKS} blocks in {} files in {:.1} s",
        BLOCKS as usize / PER_FILE,
        t.elapsed().as_secs_f64()
    );
    for (who, node) in [("a new replica holder", 2), ("a node already mapped", 0)] {
        let reporter = nodes[node].to_string();
        let chunks: Vec<pb::FullBlockReportChunk> = ids
            .chunks(transport::MAX_REPORT_CHUNK)
            .map(|c| pb::FullBlockReportChunk {
                datanode_id: reporter.clone(),
                blocks: c
                    .iter()
                    .map(|b| pb::BlockEntry {
                        id: raw(b.as_bytes()),
                        length: 1,
                    })
                    .collect(),
            })
            .collect();
        let t = Instant::now();
        let r = client
            .clone()
            .full_block_report(tokio_stream::iter(chunks))
            .await
            .unwrap()
            .into_inner();
        println!(
            "full report over gRPC from {who}: {BLOCKS} blocks in {:.0} ms end to end (encode, send, decode, apply), accepted {}",
            t.elapsed().as_secs_f64() * 1000.0,
            r.accepted
        );
    }
    token.cancel();
    server.await.unwrap().unwrap();
}

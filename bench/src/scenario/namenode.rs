//! `namenode`: synthetic load on the namenode library in this process, no
//! datanodes: the block map's memory and report path, durable creates through a real
//! namenode on 127.0.0.1, and full block reports over gRPC.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use futures::StreamExt;
use kdfs_proto::pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::content::now_nanos;
use crate::machine::{cpu_seconds, rss_bytes};
use crate::report::progress;
use crate::stats::percentile;

/// Replicas per block in the `namenode` scenario (the default replication).
pub(crate) const NN_REPLICAS: u32 = 3;

/// `namenode`: synthetic load on the namenode library in this process, no datanodes.
///
/// 1. Block map: the resident-set growth while `blocks` referenced blocks with three
///    replicas each are loaded, per replica entry; then a full report of all of them
///    applied to the map, from a new holder and from a holder already mapped.
/// 2. A real namenode (`kdfs_namenode::run`, gRPC on 127.0.0.1, its database in a temp
///    dir under `data_parent`, the current directory for `kdfs bench`, so on that disk) with three registered fake
///    datanodes: `creates` one-block files, each a BeginUpload + CommitFile by one of
///    `concurrency` clients; every commit is acknowledged only after its group commit
///    was fsynced. Then every created file is read back with GetFile and checked.
/// 3. `blocks` blocks committed in files of `MAX_REPORT_CHUNK` blocks (acknowledged by
///    two nodes), then a full report of all of them over gRPC from the third node and
///    from one already mapped: encode, send, decode, apply.
/// 4. The creates of part 2 again through an HA group of three namenodes
///    ([`super::namenode_ha`]), side by side: `ha_creates_s` and its ratio to
///    `creates_s`.
pub(crate) async fn namenode(
    blocks: u64,
    creates: usize,
    concurrency: usize,
    data_parent: &std::path::Path,
) -> anyhow::Result<Value> {
    use kdfs_proto::transport;
    let blocks = blocks.max(1);
    let nonce = now_nanos();
    progress(format!("namenode: block map of {blocks} blocks"));
    let ids: std::sync::Arc<Vec<kdfs_core::BlockId>> = std::sync::Arc::new(
        tokio::task::spawn_blocking(move || (0..blocks).map(|i| nn_block(nonce, i)).collect())
            .await?,
    );
    let map = {
        let ids = ids.clone();
        tokio::task::spawn_blocking(move || block_map_figures(&ids)).await?
    };

    progress("namenode: starting a namenode on 127.0.0.1");
    let dir = tempfile::Builder::new()
        .prefix("kdfs-bench-namenode-")
        .tempdir_in(data_parent)?;
    let config = <kdfs_namenode::Config as clap::Parser>::try_parse_from([
        "kdfs-namenode".to_owned(),
        format!("--data-dir={}", dir.path().display()),
        format!("--replication={NN_REPLICAS}"),
        "--kubernetes=off".to_owned(),
    ])?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = grpc.local_addr()?.to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(kdfs_namenode::run(config, grpc, http, stop.clone()));
    let result = async {
        // The listener is bound already, so the connection cannot be refused; the
        // first call waits until the service is up.
        let channel = transport::endpoint(&addr)?.connect().await?;
        let client = pb::namenode_client::NamenodeClient::new(channel)
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(transport::MAX_MESSAGE_SIZE);
        let nodes = fake_datanodes(&client, &stop).await?;
        let created = nn_creates(&client, &nodes, nonce, creates, concurrency).await?;
        let reports = nn_reports(&client, &nodes, &ids).await?;
        anyhow::Ok((created, reports))
    }
    .await;
    stop.cancel();
    let served = server.await;
    let (created, reports) = result?;
    served?.context("namenode")?;
    let mut ha =
        super::namenode_ha::ha_creates(creates, concurrency, nonce ^ 1, data_parent).await?;
    if let (Some(one), Some(three)) = (created["creates_s"].as_f64(), ha["ha_creates_s"].as_f64()) {
        ha["ha_creates_ratio"] = json!(three / one);
    }
    let mut out = json!({"scenario": "namenode", "blocks": blocks, "replicas": NN_REPLICAS});
    for part in [map, created, reports, ha] {
        if let (Some(o), Value::Object(p)) = (out.as_object_mut(), part) {
            o.extend(p);
        }
    }
    Ok(out)
}

/// A block id unique to this run (`nonce`) and index.
fn nn_block(nonce: u64, i: u64) -> kdfs_core::BlockId {
    let digest = Sha256::digest([nonce.to_le_bytes(), i.to_le_bytes()].concat());
    kdfs_core::BlockId::from_slice(&digest).expect("a SHA-256 is 32 bytes")
}

/// Part 1 of [`namenode`]: memory per replica entry and full reports into the map.
fn block_map_figures(ids: &[kdfs_core::BlockId]) -> Value {
    use kdfs_namenode::bench::BlockMap;
    let before = rss_bytes();
    let map = BlockMap::new();
    for id in ids {
        map.add_ref(*id, 64 << 20, NN_REPLICAS);
        for n in 0..NN_REPLICAS {
            map.add_location(id, n);
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    let entries = ids.len() as u64 * NN_REPLICAS as u64;
    let report: Vec<(kdfs_core::BlockId, u64)> = ids.iter().map(|b| (*b, 64 << 20)).collect();
    // A holder back from the dead: every replica it reports is mapped again (a node
    // the namenode never placed them on would only be remembered as unconfirmed).
    map.remove_node(NN_REPLICAS - 1);
    let t = Instant::now();
    let new = map.apply_full_report(NN_REPLICAS - 1, report.clone(), false);
    let new_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let again = map.apply_full_report(0, report, false);
    let again_ms = t.elapsed().as_secs_f64() * 1000.0;
    json!({
        "map_rss_growth_bytes": grown,
        "bytes_per_replica_entry": grown as f64 / entries as f64,
        "report_map_new_holder_ms": new_ms, "report_map_new_holder_accepted": new.accepted,
        "report_map_mapped_holder_ms": again_ms, "report_map_mapped_holder_accepted": again.accepted,
    })
}

pub(crate) type NnClient = pb::namenode_client::NamenodeClient<tonic::transport::Channel>;

/// Registers `NN_REPLICAS` datanodes and keeps them heartbeating (so they stay live
/// however long the bench takes) until `stop`.
pub(crate) async fn fake_datanodes(
    client: &NnClient,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Vec<String>> {
    let mut nodes = Vec::new();
    for i in 0..NN_REPLICAS {
        let id = kdfs_core::DatanodeId::random().to_string();
        client
            .clone()
            .register(pb::RegisterRequest {
                datanode_id: id.clone(),
                address: format!("127.0.0.1:{}", 40000 + i),
                capacity: 1 << 50,
                available: 1 << 50,
                ..Default::default()
            })
            .await
            .context("registering a fake datanode")?;
        let (mut c, id2, stop) = (client.clone(), id.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let beat = pb::HeartbeatRequest {
                    datanode_id: id2.clone(),
                    capacity: 1 << 50,
                    available: 1 << 50,
                    ..Default::default()
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = c.heartbeat(beat) => {}
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        nodes.push(id);
    }
    Ok(nodes)
}

/// The current value of a counter of this process's metrics recorder.
fn metric(name: &str) -> f64 {
    kdfs_namenode::bench::prometheus()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// CPU seconds used so far by the namenode's metadata writer thread(s) in this
/// process: the part of a create that group commit changes.
fn writer_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "kdfs-meta-write")
        })
        .filter_map(|t| cpu_seconds(&format!("self/task/{}", t.file_name().to_string_lossy())))
        .sum()
}

/// Part 2 of [`namenode`]: durable creates, then every created file read back.
pub(crate) async fn nn_creates(
    client: &NnClient,
    nodes: &[String],
    nonce: u64,
    creates: usize,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let raw = |d: &[u8]| Bytes::copy_from_slice(d);
    let content = |i: usize| format!("bench namenode {nonce} {i}");
    progress(format!(
        "namenode: {creates} durable creates by {concurrency} clients"
    ));
    let groups_before = metric("kdfs_namenode_group_commits_total");
    let cpu0 = cpu_seconds("self");
    let writer0 = writer_cpu_seconds();
    let t0 = Instant::now();
    let mut lat: Vec<Duration> = futures::stream::iter(0..creates)
        .map(|i| {
            let mut c = client.clone();
            let body = content(i);
            async move {
                let s = Instant::now();
                let lease = c
                    .begin_upload(pb::BeginUploadRequest {
                        name: format!("bench-nn-{i}"),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let digest = Sha256::digest(body.as_bytes());
                c.commit_file(pb::CommitFileRequest {
                    replaces: None,
                    object_content: false,
                    upload_id: lease.upload_id,
                    file_id: raw(&digest),
                    size: body.len() as u64,
                    blocks: vec![pb::CommittedBlock {
                        id: raw(&digest),
                        length: body.len() as u64,
                        replicas: nodes.to_vec(),
                    }],
                })
                .await?;
                anyhow::Ok(s.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()
        .context("create")?;
    let elapsed = t0.elapsed();
    // Client and namenode share this process: CPU per create is a figure that other
    // load on the machine moves less than creates/s.
    let cpu_us = match (cpu0, cpu_seconds("self")) {
        (Some(a), Some(b)) => Some((b - a) * 1e6 / creates.max(1) as f64),
        _ => None,
    };
    let writer_us = (writer_cpu_seconds() - writer0) * 1e6 / creates.max(1) as f64;
    let groups = metric("kdfs_namenode_group_commits_total") - groups_before;
    lat.sort();

    progress(format!("namenode: reading back {creates} files"));
    let t0 = Instant::now();
    futures::stream::iter(0..creates)
        .map(|i| {
            let mut c = client.clone();
            let body = content(i);
            async move {
                let digest = Sha256::digest(body.as_bytes());
                let f = c
                    .get_file(pb::GetFileRequest {
                        file_id: raw(&digest),
                    })
                    .await
                    .with_context(|| format!("GetFile of created file {i}"))?
                    .into_inner();
                let ok = f.state == pb::FileState::Live as i32
                    && f.file.as_ref().is_some_and(|r| r.size == body.len() as u64)
                    && f.blocks.len() == 1
                    && f.blocks[0].id[..] == digest[..]
                    && f.blocks[0].replicas.len() == nodes.len();
                ensure!(ok, "created file {i} reads back wrong: {f:?}");
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    let read = t0.elapsed();
    Ok(json!({
        "creates": creates, "concurrency": concurrency,
        "creates_s": creates as f64 / elapsed.as_secs_f64(),
        "create_p50_ms": percentile(&lat, 0.5), "create_p99_ms": percentile(&lat, 0.99),
        "group_commits": groups, "creates_per_group_commit": creates as f64 / groups.max(1.0),
        "create_cpu_us": cpu_us, "create_writer_cpu_us": writer_us,
        "get_file_s": creates as f64 / read.as_secs_f64(),
    }))
}

/// Part 3 of [`namenode`]: referenced blocks, then full reports over gRPC.
async fn nn_reports(
    client: &NnClient,
    nodes: &[String],
    ids: &[kdfs_core::BlockId],
) -> anyhow::Result<Value> {
    use kdfs_proto::transport::MAX_REPORT_CHUNK;
    let raw = |d: &[u8]| Bytes::copy_from_slice(d);
    progress(format!(
        "namenode: committing {} blocks in files of {MAX_REPORT_CHUNK}",
        ids.len()
    ));
    let acks = nodes[..2].to_vec();
    let t0 = Instant::now();
    for (f, part) in ids.chunks(MAX_REPORT_CHUNK).enumerate() {
        let mut c = client.clone();
        let lease = c
            .begin_upload(pb::BeginUploadRequest {
                name: format!("bench-nn-big-{f}"),
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut file = Sha256::new();
        for b in part {
            file.update(b.as_bytes());
        }
        c.commit_file(pb::CommitFileRequest {
            replaces: None,
            object_content: false,
            upload_id: lease.upload_id,
            file_id: raw(&file.finalize()),
            // Whole blocks of the namenode's default size: it refuses a file of
            // several blocks cut otherwise (docs/security.md, file ids).
            size: part.len() as u64 * (64 << 20),
            blocks: part
                .iter()
                .map(|b| pb::CommittedBlock {
                    id: raw(b.as_bytes()),
                    length: 64 << 20,
                    replicas: acks.clone(),
                })
                .collect(),
        })
        .await
        .context("committing a file of many blocks")?;
    }
    let committed = t0.elapsed();
    let mut out = json!({ "commit_blocks_s": committed.as_secs_f64() });
    for (who, node) in [("new_holder", &nodes[2]), ("mapped_holder", &nodes[0])] {
        progress(format!(
            "namenode: full report of {} blocks over gRPC ({})",
            ids.len(),
            who.replace('_', " ")
        ));
        let chunks: Vec<pb::FullBlockReportChunk> = ids
            .chunks(MAX_REPORT_CHUNK)
            .map(|c| pb::FullBlockReportChunk {
                datanode_id: node.clone(),
                blocks: c
                    .iter()
                    .map(|b| pb::BlockEntry {
                        id: raw(b.as_bytes()),
                        length: 1,
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect();
        let t0 = Instant::now();
        let r = client
            .clone()
            .full_block_report(tokio_stream::iter(chunks))
            .await?
            .into_inner();
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        // A node the namenode never placed the blocks on is not believed: its
        // replicas are remembered as unconfirmed, none accepted (docs/security.md).
        let want = if who == "new_holder" {
            0
        } else {
            ids.len() as u64
        };
        ensure!(
            r.accepted == want,
            "full report from the {who}: {} of {} blocks accepted",
            r.accepted,
            ids.len()
        );
        out[format!("report_grpc_{who}_ms")] = json!(ms);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smoke run of the `namenode` scenario: a real namenode on 127.0.0.1, every
    /// created file read back, both full reports accepted in full.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn namenode_scenario_smoke() {
        let dir = tempfile::tempdir().unwrap();
        let r = namenode(2_000, 40, 4, dir.path()).await.unwrap();
        assert_eq!(r["scenario"], "namenode");
        assert_eq!(r["report_map_new_holder_accepted"], 2_000);
        assert_eq!(r["report_map_mapped_holder_accepted"], 2_000);
        assert!(r["creates_s"].as_f64().unwrap() > 0.0);
        assert!(r["report_grpc_new_holder_ms"].as_f64().is_some());
        assert!(r["bytes_per_replica_entry"].as_f64().is_some());
        assert!(r["ha_creates_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["ha_creates_ratio"].as_f64().is_some(), "{r}");
    }
}

//! `ceiling`: the same machine's limits, measured in this run: SHA-256, one gRPC
//! stream into a sink, fsync'd disk writes, and durable small-file commits on one
//! thread and on many.

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use kdfs_proto::pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::content::{Content, GEN_CHUNK};
use crate::disk::{SMALL_COMMIT, Shards, disk_write, durable_commits, parallel_durable_commits};
use crate::machine::sha_ni;
use crate::report::progress;
use crate::sink::SinkServer;
use crate::stats::{mbps, median};

/// The same machine's limits, measured in this run.
pub(crate) async fn ceiling(size: u64, dir: &std::path::Path) -> anyhow::Result<Value> {
    progress("ceiling: SHA-256, one gRPC stream, fsync'd disk writes, durable small-file commits");
    let buf = Content::new(GEN_CHUNK as u64).chunk(0);
    let chunks = size / GEN_CHUNK as u64;
    let mut sha = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let mut h = Sha256::new();
        for _ in 0..chunks {
            h.update(&buf);
        }
        std::hint::black_box(h.finalize());
        sha.push(mbps(chunks * GEN_CHUNK as u64, t0.elapsed()));
    }
    let mut grpc = Vec::new();
    for _ in 0..3 {
        grpc.push(grpc_stream(buf.clone(), chunks).await?);
    }
    let mut disk = Vec::new();
    for _ in 0..3 {
        disk.push(disk_write(dir, &buf, chunks.min(256))?);
    }
    let (mut commits, mut commit_cpu) = (Vec::new(), Vec::new());
    for run in 0..3 {
        let (rate, cpu_us) = durable_commits(dir, run, &buf[..SMALL_COMMIT])?;
        commits.push(rate);
        commit_cpu.push(cpu_us);
    }
    let (mut par, mut par_cpu) = (Vec::new(), Vec::new());
    for run in 0..3 {
        let (rate, cpu_us) = parallel_durable_commits(
            dir,
            &format!("par-{run}"),
            &buf[..SMALL_COMMIT],
            Shards::Existing,
        )?;
        par.push(rate);
        par_cpu.push(cpu_us);
    }
    Ok(json!({
        "scenario": "ceiling", "bytes": chunks * GEN_CHUNK as u64,
        "sha256_mb_s": median(sha), "grpc_stream_mb_s": median(grpc), "disk_fsync_write_mb_s": median(disk),
        "durable_small_commits_s": median(commits), "durable_small_commit_cpu_us": median(commit_cpu),
        "parallel_durable_commits_s": median(par), "parallel_durable_commit_machine_cpu_us": median(par_cpu),
        "sha_ni": sha_ni(),
    }))
}

/// One client-streaming WriteBlock of `chunks` messages of `buf` into a sink server on
/// 127.0.0.1, with the store's chunk size and the workspace's transport settings.
async fn grpc_stream(buf: Bytes, chunks: u64) -> anyhow::Result<f64> {
    let sink = SinkServer::start(Bytes::new()).await?;
    let mut client = sink.client().await?;
    let msgs = futures::stream::iter(0..chunks).map(move |_| pb::WriteBlockRequest {
        msg: Some(pb::write_block_request::Msg::Data(buf.clone())),
    });
    let t0 = Instant::now();
    let n = client.write_block(msgs).await?.into_inner().length;
    let d = t0.elapsed();
    sink.stop().await;
    Ok(mbps(n, d))
}

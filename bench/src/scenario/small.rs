//! `small`: `--count` files of `--file-size` uploaded, then downloaded, by
//! `--concurrency` clients; on a local cluster also the disk's durable-commit rate
//! just before and the floors (see [`crate::floor`]) the figures are bounded by.

use std::time::{Duration, Instant};

use anyhow::ensure;
use futures::StreamExt;
use kdfs_core::ByteSize;
use serde_json::{Value, json};

use crate::content::{Content, GEN_CHUNK};
use crate::disk::{Shards, parallel_durable_commits};
use crate::floor::{FLOOR_OPS, LOCAL_REPLICATION, floor, meta_commit_floor, sha256_us};
use crate::local::ProcCluster;
use crate::report::progress;
use crate::stats::{cpu_per_byte, percentile};
use crate::target::Target;

pub(crate) async fn small(
    t: &Target,
    count: usize,
    file_size: u64,
    concurrency: usize,
    cluster: Option<&ProcCluster>,
    scratch: Option<&std::path::Path>,
) -> anyhow::Result<Value> {
    let cpu = || cluster.map(ProcCluster::cpu).unwrap_or_default();
    // CPU µs per operation per process: ns per "byte" with one byte per operation.
    let per_op = |before: &[(String, f64)], after: &[(String, f64)]| {
        let mut m = cpu_per_byte(before, after, count as u64);
        m.values_mut().for_each(|ns| *ns /= 1e3);
        m
    };
    progress(format!(
        "small: {count} files of {} with {concurrency} clients",
        ByteSize(file_size)
    ));
    let contents: Vec<Content> = (0..count).map(|_| Content::new(file_size)).collect();
    let hashes: Vec<String> = contents.iter().map(Content::sha256).collect();
    // The disk's limit in the state these uploads meet (local clusters only, whose
    // datanodes share the bench's disk): durable commits of this size by 16 threads,
    // measured just before, into directories that exist and into new ones (the
    // cluster's stores are new: nearly every replica opens a shard directory). At
    // replication 3 an upload needs three of them.
    let same_state = match (cluster, scratch) {
        (Some(_), Some(scratch)) => {
            let data = Content::new(file_size.clamp(1, GEN_CHUNK as u64)).chunk(0);
            let dir = scratch.to_owned();
            let commits = tokio::task::spawn_blocking({
                let data = data.clone();
                move || -> anyhow::Result<_> {
                    Ok((
                        parallel_durable_commits(&dir, "small", &data, Shards::Existing)?,
                        parallel_durable_commits(&dir, "small-new", &data, Shards::New)?,
                    ))
                }
            });
            let (commits, new_store) = commits.await??;
            let ops = count.clamp(200, FLOOR_OPS);
            let mut parts = floor(data.clone(), ops).await?;
            parts["meta_commit_us"] = json!(meta_commit_floor(scratch, data.len(), ops).await?);
            parts["sha256_us"] =
                json!(tokio::task::spawn_blocking(move || sha256_us(&data)).await?);
            Some((commits, new_store, parts))
        }
        _ => None,
    };
    // The least machine CPU per upload (its network parts, the file record's durable
    // commit, one stream, one durable commit and one hash per replica and one hash in
    // the gateway) and per download (its network parts and two hashes: the datanode's
    // and the gateway's; a small block is read from the page cache).
    let floor = same_state
        .as_ref()
        .map(|((_, commit_us), (_, new_us), parts)| {
            let f = |k: &str| parts[k].as_f64().unwrap_or(f64::NAN);
            let replicas = LOCAL_REPLICATION as f64;
            let upload_with = |commit_us: f64| {
                f("http_us")
                    + 2.0 * f("unary_us")
                    + f("meta_commit_us")
                    + (replicas + 1.0) * f("sha256_us")
                    + replicas * (f("stream_us") + commit_us)
            };
            let upload = upload_with(*commit_us);
            let upload_new = upload_with(*new_us);
            let download =
                f("http_get_us") + f("unary_us") + f("read_stream_us") + 2.0 * f("sha256_us");
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut v = parts.clone();
            v["commit_us"] = json!(commit_us);
            v["upload_total_us"] = json!(upload);
            v["uploads_s"] = json!(cores as f64 * 1e6 / upload);
            v["new_store_commit_us"] = json!(new_us);
            v["new_store_upload_total_us"] = json!(upload_new);
            v["new_store_uploads_s"] = json!(cores as f64 * 1e6 / upload_new);
            v["download_total_us"] = json!(download);
            v["downloads_s"] = json!(cores as f64 * 1e6 / download);
            v["cores"] = json!(cores);
            v
        });
    let new_store = same_state.as_ref().map(|(_, n, _)| *n);
    let same_state = same_state.map(|(c, _, _)| c);

    let c0 = cpu();
    let t0 = Instant::now();
    let mut lat: Vec<Duration> = futures::stream::iter(contents.iter().enumerate())
        .map(|(i, c)| async move {
            let s = Instant::now();
            t.upload(c, &format!("bench-small-{i}"))
                .await
                .map(|_| s.elapsed())
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let up_elapsed = t0.elapsed();
    let up_cpu = per_op(&c0, &cpu());
    lat.sort();
    let up = (
        count as f64 / up_elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );

    let c0 = cpu();
    let t0 = Instant::now();
    let mut lat: Vec<Duration> = futures::stream::iter(hashes.iter())
        .map(|h| async move {
            let s = Instant::now();
            let (_, got) = t.download(h).await?;
            ensure!(&got == h, "small download verification failed for {h}");
            Ok(s.elapsed())
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let down_elapsed = t0.elapsed();
    let down_cpu = per_op(&c0, &cpu());
    lat.sort();
    let down = (
        count as f64 / down_elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
    Ok(json!({
        "scenario": "small", "count": count, "file_size_bytes": file_size, "concurrency": concurrency,
        "upload_ops_s": up.0, "upload_p50_ms": up.1, "upload_p99_ms": up.2,
        "download_ops_s": down.0, "download_p50_ms": down.1, "download_p99_ms": down.2,
        "same_state_parallel_commits_s": same_state.map(|s| s.0),
        "same_state_commit_machine_cpu_us": same_state.map(|s| s.1),
        "upload_bound_by_commits_s": same_state.map(|s| s.0 / LOCAL_REPLICATION as f64),
        "new_store_parallel_commits_s": new_store.map(|s| s.0),
        "new_store_commit_machine_cpu_us": new_store.map(|s| s.1),
        "floor": floor,
        "upload_cpu_us_per_op": (cluster.is_some()).then(|| json!(up_cpu)),
        "download_cpu_us_per_op": (cluster.is_some()).then(|| json!(down_cpu)),
    }))
}

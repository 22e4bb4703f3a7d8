//! `kdfs bench`: throughput, small-file rate, heal time, the namenode's scale and the
//! machine's ceilings, measured in one run so the figures can be compared side by side.
//!
//! Against a running gateway (`--gateway`) or, with `--local`, against a fresh cluster
//! of child processes (see [`crate::procs`]) whose peak RSS is read from `/proc`. Every
//! download is verified against the SHA-256 of what was uploaded; a mismatch ends the
//! bench with a non-zero exit. The `namenode` scenario needs no cluster: it loads the
//! namenode library in this process (see [`namenode`]). Progress goes to stderr, results to stdout (a table, or
//! one JSON object per scenario with `--json`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use kdfs_core::ByteSize;
use kdfs_proto::pb;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::gateway::check;
use crate::procs::ProcCluster;

/// Bytes per generated chunk of synthetic file content.
const GEN_CHUNK: usize = 1 << 20;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Start a fresh local cluster of child processes (binaries next to this one).
    #[arg(long)]
    pub local: bool,
    /// Scenarios to run, comma separated: large, small, heal, ceiling, namenode.
    #[arg(long, value_delimiter = ',', default_value = "ceiling,large,small")]
    pub scenarios: Vec<String>,
    /// Size of the large file (and of the data stored for `heal`).
    #[arg(long, default_value = "1GiB")]
    pub size: ByteSize,
    /// Runs of `large` (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Files uploaded and downloaded by `small`.
    #[arg(long, default_value_t = 2000)]
    pub count: usize,
    /// Size of each small file.
    #[arg(long, default_value = "4KiB")]
    pub file_size: ByteSize,
    /// Concurrent clients for `small`, and concurrent committers for `namenode`.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Datanodes of the local cluster (heal always uses at least 4).
    #[arg(long, default_value_t = 3)]
    pub datanodes: usize,
    /// `--dead-after` of the local cluster's namenode (heal time includes it).
    #[arg(long, default_value = "5s")]
    pub dead_after: String,
    /// With --local: mutual TLS on every internal gRPC link (a CA and certificates made
    /// by `kdfs certs` in the cluster's temp dir), to measure what mTLS costs.
    #[arg(long)]
    pub tls: bool,
    /// Blocks of the `namenode` scenario's block map and full block report.
    #[arg(long, default_value_t = 1_000_000)]
    pub blocks: u64,
    /// Files created (BeginUpload + CommitFile) by the `namenode` scenario.
    #[arg(long, default_value_t = 20_000)]
    pub creates: usize,
    /// Print one JSON object per scenario instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Synthetic content: a random 1 MiB pattern with each chunk stamped with a run nonce
/// and its index, so no two blocks are equal (no dedup flattering the figures), cheap
/// to produce, and reproducible for hashing before the timed upload.
#[derive(Clone)]
struct Content {
    pattern: Bytes,
    nonce: u64,
    size: u64,
}

impl Content {
    fn new(size: u64) -> Self {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ now_nanos();
        // A small file needs only its own length of pattern (4,000 small files would
        // otherwise cost 4 GiB of setup).
        let pattern: Vec<u8> = (0..(size as usize).clamp(1, GEN_CHUNK))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Self {
            pattern: pattern.into(),
            nonce: now_nanos(),
            size,
        }
    }

    fn chunk(&self, i: u64) -> Bytes {
        let start = i * GEN_CHUNK as u64;
        let len = (self.size - start).min(GEN_CHUNK as u64) as usize;
        let mut v = self.pattern[..len].to_vec();
        let stamp = [self.nonce.to_le_bytes(), i.to_le_bytes()].concat();
        let n = stamp.len().min(len);
        v[..n].copy_from_slice(&stamp[..n]);
        v.into()
    }

    fn chunks(&self) -> u64 {
        self.size.div_ceil(GEN_CHUNK as u64)
    }

    fn stream(
        &self,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let me = self.clone();
        futures::stream::iter(0..me.chunks()).map(move |i| Ok(me.chunk(i)))
    }

    fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for i in 0..self.chunks() {
            h.update(self.chunk(i));
        }
        hex::encode(h.finalize())
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("bench: {msg}");
}

struct Target {
    url: String,
    http: reqwest::Client,
}

impl Target {
    async fn upload(&self, content: &Content, name: &str) -> anyhow::Result<Value> {
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(content.stream()),
            content.size,
        )
        .file_name(name.to_owned())
        .mime_str("application/octet-stream")?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let resp = self
            .http
            .post(format!("{}/upload", self.url))
            .multipart(form)
            .send()
            .await?;
        Ok(check(resp).await?.json().await?)
    }

    /// Downloads `hash` and returns (bytes, sha256 of what arrived).
    async fn download(&self, hash: &str) -> anyhow::Result<(u64, String)> {
        let resp = self
            .http
            .get(format!("{}/download", self.url))
            .query(&[("hash", hash)])
            .send()
            .await?;
        let mut s = check(resp).await?.bytes_stream();
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(c) = s.next().await {
            let c = c.context("download interrupted")?;
            n += c.len() as u64;
            h.update(&c);
        }
        Ok((n, hex::encode(h.finalize())))
    }
}

pub async fn run(gateway: &str, args: BenchArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut results = Vec::new();
    let wants = |s: &str| args.scenarios.iter().any(|x| x == s);
    for s in &args.scenarios {
        ensure!(
            ["large", "small", "heal", "ceiling", "namenode"].contains(&s.as_str()),
            "unknown scenario {s:?}: use large, small, heal, ceiling, namenode"
        );
    }

    // First, while this process's heap is still small: its memory figure is the growth
    // of the resident set.
    if wants("namenode") {
        results.push(
            namenode(
                args.blocks,
                args.creates,
                args.concurrency,
                std::path::Path::new("."),
            )
            .await?,
        );
    }

    ensure!(
        args.local || !args.tls,
        "--tls needs --local (a running gateway's cluster has its own TLS settings)"
    );
    // The ceiling's files, and those of the small scenario's same-state commits, stay
    // until the bench ends: on ext4 without a journal every new inode is allocated past
    // the inodes freed in the last minutes (`recently_deleted`), so deleting thousands
    // of files would slow every file creation of the scenarios that follow.
    // Made only where it is used: the ceiling, and the small scenario's commits on a
    // local cluster's disk.
    let scratch = if wants("ceiling") || (args.local && wants("small")) {
        Some(
            tempfile::Builder::new()
                .prefix("kdfs-bench-disk-")
                .tempdir_in(".")?,
        )
    } else {
        None
    };
    let scratch_dir = scratch.as_ref().map(tempfile::TempDir::path);
    if let Some(dir) = scratch_dir.filter(|_| wants("ceiling")) {
        results.push(ceiling(args.size.bytes().min(1 << 30), dir).await?);
    }

    if wants("large") || wants("small") {
        let cluster = if args.local {
            progress(format!(
                "starting a local cluster with {} datanodes",
                args.datanodes
            ));
            Some(ProcCluster::start(args.datanodes, "64MiB", &args.dead_after, args.tls).await?)
        } else {
            None
        };
        let url = cluster
            .as_ref()
            .map_or_else(|| gateway.to_owned(), |c| c.gateway.clone());
        let target = Target {
            url,
            http: http.clone(),
        };
        if wants("large") {
            let mut r = large(&target, args.size.bytes(), args.runs, cluster.as_ref()).await?;
            if let Some(c) = &cluster {
                r["peak_rss_bytes"] = json!(
                    c.peak_rss()
                        .into_iter()
                        .collect::<std::collections::BTreeMap<_, _>>()
                );
            }
            results.push(r);
        }
        if wants("small") {
            results.push(
                small(
                    &target,
                    args.count,
                    args.file_size.bytes(),
                    args.concurrency,
                    cluster.as_ref(),
                    scratch_dir,
                )
                .await?,
            );
        }
    }

    if wants("heal") {
        ensure!(
            args.local,
            "the heal scenario needs --local (it kills a datanode)"
        );
        results.push(
            heal(
                &http,
                args.size.bytes(),
                args.datanodes.max(4),
                &args.dead_after,
                args.tls,
            )
            .await?,
        );
    }

    for r in &results {
        if args.json {
            println!("{r}");
        } else {
            print_human(r);
        }
    }
    Ok(())
}

/// CPU seconds per process used between two [`ProcCluster::cpu`] snapshots, as
/// nanoseconds per byte moved, plus their `total`: a figure the load of other work on
/// the machine does not move much, unlike MB/s.
fn cpu_per_byte(
    before: &[(String, f64)],
    after: &[(String, f64)],
    bytes: u64,
) -> std::collections::BTreeMap<String, f64> {
    let mut m = std::collections::BTreeMap::new();
    let mut total = 0.0;
    for (name, a) in after {
        if let Some((_, b)) = before.iter().find(|(n, _)| n == name) {
            let ns = (a - b) * 1e9 / bytes.max(1) as f64;
            total += ns;
            m.insert(name.clone(), ns);
        }
    }
    m.insert("total".into(), total);
    m
}

async fn large(
    t: &Target,
    size: u64,
    runs: usize,
    cluster: Option<&ProcCluster>,
) -> anyhow::Result<Value> {
    let cpu = || cluster.map(ProcCluster::cpu).unwrap_or_default();
    let (mut up_cpu, mut down_cpu) = (Vec::new(), Vec::new());
    let mut up = Vec::new();
    let mut down = Vec::new();
    for run in 0..runs.max(1) {
        let content = Content::new(size);
        let want = content.sha256();
        progress(format!(
            "large: run {}/{}: uploading {}",
            run + 1,
            runs,
            ByteSize(size)
        ));
        let c0 = cpu();
        let t0 = Instant::now();
        let v = t.upload(&content, &format!("bench-large-{run}")).await?;
        let du = t0.elapsed();
        up_cpu.push(cpu_per_byte(&c0, &cpu(), size));
        ensure!(
            v["hash"] == want.as_str(),
            "upload returned hash {} but content has {want}",
            v["hash"]
        );
        progress(format!("large: run {}/{}: downloading", run + 1, runs));
        let c0 = cpu();
        let t0 = Instant::now();
        let (n, got) = t.download(&want).await?;
        let dd = t0.elapsed();
        down_cpu.push(cpu_per_byte(&c0, &cpu(), size));
        ensure!(
            n == size && got == want,
            "download verification failed: {n} bytes, sha256 {got}, want {want}"
        );
        up.push(mbps(size, du));
        down.push(mbps(size, dd));
    }
    Ok(json!({
        "scenario": "large", "size_bytes": size, "runs": runs,
        "upload_mb_s": median(up.clone()), "download_mb_s": median(down.clone()),
        "upload_runs_mb_s": up, "download_runs_mb_s": down,
        // Only a local cluster's processes are measured.
        "upload_cpu_ns_per_byte": cluster.map(|_| median_map(&up_cpu)),
        "download_cpu_ns_per_byte": cluster.map(|_| median_map(&down_cpu)),
    }))
}

/// Per-key medians of several runs' maps.
fn median_map(runs: &[std::collections::BTreeMap<String, f64>]) -> Value {
    let Some(first) = runs.first() else {
        return Value::Null;
    };
    let m: std::collections::BTreeMap<&String, f64> = first
        .keys()
        .map(|k| {
            (
                k,
                median(runs.iter().filter_map(|r| r.get(k).copied()).collect()),
            )
        })
        .collect();
    json!(m)
}

async fn small(
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

async fn heal(
    http: &reqwest::Client,
    size: u64,
    datanodes: usize,
    dead_after: &str,
    tls: bool,
) -> anyhow::Result<Value> {
    progress(format!(
        "heal: local cluster of {datanodes} datanodes, storing {}",
        ByteSize(size)
    ));
    let mut cluster = ProcCluster::start(datanodes, "64MiB", dead_after, tls).await?;
    let t = Target {
        url: cluster.gateway.clone(),
        http: http.clone(),
    };
    let content = Content::new(size);
    let want = content.sha256();
    t.upload(&content, "bench-heal").await?;
    progress("heal: SIGKILL datanode-0");
    let t0 = Instant::now();
    cluster.kill("datanode-0")?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut dead_at = None;
    loop {
        let v: Value = t
            .http
            .get(format!("{}/info", t.url))
            .send()
            .await?
            .json()
            .await?;
        let dead = v["datanodes"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["state"] == "dead"));
        if dead && dead_at.is_none() {
            dead_at = Some(t0.elapsed());
        }
        let f: Value = t
            .http
            .get(format!("{}/files/{want}", t.url))
            .send()
            .await?
            .json()
            .await?;
        let healed = dead
            && v["under_replicated"] == 0
            && f["blocks"].as_array().is_some_and(|b| {
                b.iter()
                    .all(|b| b["replicas"].as_array().is_some_and(|r| r.len() >= 3))
            });
        if healed {
            break;
        }
        if Instant::now() > deadline {
            bail!("heal: not back to 3 replicas within 10 minutes: {v}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let healed = t0.elapsed();
    let (_, got) = t.download(&want).await?;
    ensure!(got == want, "heal: download after healing does not verify");
    Ok(json!({
        "scenario": "heal", "size_bytes": size, "datanodes": datanodes, "dead_after": dead_after,
        "declared_dead_s": dead_at.map(|d| d.as_secs_f64()), "healed_s": healed.as_secs_f64(),
        "re_replication_s": healed.as_secs_f64() - dead_at.map_or(0.0, |d| d.as_secs_f64()),
    }))
}

/// Replicas per block in the `namenode` scenario (the default replication).
const NN_REPLICAS: u32 = 3;

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
async fn namenode(
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
    let mut out = json!({"scenario": "namenode", "blocks": blocks, "replicas": NN_REPLICAS});
    for part in [map, created, reports] {
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

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Part 1 of [`namenode`]: memory per replica entry and full reports into the map.
fn block_map_figures(ids: &[kdfs_core::BlockId]) -> Value {
    use kdfs_namenode::blockmap::BlockMap;
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
    let t = Instant::now();
    let new = map.apply_full_report(NN_REPLICAS, report.clone());
    let new_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let again = map.apply_full_report(0, report);
    let again_ms = t.elapsed().as_secs_f64() * 1000.0;
    json!({
        "map_rss_growth_bytes": grown,
        "bytes_per_replica_entry": grown as f64 / entries as f64,
        "report_map_new_holder_ms": new_ms, "report_map_new_holder_accepted": new.accepted,
        "report_map_mapped_holder_ms": again_ms, "report_map_mapped_holder_accepted": again.accepted,
    })
}

type NnClient = pb::namenode_client::NamenodeClient<tonic::transport::Channel>;

/// Registers `NN_REPLICAS` datanodes and keeps them heartbeating (so they stay live
/// however long the bench takes) until `stop`.
async fn fake_datanodes(
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
    kdfs_namenode::http::prometheus()
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
        .filter_map(|t| {
            crate::procs::cpu_seconds(&format!("self/task/{}", t.file_name().to_string_lossy()))
        })
        .sum()
}

/// Part 2 of [`namenode`]: durable creates, then every created file read back.
async fn nn_creates(
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
    let cpu0 = crate::procs::cpu_seconds("self");
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
    let cpu_us = match (cpu0, crate::procs::cpu_seconds("self")) {
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
            upload_id: lease.upload_id,
            file_id: raw(&file.finalize()),
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
        ensure!(
            r.accepted == ids.len() as u64,
            "full report from the {who}: {} of {} blocks accepted",
            r.accepted,
            ids.len()
        );
        out[format!("report_grpc_{who}_ms")] = json!(ms);
    }
    Ok(out)
}

/// The same machine's limits, measured in this run.
async fn ceiling(size: u64, dir: &std::path::Path) -> anyhow::Result<Value> {
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

/// The replication factor of `--local` clusters (the namenode's default).
const LOCAL_REPLICATION: u32 = kdfs_namenode::config::DEFAULT_REPLICATION;

/// Threads of the parallel durable-commit ceiling (the `small` scenario's clients).
const COMMIT_THREADS: usize = 16;

/// CPU time of the whole machine so far (every core, every process, interrupts and
/// kernel threads too), from the first line of `/proc/stat`, in seconds.
fn machine_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal …: user to softirq but idle and
    // iowait (steal is time the hypervisor gave to other guests).
    let f: Vec<f64> = cpu
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let busy: f64 = f
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4 && i < 7)
        .map(|(_, v)| v)
        .sum();
    Some(busy / 100.0)
}

/// [`durable_commits`] by [`COMMIT_THREADS`] threads at once, as the datanodes do
/// them under the `small` scenario's load (concurrent flushes can be merged by the
/// block layer). Returns files/s and the whole machine's CPU µs per file, which also
/// counts the interrupts and kernel threads that complete the I/O (so it includes
/// whatever else the machine does meanwhile: run it on a quiet machine).
fn parallel_durable_commits(
    dir: &std::path::Path,
    run: &str,
    data: &[u8],
    shards: Shards,
) -> anyhow::Result<(f64, f64)> {
    // At most COMMIT_BYTES in all (a large --file-size must not write gigabytes).
    let per_thread = (SMALL_COMMITS / 2)
        .min(COMMIT_BYTES / (data.len().max(1) * COMMIT_THREADS))
        .max(8);
    let cpu0 = machine_cpu_seconds();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..COMMIT_THREADS)
            .map(|t| {
                s.spawn(move || commit_files(dir, &format!("{run}-{t}"), per_thread, data, shards))
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("commit thread panicked"))
    })?;
    let files = (per_thread * COMMIT_THREADS) as f64;
    let rate = files / t0.elapsed().as_secs_f64();
    let cpu_us = match (cpu0, machine_cpu_seconds()) {
        (Some(a), Some(b)) => (b - a) * 1e6 / files,
        _ => f64::NAN,
    };
    Ok((rate, cpu_us))
}

/// Bytes per file of the durable-commit ceiling (the `small` scenario's default size).
const SMALL_COMMIT: usize = 4 << 10;
/// Files per durable-commit run.
const SMALL_COMMITS: usize = 300;
/// Bytes a 16-thread durable-commit run writes at most (fewer files when they are
/// large; at least 8 per thread).
const COMMIT_BYTES: usize = 64 << 20;

/// The least a replica of a small block costs on this disk, one after another on one
/// thread: create a temp file, write it, fdatasync, rename it into a directory, fsync
/// the directory (what a datanode must do at the least before acknowledging; its
/// checksum sidecar and the namenode's commit come on top). Returns files/s and the
/// thread's CPU µs per file.
fn durable_commits(dir: &std::path::Path, run: usize, data: &[u8]) -> anyhow::Result<(f64, f64)> {
    let cpu0 = crate::procs::cpu_seconds("thread-self");
    let t0 = Instant::now();
    commit_files(
        dir,
        &format!("commit-{run}"),
        SMALL_COMMITS,
        data,
        Shards::Existing,
    )?;
    let rate = SMALL_COMMITS as f64 / t0.elapsed().as_secs_f64();
    let cpu_us = match (cpu0, crate::procs::cpu_seconds("thread-self")) {
        (Some(a), Some(b)) => (b - a) * 1e6 / SMALL_COMMITS as f64,
        _ => f64::NAN,
    };
    Ok((rate, cpu_us))
}

/// Where [`commit_files`] puts its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shards {
    /// All into one directory that exists: a store whose shard directories all exist.
    Existing,
    /// Each into a directory made for it (made, then its parent fsynced, as the store
    /// does for a new `ab/cd` directory): a new store, where nearly every block of a
    /// small run opens one of the 65,536 shard directories.
    New,
}

/// Commits `count` files of `data` durably, one after another, into `dir/<name>`, the
/// way the datanode store commits a replica by default: a named temp file in
/// `dir/<name>-tmp`, write, fdatasync, rename into place, fsync the directory.
fn commit_files(
    dir: &std::path::Path,
    name: &str,
    count: usize,
    data: &[u8],
    shards: Shards,
) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}-tmp"));
    let dest = dir.join(name);
    std::fs::create_dir(&tmp)?;
    std::fs::create_dir(&dest)?;
    for i in 0..count {
        let from = tmp.join(i.to_string());
        let mut f = std::fs::File::create(&from)?;
        f.write_all(data)?;
        f.sync_data()?;
        drop(f);
        let place = match shards {
            Shards::Existing => dest.clone(),
            Shards::New => {
                let d = dest.join(format!("d{i}"));
                std::fs::create_dir(&d)?;
                std::fs::File::open(&dest)?.sync_all()?;
                d
            }
        };
        std::fs::rename(&from, place.join(i.to_string()))?;
        std::fs::File::open(&place)?.sync_all()?;
    }
    Ok(())
}

fn sha_ni() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "sha_ni"))
}

fn disk_write(dir: &std::path::Path, buf: &[u8], chunks: u64) -> anyhow::Result<f64> {
    use std::io::Write;
    let p = dir.join("ceiling.bin");
    let t0 = Instant::now();
    let mut f = std::fs::File::create(&p)?;
    for _ in 0..chunks {
        f.write_all(buf)?;
    }
    f.sync_all()?;
    let d = t0.elapsed();
    std::fs::remove_file(&p)?;
    Ok(mbps(chunks * buf.len() as u64, d))
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

/// A [`Sink`] datanode service on 127.0.0.1 with the store's transport settings,
/// serving `piece` to reads.
struct SinkServer {
    addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl SinkServer {
    async fn start(piece: Bytes) -> anyhow::Result<Self> {
        use kdfs_proto::transport;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = tokio_util::sync::CancellationToken::new();
        let server = pb::datanode_server::DatanodeServer::new(Sink { piece })
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE);
        let serve = transport::server()
            .add_service(server)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        Ok(Self {
            addr,
            stop,
            task: tokio::spawn(serve),
        })
    }

    async fn client(
        &self,
    ) -> anyhow::Result<pb::datanode_client::DatanodeClient<tonic::transport::Channel>> {
        use kdfs_proto::transport;
        let channel = transport::endpoint(&self.addr.to_string())?
            .connect()
            .await?;
        Ok(pb::datanode_client::DatanodeClient::new(channel)
            .max_encoding_message_size(transport::MAX_MESSAGE_SIZE))
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Machine CPU µs per operation of `ops` runs of `op`, [`COMMIT_THREADS`] at a time
/// (see [`machine_cpu_seconds`]).
async fn machine_cpu_per_op<F, Fut>(ops: usize, op: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cpu0 = machine_cpu_seconds();
    futures::stream::iter(0..ops)
        .map(op)
        .buffer_unordered(COMMIT_THREADS)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(match (cpu0, machine_cpu_seconds()) {
        (Some(a), Some(b)) => (b - a) * 1e6 / ops as f64,
        _ => f64::NAN,
    })
}

/// Operations per part of the upload floor (fewer for a run of fewer files).
const FLOOR_OPS: usize = 2_000;

/// The file record's part of the upload floor: machine CPU µs per record of a one-block
/// file of `len` bytes made durable by the namenode's own group-commit writer,
/// [`COMMIT_THREADS`] committers at once, its database in `dir` (the lease row is
/// queued first, as `BeginUpload` does; here it usually lands in its commit's batch and
/// is never written, which a real upload only gets when it is quick).
async fn meta_commit_floor(dir: &std::path::Path, len: usize, ops: usize) -> anyhow::Result<f64> {
    use kdfs_core::{BlockId, FileId};
    use kdfs_namenode::meta::{FileRecord, Lease, Op, Store, Writer};
    let db_dir = dir.join("floor-meta");
    let store = std::sync::Arc::new(
        Store::open(&db_dir).with_context(|| format!("open {}", db_dir.display()))?,
    );
    let (writer, stopped) = Writer::spawn(store, Box::new(|_, _| {}));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let len = len as u64;
    let meta_commit = machine_cpu_per_op(ops, |i| {
        let writer = writer.clone();
        async move {
            let upload_id = format!("floor-{i}");
            writer
                .enqueue(Op::PutLease(Lease {
                    id: upload_id.clone(),
                    name: upload_id.clone(),
                    content_type: "application/octet-stream".into(),
                    replication: LOCAL_REPLICATION,
                    begin_ms: now_ms,
                    expires_ms: now_ms + 60_000,
                }))
                .await?;
            let digest: [u8; 32] = Sha256::digest(upload_id.as_bytes()).into();
            writer
                .submit(Op::Commit {
                    record: FileRecord {
                        id: FileId::from_bytes(digest),
                        name: upload_id.clone(),
                        size: len,
                        content_type: "application/octet-stream".into(),
                        created_ms: now_ms as i64,
                        replication: LOCAL_REPLICATION,
                        blocks: vec![(BlockId::from_bytes(digest), len)],
                    },
                    replicas: vec![(0..LOCAL_REPLICATION).collect()],
                    upload_id,
                })
                .await?;
            Ok(())
        }
    })
    .await?;
    drop(writer);
    let _ = stopped.await;
    std::fs::remove_dir_all(&db_dir).with_context(|| format!("remove {}", db_dir.display()))?;
    Ok(meta_commit)
}

/// The hashing part of the floors: CPU µs of one SHA-256 pass over `data` on this
/// thread, the median of five timed loops.
fn sha256_us(data: &[u8]) -> f64 {
    const HASHES: u32 = 5_000;
    median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..HASHES {
                    std::hint::black_box(Sha256::digest(std::hint::black_box(data)));
                }
                t.elapsed().as_secs_f64() * 1e6 / f64::from(HASHES)
            })
            .collect(),
    )
}

/// The network work every small upload at replication 3, and every small download,
/// needs at the least, each part measured alone on this machine, as machine CPU µs per
/// operation with 16 callers at once (client and server in this process, over
/// 127.0.0.1, the store's transport settings): `http`, a multipart POST of the file to
/// an HTTP server that parses it and answers a line of JSON (the gateway's front);
/// `http_get`, a GET that the server answers with the file; `unary`, one gRPC call
/// with an empty answer (an upload makes two: BeginUpload, CommitFile; a download one:
/// GetFile); `stream`, one WriteBlock stream of a header, the file and a trailer into a
/// sink (an upload makes three, one per hop); `read_stream`, one ReadBlock answered by
/// one message of the file (a download makes one). Nothing here stores, hashes or logs.
async fn floor(file: Bytes, ops: usize) -> anyhow::Result<Value> {
    let sink = SinkServer::start(file.clone()).await?;
    let client = sink.client().await?;
    let unary = machine_cpu_per_op(ops, |i| {
        let mut c = client.clone();
        async move {
            c.transfer_block(pb::ReplicateBlock {
                block_id: Bytes::copy_from_slice(&[i as u8; 32]),
                ..Default::default()
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let stream = machine_cpu_per_op(ops, |i| {
        let mut c = client.clone();
        let file = file.clone();
        async move {
            use pb::write_block_request::Msg;
            let msgs = [
                Msg::Header(pb::WriteHeader {
                    upload_id: format!("floor-{i}"),
                    max_length: file.len() as u64,
                    ..Default::default()
                }),
                Msg::Data(file),
                Msg::Trailer(pb::WriteTrailer {
                    block_id: Bytes::copy_from_slice(&[i as u8; 32]),
                }),
            ]
            .map(|m| pb::WriteBlockRequest { msg: Some(m) });
            c.write_block(futures::stream::iter(msgs)).await?;
            Ok(())
        }
    })
    .await?;
    let len = file.len();
    let read_stream = machine_cpu_per_op(ops, |i| {
        let mut c = client.clone();
        async move {
            let mut r = c
                .read_block(pb::ReadBlockRequest {
                    block_id: Bytes::copy_from_slice(&[i as u8; 32]),
                    offset: 0,
                    length: len as u64,
                })
                .await?
                .into_inner();
            let mut got = 0;
            while let Some(m) = r.message().await? {
                got += m.data.len();
            }
            ensure!(got == len, "floor read got {got} of {len} bytes");
            Ok(())
        }
    })
    .await?;
    sink.stop().await;
    let (http, http_get) = http_floor(file, ops).await?;
    Ok(json!({
        "http_us": http, "http_get_us": http_get, "unary_us": unary,
        "stream_us": stream, "read_stream_us": read_stream,
    }))
}

/// The `http` and `http_get` parts of [`floor`].
async fn http_floor(file: Bytes, ops: usize) -> anyhow::Result<(f64, f64)> {
    use axum::extract::Request;
    use std::future::IntoFuture;
    async fn parse(req: Request) -> Result<axum::Json<Value>, axum::http::StatusCode> {
        let bad = |_| axum::http::StatusCode::BAD_REQUEST;
        let ct = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let boundary = multer::parse_boundary(ct).map_err(bad)?;
        let mut form = multer::Multipart::new(req.into_body().into_data_stream(), boundary);
        let mut n = 0;
        while let Some(mut field) = form.next_field().await.map_err(bad)? {
            while let Some(c) = field.chunk().await.map_err(bad)? {
                n += c.len();
            }
        }
        Ok(axum::Json(json!({ "size": n })))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let url = format!("{base}/upload");
    let stop = tokio_util::sync::CancellationToken::new();
    let app = axum::Router::new()
        .route("/upload", axum::routing::post(parse))
        .route(
            "/download",
            axum::routing::get({
                let file = file.clone();
                move || async move { file }
            }),
        );
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let http = reqwest::Client::new();
    let cpu = machine_cpu_per_op(ops, |_| {
        let (http, url, file) = (http.clone(), url.clone(), file.clone());
        async move {
            let part = reqwest::multipart::Part::stream_with_length(
                reqwest::Body::from(file.clone()),
                file.len() as u64,
            )
            .file_name("floor")
            .mime_str("application/octet-stream")?;
            let form = reqwest::multipart::Form::new().part("file", part);
            let r = http.post(&url).multipart(form).send().await?;
            ensure!(
                r.status().is_success(),
                "floor server answered {}",
                r.status()
            );
            let v: Value = r.json().await?;
            ensure!(v["size"] == json!(file.len()), "floor server read {v}");
            Ok(())
        }
    })
    .await?;
    let get = machine_cpu_per_op(ops, |_| {
        let (http, url, len) = (http.clone(), format!("{base}/download"), file.len());
        async move {
            let r = http.get(&url).send().await?;
            ensure!(
                r.status().is_success(),
                "floor server answered {}",
                r.status()
            );
            let got = r.bytes().await?.len();
            ensure!(got == len, "floor download got {got} of {len} bytes");
            Ok(())
        }
    })
    .await?;
    stop.cancel();
    let _ = server.await;
    Ok((cpu, get))
}

/// Counts what it is sent; serves its `piece` to every read.
struct Sink {
    piece: Bytes,
}

#[tonic::async_trait]
impl pb::datanode_server::Datanode for Sink {
    async fn write_block(
        &self,
        req: tonic::Request<tonic::Streaming<pb::WriteBlockRequest>>,
    ) -> Result<tonic::Response<pb::WriteBlockResponse>, tonic::Status> {
        let mut s = req.into_inner();
        let mut n = 0u64;
        while let Some(m) = s.message().await? {
            if let Some(pb::write_block_request::Msg::Data(d)) = m.msg {
                n += d.len() as u64;
            }
        }
        Ok(tonic::Response::new(pb::WriteBlockResponse {
            length: n,
            ..Default::default()
        }))
    }

    async fn write_blocks(
        &self,
        _: tonic::Request<tonic::Streaming<pb::WriteBlockRequest>>,
    ) -> Result<tonic::Response<pb::WriteBlocksResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("WriteBlocks"))
    }

    type ReadBlockStream =
        futures::stream::Iter<std::option::IntoIter<Result<pb::ReadBlockResponse, tonic::Status>>>;

    /// One message of at most `length` bytes of the piece: the floor's read stream.
    async fn read_block(
        &self,
        req: tonic::Request<pb::ReadBlockRequest>,
    ) -> Result<tonic::Response<Self::ReadBlockStream>, tonic::Status> {
        let len = (req.into_inner().length as usize).min(self.piece.len());
        let data = self.piece.slice(..len);
        Ok(tonic::Response::new(futures::stream::iter(Some(Ok(
            pb::ReadBlockResponse {
                offset: 0,
                crc32c: 0,
                data,
            },
        )))))
    }

    /// Answers at once: the floor's unary call.
    async fn transfer_block(
        &self,
        _: tonic::Request<pb::ReplicateBlock>,
    ) -> Result<tonic::Response<pb::TransferBlockResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::TransferBlockResponse::default()))
    }
}

/// The per-process CPU maps `upload_cpu_<key>` and `download_cpu_<key>` of a result.
fn print_cpu(r: &Value, key: &str, unit: &str, decimals: usize) {
    for dir in ["upload", "download"] {
        if let Some(m) = r[format!("{dir}_cpu_{key}")].as_object() {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k} {:.*}", decimals, v.as_f64().unwrap_or(0.0)))
                .collect();
            println!("          {dir} CPU {unit}: {}", parts.join(", "));
        }
    }
}

fn print_human(r: &Value) {
    let f = |k: &str| {
        r[k].as_f64()
            .map(|v| format!("{v:.1}"))
            .unwrap_or_else(|| "-".into())
    };
    match r["scenario"].as_str().unwrap_or("") {
        "ceiling" => println!(
            "ceiling   sha256 {} MB/s (SHA-NI: {})   one gRPC stream {} MB/s   disk write+fsync {} MB/s   durable 4 KiB commits {}/s ({} µs CPU each); by {} threads {}/s ({} µs machine CPU each)",
            f("sha256_mb_s"),
            r["sha_ni"],
            f("grpc_stream_mb_s"),
            f("disk_fsync_write_mb_s"),
            f("durable_small_commits_s"),
            f("durable_small_commit_cpu_us"),
            COMMIT_THREADS,
            f("parallel_durable_commits_s"),
            f("parallel_durable_commit_machine_cpu_us")
        ),
        "large" => {
            println!(
                "large     {} x{}: upload {} MB/s, download {} MB/s (medians)",
                ByteSize(r["size_bytes"].as_u64().unwrap_or(0)),
                r["runs"],
                f("upload_mb_s"),
                f("download_mb_s")
            );
            print_cpu(r, "ns_per_byte", "ns/byte", 2);
            if let Some(m) = r["peak_rss_bytes"].as_object() {
                for (k, v) in m {
                    println!(
                        "          peak RSS {k:<12} {:.1} MiB",
                        v.as_f64().unwrap_or(0.0) / (1 << 20) as f64
                    );
                }
            }
        }
        "small" => {
            println!(
                "small     {} x {} by {} clients: upload {} ops/s (p50 {} ms, p99 {} ms), download {} ops/s (p50 {} ms, p99 {} ms)",
                r["count"],
                ByteSize(r["file_size_bytes"].as_u64().unwrap_or(0)),
                r["concurrency"],
                f("upload_ops_s"),
                f("upload_p50_ms"),
                f("upload_p99_ms"),
                f("download_ops_s"),
                f("download_p50_ms"),
                f("download_p99_ms")
            );
            print_cpu(r, "us_per_op", "µs/op", 0);
            if r["same_state_parallel_commits_s"].is_number() {
                println!(
                    "          the disk just before: {} durable commits/s by {COMMIT_THREADS} threads ({} µs machine CPU each), so at most {} uploads/s at replication {LOCAL_REPLICATION}",
                    f("same_state_parallel_commits_s"),
                    f("same_state_commit_machine_cpu_us"),
                    f("upload_bound_by_commits_s"),
                );
                println!(
                    "          ... each into a new shard directory, as in a new store: {} durable commits/s ({} µs machine CPU each)",
                    f("new_store_parallel_commits_s"),
                    f("new_store_commit_machine_cpu_us"),
                );
            }
            let fl = &r["floor"];
            if fl.is_object() {
                let g = |k: &str| fl[k].as_f64().map_or("-".into(), |v| format!("{v:.0}"));
                println!(
                    "          least machine CPU per upload, each part alone just before: HTTP {} + 2 x gRPC call {} + file record commit {} + 4 x SHA-256 {} + 3 x WriteBlock stream {} + 3 x durable commit {} = {} µs, so at most {} uploads/s on {} cores",
                    g("http_us"),
                    g("unary_us"),
                    g("meta_commit_us"),
                    g("sha256_us"),
                    g("stream_us"),
                    g("commit_us"),
                    g("upload_total_us"),
                    g("uploads_s"),
                    fl["cores"],
                );
                println!(
                    "          ... with the new store's commits ({} µs): {} µs, so at most {} uploads/s",
                    g("new_store_commit_us"),
                    g("new_store_upload_total_us"),
                    g("new_store_uploads_s"),
                );
                println!(
                    "          least machine CPU per download: HTTP GET {} + gRPC call {} + ReadBlock stream {} + 2 x SHA-256 {} = {} µs, so at most {} downloads/s",
                    g("http_get_us"),
                    g("unary_us"),
                    g("read_stream_us"),
                    g("sha256_us"),
                    g("download_total_us"),
                    g("downloads_s"),
                );
            }
        }
        "heal" => println!(
            "heal      {} on {} datanodes, dead-after {}: declared dead after {} s, healed after {} s (re-replication {} s)",
            ByteSize(r["size_bytes"].as_u64().unwrap_or(0)),
            r["datanodes"],
            r["dead_after"].as_str().unwrap_or(""),
            f("declared_dead_s"),
            f("healed_s"),
            f("re_replication_s")
        ),
        "namenode" => {
            println!(
                "namenode  {} blocks x {}: {} bytes per replica entry; full report into the map {} ms (new holder), {} ms (mapped holder)",
                r["blocks"],
                r["replicas"],
                f("bytes_per_replica_entry"),
                f("report_map_new_holder_ms"),
                f("report_map_mapped_holder_ms")
            );
            println!(
                "          full report over gRPC {} ms (new holder), {} ms (mapped holder); committing those blocks took {} s",
                f("report_grpc_new_holder_ms"),
                f("report_grpc_mapped_holder_ms"),
                f("commit_blocks_s")
            );
            println!(
                "          durable creates: {} by {} clients: {} creates/s (p50 {} ms, p99 {} ms), {} creates per fsync, {} µs CPU per create (client and namenode; {} in the metadata writer); GetFile {} /s",
                r["creates"],
                r["concurrency"],
                f("creates_s"),
                f("create_p50_ms"),
                f("create_p99_ms"),
                f("creates_per_group_commit"),
                f("create_cpu_us"),
                f("create_writer_cpu_us"),
                f("get_file_s")
            );
        }
        _ => println!("{r}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_unique_per_chunk() {
        let c = Content::new(3 * GEN_CHUNK as u64 + 5);
        assert_eq!(c.chunks(), 4);
        assert_eq!(c.chunk(3).len(), 5);
        assert_ne!(c.chunk(0), c.chunk(1));
        assert_eq!(c.sha256(), c.sha256());
        assert_eq!(Content::new(0).chunks(), 0);
    }

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
    }

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), 51.0);
        assert_eq!(percentile(&d, 0.99), 99.0);
    }
}

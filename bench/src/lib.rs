//! The kdfs benchmark: throughput, small-file rate, heal time, the namenode's scale,
//! the block store and the machine's ceilings, measured in one run so the figures can
//! be compared side by side. `kdfs bench` parses [`BenchArgs`] and calls [`run`].
//!
//! Against a running gateway (`--gateway`) or, with `--local`, against a fresh cluster
//! of child processes ([`local`]) whose peak RSS is read from `/proc`. Every download
//! is verified against the SHA-256 of what was uploaded; a mismatch ends the bench
//! with an error. The `namenode` and `store` scenarios need no cluster: they load the
//! namenode or datanode library in this process. Progress goes to stderr, results to
//! stdout (a table, or one JSON object per scenario with `--json`; see [`report`]).
//!
//! - [`scenario`]: one file per scenario, each returning its JSON result.
//! - [`content`]: synthetic, verifiable file content; [`target`]: the gateway's HTTP API.
//! - [`disk`], [`floor`], [`sink`]: the machine's ceilings and the per-operation floors
//!   the cluster's figures are read against; [`machine`]: `/proc` readings;
//!   [`stats`]: medians and percentiles.

mod content;
mod disk;
mod floor;
mod local;
mod machine;
mod report;
mod scenario;
mod sink;
mod stats;
mod target;

use std::time::Duration;

use anyhow::ensure;
use kdfs_core::ByteSize;
use serde_json::json;

use crate::local::ProcCluster;
use crate::report::{print_human, progress};
use crate::scenario::{ceiling, failover, heal, large, namenode, s3, small, store};
use crate::target::Target;

/// Every scenario `--scenarios` accepts.
const SCENARIOS: [&str; 8] = [
    "large", "small", "heal", "ceiling", "namenode", "store", "failover", "s3",
];

/// The flags of `kdfs bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Start a fresh local cluster of child processes (binaries next to this one).
    #[arg(long)]
    pub local: bool,
    /// Scenarios to run, comma separated: large, small, heal, ceiling, namenode (one
    /// namenode and an HA group of three side by side), store (the datanode's block
    /// store on this disk, no cluster: 64 MiB block writes and verified reads, the gRPC
    /// write chain of 1 and 3 in-process datanodes, and the startup scan of --blocks
    /// blocks), failover (three namenodes, the leader SIGKILLed --kills times under
    /// upload load; needs --local), s3 (the S3 port with boto3 beside /upload and
    /// /download: --size PUT and GET, --count small objects by --concurrency clients).
    #[arg(long, value_delimiter = ',', default_value = "ceiling,large,small")]
    pub scenarios: Vec<String>,
    /// Size of the large file (and of the data stored for `heal`).
    #[arg(long, default_value = "1GiB")]
    pub size: ByteSize,
    /// Runs of `large` and blocks of each kind in `store` (the median is reported).
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
    /// Blocks of the `namenode` scenario's block map and full block report, and of the
    /// store that the `store` scenario scans.
    #[arg(long, default_value_t = 1_000_000)]
    pub blocks: u64,
    /// Files created (BeginUpload + CommitFile) by the `namenode` scenario.
    #[arg(long, default_value_t = 20_000)]
    pub creates: usize,
    /// Leader kills of the `failover` scenario.
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// A Python with boto3, the S3 client of the `s3` scenario.
    #[arg(long, env = "KDFS_BENCH_PYTHON", default_value = "python3")]
    pub python: std::path::PathBuf,
    /// The S3 port of `--gateway` for the `s3` scenario (with --local, the local
    /// cluster's).
    #[arg(long, env = "KDFS_BENCH_S3_URL")]
    pub s3_url: Option<String>,
    /// The key pair the `s3` scenario signs with (with --local, the cluster's own).
    #[arg(long, env = "KDFS_BENCH_S3_ACCESS_KEY", requires = "s3_secret_key")]
    pub s3_access_key: Option<String>,
    #[arg(
        long,
        env = "KDFS_BENCH_S3_SECRET_KEY",
        hide_env_values = true,
        requires = "s3_access_key"
    )]
    pub s3_secret_key: Option<String>,
    /// Print one JSON object per scenario instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The `s3` scenario against the local cluster's S3 port or `--s3-url`.
async fn s3_scenario(
    args: &BenchArgs,
    gateway: &str,
    http: &reqwest::Client,
    cluster: Option<&ProcCluster>,
) -> anyhow::Result<serde_json::Value> {
    let (endpoint, keys) = match cluster {
        Some(c) => (
            c.s3.clone(),
            Some((local::S3_KEYS.0.to_owned(), local::S3_KEYS.1.to_owned())),
        ),
        None => (
            args.s3_url.clone(),
            args.s3_access_key.clone().zip(args.s3_secret_key.clone()),
        ),
    };
    let (Some(endpoint), Some((access_key, secret_key))) = (endpoint, keys) else {
        anyhow::bail!(
            "the s3 scenario needs --local, or --s3-url with --s3-access-key and --s3-secret-key"
        );
    };
    let target = Target {
        url: cluster.map_or_else(|| gateway.to_owned(), |c| c.gateway.clone()),
        http: http.clone(),
    };
    let client = s3::S3Client {
        endpoint,
        access_key,
        secret_key,
        python: args.python.clone(),
    };
    s3::s3(
        &target,
        &client,
        args.size.bytes(),
        args.runs,
        args.count,
        args.file_size.bytes(),
        args.concurrency,
    )
    .await
}

/// Runs the chosen scenarios against `gateway` (or a local cluster with `--local`)
/// and prints their results.
pub async fn run(gateway: &str, args: BenchArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut results = Vec::new();
    let wants = |s: &str| args.scenarios.iter().any(|x| x == s);
    for s in &args.scenarios {
        ensure!(
            SCENARIOS.contains(&s.as_str()),
            "unknown scenario {s:?}: use {}",
            SCENARIOS.join(", ")
        );
    }

    // First, while this process's heap is still small: its memory figure is the growth
    // of the resident set.
    if wants("namenode") {
        results.push(
            namenode::namenode(
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
        results.push(ceiling::ceiling(args.size.bytes().min(1 << 30), dir).await?);
    }
    if wants("store") {
        results.push(store::store(std::path::Path::new("."), args.runs, args.blocks).await?);
    }

    if wants("large") || wants("small") {
        let cluster = if args.local {
            progress(format!(
                "starting a local cluster with {} datanodes",
                args.datanodes
            ));
            Some(
                ProcCluster::start(args.datanodes, "64MiB", &args.dead_after, args.tls, false)
                    .await?,
            )
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
            let mut r =
                large::large(&target, args.size.bytes(), args.runs, cluster.as_ref()).await?;
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
                small::small(
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

    if wants("s3") {
        let cluster = if args.local {
            progress(format!(
                "starting a local cluster with {} datanodes and an S3 port",
                args.datanodes
            ));
            Some(
                ProcCluster::start(args.datanodes, "64MiB", &args.dead_after, args.tls, true)
                    .await?,
            )
        } else {
            None
        };
        results.push(s3_scenario(&args, gateway, &http, cluster.as_ref()).await?);
    }

    if wants("heal") {
        ensure!(
            args.local,
            "the heal scenario needs --local (it kills a datanode)"
        );
        results.push(
            heal::heal(
                &http,
                args.size.bytes(),
                args.datanodes.max(4),
                &args.dead_after,
                args.tls,
            )
            .await?,
        );
    }

    if wants("failover") {
        ensure!(
            args.local,
            "the failover scenario needs --local (it kills namenodes)"
        );
        results.push(
            failover::failover(args.kills, args.datanodes, &args.dead_after, args.tls).await?,
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

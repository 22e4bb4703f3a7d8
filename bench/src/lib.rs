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
use crate::scenario::{ceiling, failover, heal, large, namenode, small, store};
use crate::target::Target;

/// Every scenario `--scenarios` accepts.
const SCENARIOS: [&str; 7] = [
    "large", "small", "heal", "ceiling", "namenode", "store", "failover",
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
    /// upload load; needs --local).
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
    /// Print one JSON object per scenario instead of tables.
    #[arg(long)]
    pub json: bool,
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

//! `large`: one file of `--size` uploaded and downloaded through the gateway
//! `--runs` times, the medians reported, with each local process's CPU per byte.

use std::time::Instant;

use anyhow::ensure;
use kdfs_core::ByteSize;
use serde_json::{Value, json};

use crate::content::Content;
use crate::local::ProcCluster;
use crate::report::progress;
use crate::stats::{cpu_per_byte, mbps, median, median_map};
use crate::target::Target;

pub(crate) async fn large(
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

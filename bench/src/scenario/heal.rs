//! `heal`: a local cluster stores a file, one datanode is SIGKILLed, and the time
//! until it is declared dead and until every block is back to three replicas is
//! measured; the file is then downloaded and verified.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use kdfs_core::ByteSize;
use serde_json::{Value, json};

use crate::content::Content;
use crate::local::ProcCluster;
use crate::report::progress;
use crate::target::Target;

pub(crate) async fn heal(
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
    let mut cluster = ProcCluster::start(datanodes, "64MiB", dead_after, tls, false).await?;
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
        let v = t.get_json("/info").await?;
        let dead = v["datanodes"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["state"] == "dead"));
        if dead && dead_at.is_none() {
            dead_at = Some(t0.elapsed());
        }
        let f = t.get_json(&format!("/files/{want}")).await?;
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

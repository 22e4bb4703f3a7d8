//! `failover`: how long uploads stop when the namenode leader dies. An HA group of
//! three namenodes, datanodes and a gateway as child processes (the test kit's
//! [`ProcessCluster`], binaries beside this one); two clients upload (small and
//! multi-block files) and delete without pause while the leader is SIGKILLed `kills`
//! times, each killed namenode started again once uploads are back. A failover is the
//! time from the kill to the first upload started after it that succeeded. Every
//! acknowledged upload is downloaded and hashed at the end, and must still be listed.

use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use kdfs_testkit::{Binaries, Options, ProcessCluster, Workload};
use serde_json::{Value, json};

use crate::content::now_nanos;
use crate::report::progress;
use crate::stats::median;

/// Block size of the cluster: small, so multi-block uploads stay a few MiB.
const BLOCK_SIZE: u64 = 1 << 20;
/// Background clients.
const CLIENTS: usize = 2;
/// How long one step (an election, a restarted namenode catching up) may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs the scenario on a thread of its own (the cluster's children die with the
/// thread that started them, and every wait here blocks).
pub(crate) async fn failover(
    kills: usize,
    datanodes: usize,
    dead_after: &str,
    tls: bool,
) -> anyhow::Result<Value> {
    let dead_after = dead_after.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-failover".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(|| measure(kills, datanodes, &dead_after, tls));
            let _ = tx.send(r);
        })
        .context("starting the failover thread")?;
    match rx.await.context("the failover thread ended")? {
        Ok(r) => r,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into());
            Err(anyhow!("failover: {why}"))
        }
    }
}

fn measure(kills: usize, datanodes: usize, dead_after: &str, tls: bool) -> anyhow::Result<Value> {
    ensure!(kills >= 1, "--kills must be at least 1");
    progress(format!(
        "failover: starting 3 namenodes, {datanodes} datanodes and a gateway"
    ));
    let opts = Options::default()
        .namenodes(3)
        .datanodes(datanodes)
        .default_replication()
        .block_size(BLOCK_SIZE)
        .heartbeat("1s")
        .dead_after(dead_after)
        .fast_recovery(false)
        .tls(tls)
        .binaries(Binaries::BesideExe)
        .rust_log(None)
        .prefix("kdfs-bench-failover-")
        .start_timeout(PATIENCE);
    let mut c = ProcessCluster::try_start(opts).map_err(|e| anyhow!(e))?;
    let load = Workload::start(&c.api, CLIENTS, now_nanos(), BLOCK_SIZE as usize);
    let mut times = Vec::new();
    for k in 0..kills {
        let leader = c.wait_leader(&format!("a leader before kill {k}"), PATIENCE);
        let killed = std::time::Instant::now();
        c.kill_namenode_at(leader);
        c.wait_until(&format!("an upload after kill {k}"), PATIENCE, || {
            load.first_upload_ok_after(killed).is_some()
        });
        let took = load
            .first_upload_ok_after(killed)
            .expect("an upload succeeded");
        progress(format!(
            "failover: kill {} of {kills} (namenode {leader}): uploads back after {:.2}s",
            k + 1,
            took.as_secs_f64()
        ));
        times.push(took.as_secs_f64());
        c.start_namenode_at(leader);
        c.wait_caught_up(&format!("namenode {leader} caught up"), PATIENCE);
    }
    let outcome = load.finish();
    let failed = outcome.ops.iter().filter(|o| o.result.is_err()).count();
    progress(format!(
        "failover: verifying {} acknowledged uploads",
        outcome.present.len()
    ));
    let listed: std::collections::BTreeSet<String> = c.listed_hashes().into_iter().collect();
    let missing = outcome
        .present
        .iter()
        .filter(|s| !listed.contains(&s.hash))
        .count();
    ensure!(
        missing == 0,
        "{missing} acknowledged uploads are not listed"
    );
    c.verify_all(&outcome.present);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(json!({
        "scenario": "failover",
        "kills": kills,
        "datanodes": datanodes,
        "failover_min_s": sorted[0],
        "failover_median_s": median(times.clone()),
        "failover_max_s": sorted[sorted.len() - 1],
        "failover_s": times,
        "files_present": outcome.present.len(),
        "deletes_acknowledged": outcome.gone.len(),
        "calls_failed": failed,
    }))
}

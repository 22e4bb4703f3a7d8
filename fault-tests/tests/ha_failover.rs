//! Issue 27: SIGKILL the leader of three namenodes while clients upload (small and
//! multi-block files) and delete, restart it, and kill the next leader, round after
//! round. Every upload or delete that got a 2xx holds afterwards on every namenode,
//! no upload is reported as stored that is not (every present file is downloaded and
//! hashed), every failure is a retryable 5xx, and uploads succeed again within
//! `FAILOVER_BOUND` of each kill; the failover times' distribution is printed.
//!
//! The suite runs three rounds; the ten-kill measurement the issue asks for is
//! `#[ignore]`d (about a minute and a half more) and run by `.ci/run`.

mod common;

use std::time::{Duration, Instant};

use common::ha::{
    FAILOVER_PATIENCE, assert_retryable_failures, distribution, succeeded, verify_on_every_namenode,
};
use kdfs_testkit::workload::OpKind;
use kdfs_testkit::{Options, ProcessCluster, Workload};

/// Uploads must succeed again this soon after a leader is killed.
const FAILOVER_BOUND: Duration = Duration::from_secs(15);
/// Background clients uploading and deleting.
const CLIENTS: usize = 2;

/// Kills the leader `kills` times (restarting each killed namenode once a new leader
/// serves) under load; checks everything the module docs promise. Returns the
/// failover times (kill to the first upload started after it that succeeded).
fn kill_rounds(kills: usize, scenario: &str) -> Vec<Duration> {
    let opts = Options::default().namenodes(3);
    let block_size = opts.block_size as usize;
    let mut c = ProcessCluster::start(opts);
    let load = Workload::start(&c.api, CLIENTS, 27, block_size);
    let t0 = Instant::now();
    c.wait_until("5 uploads before the first kill", FAILOVER_PATIENCE, || {
        load.uploads_ok_since(t0) >= 5
    });
    let mut failovers = Vec::new();
    for round in 0..kills {
        let leader = c.wait_leader(&format!("a leader before kill {round}"), FAILOVER_PATIENCE);
        let killed = Instant::now();
        c.kill_namenode_at(leader);
        c.wait_until(
            &format!("an upload to succeed after killing leader {leader} (kill {round})"),
            FAILOVER_PATIENCE,
            || load.first_upload_ok_after(killed).is_some(),
        );
        let took = load
            .first_upload_ok_after(killed)
            .expect("an upload succeeded");
        eprintln!(
            "{scenario}: kill {round} of namenode {leader}: uploads back after {:.2}s",
            took.as_secs_f64()
        );
        failovers.push(took);
        c.start_namenode_at(leader);
        c.wait_caught_up(
            &format!("namenode {leader} caught up after its restart"),
            FAILOVER_PATIENCE,
        );
    }
    let outcome = load.finish();
    let failed = assert_retryable_failures(&outcome.ops);
    eprintln!(
        "{scenario}: {} uploads and {} deletes acknowledged, {failed} calls failed (all \
         retryable); failover {}",
        succeeded(&outcome.ops, OpKind::Upload),
        succeeded(&outcome.ops, OpKind::Delete),
        distribution(&failovers)
    );
    verify_on_every_namenode(&mut c, &outcome, scenario);
    let slow: Vec<&Duration> = failovers.iter().filter(|t| **t > FAILOVER_BOUND).collect();
    assert!(
        slow.is_empty(),
        "uploads came back later than {FAILOVER_BOUND:?} after a kill: {slow:?} ({})",
        distribution(&failovers)
    );
    failovers
}

#[test]
fn leader_killed_and_restarted_round_after_round_loses_nothing() {
    kill_rounds(3, "ha kill rounds");
}

#[test]
#[ignore = "ten leader kills under load take minutes; .ci/run runs it (KDFS_HA_KILLS sets the count)"]
fn leader_killed_ten_times_failover_distribution() {
    let kills = std::env::var("KDFS_HA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    kill_rounds(kills, "ha failover measurement");
}

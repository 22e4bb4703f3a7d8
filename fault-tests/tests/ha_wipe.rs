//! Issue 27: a follower's disk is lost. It is started again, empty, with its id: it
//! joins the existing group (it never forms one of its own) and catches up; then the
//! leader is killed, and killed again until the wiped namenode leads: every file
//! acknowledged before and after the wipe is there, every acknowledged delete gone.
//! Every link is mutual TLS, so the namenodes' Raft traffic (and the wiped one's
//! catching up) goes with their role certificates, as deployed.

mod common;

use std::time::Instant;

use common::ha::{FAILOVER_PATIENCE, assert_retryable_failures, check_records};
use kdfs_testkit::{Options, ProcessCluster, Workload};

#[test]
fn a_wiped_follower_catches_up_and_then_leads_without_losing_a_file() {
    let opts = Options::default().namenodes(3).tls(true);
    let block_size = opts.block_size as usize;
    let mut c = ProcessCluster::start(opts);
    let load = Workload::start(&c.api, 2, 2_900, block_size);
    let t0 = Instant::now();
    c.wait_until("uploads before the wipe", FAILOVER_PATIENCE, || {
        load.uploads_ok_since(t0) >= 8
    });
    let leader = c.wait_leader("a leader", FAILOVER_PATIENCE);
    let wiped = (leader + 1) % 3;
    let lost = Instant::now();
    c.wipe_namenode_at(wiped);
    let after = Instant::now();
    c.wait_until("uploads after the wipe", FAILOVER_PATIENCE, || {
        load.uploads_ok_since(after) >= 4
    });
    let outcome = load.finish();
    assert_retryable_failures(&outcome.ops);
    c.wait_caught_up("the wiped namenode caught up", FAILOVER_PATIENCE);
    let caught_up = lost.elapsed();
    let (term, _, applied) = c.namenode_raft_figures(wiped).expect("raft figures");
    let kills = c.lead_with(wiped, FAILOVER_PATIENCE);
    check_records(
        &c,
        &outcome,
        &format!("with the wiped namenode {wiped} leading"),
    );
    c.verify_all(&outcome.present);
    eprintln!(
        "ha wipe: namenode {wiped} wiped and restarted, caught up to index {applied} (term \
         {term}) within {:.2}s; leads after {kills} leader kills with all {} acknowledged \
         uploads and {} deletes intact",
        caught_up.as_secs_f64(),
        outcome.present.len(),
        outcome.gone.len()
    );
}

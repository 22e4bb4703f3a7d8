//! A datanode given several namenodes (HA): its link finds the leader among recording
//! namenodes on real sockets (one refusing as "not the leader", one answering with an old
//! term), registers again and reports in full when the leader changes, and runs no
//! command of a deposed leader.

mod common;

use std::time::Duration;

use common::*;
use kdfs_core::BlockId;
use kdfs_proto::pb::command::Kind;
use kdfs_proto::pb::{Command, DeleteBlocks};

const WAIT: Duration = Duration::from_secs(15);

/// `host:port` of a fake namenode's URL, as a leader hint names it.
fn address(url: &str) -> &str {
    url.trim_start_matches("http://")
}

fn delete(id: &BlockId) -> Command {
    Command {
        kind: Some(Kind::Delete(DeleteBlocks {
            block_ids: vec![kdfs_proto::wire::raw(id.as_bytes())],
            below_generation: u64::MAX,
        })),
    }
}

async fn fenced_commands(node: &TestNode) -> u64 {
    let (_, metrics) = http_get(node.http, "/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kdfs_datanode_fenced_commands_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the fenced-commands counter is exported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_finds_the_leader_and_registers_again_when_it_changes() {
    let (a, url_a, _a) = FakeNamenode::start("c1").await;
    let (b, url_b, _b) = FakeNamenode::start("c1").await;
    let (c, url_c, _c) = FakeNamenode::start("c1").await;
    // A knows the leader is C; B is in an election.
    a.follow(Some(address(&url_c)));
    b.follow(None);
    c.lead(2);
    let node = TestNode::start(&format!("{url_a},{url_b},{url_c}"), &[]).await;
    wait_for("registered with C and reported in full", WAIT, || {
        c.seen(|s| s.registers.len() == 1 && s.full_reports.len() == 1 && s.heartbeats >= 2)
    })
    .await;
    assert!(a.seen(|s| s.refused_not_leader) >= 1, "A was asked first");
    assert!(a.seen(|s| s.registers.is_empty()) && b.seen(|s| s.registers.is_empty()));

    // C loses the lead to B, in term 3: register + full report with B.
    b.lead(3);
    c.follow(Some(address(&url_b)));
    wait_for("registered with B and reported in full", WAIT, || {
        b.seen(|s| s.registers.len() == 1 && s.full_reports.len() == 1 && s.heartbeats >= 1)
    })
    .await;
    assert_eq!(c.seen(|s| s.registers.len()), 1, "nothing more went to C");

    // B leads again after another election (a new leadership instance): again.
    b.lead(4);
    wait_for("registered with B again in term 4", WAIT, || {
        b.seen(|s| s.registers.len() == 2 && s.full_reports.len() == 2)
    })
    .await;

    // A plain heartbeat in the same term does not make it register again.
    let beats = b.seen(|s| s.heartbeats);
    wait_for("more heartbeats", WAIT, || {
        b.seen(|s| s.heartbeats >= beats + 3)
    })
    .await;
    assert_eq!(b.seen(|s| s.registers.len()), 2);
    assert_eq!(fenced_commands(&node).await, 0);
    let (_d, r) = node.stop().await;
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_of_a_deposed_leader_are_not_run() {
    let (a, url_a, _a) = FakeNamenode::start("c1").await;
    let (b, url_b, _b) = FakeNamenode::start("c1").await;
    a.lead(5);
    b.follow(Some(address(&url_a)));
    let node = TestNode::start(&format!("{url_a},{url_b}"), &[]).await;
    wait_for("registered with A", WAIT, || {
        a.seen(|s| !s.full_reports.is_empty())
    })
    .await;
    let bytes = pattern(70_000, 7);
    let id = BlockId::of(&bytes);
    write_chain(&[node.location()], &bytes, &id).await.unwrap();
    wait_for("the block reported", WAIT, || a.added().contains(&id)).await;

    // A points to B, but B answers as the leader of an older term, with a delete.
    b.seen(|s| {
        s.term = 4;
        s.not_leader = None;
        s.pending.push(delete(&id));
    });
    a.follow(Some(address(&url_b)));
    wait_for("B's delete handed out", WAIT, || {
        b.seen(|s| s.pending.is_empty())
    })
    .await;
    wait_until("the delete fenced", WAIT, || async {
        fenced_commands(&node).await >= 1
    })
    .await;
    // Keeps beating against the group meanwhile: the block stays.
    let refused = a.seen(|s| s.refused_not_leader);
    wait_for("more calls", WAIT, || {
        a.seen(|s| s.refused_not_leader >= refused + 3)
    })
    .await;
    assert!(
        node.holds(&id),
        "a deposed leader's delete removed the block"
    );
    assert!(node.block_path(&id).exists());

    // B wins a newer term: its delete now runs.
    b.seen(|s| {
        s.term = 6;
        s.pending.push(delete(&id));
    });
    wait_for("registered with B", WAIT, || {
        b.seen(|s| !s.registers.is_empty())
    })
    .await;
    wait_for("the block deleted on the leader's word", WAIT, || {
        !node.holds(&id)
    })
    .await;
    let (_d, r) = node.stop().await;
    r.unwrap();
}

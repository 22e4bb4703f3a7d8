//! The datanode's namenode link against a recording namenode (a real tonic server on
//! 127.0.0.1): registration and cluster identity, reports, commands, and a namenode that
//! is not there yet.

mod common;

use std::time::Duration;

use common::*;
use kdfs_core::BlockId;
use kdfs_proto::pb::command::Kind;
use kdfs_proto::pb::{Command, DeleteBlocks, ReplicateBlock};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

fn cluster_in(dir: &std::path::Path) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("VERSION")).unwrap()).unwrap();
    v["cluster_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_adopts_cluster_id_reports_blocks_and_becomes_ready() {
    let (nn, url, _srv) = FakeNamenode::start("cluster-a").await;
    // A block stored before the datanode starts appears in its first full report.
    let dir = tempfile::tempdir().unwrap();
    let stored = {
        let (store, _) =
            kdfs_datanode::store::Store::open(kdfs_datanode::store::StoreConfig::new(dir.path()))
                .unwrap();
        store.put(b"stored before start").unwrap().id
    };
    let node = TestNode::start_in(dir, &url, &["--zone", "zone-1"]).await;
    wait_for("full report after registration", WAIT, || {
        nn.seen(|s| !s.full_reports.is_empty())
    })
    .await;
    let reg = nn.seen(|s| s.registers[0].clone());
    assert_eq!(reg.datanode_id, node.id.to_string());
    assert_eq!(
        reg.cluster_id, "",
        "a fresh disk registers without a cluster"
    );
    assert_eq!(reg.address, node.grpc.to_string());
    assert_eq!(reg.zone, "zone-1");
    assert!(reg.capacity > 0 && reg.available > 0);
    let report = nn.seen(|s| s.full_reports[0].clone());
    assert_eq!(report.len(), 1);
    assert_eq!(BlockId::from_slice(&report[0].id).unwrap(), stored);
    assert_eq!(cluster_in(node.dir.path()), "cluster-a");
    wait_for("two heartbeats", WAIT, || nn.seen(|s| s.heartbeats >= 2)).await;
    let (code, _) = http_get(node.http, "/readyz").await;
    assert_eq!(code, 200);
    let (code, body) = http_get(node.http, "/healthz").await;
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, metrics) = http_get(node.http, "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("kdfs_datanode_blocks 1"), "{metrics}");
    assert!(metrics.contains("kdfs_datanode_registered 1"));

    // A write shows up in an incremental report within about a second.
    let bytes = pattern(100_000, 1);
    let id = BlockId::of(&bytes);
    write_chain(&[node.location()], &bytes, &id).await.unwrap();
    let t = std::time::Instant::now();
    wait_for("the block reported as added", WAIT, || {
        nn.added().contains(&id)
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let (_d, r) = node.stop().await;
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_of_another_cluster_is_refused_and_the_datanode_exits_with_an_error() {
    let (_nn, url_a, _a) = FakeNamenode::start("cluster-a").await;
    let node = TestNode::start(&url_a, &[]).await;
    wait_for("the disk adopting cluster-a", WAIT, || {
        cluster_in(node.dir.path()) == "cluster-a"
    })
    .await;
    let (dir, r) = node.stop().await;
    r.unwrap();

    // Refused by the namenode (FAILED_PRECONDITION), and caught by the datanode's own
    // check when a namenode answers with its different cluster id.
    for strict in [true, false] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url_b = format!("http://{}", listener.local_addr().unwrap());
        let nn_b = FakeNamenode {
            strict,
            ..FakeNamenode::new("cluster-b")
        };
        let _b = nn_b.serve(listener);
        let (task, _, _, _cancel) = spawn(dir.path(), &url_b, &[]).await;
        let res = tokio::time::timeout(WAIT, task)
            .await
            .expect("datanode exits on its own")
            .unwrap();
        let err = res.unwrap_err();
        let msg = err.to_string();
        match (strict, &err) {
            (true, kdfs_datanode::Error::Refused(_)) => {}
            (false, kdfs_datanode::Error::ClusterMismatch { .. }) => {}
            _ => panic!("strict={strict}: unexpected {err:?}"),
        }
        assert!(
            msg.contains("cluster-a") && msg.contains("cluster-b"),
            "{msg}"
        );
    }
    assert_eq!(cluster_in(dir.path()), "cluster-a", "identity unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_command_removes_the_block_and_is_reported() {
    let (nn, url, _srv) = FakeNamenode::start("c1").await;
    let node = TestNode::start(&url, &[]).await;
    wait_for("a full block report", WAIT, || {
        nn.seen(|s| !s.full_reports.is_empty())
    })
    .await;
    let bytes = pattern(70_000, 2);
    let id = BlockId::of(&bytes);
    write_chain(&[node.location()], &bytes, &id).await.unwrap();
    wait_for("the block reported as added", WAIT, || {
        nn.added().contains(&id)
    })
    .await;
    nn.seen(|s| {
        s.pending.push(Command {
            kind: Some(Kind::Delete(DeleteBlocks {
                block_ids: vec![kdfs_proto::wire::raw(id.as_bytes())],
                // Any generation the node reported after the write.
                below_generation: u64::MAX,
            })),
        })
    });
    wait_for("block deleted", WAIT, || !node.holds(&id)).await;
    wait_for("removal reported", WAIT, || nn.removed().contains(&id)).await;
    assert!(node.block_files().is_empty(), "sidecar deleted too");
    let (_d, r) = node.stop().await;
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_command_copies_the_block_to_its_targets() {
    let (nn, url, _srv) = FakeNamenode::start("c1").await;
    let source = TestNode::start(&url, &[]).await;
    source.wait_for_keys().await;
    // Its own namenode: it must not take the source's commands.
    let target = TestNode::keyed(&[]).await;
    let bytes = pattern(1_500_000, 3);
    let id = BlockId::of(&bytes);
    write_chain(&[source.location()], &bytes, &id)
        .await
        .unwrap();
    nn.seen(|s| {
        s.pending.push(Command {
            kind: Some(Kind::Replicate(ReplicateBlock {
                block_id: kdfs_proto::wire::raw(id.as_bytes()),
                length: bytes.len() as u64,
                targets: vec![target.location()],
                token: Some(transfer_token(
                    &id,
                    bytes.len() as u64,
                    source.id,
                    &[target.location()],
                )),
            })),
        })
    });
    wait_for("the target holds the block", WAIT, || target.holds(&id)).await;
    assert_eq!(std::fs::read(target.block_path(&id)).unwrap(), bytes);
    for n in [source, target] {
        let (_d, r) = n.stop().await;
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_replications_are_reported_with_the_next_heartbeat() {
    let (nn, url, _srv) = FakeNamenode::start("c1").await;
    let source = TestNode::start(&url, &[]).await;
    source.wait_for_keys().await;
    // Its own namenode: it must not take the source's commands.
    let target = TestNode::keyed(&[]).await;
    // A datanode that is not there: nothing listens on its port.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = l.local_addr().unwrap().to_string();
        drop(l);
        kdfs_proto::pb::DatanodeLocation {
            id: kdfs_core::DatanodeId::random().to_string(),
            address,
        }
    };
    let bytes = pattern(200_000, 9);
    let id = BlockId::of(&bytes);
    write_chain(&[source.location()], &bytes, &id)
        .await
        .unwrap();
    let missing = BlockId::of(b"never stored here");
    let replicate = |block: &BlockId, targets: Vec<_>| Command {
        kind: Some(Kind::Replicate(ReplicateBlock {
            block_id: kdfs_proto::wire::raw(block.as_bytes()),
            length: bytes.len() as u64,
            token: Some(transfer_token(
                block,
                bytes.len() as u64,
                source.id,
                &targets,
            )),
            targets,
        })),
    };
    nn.seen(|s| {
        // Reaches the live target, not the one after it.
        s.pending
            .push(replicate(&id, vec![target.location(), gone.clone()]));
        // The source has no replica to send: fails as a whole.
        s.pending.push(replicate(&missing, vec![target.location()]));
    });
    wait_for("both failures reported", WAIT, || {
        nn.seen(|s| s.failed_copies.len() >= 2)
    })
    .await;
    assert!(target.holds(&id), "the live target committed its copy");
    let failed = nn.seen(|s| s.failed_copies.clone());
    let of = |b: &BlockId| {
        failed
            .iter()
            .find(|f| f.block_id.as_ref() == b.as_bytes())
            .unwrap_or_else(|| panic!("no report for {b}: {failed:?}"))
            .clone()
    };
    let partial = of(&id);
    assert_eq!(partial.targets, vec![gone.id.clone()]);
    assert!(!partial.whole);
    assert!(!partial.reason.is_empty());
    let whole = of(&missing);
    assert_eq!(whole.targets, vec![target.location().id]);
    assert!(whole.whole);
    // Each is reported once: later heartbeats carry nothing more.
    let beats = nn.seen(|s| s.heartbeats);
    wait_for("three more heartbeats", WAIT, || {
        nn.seen(|s| s.heartbeats >= beats + 3)
    })
    .await;
    assert_eq!(nn.seen(|s| s.failed_copies.len()), 2);
    for n in [source, target] {
        let (_d, r) = n.stop().await;
        r.unwrap();
    }
}

/// A heartbeat carrying a failed-copy report is refused with `code`; returns how many
/// heartbeats carried it by the time five more (refused or not) were answered.
async fn copy_report_refused_with(code: tonic::Code) -> (usize, usize) {
    let (nn, url, _srv) = FakeNamenode::start("c1").await;
    nn.seen(|s| s.refuse_copy_reports = Some(code));
    let source = TestNode::start(&url, &[]).await;
    let missing = BlockId::of(b"not here");
    let target = TestNode::keyed(&[]).await;
    nn.seen(|s| {
        s.pending.push(Command {
            kind: Some(Kind::Replicate(ReplicateBlock {
                block_id: kdfs_proto::wire::raw(missing.as_bytes()),
                length: 10,
                targets: vec![target.location()],
                token: Some(transfer_token(
                    &missing,
                    10,
                    source.id,
                    &[target.location()],
                )),
            })),
        })
    });
    wait_for("a refused failed-copy report", WAIT, || {
        nn.seen(|s| s.refused_copy_reports >= 1)
    })
    .await;
    let answered = || nn.seen(|s| s.heartbeats + s.refused_copy_reports);
    let now = answered();
    wait_for("five more answered heartbeats", WAIT, || {
        answered() >= now + 5
    })
    .await;
    let r = nn.seen(|s| (s.refused_copy_reports, s.heartbeats));
    for n in [source, target] {
        let (_d, r) = n.stop().await;
        r.unwrap();
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_failed_copy_report_is_dropped_but_an_unanswered_one_is_sent_again() {
    // Refused for what it carries: sent once, and the heartbeats after it go through
    // (a report the namenode will not take must not fail every later heartbeat).
    let (refused, beats) = copy_report_refused_with(tonic::Code::InvalidArgument).await;
    assert_eq!(refused, 1);
    assert!(beats >= 4, "{beats}");
    // Not answered (the namenode unavailable): carried again by the next beats.
    let (refused, _) = copy_report_refused_with(tonic::Code::Unavailable).await;
    assert!(refused >= 5, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reregister_request_sends_registration_and_full_report_again() {
    let (nn, url, _srv) = FakeNamenode::start("c1").await;
    let node = TestNode::start(&url, &[]).await;
    wait_for("one full report", WAIT, || {
        nn.seen(|s| s.full_reports.len() == 1)
    })
    .await;
    nn.seen(|s| s.reregister_next = true);
    wait_for("a second registration and full report", WAIT, || {
        nn.seen(|s| s.registers.len() == 2 && s.full_reports.len() == 2)
    })
    .await;
    let regs = nn.seen(|s| s.registers.clone());
    assert_eq!(
        regs[1].cluster_id, "c1",
        "the second registration names its cluster"
    );
    let (_d, r) = node.stop().await;
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_namenode_does_not_stop_serving_and_registration_follows_it() {
    // Reserve a port, then leave it closed until the namenode "comes up".
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let node = TestNode::start(&format!("http://{addr}"), &[]).await;
    let bytes = pattern(300_000, 4);
    let id = BlockId::of(&bytes);
    // Before its first registration it has no block keys: it cannot tell a token the
    // namenode issued from a forged one, so it refuses, as "try elsewhere".
    let err = write_chain(&[node.location()], &bytes, &id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("no block keys"), "{err}");
    let (code, _) = http_get(node.http, "/readyz").await;
    assert_eq!(code, 503, "not ready before registration");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !node.task.is_finished(),
        "namenode outage does not end the datanode"
    );

    let nn = FakeNamenode::new("late");
    let srv = nn.serve(TcpListener::bind(addr).await.unwrap());
    wait_for(
        "registered once the namenode appeared",
        Duration::from_secs(15),
        || nn.seen(|s| !s.full_reports.is_empty()),
    )
    .await;
    wait_until("ready after registering", WAIT, || async {
        http_get(node.http, "/readyz").await.0 == 200
    })
    .await;

    // The namenode goes away again: the keys it gave stay, and so does service.
    srv.abort();
    let _ = srv.await;
    write_chain(&[node.location()], &bytes, &id).await.unwrap();
    let got: Vec<u8> = read_range(&node, &id, 0, 0)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|m| m.data.to_vec())
        .collect();
    assert_eq!(got, bytes, "reads served while the namenode is down");
    let (_d, r) = node.stop().await;
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_replica_found_by_a_read_is_reported_as_corrupt() {
    let (nn, url, _srv) = FakeNamenode::start("c1").await;
    let node = TestNode::start(&url, &[]).await;
    wait_for("a full block report", WAIT, || {
        nn.seen(|s| !s.full_reports.is_empty())
    })
    .await;
    let bytes = pattern(200_000, 5);
    let id = BlockId::of(&bytes);
    write_chain(&[node.location()], &bytes, &id).await.unwrap();
    let path = node.block_path(&id);
    let mut raw = std::fs::read(&path).unwrap();
    raw[150_000] ^= 4;
    std::fs::write(&path, raw).unwrap();
    let err = read_range(&node, &id, 0, 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss);
    let corrupt = || {
        nn.seen(|s| {
            s.incrementals
                .iter()
                .flat_map(|r| r.corrupt.iter())
                .any(|c| c[..] == id.as_bytes()[..])
        })
    };
    wait_for("corrupt replica reported", WAIT, corrupt).await;
    let (_, m) = http_get(node.http, "/metrics").await;
    assert!(m.contains("kdfs_datanode_corrupt_replicas_total 1"), "{m}");
    let (_d, r) = node.stop().await;
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_datanode_serves_until_drained_and_a_restarting_one_stops_at_once() {
    use kdfs_proto::pb::{LeavingResponse, LeavingVerdict};
    let (nn, url, _srv) = FakeNamenode::start("cluster-a").await;
    let drain = |left: u64| LeavingResponse {
        verdict: LeavingVerdict::Drain as i32,
        drained: left == 0,
        blocks_left: left,
    };
    nn.seen(|s| s.leaving = [drain(2), drain(1), drain(0)].into());
    let node = TestNode::start(&url, &[]).await;
    wait_for("a heartbeat", WAIT, || nn.seen(|s| s.heartbeats >= 1)).await;
    node.cancel.cancel();
    wait_for("a second question", WAIT, || {
        nn.seen(|s| s.leaving_asked >= 2)
    })
    .await;
    // Still serving while it drains: heartbeats (which carry its copies) and HTTP.
    let beats = nn.seen(|s| s.heartbeats);
    wait_for("heartbeats while draining", WAIT, || {
        nn.seen(|s| s.heartbeats > beats)
    })
    .await;
    let (code, _) = http_get(node.http, "/healthz").await;
    assert_eq!(code, 200, "still serving while draining");
    let (_, r) = node.stop().await;
    r.unwrap();
    assert_eq!(nn.seen(|s| s.leaving_asked), 3, "it stopped once drained");

    // A restart (the fake's default answer): stops at once, asked once.
    let (nn, url, _srv) = FakeNamenode::start("cluster-a").await;
    let node = TestNode::start(&url, &[]).await;
    wait_for("a heartbeat", WAIT, || nn.seen(|s| s.heartbeats >= 1)).await;
    let t0 = std::time::Instant::now();
    let (_, r) = node.stop().await;
    r.unwrap();
    assert_eq!(nn.seen(|s| s.leaving_asked), 1);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

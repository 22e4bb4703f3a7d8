//! The datanode side of the gRPC API: registration, heartbeats with their commands,
//! block reports, and the replication and delete commands they lead to.

use std::time::Duration;

use kdfs_proto::pb;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn membership_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;

    // A fresh disk adopts the cluster id; a foreign one is refused.
    let mut d = FakeDatanode::new(c.clone(), 1);
    let cluster_id = d.register("").await.unwrap().cluster_id;
    assert_eq!(cluster_id, info(&mut c).await.cluster_id);
    let mut foreign = FakeDatanode::new(c.clone(), 2);
    let e = foreign.register("another-cluster").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("another-cluster"), "{}", e.message());

    // Unknown nodes are told to register.
    let mut stranger = FakeDatanode::new(c.clone(), 3);
    assert!(stranger.heartbeat().await.reregister);
    assert!(!d.heartbeat().await.reregister);

    // Bad ids and addresses are refused.
    let e = c
        .register(pb::RegisterRequest {
            datanode_id: "not-a-uuid".into(),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .register(pb::RegisterRequest {
            datanode_id: d.id.to_string(),
            address: "../../etc:80".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    nn.stop().await;
}

#[tokio::test]
async fn dead_datanode_blocks_are_replicated_through_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = fast_args(dir.path());
    args.extend(["--replication".into(), "2".into()]);
    let nn = TestNamenode::start(&args).await;
    let mut c = nn.client().await;
    // Before a's registration, hence before its last heartbeat: a lower bound on when
    // it can be declared dead that holds however slow the setup below is.
    let started = tokio::time::Instant::now();
    let dns = datanodes(&nn, 3).await;
    let (a, b, spare) = (&dns[0], &dns[1], &dns[2]);
    upload(&mut c, "f", b"precious", &[a, b]).await.unwrap();

    // b and the spare keep beating; a goes silent.
    let stop_a = CancellationToken::new();
    let stop = CancellationToken::new();
    let ha = a.keep_beating(stop_a.clone());
    let hb = b.keep_beating(stop.clone());
    let hs = spare.keep_beating(stop.clone());
    stop_a.cancel();
    ha.await.unwrap();

    wait_until(
        "replication command to the survivor",
        Duration::from_secs(5),
        || async { !b.replications().is_empty() },
    )
    .await;
    // Dead after 1 s, scheduled within a heartbeat interval, delivered on the next beat.
    assert!(started.elapsed() >= Duration::from_millis(900));
    let (blk, targets) = b.replications()[0].clone();
    assert_eq!(blk, block(b"precious"));
    assert_eq!(targets, vec![spare.id.to_string()]);

    let i = info(&mut c).await;
    let state_of = |id: &str| i.datanodes.iter().find(|d| d.id == id).unwrap().state;
    assert_eq!(state_of(&a.id.to_string()), pb::DatanodeState::Dead as i32);
    assert_eq!(state_of(&b.id.to_string()), pb::DatanodeState::Live as i32);
    assert_eq!(i.under_replicated, 1);
    let located = get(&mut c, b"precious").await.unwrap().blocks[0]
        .replicas
        .clone();
    assert_eq!(located.len(), 1, "the dead node's replica left the map");

    // The spare reports the copy: healed.
    let mut s = spare.clone();
    s.added(&[(block(b"precious"), 8)]).await;
    assert_eq!(info(&mut c).await.under_replicated, 0);
    // The dead node comes back: told to re-register.
    let mut a2 = a.clone();
    assert!(a2.heartbeat().await.reregister);
    stop.cancel();
    hb.await.unwrap();
    hs.await.unwrap();
    nn.stop().await;
}

#[tokio::test]
async fn a_copy_its_source_reports_failed_is_planned_again_at_once_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = fast_args(dir.path());
    // The default copy timeout (2 minutes) stays: only the report can explain a quick
    // second plan.
    args.extend(["--replication".into(), "2".into()]);
    let nn = TestNamenode::start(&args).await;
    let mut c = nn.client().await;
    let dns = datanodes(&nn, 4).await;
    let (a, b) = (&dns[0], &dns[1]);
    upload(&mut c, "f", b"fragile", &[a, b]).await.unwrap();
    let stop = CancellationToken::new();
    let beating: Vec<_> = dns[1..]
        .iter()
        .map(|d| d.keep_beating(stop.clone()))
        .collect();
    // a goes silent and is declared dead: b is asked to copy to one of the spares.
    wait_until(
        "a copy from the survivor",
        Duration::from_secs(5),
        || async { !b.replications().is_empty() },
    )
    .await;
    let (blk, first) = b.replications()[0].clone();
    assert_eq!(blk, block(b"fragile"));
    assert_eq!(first.len(), 1);

    // Malformed reports are refused whole, and change nothing.
    let mut b2 = b.clone();
    let bad = |block_id: Vec<u8>, target: &str| pb::FailedCopy {
        block_id: block_id.into(),
        targets: vec![target.to_owned()],
        whole: false,
        reason: "test".into(),
    };
    for (report, what) in [
        (vec![bad(vec![7; 31], &first[0])], "short block id"),
        (
            vec![bad(raw(block(b"fragile").as_bytes()).to_vec(), "../../etc")],
            "bad datanode id",
        ),
        (
            vec![bad(raw(block(b"fragile").as_bytes()).to_vec(), &first[0]); 1001],
            "too many entries",
        ),
    ] {
        let err = b2.heartbeat_reporting(report).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    // A report about a copy b was never asked for (another block) changes nothing.
    b2.heartbeat_reporting(vec![bad(
        raw(block(b"other").as_bytes()).to_vec(),
        &first[0],
    )])
    .await
    .unwrap();
    assert_eq!(b.replications().len(), 1);

    // b reports that the target refused the copy: a new copy goes to the other spare
    // after the first retry delay (~1.2 s), long before the copy's 2-minute timeout (the
    // deadlines leave room for a loaded machine).
    let reported = tokio::time::Instant::now();
    b2.heartbeat_reporting(vec![bad(raw(blk.as_bytes()).to_vec(), &first[0])])
        .await
        .unwrap();
    wait_until("a second plan", Duration::from_secs(30), || async {
        b.replications().len() >= 2
    })
    .await;
    assert!(reported.elapsed() < Duration::from_secs(60));
    let (blk2, second) = b.replications()[1].clone();
    assert_eq!(blk2, blk);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first, "the target that failed is not asked again");
    assert!(![a.id.to_string(), b.id.to_string()].contains(&second[0]));
    // The second target confirms: healed, and nothing more is planned.
    let target = dns.iter().find(|d| d.id.to_string() == second[0]).unwrap();
    target.clone().added(&[(blk, 7)]).await;
    assert_eq!(info(&mut c).await.under_replicated, 0);
    stop.cancel();
    for h in beating {
        h.await.unwrap();
    }
    assert_eq!(b.replications().len(), 2);
    nn.stop().await;
}

#[tokio::test]
async fn full_report_reconciles_unknown_tombstoned_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    let mut dns = datanodes(&nn, 3).await;
    upload(&mut c, "keep", b"keep", &[&dns[0], &dns[1]])
        .await
        .unwrap();
    upload(&mut c, "gone", b"gone", &[&dns[0], &dns[1]])
        .await
        .unwrap();
    c.delete_file(pb::DeleteFileRequest {
        file_id: raw(file(b"gone").as_bytes()),
    })
    .await
    .unwrap();

    // Node 2 was away during the delete and now reports: the tombstoned block (delete
    // at once), an unknown block (kept for now: it may be an upload in progress), and
    // a referenced block it was never sent (unconfirmed: listed last, never counted).
    let r = dns[2]
        .full_report(&[
            (block(b"gone"), 4),
            (block(b"mystery"), 7),
            (block(b"keep"), 4),
        ])
        .await;
    assert_eq!(r.accepted, 0);
    assert_eq!(dns[2].deletes(), vec![block(b"gone")]);
    assert_eq!(
        get(&mut c, b"keep").await.unwrap().blocks[0].replicas.len(),
        3
    );

    // Node 1 reports nothing: its replica of "keep" is dropped.
    let r = dns[1].full_report(&[]).await;
    assert_eq!(r.accepted, 0);
    let replicas = get(&mut c, b"keep").await.unwrap().blocks[0]
        .replicas
        .clone();
    let ids: Vec<_> = replicas.iter().map(|r| r.id.clone()).collect();
    assert!(!ids.contains(&dns[1].id.to_string()));
    assert_eq!(ids.len(), 2);

    // A reader's bad-replica report does not drop the replica: its holder is asked
    // to verify it.
    c.report_bad_replica(pb::ReportBadReplicaRequest {
        block_id: raw(block(b"keep").as_bytes()),
        datanode_id: dns[0].id.to_string(),
        reason: "checksum mismatch".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        get(&mut c, b"keep").await.unwrap().blocks[0].replicas.len(),
        2
    );
    let verify = dns[0].heartbeat().await.commands;
    assert!(
        verify
            .iter()
            .any(|c| matches!(&c.kind, Some(pb::command::Kind::Verify(v))
            if v.block_ids == vec![raw(block(b"keep").as_bytes())])),
        "{verify:?}"
    );

    // A report from an unregistered node is refused.
    let mut stranger = FakeDatanode::new(c.clone(), 9);
    let e = stranger
        .client
        .incremental_block_report(pb::IncrementalBlockReportRequest {
            datanode_id: stranger.id.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    nn.stop().await;
}

#[tokio::test]
async fn reupload_after_delete_is_never_destroyed_by_the_delete() {
    let dir = tempfile::tempdir().unwrap();
    let nn = TestNamenode::start(&fast_args(dir.path())).await;
    let mut c = nn.client().await;
    let dns = datanodes(&nn, 4).await;
    let (a, b) = (&dns[0], &dns[1]);
    upload(&mut c, "v1", b"same content", &[a, b])
        .await
        .unwrap();
    let delete = |c: &Client| {
        let mut c = c.clone();
        async move {
            c.delete_file(pb::DeleteFileRequest {
                file_id: raw(file(b"same content").as_bytes()),
            })
            .await
            .unwrap()
        }
    };

    // Case 1: deleted, re-uploaded to the same nodes before any delete was
    // delivered: the pending deletes are dropped, the new file keeps its replicas.
    delete(&c).await;
    upload(&mut c, "v2", b"same content", &[a, b])
        .await
        .unwrap();
    for d in [a, b] {
        let mut d = d.clone();
        d.heartbeat().await;
        assert!(d.deletes().is_empty(), "no delete may reach {}", d.id);
    }
    assert_eq!(
        get(&mut c, b"same content").await.unwrap().state,
        pb::FileState::Live as i32
    );

    // Case 2: an upload is under way when the content is deleted and the deletes go
    // out. They name a generation the nodes reported before the upload began, below
    // every replica it writes (a datanode deletes nothing at or above it), so its acks
    // stand and the commit is accepted: no re-upload is refused because of a delete.
    // (A clock tick first: the nodes' last reports must precede the upload's start.)
    tokio::time::sleep(Duration::from_millis(5)).await;
    let written_from = next_generation();
    let lease = c
        .begin_upload(pb::BeginUploadRequest {
            name: "v3".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    delete(&c).await;
    for d in [a, b] {
        let mut d = d.clone();
        d.heartbeat().await;
        let sent = d.delete_commands();
        let (below, blocks) = sent.last().expect("a delete command");
        assert_eq!(blocks, &vec![block(b"same content")]);
        assert!(
            *below > 0 && *below < written_from,
            "{below} names a report before the upload"
        );
    }
    let ok = commit(&mut c, &lease.upload_id, b"same content", &[a, b])
        .await
        .unwrap();
    assert!(!ok.existed);
    assert_eq!(ok.file.unwrap().name, "v3");
    nn.stop().await;
}

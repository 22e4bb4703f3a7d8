//! The datanode gRPC service with three real datanodes on 127.0.0.1 (a fake namenode
//! hands them the test block key):
//! pipelined writes and their failure modes, verified range reads, corruption, and
//! replication transfers.

mod common;

use std::time::Duration;

use common::*;
use kdfs_core::BlockId;
use kdfs_proto::pb::{DatanodeLocation, ReplicateBlock};
use kdfs_proto::transport::CHUNK_SIZE;
use tonic::Code;

async fn three() -> Vec<TestNode> {
    start_nodes(3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_chain_write_commits_everywhere_in_order() {
    let nodes = three().await;
    let bytes = pattern(3 * CHUNK_SIZE + 12_345, 1);
    let id = BlockId::of(&bytes);
    let resp = write_chain(&locations(&nodes), &bytes, &id).await.unwrap();
    let want: Vec<String> = nodes.iter().map(|n| n.id.to_string()).collect();
    assert_eq!(resp.committed, want);
    assert!(resp.failed.is_empty(), "{:?}", resp.failed);
    assert_eq!(resp.length, bytes.len() as u64);
    for n in &nodes {
        assert_eq!(std::fs::read(n.block_path(&id)).unwrap(), bytes);
        let got: Vec<u8> = read_range(n, &id, 0, 0)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|m| m.data.to_vec())
            .collect();
        assert_eq!(got, bytes);
        assert!(n.tmp_files().is_empty());
    }
    // The same block again is a cheap no-op that still reports every replica.
    let again = write_chain(&locations(&nodes), &bytes, &id).await.unwrap();
    assert_eq!(again.committed, want);
    let (code, m) = http_get(nodes[0].http, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "kdfs_datanode_write_block_seconds_count 2",
        "kdfs_datanode_downstream_ack_seconds_count 2",
        "kdfs_datanode_blocks 1",
        "kdfs_datanode_registered 1",
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    let (_, tail) = http_get(nodes[2].http, "/metrics").await;
    assert!(tail.contains("kdfs_datanode_downstream_ack_seconds_count 0"));
    assert!(tail.contains(&format!(
        "kdfs_datanode_bytes_received_total {}",
        2 * bytes.len()
    )));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_trailer_hash_commits_nowhere() {
    let nodes = three().await;
    let bytes = pattern(2 * CHUNK_SIZE + 1, 2);
    let err = write_chain(&locations(&nodes), &bytes, &BlockId::of(b"not these bytes"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    for n in &nodes {
        wait_for("tmp/ emptied", Duration::from_secs(5), || {
            n.tmp_files().is_empty()
        })
        .await;
        assert!(n.block_files().is_empty());
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_space_is_refused_before_data() {
    let small = TestNode::keyed(&["--fixed-capacity", "1MiB"]).await;
    let bytes = pattern(2 * CHUNK_SIZE, 3);
    let err = write_chain(&[small.location()], &bytes, &BlockId::of(&bytes))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(small.tmp_files().is_empty() && small.block_files().is_empty());
    let (_d, r) = small.stop().await;
    r.unwrap();
}

/// `--capacity` caps a datanode on a larger disk (k3d's volumes share one): the
/// namenode is told the cap at registration and in heartbeats, `/metrics` shows it, and
/// a block larger than the room left under the cap is refused before its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_flag_caps_what_is_reported_and_accepted() {
    const CAP: u64 = 3 << 20;
    let (nn, url, _server) = FakeNamenode::start("test-cluster").await;
    let node = TestNode::start(&url, &["--capacity", "3Mi"]).await;
    node.wait_for_keys().await;
    let (total, free) = kdfs_datanode::capacity::statvfs(node.dir.path()).unwrap();
    assert!(
        total > CAP && free > CAP,
        "the test disk must be larger than the cap"
    );
    let reg = nn
        .seen(|s| s.registers.last().cloned())
        .expect("registered");
    assert_eq!((reg.capacity, reg.used, reg.available), (CAP, 0, CAP));

    let a = pattern(2 * CHUNK_SIZE, 7);
    write_chain(&[node.location()], &a, &BlockId::of(&a))
        .await
        .unwrap();
    let want = (CAP, a.len() as u64, CAP - a.len() as u64);
    wait_for(
        "a heartbeat with the capped figures",
        Duration::from_secs(10),
        || nn.seen(|s| s.last_space) == Some(want),
    )
    .await;
    let (_, m) = http_get(node.http, "/metrics").await;
    for line in [
        format!("kdfs_datanode_capacity_bytes {CAP}"),
        format!("kdfs_datanode_available_bytes {}", want.2),
    ] {
        assert!(m.contains(&line), "{line} in\n{m}");
    }

    // 2 MiB more do not fit under the cap, though the disk has room.
    let b = pattern(2 * CHUNK_SIZE, 8);
    let err = write_chain(&[node.location()], &b, &BlockId::of(&b))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(node.holds(&BlockId::of(&a)) && !node.holds(&BlockId::of(&b)));
    assert!(node.tmp_files().is_empty());
    let (_d, r) = node.stop().await;
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_tail_mid_stream_leaves_head_and_middle_committed() {
    let nodes = three().await;
    let tail_proxy = Proxy::start(nodes[2].grpc).await;
    let mut chain = locations(&nodes);
    chain[2].address = tail_proxy.addr.to_string();
    let bytes = pattern(8 * CHUNK_SIZE, 4);
    let id = BlockId::of(&bytes);

    let (tx, call) = open_write(&chain, bytes.len() as u64).await;
    let mut chunks = bytes.chunks(CHUNK_SIZE);
    for c in chunks.by_ref().take(3) {
        tx.send(data(c)).await.unwrap();
    }
    // Bytes reached the tail's temp file: now it "crashes".
    let tail = &nodes[2];
    wait_for(
        "bytes in the tail's temp file",
        Duration::from_secs(10),
        || {
            tail.tmp_files()
                .iter()
                .any(|f| f.metadata().map(|m| m.len() > 0).unwrap_or(false))
        },
    )
    .await;
    tail_proxy.kill();
    for c in chunks {
        tx.send(data(c)).await.unwrap();
    }
    tx.send(trailer(&id)).await.unwrap();
    drop(tx);
    let resp = call.await.unwrap().unwrap().into_inner();
    assert_eq!(
        resp.committed,
        vec![nodes[0].id.to_string(), nodes[1].id.to_string()]
    );
    assert_eq!(resp.failed.len(), 1, "{:?}", resp.failed);
    assert_eq!(resp.failed[0].node, nodes[2].id.to_string());
    assert!(nodes[0].holds(&id) && nodes[1].holds(&id));
    // The tail saw its upstream vanish: it aborted and holds nothing.
    wait_for("tmp/ of the tail emptied", Duration::from_secs(10), || {
        tail.tmp_files().is_empty()
    })
    .await;
    assert!(!tail.holds(&id));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_dropping_mid_stream_commits_nothing_anywhere() {
    let nodes = three().await;
    let chain = locations(&nodes);
    let bytes = pattern(4 * CHUNK_SIZE, 5);
    let (tx, call) = open_write(&chain, bytes.len() as u64).await;
    for c in bytes.chunks(CHUNK_SIZE).take(2) {
        tx.send(data(c)).await.unwrap();
    }
    wait_for("data reached the tail", Duration::from_secs(10), || {
        !nodes[2].tmp_files().is_empty()
    })
    .await;
    call.abort();
    drop(tx);
    for n in &nodes {
        wait_for(
            &format!("temp file removed on {}", n.id),
            Duration::from_secs(10),
            || n.tmp_files().is_empty(),
        )
        .await;
        assert!(n.block_files().is_empty());
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_are_chunk_aligned_and_checksummed() {
    let node = TestNode::keyed(&[]).await;
    let bytes = pattern(3 * CHUNK_SIZE + 777, 6);
    let id = BlockId::of(&bytes);
    write_chain(&[node.location()], &bytes, &id).await.unwrap();
    let n = bytes.len() as u64;
    let k = 64 * 1024u64;
    let m = CHUNK_SIZE as u64;
    for (off, len) in [
        (0, 0),
        (k - 1, 2),
        (k, k),
        (m - 1, 3),
        (m, 0),
        (100, 2 * m),
        (n - 1, 1),
        (n, 0),
    ] {
        let msgs = read_range(&node, &id, off, len).await.unwrap();
        let end = if len == 0 { n } else { off + len };
        let mut at = off;
        let mut got = Vec::new();
        for msg in &msgs {
            assert_eq!(msg.offset, at, "contiguous messages");
            assert_eq!(msg.crc32c, crc32c::crc32c(&msg.data), "per-message crc");
            assert!(msg.data.len() <= CHUNK_SIZE);
            at += msg.data.len() as u64;
            // Every message but the last ends on a 1 MiB (hence 64 KiB) boundary.
            if at != end {
                assert_eq!(at % m, 0, "message ends on a chunk boundary");
            }
            got.extend_from_slice(&msg.data);
        }
        assert_eq!(got, bytes[off as usize..end as usize], "range {off}+{len}");
    }
    let err = read_range(&node, &id, n + 1, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    let err = read_range(&node, &BlockId::of(b"absent"), 0, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut c = node.client();
    let err = c
        .read_block(kdfs_proto::pb::ReadBlockRequest {
            block_id: bytes::Bytes::from_static(b"short"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let (_d, r) = node.stop().await;
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_on_disk_is_data_loss_and_quarantined() {
    let node = TestNode::keyed(&[]).await;
    let bytes = pattern(2 * CHUNK_SIZE, 7);
    let id = BlockId::of(&bytes);
    write_chain(&[node.location()], &bytes, &id).await.unwrap();
    let path = node.block_path(&id);
    let mut raw = std::fs::read(&path).unwrap();
    raw[CHUNK_SIZE + 10] ^= 1;
    std::fs::write(&path, &raw).unwrap();
    let err = read_range(&node, &id, CHUNK_SIZE as u64, 100)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err}");
    assert!(!node.holds(&id));
    assert!(!node.quarantined().is_empty());
    let err = read_range(&node, &id, 0, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let (_d, r) = node.stop().await;
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_block_copies_to_two_targets_and_refuses_corrupt_sources() {
    let nodes = three().await;
    let bytes = pattern(5 * CHUNK_SIZE / 2, 8);
    let id = BlockId::of(&bytes);
    write_chain(&[nodes[0].location()], &bytes, &id)
        .await
        .unwrap();
    assert!(!nodes[1].holds(&id) && !nodes[2].holds(&id));
    let targets = vec![nodes[1].location(), nodes[2].location()];
    let resp = nodes[0]
        .client()
        .transfer_block(ReplicateBlock {
            block_id: kdfs_proto::wire::raw(id.as_bytes()),
            length: bytes.len() as u64,
            targets: targets.clone(),
            token: Some(transfer_token(
                &id,
                bytes.len() as u64,
                nodes[0].id,
                &targets,
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.committed,
        vec![nodes[1].id.to_string(), nodes[2].id.to_string()]
    );
    for n in &nodes[1..] {
        assert_eq!(std::fs::read(n.block_path(&id)).unwrap(), bytes);
    }

    // A corrupt source sends nothing that could commit.
    let other = pattern(CHUNK_SIZE + 5, 9);
    let oid = BlockId::of(&other);
    write_chain(&[nodes[0].location()], &other, &oid)
        .await
        .unwrap();
    let p = nodes[0].block_path(&oid);
    let mut raw = std::fs::read(&p).unwrap();
    raw[CHUNK_SIZE + 2] ^= 0x80;
    std::fs::write(&p, &raw).unwrap();
    let err = nodes[0]
        .client()
        .transfer_block(ReplicateBlock {
            block_id: kdfs_proto::wire::raw(oid.as_bytes()),
            length: other.len() as u64,
            token: Some(transfer_token(
                &oid,
                other.len() as u64,
                nodes[0].id,
                &targets,
            )),
            targets,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err}");
    for n in &nodes[1..] {
        wait_for("tmp/ emptied", Duration::from_secs(10), || {
            n.tmp_files().is_empty()
        })
        .await;
        assert!(!n.holds(&oid));
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_write_finish() {
    let node = TestNode::keyed(&[]).await;
    let bytes = pattern(3 * CHUNK_SIZE, 10);
    let id = BlockId::of(&bytes);
    let (tx, call) = open_write(&[node.location()], bytes.len() as u64).await;
    let mut chunks = bytes.chunks(CHUNK_SIZE);
    // Two chunks: the first alone would still be held in memory, with no temp file.
    tx.send(data(chunks.next().unwrap())).await.unwrap();
    tx.send(data(chunks.next().unwrap())).await.unwrap();
    wait_for("a temp file in tmp/", Duration::from_secs(10), || {
        !node.tmp_files().is_empty()
    })
    .await;
    // The shutdown signal arrives mid-write: the write still completes.
    node.cancel.cancel();
    for c in chunks {
        tx.send(data(c)).await.unwrap();
    }
    tx.send(trailer(&id)).await.unwrap();
    drop(tx);
    let resp = call.await.unwrap().unwrap().into_inner();
    assert_eq!(resp.committed, vec![node.id.to_string()]);
    assert!(node.holds(&id));
    let (_d, r) = node.stop().await;
    r.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tail_back_pressures_the_client() {
    // Bounded queues and HTTP/2 windows mean a client can run ahead of the slowest node
    // by a fixed amount only. Without back-pressure it would push the whole block at
    // once and the faster nodes would buffer it in memory.
    let nodes = three().await;
    let rate = 2 << 20;
    let slow = Proxy::throttled(nodes[2].grpc, rate).await;
    let mut chain = locations(&nodes);
    chain[2].address = slow.addr.to_string();
    let total = 160 * CHUNK_SIZE;
    let piece = bytes::Bytes::from(pattern(CHUNK_SIZE, 11));
    let pushed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = pushed.clone();
    let first = header(&chain, total as u64);
    let msgs = futures::stream::iter(std::iter::once(first).chain((0..total / CHUNK_SIZE).map(
        move |_| {
            counter.fetch_add(CHUNK_SIZE, std::sync::atomic::Ordering::Relaxed);
            kdfs_datanode::service::data_msg(piece.clone())
        },
    )));
    let mut head = nodes[0].client();
    let call = tokio::spawn(async move { head.write_block(msgs).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ahead = pushed.load(std::sync::atomic::Ordering::Relaxed);
    let tail_got: u64 = nodes[2]
        .tmp_files()
        .iter()
        .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(tail_got > 0, "the slow tail receives data");
    assert!(
        ahead < 100 * CHUNK_SIZE,
        "client pushed {} MiB while the tail got {} KiB: no back-pressure",
        ahead >> 20,
        tail_got >> 10
    );
    call.abort();
    slow.kill();
    for n in &nodes {
        wait_for("tmp/ emptied", Duration::from_secs(10), || {
            n.tmp_files().is_empty()
        })
        .await;
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_successor_is_given_up_on_and_an_idle_client_aborted() {
    // A peer that accepts TCP connections and then never reads: alive but stuck.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            conns.push(s);
        }
    });
    let node = TestNode::keyed(&["--write-idle-timeout", "1s"]).await;
    let stuck = DatanodeLocation {
        id: kdfs_core::DatanodeId::random().to_string(),
        address: hole_addr.to_string(),
    };
    let bytes = pattern(12 * CHUNK_SIZE, 12);
    let id = BlockId::of(&bytes);
    let started = std::time::Instant::now();
    let resp = write_chain(&[node.location(), stuck.clone()], &bytes, &id)
        .await
        .unwrap();
    assert_eq!(resp.committed, vec![node.id.to_string()]);
    assert_eq!(resp.failed.len(), 1);
    assert_eq!(resp.failed[0].node, stuck.id);
    assert!(
        resp.failed[0].reason.contains("stalled"),
        "{:?}",
        resp.failed
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(node.holds(&id));

    // A client that goes silent mid-write is aborted, its temp file removed.
    let (tx, call) = open_write(&[node.location()], 10).await;
    tx.send(data(b"01234")).await.unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    wait_for("tmp/ emptied", Duration::from_secs(5), || {
        node.tmp_files().is_empty()
    })
    .await;
    drop(tx);
    held.abort();
    let (_d, r) = node.stop().await;
    r.unwrap();
}

//! `WriteBlocks`, batches of small blocks, with real datanodes on 127.0.0.1: every block
//! committed on every node of the chain, a bad block failing alone, malformed streams
//! failing whole with nothing half-written, a dead tail, out of space, and incremental
//! reports.

mod common;

use std::time::Duration;

use common::*;
use kdfs_core::BlockId;
use kdfs_proto::pb::{WriteBlockRequest, WriteBlocksResponse};
use kdfs_proto::transport::{MAX_BATCH_BYTES, MAX_BATCH_FILES, MAX_BATCHED_BLOCK};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

/// Ten blocks from 1 byte to `MAX_BATCHED_BLOCK`, one of them twice (a dedup no-op).
fn mixed_blocks() -> Vec<(Vec<u8>, BlockId)> {
    let max = MAX_BATCHED_BLOCK as usize;
    let mut blocks: Vec<_> = [
        1,
        4096,
        100,
        64 << 10,
        (64 << 10) + 1,
        300_000,
        max,
        7,
        12_345,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, len)| block(pattern(len, i as u8)))
    .collect();
    blocks.push(blocks[2].clone());
    blocks
}

/// Every node's temp files are gone (a commit or an abort may still be finishing).
async fn tmp_emptied(nodes: &[TestNode]) {
    for n in nodes {
        wait_for(&format!("tmp/ of {} emptied", n.id), WAIT, || {
            n.tmp_files().is_empty()
        })
        .await;
    }
}

/// The blocks a node holds (its block files, not their checksum sidecars).
fn stored(n: &TestNode) -> Vec<BlockId> {
    let id = |p: &std::path::PathBuf| BlockId::parse(p.file_name()?.to_str()?).ok();
    n.block_files().iter().filter_map(id).collect()
}

fn ids(nodes: &[TestNode]) -> Vec<String> {
    nodes.iter().map(|n| n.id.to_string()).collect()
}

fn failed_nodes(r: &WriteBlocksResponse, i: usize) -> Vec<String> {
    r.blocks[i].failed.iter().map(|f| f.node.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_batch_commits_every_block_everywhere_in_order() {
    let nodes = start_nodes(3).await;
    let blocks = mixed_blocks();
    let total: u64 = blocks.iter().map(|(b, _)| b.len() as u64).sum();
    assert!(total <= MAX_BATCH_BYTES);
    // One block split over two data messages.
    let mut msgs = batch_msgs(&locations(&nodes), total, &blocks[..5]);
    msgs.pop(); // the end marker comes after the rest
    let (bytes, id) = &blocks[5];
    msgs.extend([data(&bytes[..1000]), data(&bytes[1000..]), trailer(id)]);
    msgs.extend(batch_msgs(&[], 0, &blocks[6..]).into_iter().skip(1));
    let resp = send_batch(&nodes[0].grpc.to_string(), msgs).await.unwrap();

    assert_eq!(resp.blocks.len(), blocks.len());
    for (r, (bytes, _)) in resp.blocks.iter().zip(&blocks) {
        assert_eq!(r.committed, ids(&nodes));
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(r.length, bytes.len() as u64);
    }
    for n in &nodes {
        for (bytes, id) in &blocks {
            assert_eq!(std::fs::read(n.block_path(id)).unwrap(), *bytes);
        }
        let (bytes, id) = &blocks[6];
        let got: Vec<u8> = read_range(n, id, 0, 0)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|m| m.data.to_vec())
            .collect();
        assert_eq!(got, *bytes);
    }
    tmp_emptied(&nodes).await;
    let (_, m) = http_get(nodes[0].http, "/metrics").await;
    for line in [
        "kdfs_datanode_write_blocks_seconds_count 1",
        "kdfs_datanode_downstream_ack_seconds_count 1",
        "kdfs_datanode_writes_committed_total 10",
        "kdfs_datanode_blocks_committed_total 9",
        "kdfs_datanode_blocks 9",
        &format!("kdfs_datanode_bytes_received_total {total}"),
    ] {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_with_a_wrong_hash_fails_alone_on_every_node() {
    let nodes = start_nodes(3).await;
    let mut blocks: Vec<_> = (0..5)
        .map(|i| block(pattern(10_000 + 30_000 * i, i as u8)))
        .collect();
    let bad = blocks[2].0.clone();
    blocks[2].1 = BlockId::of(b"not these bytes");
    let resp = write_batch(&locations(&nodes), &blocks).await.unwrap();

    assert_eq!(resp.blocks.len(), 5);
    for (i, r) in resp.blocks.iter().enumerate() {
        if i == 2 {
            assert!(r.committed.is_empty(), "{:?}", r.committed);
            assert_eq!(failed_nodes(&resp, i), ids(&nodes));
            assert!(
                r.failed.iter().all(|f| f.reason.contains("hash mismatch")),
                "{:?}",
                r.failed
            );
        } else {
            assert_eq!(r.committed, ids(&nodes), "block {i}");
            assert!(r.failed.is_empty());
        }
    }
    tmp_emptied(&nodes).await;
    for n in &nodes {
        assert!(!n.holds(&blocks[2].1) && !n.holds(&BlockId::of(&bad)));
        assert_eq!(stored(n).len(), 4);
    }
    stop_all(nodes).await;
}

/// Sends a malformed batch through two nodes: it fails with `code`; afterwards no node
/// has a temp file or any block (the blocks of a batch are committed only once its
/// stream ended well).
async fn refused(nodes: &[TestNode], msgs: Vec<WriteBlockRequest>, code: Code) {
    let err = send_batch(&nodes[0].grpc.to_string(), msgs)
        .await
        .unwrap_err();
    assert_eq!(err.code(), code, "{err}");
    tmp_emptied(nodes).await;
    for n in nodes {
        assert!(
            stored(n).is_empty(),
            "{:?} on {} after {err}",
            stored(n),
            n.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_fail_whole_and_leave_nothing_half_written() {
    let nodes = start_nodes(2).await;
    let chain = locations(&nodes);
    let first = block(pattern(600, 1));
    let second = block(pattern(600, 2));
    let only_first = std::slice::from_ref(&first);
    let max = MAX_BATCHED_BLOCK as usize;

    // max_length beyond a batch's bound.
    let msgs = batch_msgs(&chain, MAX_BATCH_BYTES + 1, only_first);
    refused(&nodes, msgs, Code::InvalidArgument).await;
    // No header first.
    let msgs = batch_msgs(&chain, 600, only_first)[1..].to_vec();
    refused(&nodes, msgs, Code::InvalidArgument).await;
    // A block without bytes.
    let mut msgs = vec![header(&chain, 600), trailer(&first.1)];
    msgs.extend(batch_msgs(&[], 0, only_first).into_iter().skip(1));
    refused(&nodes, msgs, Code::InvalidArgument).await;
    // A block larger than a batched block may be, in two messages.
    let big = pattern(max + 1, 3);
    let msgs = vec![
        header(&chain, MAX_BATCH_BYTES),
        data(&big[..max]),
        data(&big[max..]),
        trailer(&BlockId::of(&big)),
    ];
    refused(&nodes, msgs, Code::InvalidArgument).await;
    // More bytes than max_length: neither block lands.
    let msgs = batch_msgs(&chain, 1000, &[first.clone(), second.clone()]);
    refused(&nodes, msgs, Code::InvalidArgument).await;
    // The stream ends without the end marker (as when the node before aborted: its
    // closed queue ends the stream cleanly), or inside a block.
    let mut msgs = batch_msgs(&chain, 1200, &[first.clone(), second.clone()]);
    msgs.pop();
    refused(&nodes, msgs.clone(), Code::Cancelled).await;
    msgs.pop();
    refused(&nodes, msgs, Code::Cancelled).await;
    // The end marker inside a block, and a message after it.
    let mut msgs = batch_msgs(&chain, 1200, &[first.clone(), second.clone()]);
    let end = msgs.pop().unwrap();
    let last = msgs.pop().unwrap();
    refused(
        &nodes,
        [msgs.clone(), vec![end.clone()]].concat(),
        Code::InvalidArgument,
    )
    .await;
    refused(
        &nodes,
        [msgs, vec![last, end, data(b"x")]].concat(),
        Code::InvalidArgument,
    )
    .await;
    // More than MAX_BATCH_FILES blocks.
    let one = block(vec![7]);
    let many = vec![one.clone(); MAX_BATCH_FILES + 1];
    let msgs = batch_msgs(&chain, MAX_BATCH_FILES as u64 + 1, &many);
    refused(&nodes, msgs, Code::InvalidArgument).await;
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_mid_batch_leaves_no_partial_block() {
    let nodes = start_nodes(3).await;
    let chain = locations(&nodes);
    let first = block(pattern(5000, 1));
    let second = pattern(MAX_BATCHED_BLOCK as usize, 2);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut head = nodes[0].client();
    let call = tokio::spawn(async move {
        head.write_blocks(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let mut msgs = batch_msgs(&chain, MAX_BATCH_BYTES, std::slice::from_ref(&first));
    msgs.pop(); // no end marker: the client vanishes first
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    tx.send(data(&second[..1000])).await.unwrap();
    // Every node has received the first block and part of the second.
    for n in &nodes {
        wait_until(&format!("{} received 6000 bytes", n.id), WAIT, || async {
            http_get(n.http, "/metrics")
                .await
                .1
                .contains("kdfs_datanode_bytes_received_total 6000\n")
        })
        .await;
    }
    call.abort();
    drop(tx);
    tmp_emptied(&nodes).await;
    // A batch's blocks are committed only once its stream ended well.
    for n in &nodes {
        assert!(stored(n).is_empty(), "{:?}", stored(n));
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_tail_is_named_failed_for_every_block() {
    let mut nodes = start_nodes(3).await;
    let chain = locations(&nodes);
    let tail = nodes.pop().unwrap();
    let tail_id = tail.id.to_string();
    let (_dir, r) = tail.stop().await;
    r.unwrap();
    let blocks: Vec<_> = (0..5)
        .map(|i| block(pattern(3000 * i + 1, i as u8)))
        .collect();
    let resp = write_batch(&chain, &blocks).await.unwrap();

    assert_eq!(resp.blocks.len(), 5);
    for (i, r) in resp.blocks.iter().enumerate() {
        assert_eq!(r.committed, ids(&nodes), "block {i}");
        assert_eq!(failed_nodes(&resp, i), vec![tail_id.clone()]);
        assert!(!r.failed[0].out_of_space);
    }
    for n in &nodes {
        assert!(blocks.iter().all(|(_, id)| n.holds(id)));
    }
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_space_is_refused_before_any_byte() {
    let big = TestNode::keyed(&[]).await;
    let small = TestNode::keyed(&["--fixed-capacity", "1MiB"]).await;
    let blocks: Vec<_> = (0..3).map(|i| block(pattern(500_000, i))).collect();
    let err = write_batch(&[small.location()], &blocks).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(small.tmp_files().is_empty() && small.block_files().is_empty());

    // Downstream, the refusal is the small node's failure on every block, flagged.
    let resp = write_batch(&[big.location(), small.location()], &blocks)
        .await
        .unwrap();
    for r in &resp.blocks {
        assert_eq!(r.committed, vec![big.id.to_string()]);
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].node, small.id.to_string());
        assert!(r.failed[0].out_of_space, "{:?}", r.failed);
    }
    assert!(small.tmp_files().is_empty() && small.block_files().is_empty());
    stop_all(vec![big, small]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_blocks_are_reported_incrementally() {
    let (nn, url, _srv) = FakeNamenode::start("c1").await;
    let node = TestNode::start(&url, &[]).await;
    // Registered: what is written from now on goes into incremental reports.
    wait_for("a full block report", WAIT, || {
        nn.seen(|s| !s.full_reports.is_empty())
    })
    .await;
    let blocks: Vec<_> = (0..4).map(|i| block(pattern(2000 + i, i as u8))).collect();
    write_batch(&[node.location()], &blocks).await.unwrap();
    wait_for("every batched block reported", WAIT, || {
        let added = nn.added();
        blocks.iter().all(|(_, id)| added.contains(id))
    })
    .await;
    let (_d, r) = node.stop().await;
    r.unwrap();
}

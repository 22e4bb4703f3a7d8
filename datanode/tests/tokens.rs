//! Issue 24 finding 6, the datanode abused directly: writes, reads and transfers that
//! the namenode did not grant (no token, a forged or expired one, a pipeline it did not
//! issue, a 74 GB reservation, arbitrary addresses to dial) are refused before
//! anything is reserved, written or dialed, and honest traffic still flows. Real
//! datanodes on 127.0.0.1 holding the test block key of a fake namenode.

mod common;

use std::time::Duration;

use common::*;
use kdfs_core::{BlockId, DatanodeId};
use kdfs_proto::block_token::{BlockKey, Grant, SECRET_LEN, now_ms};
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::pb::{
    BlockToken, DatanodeLocation, ReadBlockRequest, ReplicateBlock, WriteBlockRequest, WriteHeader,
};
use kdfs_proto::transport::CHUNK_SIZE;
use kdfs_proto::wire::Location;
use tonic::Code;

/// The value of `kdfs_datanode_<name>` in the node's `/metrics`.
async fn metric(node: &TestNode, name: &str) -> u64 {
    let (_, m) = http_get(node.http, "/metrics").await;
    let prefix = format!("kdfs_datanode_{name} ");
    m.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{name} in /metrics"))
        .parse()
        .unwrap()
}

/// What the datanode says it has room for: a refused write must leave it as it was
/// (nothing reserved).
async fn available(node: &TestNode) -> u64 {
    metric(node, "available_bytes").await
}

fn checked(chain: &[DatanodeLocation]) -> Vec<Location> {
    chain
        .iter()
        .map(|l| Location::try_from(l).unwrap())
        .collect()
}

/// A whole `WriteBlock` stream of `bytes` with `header` first.
fn stream(header: WriteHeader, bytes: &[u8]) -> Vec<WriteBlockRequest> {
    let mut msgs = vec![WriteBlockRequest {
        msg: Some(Msg::Header(header)),
    }];
    msgs.extend(bytes.chunks(CHUNK_SIZE).map(data));
    msgs.push(trailer(&BlockId::of(bytes)));
    msgs
}

async fn write(node: &TestNode, msgs: Vec<WriteBlockRequest>) -> Result<(), tonic::Status> {
    node.client()
        .write_block(tokio_stream::iter(msgs))
        .await
        .map(|_| ())
}

/// A datanode id and an address nobody should ever dial: a listener that counts the
/// connections it gets (SSRF).
struct Trap {
    location: DatanodeLocation,
    listener: std::net::TcpListener,
}

impl Trap {
    fn new() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Self {
            location: DatanodeLocation {
                id: DatanodeId::random().to_string(),
                address: listener.local_addr().unwrap().to_string(),
            },
            listener,
        }
    }

    fn dialed(&self) -> bool {
        self.listener.accept().is_ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_namenode_did_not_grant_are_refused_before_anything_is_reserved() {
    let node = TestNode::keyed(&["--fixed-capacity", "256MiB"]).await;
    let other = TestNode::keyed(&[]).await;
    let trap = Trap::new();
    let me = node.location();
    let bytes = pattern(CHUNK_SIZE + 100, 1);
    let len = bytes.len() as u64;
    let free = available(&node).await;
    let refusals = metric(&node, "token_refusals_total").await;
    let forged_key = BlockKey::new(test_key().id, [0x66; SECRET_LEN], now_ms() + 60_000);
    let expired = Grant::write(
        TEST_UPLOAD,
        &checked(std::slice::from_ref(&me)),
        len,
        now_ms() - 1,
    );
    // The same node again under made-up ids: it would store the block once per entry.
    let looped: Vec<DatanodeLocation> = (0..6)
        .map(|_| DatanodeLocation {
            id: DatanodeId::random().to_string(),
            address: me.address.clone(),
        })
        .collect();
    let header =
        |downstream: Vec<DatanodeLocation>, max_length, token: Option<BlockToken>| WriteHeader {
            downstream,
            upload_id: TEST_UPLOAD.into(),
            max_length,
            token,
        };
    let own = |max| Some(write_token(std::slice::from_ref(&me), max));
    let cases: Vec<(&str, WriteHeader, Code)> = vec![
        (
            "no token",
            header(vec![], len, None),
            Code::PermissionDenied,
        ),
        (
            "a forged token (the key id, another secret)",
            header(
                vec![],
                len,
                Some(
                    Grant::write(
                        TEST_UPLOAD,
                        &checked(std::slice::from_ref(&me)),
                        len,
                        now_ms() + 60_000,
                    )
                    .sign(&forged_key),
                ),
            ),
            Code::PermissionDenied,
        ),
        (
            "an expired token",
            header(vec![], len, Some(expired.sign(&test_key()))),
            Code::PermissionDenied,
        ),
        (
            "max_length of 74 GB on a token for the block",
            header(vec![], 74_000_000_000, own(len)),
            Code::PermissionDenied,
        ),
        (
            "74 GB, its token stretched after signing",
            header(vec![], 74_000_000_000, {
                let mut t = write_token(std::slice::from_ref(&me), len);
                let mut g = t.grant.to_vec();
                let at = g.len() - 1;
                g[at] ^= 0x7f;
                t.grant = g.into();
                Some(t)
            }),
            Code::PermissionDenied,
        ),
        (
            "downstream pointing back at the same node",
            header(looped.clone(), len, own(len)),
            Code::PermissionDenied,
        ),
        (
            "an arbitrary address to dial",
            header(vec![trap.location.clone()], len, own(len)),
            Code::PermissionDenied,
        ),
        (
            "a token for another node's pipeline",
            header(vec![], len, Some(write_token(&[other.location()], len))),
            Code::PermissionDenied,
        ),
        (
            "a read token",
            header(vec![], len, Some(read_token(&BlockId::of(&bytes)))),
            Code::PermissionDenied,
        ),
        (
            "another upload's token",
            WriteHeader {
                upload_id: "someone-else".into(),
                ..header(vec![], len, own(len))
            },
            Code::PermissionDenied,
        ),
        (
            "a pipeline of 17 datanodes",
            header(vec![trap.location.clone(); 16], len, own(len)),
            Code::InvalidArgument,
        ),
    ];
    for (name, h, code) in cases {
        let err = write(&node, stream(h, &bytes)).await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err}");
        assert_eq!(available(&node).await, free, "{name}: nothing reserved");
        assert!(node.tmp_files().is_empty(), "{name}: nothing written");
        assert!(node.block_files().is_empty(), "{name}: nothing stored");
    }
    assert_eq!(metric(&node, "token_refusals_total").await, refusals + 10);

    // Held open, refused streams hold nothing either: the honest write still fits.
    let mut held = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(WriteBlockRequest {
            msg: Some(Msg::Header(header(vec![], 250 << 20, None))),
        })
        .await
        .unwrap();
        let mut c = node.client();
        let call = tokio::spawn(async move {
            c.write_block(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        held.push((tx, call));
    }
    for (_tx, call) in held {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    }
    assert_eq!(available(&node).await, free);
    let resp = write_chain(std::slice::from_ref(&me), &bytes, &BlockId::of(&bytes))
        .await
        .unwrap();
    assert_eq!(resp.committed, vec![node.id.to_string()]);
    assert_eq!(node.block_files().len(), 2, "one block and its sidecar");
    assert!(
        !trap.dialed(),
        "no address outside a granted pipeline was dialed"
    );
    for n in [node, other] {
        n.stop().await.1.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_needs_a_write_token_for_its_pipeline() {
    let nodes = start_nodes(2).await;
    let chain = locations(&nodes);
    let blocks = vec![block(pattern(5000, 1)), block(pattern(7000, 2))];
    let transfer = transfer_token(&blocks[0].1, 12_000, nodes[1].id, &chain);
    for (name, token) in [("no token", None), ("a transfer token", Some(transfer))] {
        let mut msgs = batch_msgs(&chain, 12_000, &blocks);
        if let Some(Msg::Header(h)) = &mut msgs[0].msg {
            h.token = token;
        }
        let err = send_batch(&chain[0].address, msgs).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{name}: {err}");
    }
    for n in &nodes {
        assert!(n.block_files().is_empty() && n.tmp_files().is_empty());
    }
    let resp = write_batch(&chain, &blocks).await.unwrap();
    assert!(resp.blocks.iter().all(|b| b.committed.len() == 2));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_need_a_read_token_for_that_block() {
    let node = TestNode::keyed(&[]).await;
    let bytes = pattern(100_000, 3);
    let id = BlockId::of(&bytes);
    write_chain(&[node.location()], &bytes, &id).await.unwrap();
    let read = |token: Option<BlockToken>| {
        let mut c = node.client();
        async move {
            let mut s = c
                .read_block(ReadBlockRequest {
                    block_id: kdfs_proto::wire::raw(id.as_bytes()),
                    offset: 0,
                    length: 0,
                    token,
                })
                .await?
                .into_inner();
            let mut n = 0;
            while let Some(m) = s.message().await? {
                n += m.data.len();
            }
            Ok::<_, tonic::Status>(n)
        }
    };
    let expired = Grant::read(id, now_ms() - 1).sign(&test_key());
    for (name, token) in [
        ("no token", None),
        ("another block's", Some(read_token(&BlockId::of(b"other")))),
        ("expired", Some(expired)),
        (
            "a write token",
            Some(write_token(&[node.location()], 1 << 20)),
        ),
    ] {
        let err = read(token).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{name}: {err}");
    }
    assert_eq!(read(Some(read_token(&id))).await.unwrap(), bytes.len());
    node.stop().await.1.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_go_only_where_and_what_the_token_says() {
    let nodes = start_nodes(2).await;
    let (source, target) = (&nodes[0], &nodes[1]);
    let trap = Trap::new();
    let bytes = pattern(300_000, 4);
    let id = BlockId::of(&bytes);
    let len = bytes.len() as u64;
    write_chain(&[source.location()], &bytes, &id)
        .await
        .unwrap();
    let transfer = |targets: Vec<DatanodeLocation>, token| ReplicateBlock {
        block_id: kdfs_proto::wire::raw(id.as_bytes()),
        length: len,
        targets,
        token,
    };
    let to_target = transfer_token(&id, len, source.id, &[target.location()]);
    for (name, r) in [
        (
            "no token: a datanode as an SSRF proxy",
            transfer(vec![trap.location.clone()], None),
        ),
        (
            "a token for other targets",
            transfer(vec![trap.location.clone()], Some(to_target.clone())),
        ),
        (
            "a token naming another source",
            transfer(
                vec![target.location()],
                Some(transfer_token(&id, len, target.id, &[target.location()])),
            ),
        ),
        (
            "a token for another block",
            transfer(
                vec![target.location()],
                Some(transfer_token(
                    &BlockId::of(b"x"),
                    len,
                    source.id,
                    &[target.location()],
                )),
            ),
        ),
    ] {
        let err = source.client().transfer_block(r).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{name}: {err}");
    }
    assert!(!target.holds(&id));

    // A transfer token carries only its block: other bytes under it commit nowhere.
    let forged = pattern(200_000, 5);
    let err = write(
        target,
        stream(
            WriteHeader {
                max_length: len,
                token: Some(to_target.clone()),
                ..Default::default()
            },
            &forged,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    wait_for("tmp/ emptied", Duration::from_secs(5), || {
        target.tmp_files().is_empty()
    })
    .await;
    assert!(!target.holds(&BlockId::of(&forged)));

    let resp = source
        .client()
        .transfer_block(transfer(vec![target.location()], Some(to_target)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.committed, vec![target.id.to_string()]);
    assert!(target.holds(&id));
    assert!(!trap.dialed());
    stop_all(nodes).await;
}

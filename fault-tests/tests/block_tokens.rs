//! Issue 24 finding 6 against a real process cluster: a client that dials a datanode
//! directly (skipping the gateway and the namenode) can no longer reserve 74 GB per
//! stream, make a node store a block once per fake downstream entry, or read a block;
//! the gateway's uploads and downloads, which carry the namenode's block access tokens,
//! still work. (Re-replication with transfer tokens: `datanode_death.rs`.)

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kdfs_proto::pb::datanode_client::DatanodeClient;
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::pb::{
    DatanodeLocation, ReadBlockRequest, WriteBlockRequest, WriteHeader, WriteTrailer,
};
use kdfs_proto::{BlockId, DatanodeId};
use kdfs_testkit::{Options, ProcessCluster, random_bytes};
use tonic::Code;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn client(address: &str) -> DatanodeClient<tonic::transport::Channel> {
    DatanodeClient::new(kdfs_proto::transport::lazy_channel(address).expect("an address"))
}

fn header(downstream: Vec<DatanodeLocation>, max_length: u64) -> WriteBlockRequest {
    WriteBlockRequest {
        msg: Some(Msg::Header(WriteHeader {
            downstream,
            upload_id: "attacker".into(),
            max_length,
            token: None,
        })),
    }
}

#[test]
fn a_datanode_refuses_what_the_namenode_did_not_grant() {
    let c = ProcessCluster::start(Options::default().datanodes(3).replication(3));
    let target = c.datanode_addrs[0].clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Three streams reserving ~74 GB each, held open: before tokens, every upload
        // then failed with 507.
        let mut held = Vec::new();
        for _ in 0..3 {
            // The header, then nothing: the stream stays open.
            let open = futures::stream::iter([header(vec![], 74_000_000_000)])
                .chain(futures::stream::pending());
            let mut dn = client(&target);
            held.push(tokio::spawn(async move { dn.write_block(open).await }));
        }
        for call in held {
            let err = tokio::time::timeout(CALL_TIMEOUT, call)
                .await
                .expect("refused at once")
                .unwrap()
                .unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        }

        // A downstream list of made-up ids all pointing back at the same node: before
        // tokens, it stored the block once per entry.
        let data = Bytes::from(random_bytes(1 << 20, 7));
        let looped: Vec<DatanodeLocation> = (0..6)
            .map(|_| DatanodeLocation {
                id: DatanodeId::random().to_string(),
                address: target.clone(),
            })
            .collect();
        let msgs = vec![
            header(looped, data.len() as u64),
            WriteBlockRequest {
                msg: Some(Msg::Data(data.clone())),
            },
            WriteBlockRequest {
                msg: Some(Msg::Trailer(WriteTrailer {
                    block_id: kdfs_proto::wire::raw(BlockId::of(&data).as_bytes()),
                })),
            },
        ];
        let err = client(&target)
            .write_block(futures::stream::iter(msgs))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    });
    for i in 0..3 {
        assert!(
            c.blocks_on_disk(i).is_empty(),
            "nothing of the attack stored"
        );
    }

    // The gateway's upload and download carry the namenode's tokens: they work.
    let stored = c.upload(&random_bytes(600 << 10, 1));
    c.verify_all(&[stored]);
    let block = c
        .blocks_on_disk(0)
        .into_iter()
        .next()
        .expect("a replica on datanode 0 (replication 3 of 3)");
    rt.block_on(async {
        let err = client(&target)
            .read_block(ReadBlockRequest {
                block_id: kdfs_proto::wire::raw(BlockId::parse(&block).unwrap().as_bytes()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "a read without a token: {err}"
        );
    });
}

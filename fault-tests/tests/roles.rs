//! Issue 24 finding 2: with mTLS, any certificate the CA signed could call any rpc (a
//! gateway's certificate registered a fake datanode). Now every certificate carries a
//! role and every rpc is authorized by it (docs/security.md, "Roles"). Against a real
//! mTLS cluster, with certificates minted under its own CA:
//!
//! - a gateway certificate cannot Register, Heartbeat or send block reports;
//! - a datanode certificate cannot DeleteFile or CommitFile;
//! - a certificate with no role, or with two, is refused everything;
//! - an rpc path the service does not list is refused (not left to the handler);
//! - at a datanode: `TransferBlock` is served to nobody (namenode commands ride on the
//!   heartbeat reply), and the namenode's certificate cannot write or read blocks.
//!
//! Each refusal is `PERMISSION_DENIED` with an audit line, and nothing changes: the
//! same datanodes, every file intact.

use std::time::Duration;

use kdfs_proto::pb;
use kdfs_proto::pb::datanode_client::DatanodeClient;
use kdfs_proto::pb::namenode_client::NamenodeClient;
use kdfs_proto::tls::Tls;
use kdfs_testkit::pki::Leaf;
use kdfs_testkit::{Options, ProcessCluster, random_bytes};
use tonic::Code;
use tonic::transport::Channel;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1"];

fn channel(address: &str, leaf: &Leaf, ca: &std::path::Path) -> Channel {
    let tls = Tls::from_files(&leaf.cert, &leaf.key, Some(ca.to_owned())).expect("test TLS");
    kdfs_proto::tls::channel(address, Some(&tls)).expect("a channel")
}

/// The call's refusal: it must be `PERMISSION_DENIED` naming `reason`.
async fn refused<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    reason: &str,
) {
    let outcome = tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {CALL_TIMEOUT:?}"));
    let status = match outcome {
        Ok(served) => panic!("{what} was served: {served:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    assert!(
        status.message().contains(reason),
        "{what}: {status:?} does not say {reason:?}"
    );
}

fn register(id: &str, address: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        datanode_id: id.into(),
        address: address.into(),
        capacity: 1 << 40,
        available: 1 << 40,
        ..Default::default()
    }
}

#[test]
fn every_rpc_is_authorized_by_the_callers_role() {
    let c = ProcessCluster::start(Options::default().datanodes(3).tls(true));
    let data = random_bytes(300 << 10, 2424);
    let stored = c.upload(&data);
    let pki = c.pki.as_ref().expect("a TLS cluster has its certificates");
    let ca = &pki.ca.cert;
    let nn = format!("127.0.0.1:{}", c.namenode_port);
    let dn = c.datanode_addrs[0].clone();
    let no_role = pki.ca.leaf("no-role", LOCAL_NAMES);
    let two_roles = pki
        .ca
        .leaf_with_roles("two-roles", &["gateway", "datanode"], LOCAL_NAMES);
    let file_id = bytes::Bytes::from(hex_bytes(&stored.hash));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime");
    let _in_runtime = rt.enter();
    let as_gateway = NamenodeClient::new(channel(&nn, &pki.gateway, ca));
    let as_datanode = NamenodeClient::new(channel(&nn, &pki.datanode, ca));
    rt.block_on(async {
        // A gateway certificate speaks for no datanode (the attack of the finding: a
        // fake datanode registered with a gateway's certificate).
        let fake = "6f1c1b2e-3d4c-4b5a-9e8f-7a6b5c4d3e2f";
        let not_gw = "Register is for the datanode role, not gateway";
        refused(
            "Register as a gateway",
            as_gateway.clone().register(register(fake, "127.0.0.1:1")),
            not_gw,
        )
        .await;
        refused(
            "Heartbeat as a gateway",
            as_gateway.clone().heartbeat(pb::HeartbeatRequest {
                datanode_id: fake.into(),
                ..Default::default()
            }),
            "for the datanode role, not gateway",
        )
        .await;
        refused(
            "IncrementalBlockReport as a gateway",
            as_gateway
                .clone()
                .incremental_block_report(pb::IncrementalBlockReportRequest {
                    datanode_id: fake.into(),
                    ..Default::default()
                }),
            "for the datanode role, not gateway",
        )
        .await;
        let chunk = pb::FullBlockReportChunk {
            datanode_id: fake.into(),
            blocks: Vec::new(),
        };
        refused(
            "FullBlockReport as a gateway",
            as_gateway
                .clone()
                .full_block_report(futures::stream::iter([chunk])),
            "for the datanode role, not gateway",
        )
        .await;

        // A datanode certificate cannot delete or commit files.
        refused(
            "DeleteFile as a datanode",
            as_datanode.clone().delete_file(pb::DeleteFileRequest {
                file_id: file_id.clone(),
            }),
            "DeleteFile is for the gateway role, not datanode",
        )
        .await;
        refused(
            "CommitFile as a datanode",
            as_datanode.clone().commit_file(pb::CommitFileRequest {
                upload_id: "6f1c1b2e-3d4c-4b5a-9e8f-7a6b5c4d3e2f".into(),
                file_id: file_id.clone(),
                size: 1,
                ..Default::default()
            }),
            "CommitFile is for the gateway role, not datanode",
        )
        .await;

        // No role, or two: nothing.
        for (what, leaf, reason) in [
            ("no role", &no_role, "carries no role"),
            ("two roles", &two_roles, "carries several roles"),
        ] {
            let mut client = NamenodeClient::new(channel(&nn, leaf, ca));
            refused(
                &format!("ClusterInfo with {what}"),
                client.cluster_info(pb::ClusterInfoRequest::default()),
                reason,
            )
            .await;
        }

        // A path the namenode's table does not list, even from a gateway.
        let mut grpc = tonic::client::Grpc::new(channel(&nn, &pki.gateway, ca));
        grpc.ready().await.expect("channel ready");
        let codec =
            tonic_prost::ProstCodec::<pb::ClusterInfoRequest, pb::ClusterInfoResponse>::default();
        refused(
            "an unknown rpc",
            grpc.unary(
                tonic::Request::new(pb::ClusterInfoRequest::default()),
                "/kdfs.v1.Namenode/DropEverything".parse().unwrap(),
                codec,
            ),
            "is not an rpc of kdfs.v1.Namenode",
        )
        .await;

        // A datanode: TransferBlock for nobody; the namenode's certificate may neither
        // read nor write blocks there (refused by role, before any token is looked at).
        let block = c.blocks_on_disk(0).into_iter().next();
        let read = |id: &str| pb::ReadBlockRequest {
            block_id: hex_bytes(id).into(),
            ..Default::default()
        };
        for (who, leaf) in [("gateway", &pki.gateway), ("datanode", &pki.datanode)] {
            let mut client = DatanodeClient::new(channel(&dn, leaf, ca));
            refused(
                &format!("TransferBlock as a {who}"),
                client.transfer_block(pb::ReplicateBlock::default()),
                "TransferBlock is not served to any caller over mTLS",
            )
            .await;
        }
        let mut as_namenode = DatanodeClient::new(channel(&dn, &pki.namenode, ca));
        let any_block = block.unwrap_or_else(|| "00".repeat(32));
        refused(
            "ReadBlock as the namenode",
            as_namenode.read_block(read(&any_block)),
            "ReadBlock is for the gateway or datanode role, not namenode",
        )
        .await;
        refused(
            "WriteBlock as the namenode",
            as_namenode.write_block(futures::stream::iter(Vec::<pb::WriteBlockRequest>::new())),
            "WriteBlock is for the gateway or datanode role, not namenode",
        )
        .await;
    });

    // Audited, and nothing changed.
    c.wait_until("the refusals' audit lines", Duration::from_secs(10), || {
        let log = c.namenodes[0].log_text();
        log.contains("rpc refused: Register is for the datanode role, not gateway")
            && log.contains("rpc refused: DeleteFile is for the gateway role, not datanode")
            && log.contains("who=no-role")
    });
    assert_eq!(
        c.live_datanodes(),
        3,
        "a refused call changed the datanodes"
    );
    assert_eq!(c.download(&stored.hash), data);
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

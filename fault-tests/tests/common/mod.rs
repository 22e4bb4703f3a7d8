//! What the security scenarios share: a namenode gRPC client of a running
//! [`ProcessCluster`], and a fake datanode (a gRPC client that registers and reports
//! whatever it is told, serving nothing); and in [`ha`] what the HA scenarios share.

#![allow(dead_code)] // Each test file uses a part.

pub mod ha;

use std::time::Duration;

use kdfs_proto::pb;
use kdfs_proto::pb::namenode_client::NamenodeClient;
use tonic::transport::Channel;

/// Per-call deadline: longer is a hang.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A fake datanode claims this much free space, so placement and trims favour it.
pub const HUGE: u64 = 1 << 50;

/// A single-threaded runtime for the gRPC calls of a blocking test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
}

/// A plaintext namenode client on `127.0.0.1:port` (call inside the runtime).
pub fn namenode(port: u16) -> NamenodeClient<Channel> {
    let channel = kdfs_proto::tls::channel(&format!("127.0.0.1:{port}"), None).expect("a channel");
    NamenodeClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A datanode id (UUID text) made from `n`, so runs are reproducible.
pub fn datanode_id(n: u128) -> String {
    let h = format!("{:032x}", n ^ 0x5eed_0000_0000_0000_0000_0000_0000_0000);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Raw 32-byte id of a block given as 64 hex characters.
pub fn raw_id(hex: &str) -> Vec<u8> {
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex id"))
        .collect()
}

/// A process that pretends to be a datanode: it registers with huge free space and
/// reports blocks it does not have. Its address serves nothing.
pub struct FakeDatanode {
    pub id: String,
    client: NamenodeClient<Channel>,
}

impl FakeDatanode {
    /// Registers fake `n` (any cluster: it adopts the namenode's).
    pub async fn register(client: &NamenodeClient<Channel>, n: u128) -> Self {
        let mut fake = Self {
            id: datanode_id(n),
            client: client.clone(),
        };
        fake.try_register(&"z".repeat(8))
            .await
            .unwrap_or_else(|e| panic!("fake datanode {n} could not register: {e}"));
        fake
    }

    /// One `Register` with `zone`.
    pub async fn try_register(&mut self, zone: &str) -> Result<(), tonic::Status> {
        let req = pb::RegisterRequest {
            datanode_id: self.id.clone(),
            cluster_id: String::new(),
            address: "127.0.0.1:1".into(),
            zone: zone.into(),
            capacity: HUGE,
            used: 0,
            available: HUGE,
            version: "0.0.0-fake".into(),
            pod_name: String::new(),
            node_name: String::new(),
            write_generation: 0,
        };
        timed(self.client.register(req)).await.map(|_| ())
    }

    /// One heartbeat; returns the commands it got.
    pub async fn heartbeat(&mut self) -> Vec<pb::Command> {
        let req = pb::HeartbeatRequest {
            datanode_id: self.id.clone(),
            capacity: HUGE,
            used: 0,
            available: HUGE,
            ..Default::default()
        };
        timed(self.client.heartbeat(req))
            .await
            .expect("fake heartbeat")
            .into_inner()
            .commands
    }

    /// Reports `blocks` (hex ids, with their lengths) as just added.
    pub async fn report_added(&mut self, blocks: &[(String, u64)]) {
        let req = pb::IncrementalBlockReportRequest {
            datanode_id: self.id.clone(),
            added: entries(blocks),
            ..Default::default()
        };
        timed(self.client.incremental_block_report(req))
            .await
            .expect("fake incremental report");
    }

    /// Sends a full report listing `blocks`.
    pub async fn full_report(&mut self, blocks: &[(String, u64)]) {
        let chunk = pb::FullBlockReportChunk {
            datanode_id: self.id.clone(),
            blocks: entries(blocks),
        };
        timed(
            self.client
                .full_block_report(futures::stream::iter(vec![chunk])),
        )
        .await
        .expect("fake full report");
    }
}

fn entries(blocks: &[(String, u64)]) -> Vec<pb::BlockEntry> {
    blocks
        .iter()
        .map(|(id, length)| pb::BlockEntry {
            id: raw_id(id).into(),
            length: *length,
            ..Default::default()
        })
        .collect()
}

/// Runs a call with [`CALL_TIMEOUT`].
pub async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("test call timed out"))?
}

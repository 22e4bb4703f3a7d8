//! Test fixtures: an in-process namenode on 127.0.0.1:0 and "datanodes" that are
//! plain tonic clients speaking the datanode side of the protocol.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use kdfs_core::{BlockId, DatanodeId, FileId};
use kdfs_namenode::{Config, run};
use kdfs_proto::pb::{self, namenode_client::NamenodeClient};
use kdfs_proto::transport;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub type Client = NamenodeClient<Channel>;

pub use kdfs_testkit::wait::wait_until;

/// Fast timings for tests: heartbeats every 100 ms, dead after 1 s; no Kubernetes.
pub fn fast_args(dir: &Path) -> Vec<String> {
    [
        "kdfs-namenode",
        "--data-dir",
        dir.to_str().expect("utf-8 temp dir"),
        "--heartbeat-interval",
        "100ms",
        "--dead-after",
        "1s",
        "--block-size",
        "1MiB",
        "--safe-mode-timeout",
        "1h",
        "--delete-grace",
        "0s",
        // Hermetic even when the tests themselves run in a Kubernetes pod.
        "--kubernetes",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A namenode running in this process.
pub struct TestNamenode {
    pub grpc: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<kdfs_namenode::Result<()>>,
}

impl TestNamenode {
    pub async fn start(args: &[String]) -> Self {
        let config = Config::parse_from(args);
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (g, h) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, grpc, http, shutdown.clone()));
        Self {
            grpc: g,
            http: h,
            shutdown,
            task,
        }
    }

    pub async fn client(&self) -> Client {
        connect(&self.grpc.to_string()).await
    }

    /// Graceful stop; asserts `run` returned Ok.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A client, retried until the server answers.
pub async fn connect(addr: &str) -> Client {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match transport::endpoint(addr).unwrap().connect().await {
            Ok(ch) => {
                return NamenodeClient::new(ch)
                    .max_decoding_message_size(transport::MAX_MESSAGE_SIZE);
            }
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot reach {addr}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

pub fn block(content: &[u8]) -> BlockId {
    BlockId::from_slice(&Sha256::digest(content)).unwrap()
}

pub fn file(content: &[u8]) -> FileId {
    FileId::from_slice(&Sha256::digest(content)).unwrap()
}

pub fn raw(id: &[u8; 32]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(id)
}

/// A datanode as the namenode sees it: registers, heartbeats, reports, and collects
/// the commands it is sent.
#[derive(Clone)]
pub struct FakeDatanode {
    pub id: DatanodeId,
    pub address: String,
    pub zone: String,
    pub client: Client,
    pub available: u64,
    pub commands: Arc<Mutex<Vec<pb::Command>>>,
}

impl FakeDatanode {
    pub fn new(client: Client, port: u16) -> Self {
        Self {
            id: DatanodeId::random(),
            address: format!("127.0.0.1:{port}"),
            zone: String::new(),
            client,
            available: 1 << 40,
            commands: Arc::default(),
        }
    }

    pub async fn register(
        &mut self,
        cluster_id: &str,
    ) -> Result<pb::RegisterResponse, tonic::Status> {
        let reply = self
            .client
            .register(pb::RegisterRequest {
                datanode_id: self.id.to_string(),
                cluster_id: cluster_id.into(),
                address: self.address.clone(),
                zone: self.zone.clone(),
                capacity: self.available,
                used: 0,
                available: self.available,
                version: "test".into(),
                pod_name: String::new(),
                node_name: String::new(),
                write_generation: next_generation(),
            })
            .await
            .map(|r| r.into_inner())?;
        // As a datanode does: its first heartbeat at once (until then it is pending,
        // and gets no writes).
        self.heartbeat_reporting(Vec::new()).await?;
        Ok(reply)
    }

    pub async fn heartbeat(&mut self) -> pb::HeartbeatResponse {
        self.heartbeat_reporting(Vec::new()).await.unwrap()
    }

    /// A heartbeat that reports replications this fake datanode failed.
    pub async fn heartbeat_reporting(
        &mut self,
        failed_copies: Vec<pb::FailedCopy>,
    ) -> Result<pb::HeartbeatResponse, tonic::Status> {
        let r = self
            .client
            .heartbeat(pb::HeartbeatRequest {
                datanode_id: self.id.to_string(),
                capacity: self.available,
                used: 0,
                available: self.available,
                in_flight: 0,
                blocks: 0,
                failed_copies,
                newest_block_key: 0,
                write_generation: next_generation(),
            })
            .await?
            .into_inner();
        self.commands.lock().unwrap().extend(r.commands.clone());
        Ok(r)
    }

    /// Heartbeats every 100 ms until `stop` is cancelled.
    pub fn keep_beating(&self, stop: CancellationToken) -> JoinHandle<()> {
        let mut me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                me.heartbeat().await;
            }
        })
    }

    pub async fn full_report(&mut self, blocks: &[(BlockId, u64)]) -> pb::FullBlockReportResponse {
        let id = self.id.to_string();
        let mut chunks: Vec<pb::FullBlockReportChunk> = blocks
            .chunks(transport::MAX_REPORT_CHUNK)
            .map(|c| pb::FullBlockReportChunk {
                datanode_id: id.clone(),
                blocks: c
                    .iter()
                    .map(|(b, len)| pb::BlockEntry {
                        id: raw(b.as_bytes()),
                        length: *len,
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(pb::FullBlockReportChunk {
                datanode_id: id,
                blocks: vec![],
            });
        }
        let r = self
            .client
            .full_block_report(tokio_stream::iter(chunks))
            .await
            .unwrap()
            .into_inner();
        self.commands.lock().unwrap().extend(r.commands.clone());
        r
    }

    pub async fn added(&mut self, blocks: &[(BlockId, u64)]) {
        let r = self
            .client
            .incremental_block_report(pb::IncrementalBlockReportRequest {
                datanode_id: self.id.to_string(),
                added: blocks
                    .iter()
                    .map(|(b, len)| pb::BlockEntry {
                        id: raw(b.as_bytes()),
                        length: *len,
                        generation: next_generation(),
                    })
                    .collect(),
                removed: vec![],
                corrupt: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        self.commands.lock().unwrap().extend(r.commands);
    }

    /// Block ids this node has been told to delete so far.
    pub fn deletes(&self) -> Vec<BlockId> {
        self.commands
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match &c.kind {
                Some(pb::command::Kind::Delete(d)) => Some(d.block_ids.clone()),
                _ => None,
            })
            .flatten()
            .map(|b| BlockId::from_slice(&b).unwrap())
            .collect()
    }

    /// Delete commands received so far: the generation each names, and its blocks.
    pub fn delete_commands(&self) -> Vec<(u64, Vec<BlockId>)> {
        self.commands
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match &c.kind {
                Some(pb::command::Kind::Delete(d)) => Some((
                    d.below_generation,
                    d.block_ids
                        .iter()
                        .map(|b| BlockId::from_slice(b).unwrap())
                        .collect(),
                )),
                _ => None,
            })
            .collect()
    }

    /// Replicate commands received so far: (block, target ids).
    pub fn replications(&self) -> Vec<(BlockId, Vec<String>)> {
        self.commands
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match &c.kind {
                Some(pb::command::Kind::Replicate(r)) => Some((
                    BlockId::from_slice(&r.block_id).unwrap(),
                    r.targets.iter().map(|t| t.id.clone()).collect(),
                )),
                _ => None,
            })
            .collect()
    }
}

/// `n` registered datanodes on made-up ports.
pub async fn datanodes(nn: &TestNamenode, n: usize) -> Vec<FakeDatanode> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut d = FakeDatanode::new(nn.client().await, 20000 + i as u16);
        d.register("").await.unwrap();
        out.push(d);
    }
    out
}

/// Uploads `content` as one block acknowledged by `acks`; returns the commit reply.
pub async fn upload(
    client: &mut Client,
    name: &str,
    content: &[u8],
    acks: &[&FakeDatanode],
) -> Result<pb::CommitFileResponse, tonic::Status> {
    let lease = client
        .begin_upload(pb::BeginUploadRequest {
            name: name.into(),
            content_type: "text/plain".into(),
            replication: 0,
            max_size: 0,
        })
        .await?
        .into_inner();
    commit(client, &lease.upload_id, content, acks).await
}

pub async fn commit(
    client: &mut Client,
    upload_id: &str,
    content: &[u8],
    acks: &[&FakeDatanode],
) -> Result<pb::CommitFileResponse, tonic::Status> {
    client
        .commit_file(pb::CommitFileRequest {
            replaces: None,
            object_content: false,
            upload_id: upload_id.into(),
            file_id: raw(file(content).as_bytes()),
            size: content.len() as u64,
            blocks: one_block(content, acks),
        })
        .await
        .map(|r| r.into_inner())
}

/// The block list of a one-block file of `content`, acknowledged by `acks`.
fn one_block(content: &[u8], acks: &[&FakeDatanode]) -> Vec<pb::CommittedBlock> {
    vec![pb::CommittedBlock {
        id: raw(block(content).as_bytes()),
        length: content.len() as u64,
        replicas: acks.iter().map(|d| d.id.to_string()).collect(),
    }]
}

/// A one-block file of a `CommitFiles` batch, acknowledged by `acks`.
pub fn batched(name: &str, content: &[u8], acks: &[&FakeDatanode]) -> pb::FileToCommit {
    pb::FileToCommit {
        name: name.into(),
        content_type: "text/plain".into(),
        file_id: raw(file(content).as_bytes()),
        size: content.len() as u64,
        blocks: one_block(content, acks),
        object_content: false,
    }
}

/// Opens a lease for a batch (its name is a placeholder) and commits `files` with
/// `CommitFiles`.
pub async fn commit_batch(
    client: &mut Client,
    files: Vec<pb::FileToCommit>,
) -> Result<(String, pb::CommitFilesResponse), tonic::Status> {
    let lease = client
        .begin_upload(pb::BeginUploadRequest {
            name: "batch".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let r = client
        .commit_files(pb::CommitFilesRequest {
            upload_id: lease.upload_id.clone(),
            files,
        })
        .await?
        .into_inner();
    Ok((lease.upload_id, r))
}

pub async fn get(
    client: &mut Client,
    content: &[u8],
) -> Result<pb::GetFileResponse, tonic::Status> {
    client
        .get_file(pb::GetFileRequest {
            file_id: raw(file(content).as_bytes()),
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn info(client: &mut Client) -> pb::ClusterInfoResponse {
    client
        .cluster_info(pb::ClusterInfoRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// The fake datanodes' write generation counter (one for all of them: each one's
/// values still only grow, which is all a datanode promises).
pub fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

//! Datanodes started in this process through `kdfs_datanode::run` on 127.0.0.1:0 with
//! temp data directories, the write and read calls tests make to them (with block
//! access tokens signed by the test key every [`FakeNamenode`] hands out), and a TCP
//! proxy that can "kill" a node's connections.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kdfs_core::{BlockId, DatanodeId};
use kdfs_datanode::Config;
use kdfs_proto::pb::datanode_client::DatanodeClient;
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::pb::*;
use kdfs_proto::transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Response, Status};

use super::{
    FakeNamenode, NO_NAMENODE, files_in, read_token, temp_files, wait_for, wait_until, write_token,
};

/// A datanode running in this process.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub id: DatanodeId,
    pub cancel: CancellationToken,
    pub task: JoinHandle<kdfs_datanode::Result<()>>,
}

impl TestNode {
    /// Starts a datanode talking to `namenode` (an unreachable one is fine: the datanode
    /// serves anyway) and waits until its gRPC server answers.
    pub async fn start(namenode: &str, extra: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), namenode, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, namenode: &str, extra: &[&str]) -> Self {
        let (task, grpc, http, cancel) = spawn(dir.path(), namenode, extra).await;
        let version = dir.path().join("VERSION");
        wait_for(
            "the datanode's VERSION file",
            Duration::from_secs(10),
            || version.exists(),
        )
        .await;
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&version).unwrap()).unwrap();
        let id = DatanodeId::parse(v["datanode_id"].as_str().unwrap()).unwrap();
        let node = Self {
            dir,
            grpc,
            http,
            id,
            cancel,
            task,
        };
        wait_until(
            "the datanode serving gRPC",
            Duration::from_secs(10),
            || async {
                // Refused for its missing token: the service answers.
                let r = node
                    .client()
                    .read_block(ReadBlockRequest {
                        block_id: kdfs_proto::wire::raw(BlockId::of(b"probe").as_bytes()),
                        ..Default::default()
                    })
                    .await;
                matches!(r, Err(s) if s.code() == tonic::Code::PermissionDenied)
            },
        )
        .await;
        node
    }

    /// Starts a datanode registered with a fresh [`FakeNamenode`] and waits until it
    /// holds the test block key, so the fixtures' tokens are accepted.
    pub async fn keyed(extra: &[&str]) -> Self {
        let (_nn, url, _server) = FakeNamenode::start("test-cluster").await;
        let node = Self::start(&url, extra).await;
        node.wait_for_keys().await;
        node
    }

    /// Waits until this node accepts the fixtures' tokens (it has registered with a
    /// [`FakeNamenode`] and learnt the test key).
    pub async fn wait_for_keys(&self) {
        wait_until(
            "the datanode holding the test block key",
            Duration::from_secs(10),
            || async {
                let r = read_range(self, &BlockId::of(b"probe"), 0, 0).await;
                matches!(r, Err(s) if s.code() == tonic::Code::NotFound)
            },
        )
        .await;
    }

    pub fn location(&self) -> DatanodeLocation {
        DatanodeLocation {
            id: self.id.to_string(),
            address: self.grpc.to_string(),
        }
    }

    pub fn client(&self) -> DatanodeClient<Channel> {
        client(&self.grpc.to_string())
    }

    pub fn block_path(&self, id: &BlockId) -> PathBuf {
        let h = id.to_string();
        self.dir
            .path()
            .join("blocks")
            .join(&h[..2])
            .join(&h[2..4])
            .join(&h)
    }

    pub fn holds(&self, id: &BlockId) -> bool {
        self.block_path(id).is_file()
    }

    /// Temp files of writes in progress: named ones in `tmp/`, and the unnamed
    /// (`O_TMPFILE`) ones this process holds open there.
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        temp_files(&self.dir.path().join("tmp"))
    }

    pub fn quarantined(&self) -> Vec<PathBuf> {
        files_in(&self.dir.path().join("quarantine"))
    }

    pub fn block_files(&self) -> Vec<PathBuf> {
        files_in(&self.dir.path().join("blocks"))
    }

    /// Graceful stop: cancels and waits for `run` to return; hands back the directory.
    pub async fn stop(self) -> (tempfile::TempDir, kdfs_datanode::Result<()>) {
        self.cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("datanode stops within its grace")
            .expect("run does not panic");
        (self.dir, r)
    }
}

/// Binds listeners and spawns `run` for a data directory.
pub async fn spawn(
    dir: &Path,
    namenode: &str,
    extra: &[&str],
) -> (
    JoinHandle<kdfs_datanode::Result<()>>,
    SocketAddr,
    SocketAddr,
    CancellationToken,
) {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ga, ha) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let mut args: Vec<String> = [
        "kdfs-datanode",
        "--data-dir",
        dir.to_str().unwrap(),
        "--namenode",
        namenode,
        "--reserved",
        "0",
        "--shutdown-grace",
        "3s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = <Config as clap::Parser>::parse_from(args);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(kdfs_datanode::run(config, grpc, http, cancel.clone()));
    (task, ga, ha, cancel)
}

pub fn client(address: &str) -> DatanodeClient<Channel> {
    DatanodeClient::new(transport::lazy_channel(address).unwrap())
        .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(transport::MAX_MESSAGE_SIZE)
}

/// The upload every fixture's write token is for.
pub const TEST_UPLOAD: &str = "test-upload";

/// The header of a write down `chain` (its head is the node called, the rest its
/// downstream), with a write token for exactly that.
pub fn header(chain: &[DatanodeLocation], max_length: u64) -> WriteBlockRequest {
    WriteBlockRequest {
        msg: Some(Msg::Header(WriteHeader {
            downstream: chain.iter().skip(1).cloned().collect(),
            upload_id: TEST_UPLOAD.into(),
            max_length,
            token: Some(write_token(chain, max_length)),
        })),
    }
}

pub fn data(b: &[u8]) -> WriteBlockRequest {
    WriteBlockRequest {
        msg: Some(Msg::Data(Bytes::copy_from_slice(b))),
    }
}

pub fn trailer(id: &BlockId) -> WriteBlockRequest {
    WriteBlockRequest {
        msg: Some(Msg::Trailer(WriteTrailer {
            block_id: kdfs_proto::wire::raw(id.as_bytes()),
        })),
    }
}

/// Writes `bytes` through the chain `nodes[0] -> nodes[1..]` with `claimed` in the trailer.
pub async fn write_chain(
    nodes: &[DatanodeLocation],
    bytes: &[u8],
    claimed: &BlockId,
) -> Result<WriteBlockResponse, Status> {
    let mut msgs = vec![header(nodes, bytes.len() as u64)];
    msgs.extend(bytes.chunks(transport::CHUNK_SIZE).map(data));
    msgs.push(trailer(claimed));
    client(&nodes[0].address)
        .write_block(tokio_stream::iter(msgs))
        .await
        .map(Response::into_inner)
}

/// A block for a batch: its bytes and the id its trailer claims (theirs).
pub fn block(bytes: Vec<u8>) -> (Vec<u8>, BlockId) {
    let id = BlockId::of(&bytes);
    (bytes, id)
}

/// The messages of a `WriteBlocks` stream down `chain`: the header, then for each
/// block its bytes (in messages of at most `CHUNK_SIZE`) and a trailer claiming its
/// id; then the end marker.
pub fn batch_msgs(
    chain: &[DatanodeLocation],
    max_length: u64,
    blocks: &[(Vec<u8>, BlockId)],
) -> Vec<WriteBlockRequest> {
    let mut msgs = vec![header(chain, max_length)];
    for (bytes, id) in blocks {
        msgs.extend(bytes.chunks(transport::CHUNK_SIZE).map(data));
        msgs.push(trailer(id));
    }
    msgs.push(end_of_batch());
    msgs
}

/// The trailer with an empty block id that ends a `WriteBlocks` batch.
pub fn end_of_batch() -> WriteBlockRequest {
    WriteBlockRequest {
        msg: Some(Msg::Trailer(WriteTrailer::default())),
    }
}

/// Sends `msgs` as one `WriteBlocks` call to the node at `address`.
pub async fn send_batch(
    address: &str,
    msgs: Vec<WriteBlockRequest>,
) -> Result<WriteBlocksResponse, Status> {
    client(address)
        .write_blocks(tokio_stream::iter(msgs))
        .await
        .map(Response::into_inner)
}

/// Writes `blocks` as one batch through the chain `nodes[0] -> nodes[1..]`, its
/// `max_length` their total.
pub async fn write_batch(
    nodes: &[DatanodeLocation],
    blocks: &[(Vec<u8>, BlockId)],
) -> Result<WriteBlocksResponse, Status> {
    let total = blocks.iter().map(|(b, _)| b.len() as u64).sum();
    let msgs = batch_msgs(nodes, total, blocks);
    send_batch(&nodes[0].address, msgs).await
}

/// Starts `n` datanodes registered with one [`FakeNamenode`], holding the test key.
pub async fn start_nodes(n: usize) -> Vec<TestNode> {
    let (_nn, url, _server) = FakeNamenode::start("test-cluster").await;
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(TestNode::start(&url, &[]).await);
    }
    for node in &v {
        node.wait_for_keys().await;
    }
    v
}

pub fn locations(nodes: &[TestNode]) -> Vec<DatanodeLocation> {
    nodes.iter().map(TestNode::location).collect()
}

pub async fn stop_all(nodes: Vec<TestNode>) {
    for n in nodes {
        let (_dir, r) = n.stop().await;
        r.expect("graceful stop returns Ok");
    }
}

/// Reads a range and returns its messages.
pub async fn read_range(
    node: &TestNode,
    id: &BlockId,
    offset: u64,
    length: u64,
) -> Result<Vec<ReadBlockResponse>, Status> {
    let mut stream = node
        .client()
        .read_block(ReadBlockRequest {
            block_id: kdfs_proto::wire::raw(id.as_bytes()),
            offset,
            length,
            token: Some(read_token(id)),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

/// A TCP proxy in front of a node; `kill` drops every connection through it and stops
/// accepting, which is what a crashed pod looks like to its peers.
pub struct Proxy {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let c = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let _ = inbound.set_nodelay(true);
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(target).await {
                        let _ = out.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(h);
            }
        });
        Self {
            addr,
            accept,
            conns,
        }
    }

    /// A proxy that forwards client-to-server bytes at most `rate` bytes per second
    /// (a slow disk or link at the node behind it); replies flow freely.
    pub async fn throttled(target: SocketAddr, rate: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let c = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let h = tokio::spawn(async move {
                    let Ok(out) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut ir, mut iw) = inbound.into_split();
                    let (mut or, mut ow) = out.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut or, &mut iw).await;
                    });
                    let started = Instant::now();
                    let mut sent = 0u64;
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = ir.read(&mut buf).await {
                        if n == 0 || ow.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n as u64;
                        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                        tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
                    }
                    back.abort();
                });
                c.lock().unwrap().push(h);
            }
        });
        Self {
            addr,
            accept,
            conns,
        }
    }

    pub fn kill(&self) {
        self.accept.abort();
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

/// The `WriteBlock` call a test feeds by hand: the call to the head of `chain` running
/// in a task, its header (the rest of `chain`, `max_length`) sent; the test sends the
/// rest through the queue.
pub async fn open_write(
    chain: &[DatanodeLocation],
    max_length: u64,
) -> (
    tokio::sync::mpsc::Sender<WriteBlockRequest>,
    JoinHandle<Result<Response<WriteBlockResponse>, Status>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut head = client(&chain[0].address);
    let call = tokio::spawn(async move {
        head.write_block(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(header(chain, max_length)).await.unwrap();
    (tx, call)
}

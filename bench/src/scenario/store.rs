//! `store`: the datanode's block store on this disk, below the gateway.
//!
//! - 64 MiB blocks written through the store (hash + CRC32C + fsync + rename), on one
//!   thread and through the `AsyncBlockWriter` the gRPC service uses, and read back
//!   verified (every chunk's CRC32C and the block's SHA-256, page cache warm), next to
//!   an fsync'd 64 MiB write of the same disk in the same run;
//! - the same blocks through the gRPC write chain of 1 and 3 in-process datanodes on
//!   127.0.0.1 (all on this one disk, so a 3-node chain writes every byte three
//!   times), and a verified `ReadBlock` from the chain's last node; an in-process
//!   namenode issues the pipelines and their block access tokens, as for any upload
//!   (its calls are outside the timed parts);
//! - the startup scan of a store holding `--blocks` blocks, warm and (when this
//!   process may drop the page cache, i.e. as root) cold. The blocks are empty files
//!   with sidecars: the scan lists directories and stats files, it never reads block
//!   content, so their size does not matter.
//!
//! Everything lives in a temp dir under the current directory, so on that disk.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use kdfs_core::BlockId;
use kdfs_core::cas::Sharding;
use kdfs_datanode::store::{AsyncBlockWriter, Store, StoreConfig};
use kdfs_proto::pb::datanode_client::DatanodeClient;
use kdfs_proto::pb::namenode_client::NamenodeClient;
use kdfs_proto::pb::write_block_request::Msg;
use kdfs_proto::pb::{
    BeginUploadRequest, ClusterInfoRequest, CommitFileRequest, CommittedBlock, GetFileRequest,
    ReadBlockRequest, WriteBlockRequest, WriteHeader, WriteTrailer,
};
use kdfs_proto::transport;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::disk::disk_write;
use crate::report::progress;
use crate::stats::{mbps, median};

/// The block size measured: the default block size of kdfs.
const BLOCK: usize = 64 << 20;
/// Bytes per write call and per gRPC message, as the gateway sends them.
const PIECE: usize = 1 << 20;
/// How long an in-process datanode may take to write its identity.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the three parts in a temp dir under `parent`; `runs` blocks of each kind,
/// medians reported; the scan of `scan_blocks` blocks.
pub(crate) async fn store(parent: &Path, runs: usize, scan_blocks: u64) -> anyhow::Result<Value> {
    let runs = runs.max(1);
    let dir = tempfile::Builder::new()
        .prefix("kdfs-bench-store-")
        .tempdir_in(parent)?;
    let mut out = json!({"scenario": "store", "block_bytes": BLOCK, "runs": runs});
    let blocks = blocks(dir.path(), runs).await?;
    let chain = chain(dir.path(), runs).await?;
    let scan = {
        let root = dir.path().join(format!("scan-{scan_blocks}"));
        tokio::task::spawn_blocking(move || scan(&root, scan_blocks as usize)).await??
    };
    for part in [blocks, chain, scan] {
        if let (Some(o), Value::Object(p)) = (out.as_object_mut(), part) {
            o.extend(p);
        }
    }
    Ok(out)
}

/// Cheap pseudo-random content, a new block for every seed (no dedup).
fn content(seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(BLOCK);
    while out.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.into()
}

/// Rounded figures of every run, for the JSON.
fn rounded(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.round()).collect()
}

/// Part 1: blocks written and read through the store, and the disk's own write.
async fn blocks(dir: &Path, runs: usize) -> anyhow::Result<Value> {
    progress(format!(
        "store: 64 MiB blocks written and read, {runs} of each kind"
    ));
    let root = dir.join("store");
    let store = tokio::task::spawn_blocking(move || Store::open(StoreConfig::new(root))).await??;
    let store = store.0;
    let (mut sync_w, mut async_w, mut read, mut disk) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs as u64 {
        // What the gRPC service uses: writing and hashing on two blocking threads.
        let data = content(1000 + run);
        let id = BlockId::of(&data);
        let t = Instant::now();
        let mut w = AsyncBlockWriter::start(&store, BLOCK as u64).await?;
        for o in (0..BLOCK).step_by(PIECE) {
            w.write(data.slice(o..o + PIECE)).await?;
        }
        w.commit(id).await?;
        async_w.push(mbps(BLOCK as u64, t.elapsed()));

        let (store, dir) = (store.clone(), dir.to_owned());
        let (w, r, d) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let data = content(run + 1);
            let id = BlockId::of(&data);
            let t = Instant::now();
            let mut writer = store.begin_write(BLOCK as u64)?;
            for piece in data.chunks(PIECE) {
                writer.write(piece)?;
            }
            writer.commit(id)?;
            let w = mbps(BLOCK as u64, t.elapsed());

            let t = Instant::now();
            let mut n = 0;
            for piece in store.read_range(&id, 0, 0)? {
                n += piece?.data.len();
            }
            ensure!(n == BLOCK, "store read {n} of {BLOCK} bytes");
            let r = mbps(BLOCK as u64, t.elapsed());
            let d = disk_write(&dir, &data[..PIECE], (BLOCK / PIECE) as u64)?;
            Ok((w, r, d))
        })
        .await??;
        sync_w.push(w);
        read.push(r);
        disk.push(d);
    }
    Ok(json!({
        "write_mb_s": median(sync_w.clone()), "async_write_mb_s": median(async_w.clone()),
        "read_mb_s": median(read.clone()), "disk_fsync_write_mb_s": median(disk.clone()),
        "write_runs_mb_s": rounded(&sync_w), "async_write_runs_mb_s": rounded(&async_w),
        "read_runs_mb_s": rounded(&read), "disk_fsync_write_runs_mb_s": rounded(&disk),
    }))
}

/// An in-process server (the namenode or a datanode) serving on 127.0.0.1.
struct Server<E> {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), E>>,
}

impl<E> Server<E> {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Starts the namenode that issues the chains' pipelines and tokens; its gRPC address.
async fn start_namenode(dir: &Path) -> anyhow::Result<(Server<kdfs_namenode::Error>, String)> {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = grpc.local_addr()?.to_string();
    let config = <kdfs_namenode::Config as clap::Parser>::try_parse_from([
        "kdfs-namenode".to_owned(),
        format!("--data-dir={}", dir.display()),
        "--heartbeat-interval=250ms".to_owned(),
        "--kubernetes=off".to_owned(),
    ])?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(kdfs_namenode::run(config, grpc, http, stop.clone()));
    Ok((Server { stop, task }, addr))
}

/// Starts a datanode registering with `namenode`.
async fn start_datanode(
    dir: &Path,
    namenode: &str,
) -> anyhow::Result<Server<kdfs_datanode::Error>> {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = <kdfs_datanode::Config as clap::Parser>::try_parse_from([
        "kdfs-datanode".to_owned(),
        format!("--data-dir={}", dir.display()),
        format!("--namenode=http://{namenode}"),
        "--reserved=0".to_owned(),
    ])?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(kdfs_datanode::run(config, grpc, http, stop.clone()));
    Ok(Server { stop, task })
}

/// Waits until `n` datanodes are live at the namenode.
async fn wait_live(
    nn: &mut NamenodeClient<tonic::transport::Channel>,
    n: usize,
) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if let Ok(info) = nn.cluster_info(ClusterInfoRequest::default()).await {
            // Heartbeating nodes, which take writes (not those still registering).
            let live = info.into_inner().live_datanodes as usize;
            if live >= n {
                return Ok(());
            }
        }
        if t.elapsed() > START_TIMEOUT {
            bail!("{n} datanodes were not live within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client(addr: &str) -> anyhow::Result<DatanodeClient<tonic::transport::Channel>> {
    Ok(DatanodeClient::new(transport::lazy_channel(addr)?)
        .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(transport::MAX_MESSAGE_SIZE))
}

/// Part 2: the gRPC write chain of 1 and 3 datanodes, and a read from its last node.
async fn chain(dir: &Path, runs: usize) -> anyhow::Result<Value> {
    progress("store: the gRPC write chain of 1 and 3 in-process datanodes");
    let (namenode, nn_addr) = start_namenode(&dir.join("nn")).await?;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(start_datanode(&dir.join(format!("dn{i}")), &nn_addr).await?);
    }
    let result = async {
        let mut nn = NamenodeClient::new(transport::lazy_channel(&nn_addr)?);
        wait_live(&mut nn, 3).await?;
        let mut out = json!({});
        let mut seed = 100;
        for width in [1usize, 3] {
            let (mut w, mut r) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                seed += 1;
                let (wr, rd) = chain_run(&mut nn, width, content(seed)).await?;
                w.push(wr);
                r.push(rd);
            }
            out[format!("chain_{width}_write_mb_s")] = json!(median(w.clone()));
            out[format!("chain_{width}_read_mb_s")] = json!(median(r.clone()));
            out[format!("chain_{width}_write_runs_mb_s")] = json!(rounded(&w));
            out[format!("chain_{width}_read_runs_mb_s")] = json!(rounded(&r));
        }
        anyhow::Ok(out)
    }
    .await;
    for n in nodes {
        n.stop().await;
    }
    namenode.stop().await;
    result
}

/// One block written through a chain of `width` datanodes that the namenode issued
/// (with its write token), committed as a file, and read back from the chain's last
/// node (with the read token of its GetFile): MB/s of the write and of the read.
async fn chain_run(
    nn: &mut NamenodeClient<tonic::transport::Channel>,
    width: usize,
    data: Bytes,
) -> anyhow::Result<(f64, f64)> {
    let id = BlockId::of(&data);
    let begin = nn
        .begin_upload(BeginUploadRequest {
            name: format!("store-bench-{id}"),
            replication: width as u32,
            max_size: BLOCK as u64,
            ..Default::default()
        })
        .await?
        .into_inner();
    let chain = begin.pipeline;
    ensure!(
        chain.len() == width,
        "the namenode gave a pipeline of {} datanodes, not {width}",
        chain.len()
    );
    let mut msgs = vec![WriteBlockRequest {
        msg: Some(Msg::Header(WriteHeader {
            downstream: chain[1..].to_vec(),
            upload_id: begin.upload_id.clone(),
            max_length: BLOCK as u64,
            token: begin.token,
        })),
    }];
    msgs.extend((0..BLOCK).step_by(PIECE).map(|o| WriteBlockRequest {
        msg: Some(Msg::Data(data.slice(o..o + PIECE))),
    }));
    msgs.push(WriteBlockRequest {
        msg: Some(Msg::Trailer(WriteTrailer {
            block_id: kdfs_proto::wire::raw(id.as_bytes()),
        })),
    });
    let t = Instant::now();
    let resp = client(&chain[0].address)?
        .write_block(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    let write = mbps(BLOCK as u64, t.elapsed());
    ensure!(
        resp.committed.len() == chain.len(),
        "a chain of {} committed {} replicas",
        chain.len(),
        resp.committed.len()
    );
    nn.commit_file(CommitFileRequest {
        replaces: None,
        object_content: false,
        upload_id: begin.upload_id,
        file_id: kdfs_proto::wire::raw(id.as_bytes()),
        size: BLOCK as u64,
        blocks: vec![CommittedBlock {
            id: kdfs_proto::wire::raw(id.as_bytes()),
            length: BLOCK as u64,
            replicas: resp.committed,
        }],
    })
    .await?;
    let located = nn
        .get_file(GetFileRequest {
            file_id: kdfs_proto::wire::raw(id.as_bytes()),
        })
        .await?
        .into_inner();
    let token = located
        .blocks
        .first()
        .and_then(|b| b.token.clone())
        .context("GetFile without a read token")?;

    let last = chain.last().expect("a chain has a node");
    let t = Instant::now();
    let mut stream = client(&last.address)?
        .read_block(ReadBlockRequest {
            block_id: kdfs_proto::wire::raw(id.as_bytes()),
            offset: 0,
            length: 0,
            token: Some(token),
        })
        .await?
        .into_inner();
    let mut n = 0;
    while let Some(m) = stream.message().await? {
        n += m.data.len();
    }
    ensure!(n == BLOCK, "ReadBlock returned {n} of {BLOCK} bytes");
    Ok((write, mbps(BLOCK as u64, t.elapsed())))
}

/// Lays out `n` empty blocks and their sidecars under `root/blocks`, on all cores.
fn populate(root: &Path, n: usize) -> anyhow::Result<()> {
    let blocks = root.join("blocks");
    let sharding = Sharding::default();
    let threads = std::thread::available_parallelism()?.get().max(2) * 2;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let blocks = &blocks;
                s.spawn(move || -> anyhow::Result<()> {
                    for i in (t..n).step_by(threads) {
                        let id = BlockId::of(&(i as u64).to_le_bytes());
                        let p = sharding.path(blocks, &id);
                        let dir = p.parent().expect("a block path has a shard directory");
                        if !dir.is_dir() {
                            std::fs::create_dir_all(dir)?;
                        }
                        std::fs::File::create(&p)?;
                        std::fs::File::create(format!("{}.crc", p.display()))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("populate thread panicked"))
    })
}

/// Empties the page cache so the scan reads directories from disk; needs root, and
/// says whether it worked.
fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Part 3: the startup scan of a store of `n` blocks in `root`, which is removed after.
fn scan(root: &Path, n: usize) -> anyhow::Result<Value> {
    progress(format!("store: startup scan of {n} blocks"));
    let t = Instant::now();
    populate(root, n)?;
    let populated = t.elapsed();
    let mut warm = Vec::new();
    for _ in 0..3 {
        let (store, report) = Store::open(StoreConfig::new(root))?;
        ensure!(
            store.block_count() == n,
            "the scan found {} of {n} blocks",
            store.block_count()
        );
        warm.push(report.took.as_secs_f64());
    }
    let cold = if drop_caches() {
        Some(Store::open(StoreConfig::new(root))?.1.took.as_secs_f64())
    } else {
        None
    };
    let t = Instant::now();
    std::fs::remove_dir_all(root)?;
    Ok(json!({
        "scan_blocks": n, "scan_warm_s": median(warm), "scan_cold_s": cold,
        "scan_populate_s": populated.as_secs_f64(), "scan_remove_s": t.elapsed().as_secs_f64(),
    }))
}

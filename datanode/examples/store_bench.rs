//! Measures the block store on this machine (issue 2's closing figures):
//! - startup scan time of a store holding 100k and 1M blocks (the blocks are empty
//!   files with sidecars: the scan lists directories and stats files, it never reads
//!   block content, so their size does not matter);
//! - write and read throughput of 64 MiB blocks (median of 5): a write streams 1 MiB
//!   pieces through hashing + CRC32C to `tmp/`, fsyncs, and renames into place; a read
//!   verifies every 64 KiB chunk's CRC32C and the whole block's SHA-256;
//! - next to `dd if=/dev/zero of=<same dir>/x bs=1M count=64 conv=fsync` on the same
//!   disk, in the same run.
//!
//! - the same blocks through the gRPC write chain of 1 and 3 in-process datanodes on
//!   127.0.0.1 (all on this one disk, so a 3-node chain writes every byte three times),
//!   and a verified `ReadBlock` of each.
//!
//! Run: `cargo run --release -p kdfs-datanode --example store_bench`
//! (`KDFS_BENCH_DIR` picks the directory; default: the system temp dir;
//! `KDFS_BENCH_BLOCKS=1000,5000` overrides the scan sizes).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kdfs_core::BlockId;
use kdfs_core::cas::Sharding;
use kdfs_datanode::store::{Store, StoreConfig};

const BLOCK: usize = 64 << 20;
const PIECE: usize = 1 << 20;
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// Cheap pseudo-random content so that each run writes a new block (no dedup).
fn content(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(BLOCK);
    while out.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn dd_mbps(dir: &Path) -> Result<f64, Box<dyn std::error::Error>> {
    let target = dir.join("x");
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", target.display()))
        .args(["bs=1M", "count=64", "conv=fsync"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    fs::remove_file(&target)?;
    // "67108864 bytes (67 MB, 64 MiB) copied, 0.0985 s, 681 MB/s"
    let secs: f64 = text
        .split(", ")
        .find_map(|p| p.strip_suffix(" s").and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| format!("cannot parse dd output: {text}"))?;
    Ok(BLOCK as f64 / secs / 1e6)
}

fn throughput(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let (store, _) = Store::open(StoreConfig::new(dir.join("store")))?;
    let rt = tokio::runtime::Runtime::new()?;
    let (mut w, mut r, mut dd, mut aw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        // What the gRPC service uses: writing and hashing on two blocking threads.
        let data = bytes::Bytes::from(content(1000 + run as u64));
        let id = BlockId::of(&data);
        let t = Instant::now();
        rt.block_on(async {
            let mut w = kdfs_datanode::store::AsyncBlockWriter::start(&store, BLOCK as u64).await?;
            for o in (0..BLOCK).step_by(PIECE) {
                w.write(data.slice(o..o + PIECE)).await?;
            }
            w.commit(id).await
        })?;
        aw.push(mbps(BLOCK, t.elapsed()));

        let data = content(run as u64 + 1);
        let id = BlockId::of(&data);
        let t = Instant::now();
        let mut writer = store.begin_write(BLOCK as u64)?;
        for piece in data.chunks(PIECE) {
            writer.write(piece)?;
        }
        writer.commit(id)?;
        w.push(mbps(BLOCK, t.elapsed()));

        let t = Instant::now();
        let mut n = 0;
        for piece in store.read_range(&id, 0, 0)? {
            n += piece?.data.len();
        }
        assert_eq!(n, BLOCK);
        r.push(mbps(BLOCK, t.elapsed()));
        dd.push(dd_mbps(dir)?);
    }
    println!("64 MiB blocks, median of {RUNS} (MB/s = 10^6 bytes/s):");
    println!(
        "  store write (hash + CRC32C + fsync + rename): {:8.0} MB/s   runs {:?}",
        median(w.clone()),
        w.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    println!(
        "  store write, AsyncBlockWriter (hash on its own thread): {:8.0} MB/s   runs {:?}",
        median(aw.clone()),
        aw.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    println!(
        "  store read  (CRC32C + SHA-256 verified, page cache warm): {:8.0} MB/s   runs {:?}",
        median(r.clone()),
        r.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    println!(
        "  dd bs=1M count=64 conv=fsync (same dir):      {:8.0} MB/s   runs {:?}",
        median(dd.clone()),
        dd.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    Ok(())
}

/// Lays out `n` empty blocks and their sidecars under `root/blocks`, on all cores.
fn populate(root: &Path, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let blocks = root.join("blocks");
    let sharding = Sharding::default();
    let threads = std::thread::available_parallelism()?.get().max(2) * 2;
    std::thread::scope(|s| -> Result<(), String> {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let blocks = blocks.clone();
                s.spawn(move || -> Result<(), String> {
                    for i in (t..n).step_by(threads) {
                        let id = BlockId::of(&(i as u64).to_le_bytes());
                        let p = sharding.path(&blocks, &id);
                        let dir = p.parent().expect("has parent");
                        if !dir.is_dir() {
                            fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                        }
                        fs::File::create(&p).map_err(|e| e.to_string())?;
                        fs::File::create(format!("{}.crc", p.display()))
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().expect("populate thread")?;
        }
        Ok(())
    })?;
    Ok(())
}

fn drop_caches() -> bool {
    // Needs root; harmless to try. Makes the scan read directories from disk.
    let _ = Command::new("sync").status();
    fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn scan(dir: &Path, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let root: PathBuf = dir.join(format!("scan-{n}"));
    let t = Instant::now();
    populate(&root, n)?;
    let populate_took = t.elapsed();
    let mut warm = Vec::new();
    for _ in 0..3 {
        let (store, report) = Store::open(StoreConfig::new(&root))?;
        assert_eq!(store.block_count(), n);
        warm.push(report.took.as_secs_f64());
    }
    let cold = if drop_caches() {
        let (_, report) = Store::open(StoreConfig::new(&root))?;
        format!("{:.2} s", report.took.as_secs_f64())
    } else {
        "n/a (cannot drop caches)".into()
    };
    println!(
        "scan of {n:>9} blocks: warm {:.3} s (median of 3), cold {cold}   [populated in {:.1} s]",
        median(warm),
        populate_took.as_secs_f64()
    );
    let t = Instant::now();
    fs::remove_dir_all(&root)?;
    println!("  (removed in {:.1} s)", t.elapsed().as_secs_f64());
    Ok(())
}

/// Starts a datanode with an unreachable namenode (it serves anyway); returns its
/// location and a token that stops it.
async fn start_node(
    dir: &Path,
) -> Result<
    (
        kdfs_proto::pb::DatanodeLocation,
        tokio_util::sync::CancellationToken,
    ),
    Box<dyn std::error::Error>,
> {
    use clap::Parser;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = grpc.local_addr()?;
    let config = kdfs_datanode::Config::parse_from([
        "kdfs-datanode",
        "--data-dir",
        dir.to_str().ok_or("utf-8 path")?,
        "--namenode",
        "http://127.0.0.1:1",
        "--reserved",
        "0",
    ]);
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(kdfs_datanode::run(config, grpc, http, cancel.clone()));
    let version = dir.join("VERSION");
    let t = Instant::now();
    let id = loop {
        if let Ok(raw) = fs::read(&version) {
            let v: serde_json::Value = serde_json::from_slice(&raw)?;
            break v["datanode_id"].as_str().ok_or("no id")?.to_owned();
        }
        if t.elapsed() > Duration::from_secs(20) {
            return Err("datanode did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok((
        kdfs_proto::pb::DatanodeLocation {
            id,
            address: addr.to_string(),
        },
        cancel,
    ))
}

async fn pipeline(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use bytes::Bytes;
    use kdfs_proto::pb::datanode_client::DatanodeClient;
    use kdfs_proto::pb::write_block_request::Msg;
    use kdfs_proto::pb::{ReadBlockRequest, WriteBlockRequest, WriteHeader, WriteTrailer};
    use kdfs_proto::transport;

    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(start_node(&dir.join(format!("dn{i}"))).await?);
    }
    let client = |addr: &str| -> Result<
        DatanodeClient<tonic::transport::Channel>,
        Box<dyn std::error::Error>,
    > {
        Ok(DatanodeClient::new(transport::lazy_channel(addr)?)
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(transport::MAX_MESSAGE_SIZE))
    };
    println!("gRPC write chain on 127.0.0.1, 64 MiB blocks in 1 MiB messages, median of {RUNS}:");
    let mut seed = 100;
    for width in [1usize, 3] {
        let chain: Vec<_> = nodes.iter().take(width).map(|(l, _)| l.clone()).collect();
        let (mut w, mut r) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            seed += 1;
            let data = Bytes::from(content(seed));
            let id = BlockId::of(&data);
            let mut msgs = vec![WriteBlockRequest {
                msg: Some(Msg::Header(WriteHeader {
                    downstream: chain[1..].to_vec(),
                    upload_id: String::new(),
                    max_length: BLOCK as u64,
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
            w.push(mbps(BLOCK, t.elapsed()));
            assert_eq!(resp.committed.len(), width);

            let t = Instant::now();
            let mut stream = client(&chain[width - 1].address)?
                .read_block(ReadBlockRequest {
                    block_id: kdfs_proto::wire::raw(id.as_bytes()),
                    offset: 0,
                    length: 0,
                })
                .await?
                .into_inner();
            let mut n = 0;
            while let Some(m) = stream.message().await? {
                n += m.data.len();
            }
            assert_eq!(n, BLOCK);
            r.push(mbps(BLOCK, t.elapsed()));
        }
        println!(
            "  {width} node(s): write {:6.0} MB/s {:?}   read (from the last node) {:6.0} MB/s {:?}",
            median(w.clone()),
            w.iter().map(|x| x.round()).collect::<Vec<_>>(),
            median(r.clone()),
            r.iter().map(|x| x.round()).collect::<Vec<_>>()
        );
    }
    for (_, cancel) in nodes {
        cancel.cancel();
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var_os("KDFS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base)?;
    println!("store bench in {}", dir.path().display());
    throughput(dir.path())?;
    tokio::runtime::Runtime::new()?.block_on(pipeline(dir.path()))?;
    // `KDFS_BENCH_BLOCKS=1000,5000` for a quick check of the bench itself.
    let sizes: Vec<usize> = match std::env::var("KDFS_BENCH_BLOCKS") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![100_000, 1_000_000],
    };
    for n in sizes {
        scan(dir.path(), n)?;
    }
    Ok(())
}

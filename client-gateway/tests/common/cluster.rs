//! [`TestCluster`]: a namenode, N datanodes and a gateway in this process, each through
//! the same `run` function its binary calls, on 127.0.0.1:0 with temp dirs, short
//! heartbeats and a small block size.
//!
//! Each datanode runs on its own Tokio runtime, so [`TestCluster::kill`]
//! can drop it like SIGKILL would: every task (server, open connections, workers)
//! stops at once, without a graceful shutdown.

use std::time::Duration;

use clap::Parser;
use kdfs_client_gateway::{Client, ClientOptions};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use kdfs_testkit::wait_http_ok;

use super::{DEADLINE, Gateway, http, wait_until};

/// Block size of test clusters: small, so a few MiB make many blocks.
pub const BLOCK: u64 = 1 << 20;

/// How to build a cluster.
pub struct Spec {
    pub datanodes: usize,
    pub replication: u32,
    pub gateway_args: Vec<String>,
    /// What each datanode reports as its capacity.
    pub capacity: String,
    /// Extra namenode flags.
    pub namenode_args: Vec<String>,
    /// The namenode's `--block-size`.
    pub block_size: u64,
    /// Give the gateway an S3 port.
    pub s3: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            datanodes: 3,
            replication: 3,
            gateway_args: Vec::new(),
            capacity: "4GiB".to_owned(),
            namenode_args: Vec::new(),
            block_size: BLOCK,
            s3: false,
        }
    }
}

/// A datanode on its own runtime (dropping the runtime kills it).
pub struct Datanode {
    pub runtime: Option<tokio::runtime::Runtime>,
    pub address: String,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub namenode_url: String,
    /// The namenode's HTTP address (`/metrics`, whose gauges it refreshes when read).
    pub namenode_http: String,
    pub gateway: Gateway,
    datanodes: Vec<Datanode>,
    /// What each datanode reports as its capacity (for restarts).
    capacity: String,
    nn_token: CancellationToken,
    nn_task: JoinHandle<()>,
}

async fn local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

impl TestCluster {
    pub async fn start(datanodes: usize) -> Self {
        Self::with(Spec {
            datanodes,
            ..Spec::default()
        })
        .await
    }

    pub async fn with(spec: Spec) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let nn_grpc = local().await;
        let nn_http = local().await;
        let namenode_url = format!("http://{}", nn_grpc.local_addr().unwrap());
        let namenode_http = format!("http://{}", nn_http.local_addr().unwrap());
        let nn_dir = dir.path().join("namenode");
        std::fs::create_dir_all(&nn_dir).unwrap();
        let mut nn_args = vec![
            "kdfs-namenode".to_owned(),
            format!("--listen={}", nn_grpc.local_addr().unwrap()),
            format!("--http={}", nn_http.local_addr().unwrap()),
            format!("--data-dir={}", nn_dir.display()),
            format!("--replication={}", spec.replication),
            format!("--block-size={}", spec.block_size),
            // Short enough for quick tests, long enough that a loaded 2-core machine
            // does not make nodes stale between two heartbeats.
            "--heartbeat-interval=300ms".to_owned(),
            "--stale-after=3s".to_owned(),
            "--dead-after=6s".to_owned(),
        ];
        nn_args.extend(spec.namenode_args.iter().cloned());
        let nn_cfg = kdfs_namenode::Config::parse_from(nn_args);
        let nn_token = CancellationToken::new();
        let t = nn_token.clone();
        let nn_task = tokio::spawn(async move {
            if let Err(e) = kdfs_namenode::run(nn_cfg, nn_grpc, nn_http, t).await {
                panic!("namenode failed: {e}");
            }
        });

        let mut dns = Vec::new();
        for i in 0..spec.datanodes {
            dns.push(start_datanode(&dir, i, &namenode_url, &spec.capacity));
        }

        let args: Vec<&str> = spec.gateway_args.iter().map(String::as_str).collect();
        let gateway = Gateway::start_full(&namenode_url, &args, "http", http(), spec.s3).await;
        let c = Self {
            dir,
            namenode_url,
            namenode_http,
            gateway,
            datanodes: dns,
            capacity: spec.capacity.clone(),
            nn_token,
            nn_task,
        };
        c.wait_live(spec.datanodes).await;
        if spec.datanodes < spec.replication.min(2) as usize {
            return c; // never ready: too few datanodes for a write, on purpose
        }
        let ready = c.gateway.at("/readyz");
        wait_http_ok(&http(), &ready, "gateway /readyz", DEADLINE).await;
        c
    }

    /// Waits until `/info` shows exactly `n` live datanodes.
    pub async fn wait_live(&self, n: usize) {
        let info = self.gateway.at("/info");
        let client = http();
        wait_until(&format!("{n} live datanodes"), DEADLINE, || {
            let (client, info) = (client.clone(), info.clone());
            async move {
                let Ok(r) = client.get(&info).send().await else {
                    return false;
                };
                let Ok(v) = r.json::<serde_json::Value>().await else {
                    return false;
                };
                v["datanodes"]
                    .as_array()
                    .is_some_and(|d| d.iter().filter(|d| d["state"] == "live").count() == n)
            }
        })
        .await;
    }

    /// A client library instance talking to this cluster's namenode.
    pub fn client(&self) -> Client {
        let options = ClientOptions {
            stall_timeout: Duration::from_secs(5),
            // Every block goes to the spool file, so the recovery tests re-send from it.
            memory_prefix: 0,
            ..ClientOptions::default()
        };
        Client::new(&self.namenode_url, options).expect("client")
    }

    /// The gRPC address of datanode `i`.
    pub fn datanode_address(&self, i: usize) -> &str {
        &self.datanodes[i].address
    }

    /// Index of the datanode serving at `address`.
    pub fn datanode_index(&self, address: &str) -> Option<usize> {
        self.datanodes.iter().position(|d| d.address == address)
    }

    /// Flips one byte in the middle of datanode `i`'s stored copy of block `hex`
    /// (its checksum sidecar is left as is, so reads detect the damage).
    pub fn corrupt(&self, i: usize, hex: &str) {
        let root = self.dir.path().join(format!("datanode-{i}")).join("blocks");
        let path = kdfs_testkit::disk::find_file(&root, hex)
            .unwrap_or_else(|| panic!("block {hex} not on datanode {i}"));
        let len = std::fs::metadata(&path).unwrap().len();
        kdfs_testkit::flip_byte(&path, len / 2);
    }

    /// Flips the byte at `offset` of datanode `i`'s stored copy of block `hex` and
    /// rewrites the CRC32C of its checksum chunk in the sidecar to match: damage the
    /// datanode cannot see, so it serves the flipped byte with a matching CRC, as a
    /// datanode forging bytes would. The block must have a sidecar (be longer than a
    /// checksum chunk, 64 KiB; shorter ones are checked by their SHA-256 on every read).
    pub fn forge(&self, i: usize, hex: &str, offset: u64) {
        use std::os::unix::fs::FileExt;
        /// The datanode's checksum chunk (`kdfs_datanode`'s `CHECKSUM_CHUNK`) and the
        /// sidecar's header length before the first CRC.
        const CHUNK: u64 = 64 << 10;
        const SIDECAR_HEADER: u64 = 16;
        let root = self.dir.path().join(format!("datanode-{i}")).join("blocks");
        let path = kdfs_testkit::disk::find_file(&root, hex)
            .unwrap_or_else(|| panic!("block {hex} not on datanode {i}"));
        kdfs_testkit::flip_byte(&path, offset);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() as u64 > CHUNK, "a block with a sidecar");
        let start = offset / CHUNK * CHUNK;
        let end = (start + CHUNK).min(bytes.len() as u64);
        let crc = crc32c::crc32c(&bytes[start as usize..end as usize]);
        let mut sidecar = path.into_os_string();
        sidecar.push(".crc");
        let f = std::fs::File::options().write(true).open(&sidecar).unwrap();
        f.write_all_at(&crc.to_le_bytes(), SIDECAR_HEADER + 4 * (offset / CHUNK))
            .unwrap();
        f.sync_all().unwrap();
    }

    /// The bytes of datanode `i`'s servable copy of block `hex` (under `blocks/`), if any.
    pub fn stored_copy(&self, i: usize, hex: &str) -> Option<Vec<u8>> {
        let root = self.dir.path().join(format!("datanode-{i}")).join("blocks");
        kdfs_testkit::disk::find_file(&root, hex).and_then(|p| std::fs::read(p).ok())
    }

    /// Kills datanode `i` abruptly: its runtime, with every task and socket, is dropped.
    pub fn kill(&mut self, i: usize) {
        if let Some(rt) = self.datanodes[i].runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Starts killed datanode `i` again on its data directory (the same datanode id,
    /// a new address), once the killed one's last blocking task let go of the
    /// directory's lock.
    pub async fn restart(&mut self, i: usize) {
        assert!(
            self.datanodes[i].runtime.is_none(),
            "datanode {i} is running"
        );
        let data = self.dir.path().join(format!("datanode-{i}"));
        wait_until("the killed datanode's store released", DEADLINE, || {
            let data = data.clone();
            async move {
                kdfs_datanode::store::Store::open(kdfs_datanode::store::StoreConfig::new(data))
                    .is_ok()
            }
        })
        .await;
        self.datanodes[i] = start_datanode(&self.dir, i, &self.namenode_url, &self.capacity);
    }

    /// The block files (ids, without sidecars) under datanode `i`'s `blocks/`.
    pub fn block_files(&self, i: usize) -> std::collections::BTreeSet<String> {
        let root = self.dir.path().join(format!("datanode-{i}")).join("blocks");
        kdfs_testkit::disk::block_names(&root)
    }
}

/// Starts datanode `i` in `dir/datanode-i` for `namenode` (one URL or an HA list).
pub fn start_datanode(
    dir: &tempfile::TempDir,
    i: usize,
    namenode: &str,
    capacity: &str,
) -> Datanode {
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    grpc.set_nonblocking(true).unwrap();
    http.set_nonblocking(true).unwrap();
    let address = grpc.local_addr().unwrap().to_string();
    let data = dir.path().join(format!("datanode-{i}"));
    std::fs::create_dir_all(&data).unwrap();
    let cfg = kdfs_datanode::Config::parse_from([
        "kdfs-datanode".to_owned(),
        format!("--listen={address}"),
        format!("--advertise={address}"),
        format!("--http={}", http.local_addr().unwrap()),
        format!("--namenode={namenode}"),
        format!("--data-dir={}", data.display()),
        "--reserved=0".to_owned(),
        format!("--fixed-capacity={capacity}"),
        "--shutdown-grace=1s".to_owned(),
    ]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("datanode-{i}"))
        .enable_all()
        .build()
        .expect("datanode runtime");
    runtime.spawn(async move {
        let grpc = TcpListener::from_std(grpc).expect("tokio listener");
        let http = TcpListener::from_std(http).expect("tokio listener");
        if let Err(e) = kdfs_datanode::run(cfg, grpc, http, CancellationToken::new()).await {
            eprintln!("datanode {i} stopped: {e}");
        }
    });
    Datanode {
        runtime: Some(runtime),
        address,
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.gateway.shutdown.cancel();
        for d in &mut self.datanodes {
            if let Some(rt) = d.runtime.take() {
                rt.shutdown_background();
            }
        }
        self.nn_token.cancel();
        self.nn_task.abort();
    }
}

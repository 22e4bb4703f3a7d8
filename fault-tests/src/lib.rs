//! The fault suite's harness: a [`TestCluster`] of real `kdfs-namenode`,
//! `kdfs-datanode` and `kdfs-gateway` child processes on 127.0.0.1, and the helpers the
//! scenarios in `tests/` share (HTTP calls, waiting on conditions, disk inspection).
//!
//! The cluster is driven only from the outside, as an operator or a kernel would: SIGKILL
//! and SIGTERM, restarts on the same data directory and the same ports (so a datanode's
//! advertised address stays stable), bytes flipped in block files on disk, and the
//! gateway's HTTP API. Nothing here links the servers' code.
//!
//! Invariants of the harness:
//! - Every process has its own directory under one temp dir and logs to `<name>.log`
//!   there; when a test panics the tail of every log is printed and the directory kept.
//! - Only one cluster runs at a time in a test process (a global lock held by
//!   [`TestCluster`]), so scenarios do not fight for the two cores.
//! - No sleep-and-hope: [`wait_until`] polls a condition until a deadline and panics
//!   with what it was waiting for.
//! - The binaries are hard-linked into a private directory once per test process, so a
//!   concurrent `cargo build` by someone else cannot swap them mid-test.
//!
//! Environment knobs:
//! - The binaries are taken from `target/debug/` beside the test executable and built
//!   (`cargo build -p kdfs-namenode -p kdfs-datanode -p kdfs-client-gateway`) once if
//!   one is missing. `KDFS_FAULT_BUILD=1` builds them in any case (so the suite never
//!   runs stale binaries).
//! - `KDFS_FAULT_KEEP=1` keeps every cluster's directory (logs, data) after the test.
//! - Small disks are a tmpfs mounted on the datanode's data dir when the process may
//!   mount (root in a container with the capability), else `--fixed-capacity`.

pub mod pki;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The three server binaries the cluster runs.
pub const BINARIES: [&str; 3] = ["kdfs-namenode", "kdfs-datanode", "kdfs-gateway"];
/// Heartbeat interval of every test cluster: short, so deaths are seen quickly.
pub const HEARTBEAT: &str = "250ms";
/// A datanode silent this long is dead.
pub const DEAD_AFTER: &str = "2s";
/// Default block size of test clusters: small, so files have many blocks.
pub const BLOCK_SIZE: u64 = 256 << 10;
/// How long a process may take to start serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before the test fails.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Poll period of [`wait_until`].
pub const POLL: Duration = Duration::from_millis(100);
/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;
/// Most lines of the warnings digest a failing test prints last.
const LOG_DIGEST_LINES: usize = 40;

/// Polls `cond` every [`POLL`] until it holds or `deadline` passes; then panics naming
/// `what`. Returns how long it took.
pub fn wait_until(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// SHA-256 of `data` as 64 lowercase hex characters (a kdfs file or block id).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `len` pseudo-random bytes, the same for the same `seed` (xorshift64*: fast and
/// incompressible enough that no two blocks of a file dedup by accident).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `n` distinct ports, free on every local address a moment ago, all below the
/// kernel's ephemeral range: no outgoing connection is ever given one of them, so a
/// process restarted on its old port finds it free. They are held while picking, so
/// one cluster never gets the same port twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let candidates = random_bytes(4 * 2000, seed);
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for c in candidates.chunks(4) {
        if ports.len() == n {
            break;
        }
        let r = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let port = low + (r % u32::from(high - low)) as u16;
        if ports.contains(&port) {
            continue;
        }
        // Free on 0.0.0.0 too, as the namenode of a partition test listens there.
        if let Ok(l) = TcpListener::bind(("0.0.0.0", port)) {
            held.push(l);
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), n, "found only {} free ports", ports.len());
    ports
}

/// The directory holding the server binaries, hard-linked (or copied) once per process
/// from `target/debug/`, building them first if any is missing.
pub fn binaries_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current test executable");
        // target/debug/deps/<test> -> target/debug
        let mut target = exe.parent().expect("exe dir").to_path_buf();
        if target.ends_with("deps") {
            target.pop();
        }
        let missing = BINARIES.iter().any(|b| !target.join(b).is_file());
        if missing || std::env::var_os("KDFS_FAULT_BUILD").is_some() {
            build_binaries();
        }
        let root = target.join("fault-tests-bin");
        remove_stale_snapshots(&root);
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).expect("creating the binaries snapshot dir");
        for b in BINARIES {
            let (from, to) = (target.join(b), dir.join(b));
            let _ = std::fs::remove_file(&to);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to)
                    .unwrap_or_else(|e| panic!("copying {} failed: {e}", from.display()));
            }
        }
        dir
    })
}

fn build_binaries() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    eprintln!("building the kdfs server binaries for the fault suite");
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "-p",
            "kdfs-namenode",
            "-p",
            "kdfs-datanode",
            "-p",
            "kdfs-client-gateway",
        ])
        .status()
        .expect("running cargo build");
    assert!(
        status.success(),
        "cargo build of the server binaries failed"
    );
}

/// Removes snapshots left by test processes that are gone.
fn remove_stale_snapshots(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let alive = e
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// One server process: how to start it and, while it runs, its child handle.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    binary: &'static str,
    args: Vec<String>,
    pub log: PathBuf,
    /// The process's own directory (`--data-dir` for namenode and datanodes).
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn new(name: String, binary: &'static str, root: &Path, args: Vec<String>) -> Self {
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).expect("creating a process dir");
        Self {
            log: root.join(format!("{name}.log")),
            name,
            binary,
            args,
            dir,
            child: None,
        }
    }

    /// Starts the process (appending to its log). Panics if it is already running.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening a log file");
        let mut cmd = Command::new(binaries_dir().join(self.binary));
        cmd.args(&self.args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a log handle"))
            .stderr(log);
        // Die with the test if the test process is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} failed: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL and reap. A no-op if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit; panics if it takes longer than [`STOP_TIMEOUT`].
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let pid = i32::try_from(c.id()).expect("pid fits i32");
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            match c.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if start.elapsed() < STOP_TIMEOUT => std::thread::sleep(POLL / 2),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!(
                        "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM",
                        self.name
                    );
                }
            }
        }
    }

    /// Whether the process runs (it may have exited on its own).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The OS process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident set size (VmHWM) in KiB, if running.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The WARN and ERROR lines of every process's log, each prefixed with the process
/// name, in time order (the logs' lines start with an RFC 3339 timestamp), at most the
/// last `n`. The mTLS-off warning every process prints at start is left out.
fn warnings_digest(procs: &[&Proc], n: usize) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    for p in procs {
        for line in p.log_text().lines() {
            if (line.contains(" WARN ") || line.contains(" ERROR "))
                && !line.contains("mTLS is off")
            {
                let at = line.split(' ').next().unwrap_or_default().to_owned();
                lines.push((at, format!("[{}] {line}", p.name)));
            }
        }
    }
    lines.sort();
    let skip = lines.len().saturating_sub(n);
    lines
        .into_iter()
        .skip(skip)
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// How to build a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct Options {
    pub datanodes: usize,
    pub replication: u32,
    pub block_size: u64,
    /// Extra flags of the namenode (appended, so they override the defaults).
    pub namenode_args: Vec<String>,
    /// Extra flags of every datanode.
    pub datanode_args: Vec<String>,
    /// Extra flags per datanode index (e.g. a `--fixed-capacity` on one of them).
    pub datanode_args_for: Vec<(usize, Vec<String>)>,
    /// Extra flags of the gateway.
    pub gateway_args: Vec<String>,
    /// Datanodes whose data dir is a filesystem of this many bytes: a tmpfs mounted
    /// there if this process may mount, else `--fixed-capacity` (a pretend size).
    pub small_disks: Vec<(usize, u64)>,
    /// Datanodes that reach the namenode through their own loopback address
    /// (`127.0.0.<10+i>`), so [`TestCluster::partition`] can cut just them off with an
    /// iptables rule. When any is set, the namenode listens on `0.0.0.0`.
    pub partitionable: Vec<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            datanodes: 3,
            replication: 3,
            block_size: BLOCK_SIZE,
            namenode_args: Vec::new(),
            datanode_args: Vec::new(),
            datanode_args_for: Vec::new(),
            gateway_args: Vec::new(),
            small_disks: Vec::new(),
            partitionable: Vec::new(),
        }
    }
}

impl Options {
    pub fn datanodes(mut self, n: usize) -> Self {
        self.datanodes = n;
        self
    }
    pub fn replication(mut self, r: u32) -> Self {
        self.replication = r;
        self
    }
    pub fn block_size(mut self, b: u64) -> Self {
        self.block_size = b;
        self
    }
    pub fn namenode_arg(mut self, flag: &str, value: &str) -> Self {
        self.namenode_args.push(format!("{flag}={value}"));
        self
    }
    pub fn datanode_arg(mut self, flag: &str, value: &str) -> Self {
        self.datanode_args.push(format!("{flag}={value}"));
        self
    }
    pub fn datanode_arg_for(mut self, i: usize, flag: &str, value: &str) -> Self {
        self.datanode_args_for
            .push((i, vec![format!("{flag}={value}")]));
        self
    }
    /// Gives datanode `i` a filesystem of `bytes` (see [`Options::small_disks`]).
    pub fn small_disk(mut self, i: usize, bytes: u64) -> Self {
        self.small_disks.push((i, bytes));
        self
    }
    /// Lets datanode `i` be partitioned from the namenode (see [`Options::partitionable`]).
    pub fn partitionable(mut self, i: usize) -> Self {
        self.partitionable.push(i);
        self
    }
    pub fn gateway_arg(mut self, flag: &str, value: &str) -> Self {
        self.gateway_args.push(format!("{flag}={value}"));
        self
    }
}

/// A failed HTTP call: its status (0 if no response came) and body.
#[derive(Debug, Clone)]
pub struct HttpFailure {
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

/// A file the test stored: its id and the source bytes' SHA-256 (equal, if kdfs is right).
#[derive(Debug, Clone)]
pub struct Stored {
    pub hash: String,
    pub len: usize,
}

/// The gateway's HTTP API, as a client sees it. Cheap to clone and `Send`, so
/// background threads of a test can upload and download while the test kills processes.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:<port>` of the gateway.
    pub base: String,
    http: reqwest::blocking::Client,
}

impl Api {
    fn new(base: String) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("building the HTTP client");
        Self { base, http }
    }

    /// The HTTP client (for requests the helpers do not cover).
    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /upload` of `data` named `name`; the JSON answer or the failure.
    pub fn try_upload_named(&self, name: &str, data: Vec<u8>) -> Result<Value, HttpFailure> {
        let part = reqwest::blocking::multipart::Part::bytes(data).file_name(name.to_owned());
        self.send_upload(reqwest::blocking::multipart::Form::new().part("file", part))
    }

    /// `POST /upload` streaming the body from `reader` (chunked, length unknown).
    pub fn try_upload_reader(
        &self,
        name: &str,
        reader: impl Read + Send + 'static,
    ) -> Result<Value, HttpFailure> {
        let part = reqwest::blocking::multipart::Part::reader(reader).file_name(name.to_owned());
        self.send_upload(reqwest::blocking::multipart::Form::new().part("file", part))
    }

    fn send_upload(&self, form: reqwest::blocking::multipart::Form) -> Result<Value, HttpFailure> {
        let resp = self
            .http
            .post(self.url("/upload"))
            .multipart(form)
            .send()
            .map_err(|e| HttpFailure {
                status: 0,
                body: format!("{e:#}"),
            })?;
        json_or_failure(resp)
    }

    /// Uploads `data`, asserts success and that the returned hash is its SHA-256.
    pub fn upload(&self, data: &[u8]) -> Stored {
        let want = sha256_hex(data);
        let v = self
            .try_upload_named(&format!("{}.bin", &want[..12]), data.to_vec())
            .unwrap_or_else(|e| panic!("upload of {} bytes failed: {e}", data.len()));
        assert_eq!(v["hash"].as_str(), Some(want.as_str()), "upload answer {v}");
        assert_eq!(
            v["size"].as_u64(),
            Some(data.len() as u64),
            "upload answer {v}"
        );
        Stored {
            hash: want,
            len: data.len(),
        }
    }

    /// Uploads `data`, retrying while the namenode's delete fence refuses the commit
    /// with 409 ("a delete of the same content raced with this upload: retry it"), as a
    /// client is told to. Returns the file and how many times it was refused; panics on
    /// any other failure or if `deadline` passes.
    pub fn upload_retrying_conflicts(&self, data: &[u8], deadline: Duration) -> (Stored, usize) {
        let want = sha256_hex(data);
        let mut refusals = 0;
        wait_until(deadline, "an upload not refused with 409", || {
            match self.try_upload_named("retried.bin", data.to_vec()) {
                Ok(v) => {
                    assert_eq!(v["hash"].as_str(), Some(want.as_str()), "upload answer {v}");
                    true
                }
                Err(e) if e.status == 409 => {
                    refusals += 1;
                    false
                }
                Err(e) => panic!("upload of {} bytes failed: {e}", data.len()),
            }
        });
        let stored = Stored {
            hash: want,
            len: data.len(),
        };
        (stored, refusals)
    }

    /// `GET /download?hash=`; the body or the failure.
    pub fn try_download(&self, hash: &str) -> Result<Vec<u8>, HttpFailure> {
        let resp = self
            .http
            .get(self.url("/download"))
            .query(&[("hash", hash)])
            .send()
            .map_err(|e| HttpFailure {
                status: 0,
                body: format!("{e:#}"),
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(HttpFailure {
                status,
                body: resp.text().unwrap_or_default(),
            });
        }
        resp.bytes().map(|b| b.to_vec()).map_err(|e| HttpFailure {
            status,
            body: format!("body broke off: {e:#}"),
        })
    }

    /// Downloads `hash` and asserts the bytes hash to it.
    pub fn download(&self, hash: &str) -> Vec<u8> {
        let data = self
            .try_download(hash)
            .unwrap_or_else(|e| panic!("download of {hash} failed: {e}"));
        assert_eq!(sha256_hex(&data), hash, "downloaded bytes of {hash} differ");
        data
    }

    /// Downloads every file and compares its SHA-256 and length with the source's.
    pub fn verify_all(&self, files: &[Stored]) {
        for f in files {
            let data = self.download(&f.hash);
            assert_eq!(data.len(), f.len, "length of {}", f.hash);
        }
    }

    /// `GET /info`, or the failure.
    pub fn try_info(&self) -> Result<Value, HttpFailure> {
        let resp = self
            .http
            .get(self.url("/info"))
            .timeout(Duration::from_secs(5))
            .send()
            .map_err(|e| HttpFailure {
                status: 0,
                body: format!("{e:#}"),
            })?;
        json_or_failure(resp)
    }

    /// `GET /info`; panics if it fails.
    pub fn info(&self) -> Value {
        self.try_info()
            .unwrap_or_else(|e| panic!("GET /info failed: {e}"))
    }

    /// `GET /files/{hash}`: `Ok(None)` on 404/410.
    pub fn file(&self, hash: &str) -> Result<Option<Value>, HttpFailure> {
        let resp = self
            .http
            .get(self.url(&format!("/files/{hash}")))
            .timeout(Duration::from_secs(10))
            .send()
            .map_err(|e| HttpFailure {
                status: 0,
                body: format!("{e:#}"),
            })?;
        match resp.status().as_u16() {
            404 | 410 => Ok(None),
            _ => json_or_failure(resp).map(Some),
        }
    }

    /// Every file the listing shows (all pages).
    pub fn list(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let resp = self
                .http
                .get(self.url("/files"))
                .query(&[("limit", "1000"), ("after", after.as_str())])
                .send()
                .unwrap_or_else(|e| panic!("GET /files failed: {e:#}"));
            let v = json_or_failure(resp).unwrap_or_else(|e| panic!("GET /files: {e}"));
            out.extend(v["files"].as_array().cloned().unwrap_or_default());
            match v["next"].as_str() {
                Some(n) if !n.is_empty() => after = n.to_owned(),
                _ => return out,
            }
        }
    }

    /// `DELETE /files/{hash}`; panics unless 200.
    pub fn delete(&self, hash: &str) -> Value {
        let resp = self
            .http
            .delete(self.url(&format!("/files/{hash}")))
            .send()
            .unwrap_or_else(|e| panic!("DELETE {hash} failed: {e:#}"));
        json_or_failure(resp).unwrap_or_else(|e| panic!("DELETE {hash}: {e}"))
    }
}

/// A namenode, N datanodes and a gateway as child processes.
pub struct TestCluster {
    pub opts: Options,
    root: tempfile::TempDir,
    pub namenode: Proc,
    pub datanodes: Vec<Proc>,
    pub gateway: Proc,
    /// The gateway's HTTP API (also reachable through `Deref`).
    pub api: Api,
    /// `127.0.0.1:<port>` each datanode advertises (its gRPC address).
    pub datanode_addrs: Vec<String>,
    /// tmpfs mounted for small disks, unmounted on drop.
    pub mounts: Vec<PathBuf>,
    /// The namenode's gRPC port.
    pub namenode_port: u16,
    /// iptables rules in force (removed on drop), as the arguments that added them.
    partitions: Vec<(usize, Vec<String>)>,
    _one_at_a_time: MutexGuard<'static, ()>,
}

static ONE_CLUSTER: Mutex<()> = Mutex::new(());

impl TestCluster {
    /// Starts a cluster and waits until the gateway sees every datanode live and the
    /// namenode out of safe mode.
    pub fn start(opts: Options) -> Self {
        let guard = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        binaries_dir();
        let root = tempfile::Builder::new()
            .prefix("kdfs-fault-")
            .tempdir()
            .expect("creating the cluster temp dir");
        // namenode gRPC + HTTP, per datanode gRPC + HTTP, gateway.
        let mut ports = free_ports(3 + 2 * opts.datanodes).into_iter();
        let mut port = move || ports.next().expect("enough ports");
        let nn_port = port();
        let nn_url = format!("http://127.0.0.1:{nn_port}");
        let nn_host = if opts.partitionable.is_empty() {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        let mut nn_args = vec![
            format!("--listen={nn_host}:{nn_port}"),
            format!("--http=127.0.0.1:{}", port()),
            format!("--data-dir={}", root.path().join("namenode").display()),
            format!("--replication={}", opts.replication),
            format!("--block-size={}", opts.block_size),
            format!("--heartbeat-interval={HEARTBEAT}"),
            format!("--dead-after={DEAD_AFTER}"),
            "--safe-mode-timeout=10s".into(),
            "--replication-timeout=5s".into(),
            // Deleted files' replicas go after this grace (default 30s).
            "--delete-grace=1s".into(),
        ];
        nn_args.extend(opts.namenode_args.iter().cloned());
        let namenode = Proc::new("namenode".into(), "kdfs-namenode", root.path(), nn_args);

        let mut datanodes = Vec::new();
        let mut datanode_addrs = Vec::new();
        let mut mounts = Vec::new();
        for i in 0..opts.datanodes {
            let addr = format!("127.0.0.1:{}", port());
            let name = format!("datanode-{i}");
            let mut args = vec![
                format!("--listen={addr}"),
                format!("--advertise={addr}"),
                format!("--http=127.0.0.1:{}", port()),
                if opts.partitionable.contains(&i) {
                    format!("--namenode=http://{}:{nn_port}", partition_ip(i))
                } else {
                    format!("--namenode={nn_url}")
                },
                format!("--data-dir={}", root.path().join(&name).display()),
                "--reserved=0".into(),
                "--shutdown-grace=5s".into(),
            ];
            args.extend(opts.datanode_args.iter().cloned());
            for (j, extra) in &opts.datanode_args_for {
                if *j == i {
                    args.extend(extra.iter().cloned());
                }
            }
            for &(j, bytes) in &opts.small_disks {
                if j == i {
                    let dir = root.path().join(&name);
                    if mount_tmpfs(&dir, bytes) {
                        mounts.push(dir);
                    } else {
                        eprintln!("cannot mount a tmpfs here: datanode {i} pretends {bytes} bytes");
                        args.push(format!("--fixed-capacity={bytes}"));
                    }
                }
            }
            datanodes.push(Proc::new(name, "kdfs-datanode", root.path(), args));
            datanode_addrs.push(addr);
        }

        let gw_port = port();
        let mut gw_args = vec![
            format!("--listen=127.0.0.1:{gw_port}"),
            format!("--namenode={nn_url}"),
        ];
        gw_args.extend(opts.gateway_args.iter().cloned());
        let gateway = Proc::new("gateway".into(), "kdfs-gateway", root.path(), gw_args);

        let mut cluster = Self {
            opts,
            root,
            namenode,
            datanodes,
            gateway,
            api: Api::new(format!("http://127.0.0.1:{gw_port}")),
            datanode_addrs,
            mounts,
            namenode_port: nn_port,
            partitions: Vec::new(),
            _one_at_a_time: guard,
        };
        cluster.namenode.start();
        for dn in &mut cluster.datanodes {
            dn.start();
        }
        cluster.gateway.start();
        let n = cluster.datanodes.len();
        cluster.wait_until(START_TIMEOUT, "every datanode live, safe mode off", || {
            cluster.live_datanodes() == n && cluster.safe_mode() == Some(false)
        });
        cluster
    }

    /// The cluster's temp dir.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Like [`wait_until`], but also fails early if a process the test did not stop has
    /// exited (a crash), printing which.
    pub fn wait_until(
        &self,
        deadline: Duration,
        what: &str,
        mut cond: impl FnMut() -> bool,
    ) -> Duration {
        wait_until(deadline, what, || {
            if let Some(dead) = self.exited_unexpectedly() {
                panic!("{dead} exited on its own while waiting for: {what}");
            }
            cond()
        })
    }

    /// The name of a process this harness started and did not stop that has exited
    /// (a crash), if any.
    pub fn exited_unexpectedly(&self) -> Option<String> {
        let mut procs: Vec<&Proc> = vec![&self.namenode, &self.gateway];
        procs.extend(self.datanodes.iter());
        procs
            .into_iter()
            .find(|p| p.pid().is_some_and(is_zombie_or_gone))
            .map(|p| p.name.clone())
    }

    // ---- process control -------------------------------------------------------

    pub fn kill_datanode(&mut self, i: usize) {
        self.datanodes[i].kill();
    }
    pub fn stop_datanode(&mut self, i: usize) -> ExitStatus {
        self.datanodes[i].stop()
    }
    /// Starts datanode `i` again on its data dir and ports, and waits until it is live.
    pub fn restart_datanode(&mut self, i: usize) {
        self.datanodes[i].kill();
        self.datanodes[i].start();
        let what = format!("datanode {i} live again");
        self.wait_until(START_TIMEOUT, &what, || {
            self.datanode_state(i).as_deref() == Some("live")
        });
    }
    /// SIGTERM datanode `i`, wait for its exit, start it again and wait until it is
    /// live. Returns the exit status of the stopped process.
    pub fn graceful_restart_datanode(&mut self, i: usize) -> ExitStatus {
        let status = self.datanodes[i].stop();
        self.datanodes[i].start();
        let what = format!("datanode {i} live again after a graceful restart");
        self.wait_until(START_TIMEOUT, &what, || {
            self.datanode_state(i).as_deref() == Some("live")
        });
        status
    }

    /// Cuts datanode `i` off from the namenode (its packets to the namenode are
    /// dropped; clients and other datanodes still reach it). Returns false, changing
    /// nothing, if this process may not change the firewall.
    pub fn partition(&mut self, i: usize) -> bool {
        assert!(
            self.opts.partitionable.contains(&i),
            "datanode {i} was not started partitionable"
        );
        let rule = vec![
            "OUTPUT".to_owned(),
            "-p".into(),
            "tcp".into(),
            "-d".into(),
            partition_ip(i),
            "--dport".into(),
            self.namenode_port.to_string(),
            "-j".into(),
            "DROP".into(),
        ];
        let ok = Command::new("iptables")
            .arg("-I")
            .args(&rule)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            self.partitions.push((i, rule));
        }
        ok
    }

    /// Ends the partition of datanode `i`.
    pub fn heal_partition(&mut self, i: usize) {
        let pos = self
            .partitions
            .iter()
            .position(|(j, _)| *j == i)
            .unwrap_or_else(|| panic!("datanode {i} is not partitioned"));
        let (_, rule) = self.partitions.remove(pos);
        let ok = Command::new("iptables")
            .arg("-D")
            .args(&rule)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "removing the iptables rule {rule:?} failed");
    }

    pub fn kill_namenode(&mut self) {
        self.namenode.kill();
    }
    pub fn stop_namenode(&mut self) -> ExitStatus {
        self.namenode.stop()
    }
    /// Starts the namenode again and waits until the gateway reaches it.
    pub fn restart_namenode(&mut self) {
        self.namenode.kill();
        self.namenode.start();
        self.wait_until(START_TIMEOUT, "namenode reachable again", || {
            self.try_info().is_ok()
        });
    }
    pub fn kill_gateway(&mut self) {
        self.gateway.kill();
    }
    pub fn stop_gateway(&mut self) -> ExitStatus {
        self.gateway.stop()
    }
    /// Starts the gateway again and waits until it answers `/info`.
    pub fn restart_gateway(&mut self) {
        self.gateway.kill();
        self.gateway.start();
        self.wait_until(START_TIMEOUT, "gateway answering again", || {
            self.try_info().is_ok()
        });
    }

    // ---- cluster state -------------------------------------------------------------

    /// Datanodes the namenode considers live (0 if /info fails).
    pub fn live_datanodes(&self) -> usize {
        self.try_info()
            .ok()
            .and_then(|v| v["live_datanodes"].as_u64())
            .unwrap_or(0) as usize
    }

    /// Whether the namenode is in safe mode (None if /info fails).
    pub fn safe_mode(&self) -> Option<bool> {
        self.try_info().ok().and_then(|v| v["safe_mode"].as_bool())
    }

    /// Datanode `i`'s state as the namenode reports it (`live`, `stale`, `dead`...).
    pub fn datanode_state(&self, i: usize) -> Option<String> {
        let info = self.try_info().ok()?;
        datanode_entry(&info, &self.datanode_addrs[i])
            .and_then(|d| d["state"].as_str().map(str::to_owned))
    }

    /// Replica addresses of each block of `hash` (None if unknown or unreachable).
    pub fn replicas(&self, hash: &str) -> Option<Vec<Vec<String>>> {
        let v = self.file(hash).ok()??;
        let blocks = v["blocks"].as_array()?;
        Some(
            blocks
                .iter()
                .map(|b| {
                    b["replicas"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .filter_map(|l| l["address"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect(),
        )
    }

    /// Block ids of `hash`, in order.
    pub fn block_ids(&self, hash: &str) -> Vec<String> {
        let v = self
            .file(hash)
            .unwrap_or_else(|e| panic!("GET /files/{hash}: {e}"))
            .unwrap_or_else(|| panic!("file {hash} not found"));
        v["blocks"]
            .as_array()
            .expect("blocks array")
            .iter()
            .map(|b| b["id"].as_str().expect("block id").to_owned())
            .collect()
    }

    /// Whether every block of every file has exactly `replication` live replicas on
    /// distinct nodes, none of them in `excluded`, and /info shows nothing under-replicated
    /// or missing.
    pub fn fully_replicated(&self, files: &[Stored], excluded: &[usize]) -> bool {
        let Ok(info) = self.try_info() else {
            return false;
        };
        if info["under_replicated"].as_u64() != Some(0) || info["missing"].as_u64() != Some(0) {
            return false;
        }
        let want = self.opts.replication as usize;
        let excluded: Vec<&str> = excluded
            .iter()
            .map(|&i| self.datanode_addrs[i].as_str())
            .collect();
        files.iter().all(|f| {
            self.replicas(&f.hash).is_some_and(|blocks| {
                blocks.iter().all(|r| {
                    let distinct: BTreeSet<&String> = r.iter().collect();
                    distinct.len() == want
                        && r.len() == want
                        && !r.iter().any(|a| excluded.contains(&a.as_str()))
                })
            })
        })
    }

    /// Waits until [`Self::fully_replicated`] holds; on timeout the panic message says
    /// where each file stands. Returns how long it took.
    pub fn wait_replicated(
        &self,
        deadline: Duration,
        what: &str,
        files: &[Stored],
        excluded: &[usize],
    ) -> Duration {
        let start = Instant::now();
        loop {
            if self.fully_replicated(files, excluded) {
                return start.elapsed();
            }
            if let Some(dead) = self.exited_unexpectedly() {
                panic!("{dead} exited on its own while waiting for: {what}");
            }
            if start.elapsed() >= deadline {
                panic!(
                    "timed out after {deadline:?} waiting for: {what}; now {}",
                    self.replication_summary(files)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// A one-line summary of replica counts for failure messages.
    pub fn replication_summary(&self, files: &[Stored]) -> String {
        let info = self.try_info().map(|v| {
            format!(
                "under_replicated={} missing={} live={}",
                v["under_replicated"], v["missing"], v["live_datanodes"]
            )
        });
        let counts: Vec<String> = files
            .iter()
            .map(|f| match self.replicas(&f.hash) {
                Some(b) => format!(
                    "{}:{:?}",
                    &f.hash[..8],
                    b.iter().map(Vec::len).collect::<Vec<_>>()
                ),
                None => format!("{}:?", &f.hash[..8]),
            })
            .collect();
        format!("{info:?} {}", counts.join(" "))
    }

    // ---- disks -----------------------------------------------------------------------

    /// Datanode `i`'s data directory.
    pub fn datanode_dir(&self, i: usize) -> &Path {
        &self.datanodes[i].dir
    }

    /// Block ids stored on datanode `i`'s disk (files under `blocks/`, sidecars excluded).
    pub fn blocks_on_disk(&self, i: usize) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        walk(&self.datanode_dir(i).join("blocks"), &mut |p| {
            if let Some(name) = p.file_name().and_then(|n| n.to_str())
                && name.len() == 64
                && name.bytes().all(|b| b.is_ascii_hexdigit())
            {
                out.insert(name.to_owned());
            }
        });
        out
    }

    /// Block files on datanode `i`'s disk whose bytes do not hash to their name.
    pub fn corrupt_blocks_on_disk(&self, i: usize) -> Vec<String> {
        self.blocks_on_disk(i)
            .into_iter()
            .filter(|id| {
                self.block_path(i, id)
                    .and_then(|p| std::fs::read(p).ok())
                    // A block renamed away between the listing and the read is not corrupt.
                    .is_some_and(|bytes| sha256_hex(&bytes) != *id)
            })
            .collect()
    }

    /// Replicas datanode `i` has quarantined (block files in `quarantine/`, sidecars
    /// not counted).
    pub fn quarantined(&self, i: usize) -> usize {
        self.files_under(i, "quarantine")
            .iter()
            .filter(|p| p.extension().is_none_or(|e| e != "crc"))
            .count()
    }

    /// Appends a flag to datanode `i`'s command line, effective at its next start.
    pub fn add_datanode_arg(&mut self, i: usize, flag: &str, value: &str) {
        self.datanodes[i].args.push(format!("{flag}={value}"));
    }

    /// Files under datanode `i`'s `dir` (e.g. `quarantine`, `tmp`).
    pub fn files_under(&self, i: usize, dir: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.datanode_dir(i).join(dir), &mut |p| {
            out.push(p.to_owned())
        });
        out
    }

    /// Temp files of datanode `i`'s writes in progress: named files in its `tmp/`,
    /// and the unnamed (`O_TMPFILE`) ones its process holds open there.
    pub fn temp_files(&self, i: usize) -> Vec<PathBuf> {
        let mut out = self.files_under(i, "tmp");
        if let Some(pid) = self.datanodes[i].pid() {
            let tmp = self.datanode_dir(i).join("tmp");
            out.extend(kdfs_core::tmpfiles::open_unnamed_in(Some(pid), &tmp));
        }
        out
    }

    /// The path of block `id` on datanode `i`, if it is there.
    pub fn block_path(&self, i: usize, id: &str) -> Option<PathBuf> {
        let p = self
            .datanode_dir(i)
            .join("blocks")
            .join(&id[0..2])
            .join(&id[2..4])
            .join(id);
        p.is_file().then_some(p)
    }

    /// Index of the datanode advertising `addr`.
    pub fn datanode_index(&self, addr: &str) -> Option<usize> {
        self.datanode_addrs.iter().position(|a| a == addr)
    }
}

impl std::ops::Deref for TestCluster {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.gateway.kill();
        for dn in &mut self.datanodes {
            dn.kill();
        }
        self.namenode.kill();
        for m in &self.mounts {
            let _ = Command::new("umount").arg(m).status();
        }
        for (_, rule) in self.partitions.drain(..) {
            let _ = Command::new("iptables").arg("-D").args(&rule).status();
        }
        if std::thread::panicking() {
            let mut procs: Vec<&Proc> = vec![&self.namenode];
            procs.extend(self.datanodes.iter());
            procs.push(&self.gateway);
            for p in &procs {
                eprintln!(
                    "\n===== {} ({}) last {LOG_TAIL_LINES} lines =====\n{}",
                    p.name,
                    p.log.display(),
                    p.log_tail(LOG_TAIL_LINES)
                );
            }
            // Last, so that an output cut to its head and tail still shows them: every
            // process's warnings and errors (what a busy log's tail may have scrolled
            // past, such as a datanode declared dead seconds before the failure).
            eprintln!(
                "\n===== warnings and errors of every process (last {LOG_DIGEST_LINES}) =====\n{}",
                warnings_digest(&procs, LOG_DIGEST_LINES)
            );
        }
        if std::thread::panicking() || std::env::var_os("KDFS_FAULT_KEEP").is_some() {
            // Keep the directory for inspection.
            let root = std::mem::replace(
                &mut self.root,
                tempfile::tempdir().expect("a replacement temp dir"),
            );
            eprintln!("cluster directory kept at {}", root.keep().display());
        }
    }
}

/// The loopback address partitionable datanode `i` reaches the namenode through.
fn partition_ip(i: usize) -> String {
    format!("127.0.0.{}", 10 + i)
}

/// Mounts a tmpfs of `bytes` on `dir` (created if missing); false if this process may
/// not mount (no privilege, no `mount` binary).
fn mount_tmpfs(dir: &Path, bytes: u64) -> bool {
    std::fs::create_dir_all(dir).expect("creating a mount point");
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the child `pid` has exited (a zombie not yet reaped, or gone).
fn is_zombie_or_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// The `/info` entry of the datanode advertising `addr`.
pub fn datanode_entry<'a>(info: &'a Value, addr: &str) -> Option<&'a Value> {
    info["datanodes"]
        .as_array()?
        .iter()
        .find(|d| d["address"].as_str() == Some(addr))
}

fn json_or_failure(resp: reqwest::blocking::Response) -> Result<Value, HttpFailure> {
    let status = resp.status().as_u16();
    let body = resp.text().map_err(|e| HttpFailure {
        status,
        body: format!("body broke off: {e:#}"),
    })?;
    if status != 200 {
        return Err(HttpFailure { status, body });
    }
    serde_json::from_str(&body).map_err(|e| HttpFailure {
        status,
        body: format!("not JSON ({e}): {body}"),
    })
}

fn walk(dir: &Path, f: &mut impl FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, f),
            Ok(_) => f(&p),
            Err(_) => {}
        }
    }
}

/// Flips one byte of the file at `path`, at `offset`, in place.
pub fn flip_byte(path: &Path, offset: u64) {
    let mut f = File::options()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {} to corrupt it: {e}", path.display()));
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("read the byte");
    b[0] ^= 0xFF;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("write the flipped byte");
    f.sync_all().expect("fsync the corrupted block");
}

/// A reader that yields `data` in `chunk`-byte pieces, sleeping `pause` before each
/// (a slow client), and calls `on_progress(bytes_sent)` after each piece.
pub struct SlowReader<F: FnMut(usize) + Send> {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    pause: Duration,
    on_progress: F,
}

impl<F: FnMut(usize) + Send> SlowReader<F> {
    pub fn new(data: Vec<u8>, chunk: usize, pause: Duration, on_progress: F) -> Self {
        Self {
            data,
            pos: 0,
            chunk,
            pause,
            on_progress,
        }
    }
}

impl<F: FnMut(usize) + Send> Read for SlowReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.data.len() {
            return Ok(0);
        }
        std::thread::sleep(self.pause);
        let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        (self.on_progress)(self.pos);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_deterministic_and_distinct() {
        assert_eq!(random_bytes(1000, 7), random_bytes(1000, 7));
        assert_ne!(random_bytes(1000, 7), random_bytes(1000, 8));
        assert_eq!(random_bytes(13, 1).len(), 13);
        // No two 256 KiB blocks of one file dedup by accident.
        let d = random_bytes(1 << 20, 3);
        assert_ne!(d[..256 << 10], d[256 << 10..512 << 10]);
    }

    #[test]
    fn flip_byte_changes_exactly_one_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("b");
        std::fs::write(&p, [1u8, 2, 3]).expect("write");
        flip_byte(&p, 1);
        assert_eq!(std::fs::read(&p).expect("read"), vec![1, !2, 3]);
    }

    #[test]
    fn slow_reader_yields_everything_in_pieces() {
        let mut seen = Vec::new();
        let mut r = SlowReader::new(vec![9u8; 10], 4, Duration::ZERO, |n| seen.push(n));
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        drop(r);
        assert_eq!(out, vec![9u8; 10]);
        assert_eq!(seen, vec![4, 8, 10]);
    }

    #[test]
    #[should_panic(expected = "waiting for: the impossible")]
    fn wait_until_names_what_it_waited_for() {
        wait_until(Duration::from_millis(250), "the impossible", || false);
    }

    #[test]
    fn wait_until_returns_once_the_condition_holds() {
        let mut n = 0;
        wait_until(Duration::from_secs(5), "three polls", || {
            n += 1;
            n >= 3
        });
        assert_eq!(n, 3);
    }
}

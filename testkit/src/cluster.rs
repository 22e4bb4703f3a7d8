//! A namenode (or an HA group of them), N datanodes and a gateway as child processes on
//! 127.0.0.1: the fault suite's cluster and `kdfs bench --local`'s.
//!
//! The cluster is driven only from the outside, as an operator or a kernel would: SIGKILL
//! and SIGTERM, restarts on the same data directory and the same ports (so a datanode's
//! advertised address stays stable), iptables partitions, and the gateway's HTTP API.
//! Nothing here links the servers' code.
//!
//! Invariants:
//! - Every process has its own directory under one temp dir and logs to `<name>.log`
//!   there; when a test panics the tail of every log is printed and the directory kept
//!   (also kept with `KDFS_FAULT_KEEP=1`).
//! - Only one cluster runs at a time in a process, so clusters do not fight for cores.
//! - No sleep-and-hope: [`ProcessCluster::wait_until`] polls until a deadline and also
//!   fails at once if a process the test did not stop has exited.
//!
//! Cluster state read through `/info` lives in `state.rs`, disk inspection in `disk.rs`,
//! the namenodes of an HA group (roles, kills, wipes, partitions) in `namenodes.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::api::Api;
use crate::links::NamenodeLinks;
use crate::options::Options;
use crate::pki::RoleCerts;
use crate::ports::free_ports;
use crate::proc::{Proc, warnings_digest};
use crate::wait::{BLOCKING_POLL, wait_until_blocking};

/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;
/// Most lines of the warnings digest a failing test prints last.
const LOG_DIGEST_LINES: usize = 40;
/// Lines of a crashed process's log an error from [`ProcessCluster::try_start`] quotes.
const CRASH_TAIL_LINES: usize = 5;
/// The names the TLS leaves of a cluster are valid for.
const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// A namenode (or an HA group of them), N datanodes and a gateway as child processes.
pub struct ProcessCluster {
    pub opts: Options,
    root: tempfile::TempDir,
    /// The namenodes by `--id` (just one without HA).
    pub namenodes: Vec<Proc>,
    pub datanodes: Vec<Proc>,
    pub gateway: Proc,
    /// The gateway's HTTP API (also reachable through `Deref`).
    pub api: Api,
    /// `127.0.0.1:<port>` each datanode advertises (its gRPC address).
    pub datanode_addrs: Vec<String>,
    /// tmpfs mounted for small disks, unmounted on drop.
    pub mounts: Vec<PathBuf>,
    /// Namenode 0's own gRPC port.
    pub namenode_port: u16,
    /// Each namenode's own gRPC port (`--listen`), by id.
    pub namenode_ports: Vec<u16>,
    /// With several namenodes: the relays every process reaches them through, which
    /// [`ProcessCluster::partition_namenode`] cuts.
    pub links: Option<NamenodeLinks>,
    /// With [`Options::tls`]: the CA and the role certificates the processes present
    /// (tests mint more under the same CA).
    pub pki: Option<RoleCerts>,
    /// iptables rules in force (removed on drop), as the arguments that added them.
    partitions: Vec<(usize, Vec<String>)>,
    _one_at_a_time: ClusterSlot,
}

impl ProcessCluster {
    /// Starts a cluster and waits until the gateway sees every datanode live and the
    /// namenode out of safe mode; panics (printing every log) if it does not.
    pub fn start(opts: Options) -> Self {
        let cluster = Self::launch(opts).unwrap_or_else(|e| panic!("{e}"));
        if let Err(e) = cluster.wait_ready() {
            panic!("{e}");
        }
        cluster
    }

    /// [`Self::start`] that returns why the cluster did not start (quoting the log of a
    /// process that exited) instead of panicking, and removes its directory.
    pub fn try_start(opts: Options) -> Result<Self, String> {
        let cluster = Self::launch(opts)?;
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// Spawns every process without waiting for them to serve.
    fn launch(opts: Options) -> Result<Self, String> {
        let slot = ClusterSlot::take();
        let bins = opts.binaries.dir()?;
        let root = tempfile::Builder::new()
            .prefix(&opts.prefix)
            .tempdir()
            .map_err(|e| format!("creating the cluster temp dir: {e}"))?;
        let pki = opts
            .tls
            .then(|| RoleCerts::new(&root.path().join("tls"), LOCAL_NAMES));
        let tls = |role: &str| pki.as_ref().map(|p| p.flags(role)).unwrap_or_default();
        let env = opts.env();
        assert!(opts.namenodes >= 1, "a cluster needs a namenode");
        assert!(
            opts.namenodes == 1 || opts.partitionable.is_empty(),
            "partitionable datanodes need a single namenode"
        );
        // Per namenode gRPC + HTTP, per datanode gRPC + HTTP, gateway.
        let mut ports = free_ports(2 * opts.namenodes + 1 + 2 * opts.datanodes).into_iter();
        let mut port = move || ports.next().expect("enough ports");
        let nn_ports: Vec<u16> = (0..opts.namenodes).map(|_| port()).collect();
        let nn_port = nn_ports[0];
        let nn_host = if opts.partitionable.is_empty() {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        let exe = |b: &str| bins.join(b);
        let (namenodes, links, nn_url) = if opts.namenodes == 1 {
            let mut nn_args = opts.namenode_flags(
                &format!("{nn_host}:{nn_port}"),
                &format!("127.0.0.1:{}", port()),
                &root.path().join("namenode").display().to_string(),
            );
            nn_args.extend(tls("namenode"));
            if nn_host == "0.0.0.0" && pki.is_none() {
                // Reachable from the partitionable datanodes' own loopback addresses.
                nn_args.push("--allow-plaintext".into());
            }
            let nn = Proc::new(
                "namenode",
                exe("kdfs-namenode"),
                root.path(),
                nn_args,
                env.clone(),
            );
            (vec![nn], None, format!("http://127.0.0.1:{nn_port}"))
        } else {
            let targets: Vec<std::net::SocketAddr> = nn_ports
                .iter()
                .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
                .collect();
            let links = NamenodeLinks::start(&targets)
                .map_err(|e| format!("starting the namenodes' relays: {e}"))?;
            let peers = (0..opts.namenodes)
                .map(|i| format!("{i}={}", links.addr(i)))
                .collect::<Vec<_>>()
                .join(",");
            let urls = (0..opts.namenodes)
                .map(|i| format!("http://{}", links.addr(i)))
                .collect::<Vec<_>>()
                .join(",");
            let mut nns = Vec::new();
            for (i, &p) in nn_ports.iter().enumerate() {
                let name = format!("namenode-{i}");
                let mut args = opts.namenode_flags(
                    &format!("127.0.0.1:{p}"),
                    &format!("127.0.0.1:{}", port()),
                    &root.path().join(&name).display().to_string(),
                );
                args.extend([format!("--id={i}"), format!("--peers={peers}")]);
                args.extend(tls("namenode"));
                let exe = exe("kdfs-namenode");
                nns.push(Proc::new(&name, exe, root.path(), args, env.clone()));
            }
            (nns, Some(links), urls)
        };

        let mut datanodes = Vec::new();
        let mut datanode_addrs = Vec::new();
        let mut mounts = Vec::new();
        for i in 0..opts.datanodes {
            let addr = format!("127.0.0.1:{}", port());
            let name = format!("datanode-{i}");
            let base = vec![
                format!("--listen={addr}"),
                format!("--advertise={addr}"),
                format!("--http=127.0.0.1:{}", port()),
                if opts.partitionable.contains(&i) {
                    format!("--namenode=http://{}:{nn_port}", partition_ip(i))
                } else {
                    format!("--namenode={nn_url}")
                },
                format!("--data-dir={}", root.path().join(&name).display()),
            ];
            let mut args = opts.datanode_flags(i, base);
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
            args.extend(tls("datanode"));
            let exe = exe("kdfs-datanode");
            datanodes.push(Proc::new(&name, exe, root.path(), args, env.clone()));
            datanode_addrs.push(addr);
        }

        let gw_port = port();
        let mut gw_args = vec![
            format!("--listen=127.0.0.1:{gw_port}"),
            format!("--namenode={nn_url}"),
        ];
        // The S3 port's default (0.0.0.0:9000) is fixed: parallel clusters would fight
        // over it. A scenario that wants it passes its own `--s3-listen`.
        if !opts
            .gateway_args
            .iter()
            .any(|a| a.starts_with("--s3-listen"))
        {
            gw_args.push("--s3-listen=off".to_owned());
        }
        gw_args.extend(opts.gateway_args.iter().cloned());
        gw_args.extend(tls("gateway"));
        let gateway = Proc::new("gateway", exe("kdfs-gateway"), root.path(), gw_args, env);

        let mut cluster = Self {
            opts,
            root,
            namenodes,
            datanodes,
            gateway,
            api: Api::new(format!("http://127.0.0.1:{gw_port}")),
            datanode_addrs,
            mounts,
            namenode_port: nn_port,
            namenode_ports: nn_ports,
            links,
            pki,
            partitions: Vec::new(),
            _one_at_a_time: slot,
        };
        for p in cluster.procs_mut() {
            p.spawn()
                .map_err(|e| format!("starting {} failed: {e}", p.name))?;
        }
        cluster.note_namenode_pids();
        Ok(cluster)
    }

    /// Waits until every datanode is live and safe mode is off; the error says what
    /// was awaited and, if a process exited meanwhile, quotes the tail of its log.
    fn wait_ready(&self) -> Result<(), String> {
        let what = "every datanode live, safe mode off";
        let (start, within) = (Instant::now(), self.opts.start_timeout);
        loop {
            if self.live_datanodes() == self.datanodes.len() && self.safe_mode() == Some(false) {
                return Ok(());
            }
            if let Some(p) = self.procs().find(|p| p.exited_unexpectedly()) {
                return Err(format!(
                    "{} exited on its own while waiting for: {what}; its log ends: {}",
                    p.name,
                    p.log_tail(CRASH_TAIL_LINES).replace('\n', " | ")
                ));
            }
            if start.elapsed() >= within {
                return Err(format!("timed out after {within:?} waiting for: {what}"));
            }
            std::thread::sleep(BLOCKING_POLL);
        }
    }

    /// The cluster's temp dir.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The gateway's base URL (`http://127.0.0.1:<port>`).
    pub fn gateway_url(&self) -> &str {
        &self.api.base
    }

    /// Every process: the namenodes, the datanodes in order, the gateway.
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.namenodes
            .iter()
            .chain(&self.datanodes)
            .chain(std::iter::once(&self.gateway))
    }

    fn procs_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.namenodes
            .iter_mut()
            .chain(&mut self.datanodes)
            .chain(std::iter::once(&mut self.gateway))
    }

    /// The process named `name` (`namenode` or `namenode-<i>`, `datanode-<i>`,
    /// `gateway`).
    pub fn proc_mut(&mut self, name: &str) -> Option<&mut Proc> {
        self.procs_mut().find(|p| p.name == name)
    }

    /// Like [`wait_until_blocking`], but also fails early if a process the test did not
    /// stop has exited (a crash), naming it.
    pub fn wait_until(
        &self,
        what: &str,
        within: Duration,
        mut cond: impl FnMut() -> bool,
    ) -> Duration {
        wait_until_blocking(what, within, || {
            if let Some(dead) = self.exited_unexpectedly() {
                panic!("{dead} exited on its own while waiting for: {what}");
            }
            cond()
        })
    }

    /// The name of a process this harness started and did not stop that has exited
    /// (a crash), if any.
    pub fn exited_unexpectedly(&self) -> Option<String> {
        self.procs()
            .find(|p| p.exited_unexpectedly())
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
        self.datanodes[i].restart();
        self.wait_datanode_live(i, "again");
    }
    /// SIGTERM datanode `i`, wait for its exit, start it again and wait until it is
    /// live. Returns the exit status of the stopped process.
    pub fn graceful_restart_datanode(&mut self, i: usize) -> ExitStatus {
        let status = self.datanodes[i].stop();
        self.datanodes[i].start();
        self.wait_datanode_live(i, "again after a graceful restart");
        status
    }

    /// Waits until the namenode reports datanode `i` live (`datanode {i} live {when}`).
    fn wait_datanode_live(&self, i: usize, when: &str) {
        let what = format!("datanode {i} live {when}");
        self.wait_until(&what, self.opts.start_timeout, || {
            self.datanode_state(i).as_deref() == Some("live")
        });
    }
    /// Appends a flag to datanode `i`'s command line, effective at its next start.
    pub fn add_datanode_arg(&mut self, i: usize, flag: &str, value: &str) {
        self.datanodes[i].args.push(format!("{flag}={value}"));
    }

    /// SIGKILLs the namenode (namenode 0 of an HA group).
    pub fn kill_namenode(&mut self) {
        self.kill_namenode_at(0);
    }
    pub fn stop_namenode(&mut self) -> ExitStatus {
        self.stop_namenode_at(0)
    }
    /// Starts the namenode (namenode 0 of an HA group) again and waits until the
    /// gateway reaches a namenode.
    pub fn restart_namenode(&mut self) {
        self.restart_namenode_at(0);
        self.wait_answering("namenode reachable again");
    }
    pub fn kill_gateway(&mut self) {
        self.gateway.kill();
    }
    pub fn stop_gateway(&mut self) -> ExitStatus {
        self.gateway.stop()
    }
    /// Starts the gateway again and waits until it answers `/info`.
    pub fn restart_gateway(&mut self) {
        self.gateway.restart();
        self.wait_answering("gateway answering again");
    }

    /// Waits until the gateway answers `/info` (which asks the namenode).
    pub(crate) fn wait_answering(&self, what: &str) {
        self.wait_until(what, self.opts.start_timeout, || self.try_info().is_ok());
    }

    // ---- partitions ------------------------------------------------------------

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
}

impl std::ops::Deref for ProcessCluster {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        self.gateway.kill();
        for dn in &mut self.datanodes {
            dn.kill();
        }
        for nn in &mut self.namenodes {
            nn.kill();
        }
        for m in &self.mounts {
            let _ = Command::new("umount").arg(m).status();
        }
        for (_, rule) in self.partitions.drain(..) {
            let _ = Command::new("iptables").arg("-D").args(&rule).status();
        }
        if std::thread::panicking() {
            let procs: Vec<&Proc> = self.procs().collect();
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

/// The right to run the one cluster of this process, given back on drop. Unlike a
/// `MutexGuard` it may move between threads, so an async caller can start the
/// cluster on a blocking thread and hold it across awaits.
struct ClusterSlot;

static SLOT_TAKEN: Mutex<bool> = Mutex::new(false);
static SLOT_FREED: Condvar = Condvar::new();

impl ClusterSlot {
    fn take() -> Self {
        let mut taken = SLOT_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        while *taken {
            taken = SLOT_FREED.wait(taken).unwrap_or_else(|e| e.into_inner());
        }
        *taken = true;
        Self
    }
}

impl Drop for ClusterSlot {
    fn drop(&mut self) {
        *SLOT_TAKEN.lock().unwrap_or_else(|e| e.into_inner()) = false;
        SLOT_FREED.notify_one();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cluster_slot_at_a_time() {
        let first = ClusterSlot::take();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _second = ClusterSlot::take();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "still taken"
        );
        drop(first);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("freed on drop");
        waiter.join().unwrap();
    }

    #[test]
    fn the_slot_moves_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<ProcessCluster>();
    }
}

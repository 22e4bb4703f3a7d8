//! How to build a [`crate::ProcessCluster`]: how many nodes, their timings and extra
//! flags, small disks, partitionable datanodes, TLS, and where the binaries come from.
//!
//! The defaults are the fault suite's: heartbeats every 250 ms, dead after 2 s, small
//! blocks and quick recoveries, so a scenario sees a death and its repair in seconds.
//! The bench keeps the servers' own recovery timings ([`Options::fast_recovery`] off).

use std::time::Duration;

use crate::binaries::Binaries;

/// Heartbeat interval of every test cluster: short, so deaths are seen quickly.
pub const HEARTBEAT: &str = "250ms";
/// A datanode silent this long is dead.
pub const DEAD_AFTER: &str = "2s";
/// Default block size of test clusters: small, so files have many blocks.
pub const BLOCK_SIZE: u64 = 256 << 10;
/// How long a process may take to start serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to build a [`crate::ProcessCluster`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Namenodes: 1 runs one without `--peers`, as before; more run an HA group
    /// (`--id i --peers …`), each reached through a relay a test can cut
    /// ([`crate::links::NamenodeLinks`]).
    pub namenodes: usize,
    pub datanodes: usize,
    /// `--replication` of the namenode (`None`: its default).
    pub replication: Option<u32>,
    pub block_size: u64,
    /// `--heartbeat-interval` of the namenode.
    pub heartbeat: String,
    /// `--dead-after` of the namenode.
    pub dead_after: String,
    /// Short safe-mode and replication timeouts and delete grace on the namenode and a
    /// 5 s shutdown grace on datanodes, so recoveries finish within a test's patience.
    pub fast_recovery: bool,
    /// Every internal gRPC link mutual TLS, with a CA and one role certificate per
    /// process kind for `localhost` made under the cluster's directory (`tls/`).
    pub tls: bool,
    /// Where the server binaries come from.
    pub binaries: Binaries,
    /// `RUST_LOG` of every process (`None`: inherited).
    pub rust_log: Option<String>,
    /// Prefix of the cluster's temp dir name.
    pub prefix: String,
    /// How long the cluster may take to have every datanode live.
    pub start_timeout: Duration,
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
    /// (`127.0.0.<10+i>`), so [`crate::ProcessCluster::partition`] can cut just them
    /// off with an iptables rule. When any is set, the namenode listens on `0.0.0.0`.
    pub partitionable: Vec<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namenodes: 1,
            datanodes: 3,
            replication: Some(3),
            block_size: BLOCK_SIZE,
            heartbeat: HEARTBEAT.into(),
            dead_after: DEAD_AFTER.into(),
            fast_recovery: true,
            tls: false,
            binaries: Binaries::Workspace,
            rust_log: Some("info".into()),
            prefix: "kdfs-fault-".into(),
            start_timeout: START_TIMEOUT,
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
    /// See [`Options::namenodes`].
    pub fn namenodes(mut self, n: usize) -> Self {
        self.namenodes = n;
        self
    }
    pub fn datanodes(mut self, n: usize) -> Self {
        self.datanodes = n;
        self
    }
    pub fn replication(mut self, r: u32) -> Self {
        self.replication = Some(r);
        self
    }
    /// Leaves the namenode's `--replication` at its default.
    pub fn default_replication(mut self) -> Self {
        self.replication = None;
        self
    }
    pub fn block_size(mut self, b: u64) -> Self {
        self.block_size = b;
        self
    }
    pub fn heartbeat(mut self, interval: &str) -> Self {
        self.heartbeat = interval.into();
        self
    }
    pub fn dead_after(mut self, after: &str) -> Self {
        self.dead_after = after.into();
        self
    }
    /// See [`Options::fast_recovery`].
    pub fn fast_recovery(mut self, on: bool) -> Self {
        self.fast_recovery = on;
        self
    }
    /// See [`Options::tls`].
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }
    pub fn binaries(mut self, from: Binaries) -> Self {
        self.binaries = from;
        self
    }
    pub fn rust_log(mut self, filter: Option<&str>) -> Self {
        self.rust_log = filter.map(str::to_owned);
        self
    }
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }
    pub fn start_timeout(mut self, within: Duration) -> Self {
        self.start_timeout = within;
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

    /// The namenode's flags, listening on `listen` (gRPC) and `http`, data in `dir`.
    pub(crate) fn namenode_flags(&self, listen: &str, http: &str, dir: &str) -> Vec<String> {
        let mut args = vec![
            format!("--listen={listen}"),
            format!("--http={http}"),
            format!("--data-dir={dir}"),
        ];
        if let Some(r) = self.replication {
            args.push(format!("--replication={r}"));
        }
        args.extend([
            format!("--block-size={}", self.block_size),
            format!("--heartbeat-interval={}", self.heartbeat),
            format!("--dead-after={}", self.dead_after),
        ]);
        if self.fast_recovery {
            args.extend([
                "--safe-mode-timeout=10s".into(),
                "--replication-timeout=5s".into(),
                // Deleted files' replicas go after this grace (default 30s).
                "--delete-grace=1s".into(),
            ]);
        }
        args.extend(self.namenode_args.iter().cloned());
        args
    }

    /// Datanode `i`'s flags before any small-disk flag: `base` are its addresses and
    /// data dir.
    pub(crate) fn datanode_flags(&self, i: usize, base: Vec<String>) -> Vec<String> {
        let mut args = base;
        args.push("--reserved=0".into());
        if self.fast_recovery {
            args.push("--shutdown-grace=5s".into());
        }
        args.extend(self.datanode_args.iter().cloned());
        for (j, extra) in &self.datanode_args_for {
            if *j == i {
                args.extend(extra.iter().cloned());
            }
        }
        args
    }

    /// The environment of every process.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("NO_COLOR".to_owned(), "1".to_owned())];
        if let Some(filter) = &self.rust_log {
            env.push(("RUST_LOG".into(), filter.clone()));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_defaults_and_bench_timings() {
        let fault = Options::default().namenode_arg("--delete-grace", "5s");
        let nn = fault.namenode_flags("127.0.0.1:1", "127.0.0.1:2", "/d");
        assert_eq!(
            nn,
            [
                "--listen=127.0.0.1:1",
                "--http=127.0.0.1:2",
                "--data-dir=/d",
                "--replication=3",
                "--block-size=262144",
                "--heartbeat-interval=250ms",
                "--dead-after=2s",
                "--safe-mode-timeout=10s",
                "--replication-timeout=5s",
                "--delete-grace=1s",
                "--delete-grace=5s",
            ]
        );
        let bench = Options::default()
            .default_replication()
            .block_size(64 << 20)
            .heartbeat("1s")
            .dead_after("3s")
            .fast_recovery(false);
        let nn = bench.namenode_flags("a", "b", "c");
        assert_eq!(
            nn[3..],
            [
                "--block-size=67108864",
                "--heartbeat-interval=1s",
                "--dead-after=3s"
            ]
        );
        let dn = bench.datanode_flags(0, vec!["--listen=x".into()]);
        assert_eq!(dn, ["--listen=x", "--reserved=0"]);
    }

    #[test]
    fn per_datanode_flags_go_to_that_datanode_only() {
        let o = Options::default()
            .datanode_arg("--all", "1")
            .datanode_arg_for(1, "--one", "2");
        assert_eq!(
            o.datanode_flags(1, Vec::new()),
            ["--reserved=0", "--shutdown-grace=5s", "--all=1", "--one=2"]
        );
        assert!(!o.datanode_flags(0, Vec::new()).contains(&"--one=2".into()));
    }

    #[test]
    fn the_log_filter_is_set_or_inherited() {
        let env = Options::default().env();
        assert!(env.contains(&("RUST_LOG".into(), "info".into())));
        let env = Options::default().rust_log(None).env();
        assert_eq!(env, [("NO_COLOR".to_owned(), "1".to_owned())]);
    }
}

//! A cluster of real child processes (`kdfs-namenode`, `kdfs-datanode` ×N, `kdfs-gateway`)
//! for `kdfs bench --local`: separate processes so each one's peak RSS can be read from
//! `/proc`, and so a datanode can be SIGKILLed for the heal scenario.
//!
//! The binaries are taken from the directory of the running `kdfs` (build them all with
//! `cargo build --release`).

use crate::certs::Role;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// How long the cluster may take to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    /// Peak resident set (VmHWM) in bytes, while the process lives.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

/// User + system CPU seconds a process has used so far (`/proc/<pid>/stat`).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // Linux reports these in USER_HZ, which is 100 on every architecture it runs on.
    Some(ticks / 100.0)
}

pub struct ProcCluster {
    pub gateway: String,
    pub procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .map(|d| d.join(name))
        .context("locating the kdfs binaries")?;
    if !p.exists() {
        bail!(
            "{} not found: build every binary first (cargo build --release)",
            p.display()
        );
    }
    Ok(p)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(name: &str, exe: &Path, args: &[String], log: &Path) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log)?;
    let child = Command::new(exe)
        .args(args)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    Ok(Proc {
        name: name.to_owned(),
        child,
    })
}

impl ProcCluster {
    /// Starts a namenode, `datanodes` datanodes and a gateway in a fresh temp dir. The
    /// ports are probed free and then handed to the children, so another process on
    /// the machine can take one in between: a start that fails is retried from scratch
    /// (a few times) with new ports, saying why on stderr.
    /// With `tls`, every internal gRPC link is mutual TLS (certificates from
    /// `kdfs certs` in the temp dir).
    pub async fn start(
        datanodes: usize,
        block_size: &str,
        dead_after: &str,
        tls: bool,
    ) -> anyhow::Result<Self> {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            match Self::try_start(datanodes, block_size, dead_after, tls).await {
                Ok(c) => return Ok(c),
                Err(e) if attempt < ATTEMPTS => {
                    eprintln!("bench: cluster start {attempt}/{ATTEMPTS} failed, retrying: {e:#}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_start(
        datanodes: usize,
        block_size: &str,
        dead_after: &str,
        tls: bool,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("kdfs-bench-").tempdir()?;
        let root = dir.path();
        let certs = if tls {
            Some(crate::certs::ensure_local(&root.join("tls"))?.0)
        } else {
            None
        };
        let flags = |role| crate::local::tls_flags(certs.as_ref(), role);
        let nn_port = free_port()?;
        let nn = format!("http://127.0.0.1:{nn_port}");
        let mut procs = vec![spawn(
            "namenode",
            &bin("kdfs-namenode")?,
            &[
                format!("--listen=127.0.0.1:{nn_port}"),
                format!("--http=127.0.0.1:{}", free_port()?),
                format!("--data-dir={}", root.join("namenode").display()),
                format!("--block-size={block_size}"),
                "--heartbeat-interval=1s".into(),
                format!("--dead-after={dead_after}"),
            ]
            .into_iter()
            .chain(flags(Role::Namenode))
            .collect::<Vec<_>>(),
            &root.join("namenode.log"),
        )?];
        for i in 0..datanodes {
            let port = free_port()?;
            procs.push(spawn(
                &format!("datanode-{i}"),
                &bin("kdfs-datanode")?,
                &[
                    format!("--listen=127.0.0.1:{port}"),
                    format!("--advertise=127.0.0.1:{port}"),
                    format!("--http=127.0.0.1:{}", free_port()?),
                    format!("--namenode={nn}"),
                    format!(
                        "--data-dir={}",
                        root.join(format!("datanode-{i}")).display()
                    ),
                    "--reserved=0".into(),
                ]
                .into_iter()
                .chain(flags(Role::Datanode))
                .collect::<Vec<_>>(),
                &root.join(format!("datanode-{i}.log")),
            )?);
        }
        let gw_port = free_port()?;
        procs.push(spawn(
            "gateway",
            &bin("kdfs-gateway")?,
            &[
                format!("--listen=127.0.0.1:{gw_port}"),
                format!("--namenode={nn}"),
            ]
            .into_iter()
            .chain(flags(Role::Gateway))
            .collect::<Vec<_>>(),
            &root.join("gateway.log"),
        )?);
        let mut cluster = ProcCluster {
            gateway: format!("http://127.0.0.1:{gw_port}"),
            procs,
            _dir: dir,
        };
        cluster.wait_live(datanodes).await?;
        Ok(cluster)
    }

    /// Waits until `/info` shows `n` live datanodes and `/readyz` answers 200.
    /// A process that exits meanwhile ends the wait with the tail of its log.
    pub async fn wait_live(&mut self, n: usize) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let ok = crate::local::is_ready(&http, &self.gateway, n);
            if ok.await.is_some() {
                return Ok(());
            }
            for p in &mut self.procs {
                if let Ok(Some(status)) = p.child.try_wait() {
                    let log =
                        std::fs::read_to_string(self._dir.path().join(format!("{}.log", p.name)))
                            .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    bail!(
                        "{} exited ({status}) before the cluster was ready: {}",
                        p.name,
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    );
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the bench cluster did not become ready within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs the process named `name`.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .context("no such process")?;
        p.child.kill()?;
        p.child.wait()?;
        Ok(())
    }

    /// `(name, CPU seconds used so far)` of every process still running, and of this
    /// one (the bench's HTTP client) as `bench-client`.
    pub fn cpu(&self) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = self
            .procs
            .iter()
            .filter_map(|p| Some((p.name.clone(), cpu_seconds(&p.child.id().to_string())?)))
            .collect();
        if let Some(s) = cpu_seconds("self") {
            v.push(("bench-client".into(), s));
        }
        v
    }

    /// `(name, peak RSS bytes)` of every process still running.
    pub fn peak_rss(&self) -> Vec<(String, u64)> {
        self.procs
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.peak_rss()?)))
            .collect()
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

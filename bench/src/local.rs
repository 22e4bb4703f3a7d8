//! A cluster of real child processes (`kdfs-namenode`, `kdfs-datanode` ×N, `kdfs-gateway`)
//! for `kdfs bench --local`: separate processes so each one's peak RSS can be read from
//! `/proc`, and so a datanode can be SIGKILLed for the heal scenario.
//!
//! The binaries are taken from the directory of the running `kdfs` (build them all with
//! `cargo build --release`). This module is the bench's only launcher, so that it can be
//! swapped for a shared one without touching the scenarios.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};

use crate::machine;

/// How long the cluster may take to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The roles `kdfs certs` issues a certificate for, by their file names.
const NAMENODE: &str = "namenode";
const DATANODE: &str = "datanode";
const GATEWAY: &str = "gateway";

struct Proc {
    name: String,
    child: Child,
}

pub(crate) struct ProcCluster {
    pub(crate) gateway: String,
    procs: Vec<Proc>,
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

/// A CA and a certificate per role in `dir`, made by `kdfs certs` with every flag at
/// its default (the variables that would change them are removed).
fn make_certs(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new(bin("kdfs")?)
        .arg("certs")
        .arg(format!("--out={}", dir.display()))
        .env_remove("KDFS_NAMESPACE")
        .env_remove("KDFS_CLUSTER_DOMAIN")
        .env_remove("KDFS_HOST")
        .env_remove("KDFS_DAYS")
        .env_remove("KDFS_CA_DAYS")
        .env_remove("KDFS_FORCE")
        .stdout(Stdio::null())
        .status()
        .context("running kdfs certs")?;
    ensure!(status.success(), "kdfs certs failed ({status})");
    Ok(())
}

/// The `--tls-*` flags of one role whose certificates `kdfs certs` wrote to `dir`,
/// or none without TLS.
fn tls_flags(certs: Option<&Path>, role: &str) -> Vec<String> {
    let Some(dir) = certs else {
        return Vec::new();
    };
    vec![
        format!("--tls-cert={}", dir.join(format!("{role}.crt")).display()),
        format!("--tls-key={}", dir.join(format!("{role}.key")).display()),
        format!("--tls-ca={}", dir.join("ca.crt").display()),
    ]
}

impl ProcCluster {
    /// Starts a namenode, `datanodes` datanodes and a gateway in a fresh temp dir. The
    /// ports are probed free and then handed to the children, so another process on
    /// the machine can take one in between: a start that fails is retried from scratch
    /// (a few times) with new ports, saying why on stderr.
    /// With `tls`, every internal gRPC link is mutual TLS (certificates from
    /// `kdfs certs` in the temp dir).
    pub(crate) async fn start(
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
            let certs = root.join("tls");
            make_certs(&certs)?;
            Some(certs)
        } else {
            None
        };
        let flags = |role| tls_flags(certs.as_deref(), role);
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
            .chain(flags(NAMENODE))
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
                .chain(flags(DATANODE))
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
            .chain(flags(GATEWAY))
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
    pub(crate) async fn wait_live(&mut self, n: usize) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if is_ready(&http, &self.gateway, n).await.is_some() {
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
    pub(crate) fn kill(&mut self, name: &str) -> anyhow::Result<()> {
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
    pub(crate) fn cpu(&self) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = self
            .procs
            .iter()
            .filter_map(|p| {
                Some((
                    p.name.clone(),
                    machine::cpu_seconds(&p.child.id().to_string())?,
                ))
            })
            .collect();
        if let Some(s) = machine::cpu_seconds("self") {
            v.push(("bench-client".into(), s));
        }
        v
    }

    /// `(name, peak RSS bytes)` of every process still running.
    pub(crate) fn peak_rss(&self) -> Vec<(String, u64)> {
        self.procs
            .iter()
            .filter_map(|p| Some((p.name.clone(), machine::peak_rss(p.child.id())?)))
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

/// One probe: `/readyz` answers 200 and `/info` shows at least `datanodes` live ones.
async fn is_ready(http: &reqwest::Client, url: &str, datanodes: usize) -> Option<()> {
    let r = http.get(format!("{url}/readyz")).send().await.ok()?;
    r.status().is_success().then_some(())?;
    let info: serde_json::Value = http
        .get(format!("{url}/info"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let live = info["datanodes"]
        .as_array()?
        .iter()
        .filter(|d| d["state"] == "live")
        .count();
    (live >= datanodes).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_flags_name_the_roles_files() {
        assert!(tls_flags(None, GATEWAY).is_empty());
        assert_eq!(
            tls_flags(Some(Path::new("/t")), DATANODE),
            [
                "--tls-cert=/t/datanode.crt",
                "--tls-key=/t/datanode.key",
                "--tls-ca=/t/ca.crt"
            ]
        );
    }
}

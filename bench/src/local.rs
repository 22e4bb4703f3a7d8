//! The local cluster of `kdfs bench --local`: `kdfs-namenode`, `kdfs-datanode` ×N and
//! `kdfs-gateway` as child processes, so each one's peak RSS and CPU time can be read
//! from `/proc` and a datanode can be SIGKILLed for the heal scenario.
//!
//! The launcher is the test kit's ([`kdfs_testkit::ProcessCluster`], shared with the
//! fault suite); this module only chooses the bench's settings: the binaries beside the
//! running `kdfs` (build them all with `cargo build --release`), the servers' own
//! recovery timings and log filter, 1 s heartbeats, and mutual TLS on request.

use std::time::Duration;

use anyhow::{Context, anyhow};
use kdfs_core::ByteSize;
use kdfs_testkit::{Binaries, Options, ProcessCluster};

use crate::machine;

/// How long the cluster may take to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts tried before giving up: a port probed free can be taken by another process
/// before the child binds it, and a new start picks new ports.
const ATTEMPTS: usize = 3;

/// The key pair of a local cluster's S3 port.
pub(crate) const S3_KEYS: (&str, &str) = ("kdfs-bench", "kdfs-bench-secret-key");

pub(crate) struct ProcCluster {
    /// The gateway's base URL.
    pub(crate) gateway: String,
    /// The gateway's S3 port's base URL, if started with one.
    pub(crate) s3: Option<String>,
    /// Always `Some` until dropped.
    inner: Option<ProcessCluster>,
    /// Keeps the thread that started the children alive until the cluster is dropped:
    /// a child's parent-death signal (`PR_SET_PDEATHSIG`) fires when the *thread* that
    /// spawned it exits, so children started on a pooled thread would be SIGKILLed once
    /// that thread idled out, in the middle of a scenario.
    _starter: std::sync::mpsc::Sender<()>,
}

impl ProcCluster {
    /// Starts a namenode, `datanodes` datanodes and a gateway in a fresh temp dir and
    /// waits until every datanode is live; a start that fails is retried from scratch
    /// (a few times), saying why on stderr. With `tls`, every internal gRPC link is
    /// mutual TLS (a CA and certificate made in the temp dir). With `s3`, the gateway
    /// serves its S3 port too, with the key pair [`S3_KEYS`].
    pub(crate) async fn start(
        datanodes: usize,
        block_size: &str,
        dead_after: &str,
        tls: bool,
        s3: bool,
    ) -> anyhow::Result<Self> {
        let block_size: ByteSize = block_size.parse().map_err(|e: String| anyhow!(e))?;
        let opts = Options::default()
            .datanodes(datanodes)
            .default_replication()
            .block_size(block_size.bytes())
            .heartbeat("1s")
            .dead_after(dead_after)
            .fast_recovery(false)
            .tls(tls)
            .binaries(Binaries::BesideExe)
            .rust_log(None)
            .prefix("kdfs-bench-")
            .start_timeout(READY_TIMEOUT);
        let mut attempt = 1;
        loop {
            let mut o = opts.clone();
            let s3_port = match s3 {
                true => Some(free_port()?),
                false => None,
            };
            if let Some(port) = s3_port {
                o = o
                    .gateway_arg("--s3-listen", &format!("127.0.0.1:{port}"))
                    .gateway_arg("--s3-access-key", S3_KEYS.0)
                    .gateway_arg("--s3-secret-key", S3_KEYS.1);
            }
            // Blocking (it sleeps between polls and uses a blocking HTTP client), on a
            // thread of its own that outlives the children (see `_starter`).
            let (started_tx, started_rx) = tokio::sync::oneshot::channel();
            let (starter, hold) = std::sync::mpsc::channel::<()>();
            std::thread::Builder::new()
                .name("bench-cluster".into())
                .spawn(move || {
                    let _ = started_tx.send(ProcessCluster::try_start(o));
                    // Returns once `starter` is dropped, with the cluster.
                    let _ = hold.recv();
                })
                .context("starting the cluster's thread")?;
            let started = started_rx.await.context("the cluster start panicked")?;
            match started {
                Ok(c) => {
                    return Ok(Self {
                        gateway: c.gateway_url().to_owned(),
                        s3: s3_port.map(|p| format!("http://127.0.0.1:{p}")),
                        inner: Some(c),
                        _starter: starter,
                    });
                }
                Err(e) if attempt < ATTEMPTS => {
                    eprintln!("bench: cluster start {attempt}/{ATTEMPTS} failed, retrying: {e}");
                    attempt += 1;
                }
                Err(e) => return Err(anyhow!(e)),
            }
        }
    }

    fn cluster(&self) -> &ProcessCluster {
        self.inner.as_ref().expect("a started cluster")
    }

    /// SIGKILLs the process named `name` (`namenode`, `datanode-<i>`, `gateway`).
    pub(crate) fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let cluster = self.inner.as_mut().expect("a started cluster");
        cluster.proc_mut(name).context("no such process")?.kill();
        Ok(())
    }

    /// `(name, CPU seconds used so far)` of every process still running, and of this
    /// one (the bench's HTTP client) as `bench-client`.
    pub(crate) fn cpu(&self) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = self
            .cluster()
            .procs()
            .filter_map(|p| Some((p.name.clone(), p.cpu_seconds()?)))
            .collect();
        if let Some(s) = machine::cpu_seconds("self") {
            v.push(("bench-client".into(), s));
        }
        v
    }

    /// `(name, peak RSS bytes)` of every process still running.
    pub(crate) fn peak_rss(&self) -> Vec<(String, u64)> {
        self.cluster()
            .procs()
            .filter_map(|p| Some((p.name.clone(), p.peak_rss_kib()? * 1024)))
            .collect()
    }
}

/// A port free on loopback right now (a new start picks another if it was taken).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        // Off the runtime's threads: the cluster holds a blocking HTTP client, which
        // may not be dropped inside an async context. The children are stopped here,
        // before `_starter` lets the thread that started them end.
        if let Some(c) = self.inner.take() {
            let _ = std::thread::spawn(move || drop(c)).join();
        }
    }
}

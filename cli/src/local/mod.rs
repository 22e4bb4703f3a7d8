//! `kdfs local`: a whole cluster on 127.0.0.1 in one process.
//!
//! It runs the very `run` functions the server binaries call: one namenode (or with
//! `--namenodes 3` an HA group, [`namenodes`]), `--datanodes` datanodes and a gateway,
//! each with its own data directory under `--data-dir` (`namenode/` or `namenode-N/`,
//! `datanode-N/`), so a second start on the same directory finds every file again. Internal gRPC and metrics ports are picked by the OS; only the gateway's
//! address is fixed (`--http`). Ctrl-C (or SIGTERM) shuts everything down gracefully:
//! the gateway first (drains transfers), then the datanodes, then the namenodes.
//!
//! Every internal gRPC link (gateway → namenode, gateway → datanodes, datanode →
//! namenode, datanode → datanode) uses mutual TLS with role certificates in
//! `<data-dir>/tls` (`ca.crt`, `<role>.crt`/`<role>.key`), made by
//! [`certs::ensure_local`] on the first start and reused after, so the servers
//! authorize every rpc by role as in a deployed cluster. `--no-tls` runs the links in
//! plaintext (loopback only). The gateway's own HTTP side stays plain.
//!
//! The gateway also serves S3 on `--s3` (127.0.0.1:9000; `off` disables it) with a key
//! pair made on the first start and kept in `<data-dir>/s3-credentials` ([`s3_keys`]).
//!
//! The terminal shows only a short banner once the cluster serves ([`banner`]) and a
//! line when it stops; each component logs to its own file under `<data-dir>/logs/`
//! ([`logs`]), which `--verbose` also streams to stderr. Each component runs on a
//! runtime of its own ([`component`]), which is what lets its lines be told apart. An
//! error that stops the cluster (a port in use, a component whose `run` fails, the
//! ready timeout) ends `kdfs local` with that reason on stderr and a non-zero exit.

mod banner;
mod component;
mod logs;
mod namenodes;
mod s3_keys;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Parser;
use tokio::net::TcpListener;

use crate::certs::{self, CertPaths, Role};
use banner::Banner;
use component::Components;
use logs::Logs;

/// How long `kdfs local` waits for the cluster to serve before giving up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Where every component keeps its data (namenode/, datanode-N/) and its log
    /// (logs/<component>.log).
    #[arg(long, env = "KDFS_DATA_DIR", default_value = "./kdfs-data")]
    pub data_dir: PathBuf,
    /// Number of datanodes.
    #[arg(long, env = "KDFS_DATANODES", default_value_t = 3)]
    pub datanodes: u16,
    /// Number of namenodes: 1, or 3 (or 5) for high availability (Raft between them;
    /// any one may stop and writes go on).
    #[arg(long, env = "KDFS_NAMENODES", default_value_t = 1)]
    pub namenodes: u16,
    /// Where the gateway listens.
    #[arg(long, env = "KDFS_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Where the gateway's S3 port listens, or `off`. Its key pair is made on the
    /// first start and kept in <data-dir>/s3-credentials (printed in the banner).
    #[arg(long, env = "KDFS_S3", default_value = "127.0.0.1:9000")]
    pub s3: String,
    /// Replicas per block (default: min(3, datanodes)).
    #[arg(long, env = "KDFS_REPLICATION")]
    pub replication: Option<u32>,
    /// Block size.
    #[arg(long, env = "KDFS_BLOCK_SIZE", default_value = "64MiB")]
    pub block_size: kdfs_core::ByteSize,
    /// Space each datanode keeps free on its filesystem.
    #[arg(long, env = "KDFS_RESERVED", default_value = "1GiB")]
    pub reserved: kdfs_core::ByteSize,
    /// Run the internal gRPC links in plaintext, without mutual TLS: any local
    /// process can then call every rpc of the namenode and datanodes. By default they
    /// use mTLS with a CA and role certificates in <data-dir>/tls (made on the first
    /// start, reused after; `kdfs certs --loopback --out <data-dir>/tls` rotates them).
    /// The gateway's HTTP is plain either way.
    #[arg(long, env = "KDFS_NO_TLS")]
    pub no_tls: bool,
    /// Accepted for scripts written when mTLS was opt-in; it is the default now.
    #[arg(long, hide = true, conflicts_with = "no_tls")]
    pub tls: bool,
    /// Log format of the log files (and of --verbose): plain or json.
    #[arg(long, env = "KDFS_LOG_FORMAT", default_value = "plain")]
    pub log_format: kdfs_core::telemetry::LogFormat,
    /// Also stream every component's log lines to stderr (they always go to
    /// <data-dir>/logs/<component>.log).
    #[arg(long, short, env = "KDFS_VERBOSE")]
    pub verbose: bool,
}

/// Binds before any component starts, so a port in use fails the start at once. The
/// listener is registered with a reactor later, by the runtime of the component it is
/// for ([`tokio_listener`]).
fn bind(addr: &str, what: &str) -> anyhow::Result<StdListener> {
    let listener = StdListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} for the {what}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// `listener` on the reactor of the runtime this is called on.
fn tokio_listener(listener: StdListener) -> anyhow::Result<TcpListener> {
    Ok(TcpListener::from_std(listener)?)
}

fn dir(root: &Path, name: &str) -> anyhow::Result<String> {
    let d = root.join(name);
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    Ok(d.to_string_lossy().into_owned())
}

/// The `--tls-*` flags of one role, or none without TLS.
pub(crate) fn tls_flags(tls: Option<&CertPaths>, role: Role) -> Vec<String> {
    let Some(paths) = tls else {
        return Vec::new();
    };
    let own = paths.role(role);
    vec![
        format!("--tls-cert={}", own.cert.display()),
        format!("--tls-key={}", own.key.display()),
        format!("--tls-ca={}", paths.ca.cert.display()),
    ]
}

/// The components of a cluster with `namenodes` namenodes and `datanodes` datanodes,
/// named as their data and log files are: `namenode` (or `namenode-0` …),
/// `datanode-0` …, `gateway`.
fn component_names(namenodes: u16, datanodes: u16) -> Vec<String> {
    namenodes::names(namenodes)
        .into_iter()
        .chain((0..datanodes).map(|i| format!("datanode-{i}")))
        .chain(std::iter::once("gateway".to_owned()))
        .collect()
}

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.datanodes >= 1, "--datanodes must be at least 1");
    namenodes::check_count(args.namenodes)?;
    let replication = args.replication.unwrap_or(u32::from(args.datanodes).min(3));
    anyhow::ensure!(
        replication >= 1 && replication <= u32::from(args.datanodes),
        "--replication {replication} needs at least that many datanodes (have {})",
        args.datanodes
    );
    // The one fixed port first: if it is taken, nothing else is made.
    let gw_listener = bind(&args.http, "gateway")?;
    let gw_addr = gw_listener.local_addr()?;
    let s3_listener = match args.s3.as_str() {
        "off" => None,
        addr => Some(bind(addr, "gateway's S3 port (--s3; `off` disables it)")?),
    };
    let s3_url = match &s3_listener {
        Some(l) => Some(format!("http://{}", l.local_addr()?)),
        None => None,
    };
    let s3_keys = match s3_listener {
        Some(_) => Some(s3_keys::ensure(&args.data_dir)?),
        None => None,
    };
    let root = &args.data_dir;
    let logs_dir = root.join("logs");
    let logs = Logs::open(&logs_dir, &component_names(args.namenodes, args.datanodes))?;
    kdfs_core::telemetry::init_to(args.log_format, logs, args.verbose);
    let shutdown = kdfs_core::shutdown::on_signals();
    let block_size = args.block_size.to_string();
    let tls_dir = root.join("tls");
    let tls = if !args.no_tls {
        let (paths, generated) = certs::ensure_local(&tls_dir)?;
        match generated {
            Some(g) => {
                tracing::info!(dir = %tls_dir.display(), ca = ?g.ca, "issued mTLS certificates")
            }
            None => tracing::info!(dir = %tls_dir.display(), "reusing mTLS certificates"),
        }
        Some(paths)
    } else {
        None
    };
    let tls = tls.as_ref();

    let (nn_listeners, nn_addr) = namenodes::bind_all(root, args.namenodes)?;
    let mut nns = Vec::new();
    for nn in nn_listeners {
        let cfg = kdfs_namenode::Config::try_parse_from(
            [
                "kdfs-namenode".to_owned(),
                format!("--data-dir={}", dir(root, &nn.name)?),
                format!("--replication={replication}"),
                format!("--block-size={block_size}"),
            ]
            .into_iter()
            .chain(nn.ha_flags)
            .chain(tls_flags(tls, Role::Namenode)),
        )?;
        nns.push((nn.name, cfg, nn.grpc, nn.http));
    }
    let mut datanodes = Vec::new();
    for i in 0..args.datanodes {
        let grpc = bind("127.0.0.1:0", "datanode")?;
        let http = bind("127.0.0.1:0", "datanode metrics")?;
        let cfg = kdfs_datanode::Config::try_parse_from(
            [
                "kdfs-datanode".to_owned(),
                format!("--data-dir={}", dir(root, &format!("datanode-{i}"))?),
                format!("--namenode={nn_addr}"),
                format!("--advertise={}", grpc.local_addr()?),
                format!("--reserved={}", args.reserved),
            ]
            .into_iter()
            .chain(tls_flags(tls, Role::Datanode)),
        )?;
        datanodes.push((cfg, grpc, http));
    }
    let s3_flags = s3_keys
        .iter()
        .map(|k| format!("--s3-credentials-file={}", k.path.display()));
    let gw_cfg = kdfs_client_gateway::Config::try_parse_from(
        [
            "kdfs-gateway".to_owned(),
            format!("--namenode={nn_addr}"),
            format!("--listen={gw_addr}"),
        ]
        .into_iter()
        .chain(s3_flags)
        .chain(tls_flags(tls, Role::Gateway)),
    )?;

    // Started inside out, so each layer finds the one below it serving.
    let mut cluster = Components::new();
    let mut namenode_ids = Vec::new();
    for (name, cfg, grpc, http) in nns {
        namenode_ids.push(cluster.start(&name, move |token| async move {
            let (grpc, http) = (tokio_listener(grpc)?, tokio_listener(http)?);
            Ok(kdfs_namenode::run(cfg, grpc, http, token).await?)
        })?);
    }
    let mut datanode_ids = Vec::new();
    for (i, (cfg, grpc, http)) in datanodes.into_iter().enumerate() {
        datanode_ids.push(
            cluster.start(&format!("datanode-{i}"), move |token| async move {
                let (grpc, http) = (tokio_listener(grpc)?, tokio_listener(http)?);
                Ok(kdfs_datanode::run(cfg, grpc, http, token).await?)
            })?,
        );
    }
    let gateway = cluster.start("gateway", move |token| async move {
        let listeners = kdfs_client_gateway::Listeners {
            http: tokio_listener(gw_listener)?,
            s3: s3_listener.map(tokio_listener).transpose()?,
        };
        Ok(kdfs_client_gateway::run(gw_cfg, listeners, token).await?)
    })?;
    // Outermost first, so each layer drains while the one below still serves.
    let stop_order = [vec![gateway], datanode_ids, namenode_ids];

    let url = format!("http://{gw_addr}");
    let failure = tokio::select! {
        r = wait_ready(&url, args.datanodes) => r.err(),
        () = shutdown.cancelled() => None,
        (i, why) = cluster.next_exit() => Some(stopped(cluster.name(i), &why, &logs_dir)),
    };
    let failure = match failure {
        Some(f) => Some(f),
        None if shutdown.is_cancelled() => None,
        None => {
            let banner = Banner {
                gateway: &url,
                data_dir: root,
                logs_dir: &logs_dir,
                namenodes: args.namenodes,
                datanodes: args.datanodes,
                tls_dir: tls.map(|_| tls_dir.as_path()),
                s3: s3_url
                    .as_deref()
                    .zip(s3_keys.as_ref())
                    .map(|(url, k)| banner::S3 {
                        url,
                        access_key: &k.access_key,
                        secret_key: &k.secret_key,
                        file: &k.path,
                    }),
            };
            println!("{banner}");
            tracing::info!(gateway = %url, data_dir = %root.display(), namenodes = args.namenodes, datanodes = args.datanodes, mtls = tls.is_some(), "local cluster ready");
            tokio::select! {
                () = shutdown.cancelled() => None,
                (i, why) = cluster.next_exit() => Some(stopped(cluster.name(i), &why, &logs_dir)),
            }
        }
    };
    if failure.is_none() {
        println!("kdfs local is stopping");
    }
    let mut errors: Vec<String> = failure.map(|f| format!("{f:#}")).into_iter().collect();
    for group in stop_order {
        errors.extend(cluster.stop(group).await);
    }
    if errors.is_empty() {
        tracing::info!("local cluster stopped");
        println!("kdfs local stopped");
        return Ok(());
    }
    for e in &errors {
        tracing::error!(error = %e, "local cluster failed");
    }
    Err(anyhow!("{}", errors.join("; ")))
}

/// The error of a component that stopped on its own, pointing at its log.
fn stopped(name: &str, why: &anyhow::Error, logs_dir: &Path) -> anyhow::Error {
    anyhow!(
        "the {name} stopped: {why:#} (its log: {})",
        Logs::path_of(logs_dir, name).display()
    )
}

/// Waits until the gateway answers `/readyz` with 200 (a namenode leads and is
/// reachable, enough live datanodes) and `/info` lists every datanode as live.
async fn wait_ready(url: &str, datanodes: u16) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let ready = is_ready(&http, url, usize::from(datanodes));
        if ready.await.is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the local cluster did not become ready within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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

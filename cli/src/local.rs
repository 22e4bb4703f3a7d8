//! `kdfs local`: a whole cluster on 127.0.0.1 in one process.
//!
//! It runs the very `run` functions the server binaries call: one namenode, `--datanodes`
//! datanodes and a gateway, each with its own data directory under `--data-dir`
//! (`namenode/`, `datanode-N/`), so a second start on the same directory finds every
//! file again. Internal gRPC and metrics ports are picked by the OS; only the gateway's
//! address is fixed (`--http`). Ctrl-C (or SIGTERM) shuts everything down gracefully:
//! the gateway first (drains transfers), then the datanodes, then the namenode.
//!
//! With `--tls` every internal gRPC link (gateway → namenode, gateway → datanodes,
//! datanode → namenode, datanode → datanode) uses mutual TLS with the certificates in
//! `<data-dir>/tls`, made by [`certs::ensure_local`] on the first start and reused after.
//! The gateway's own HTTP side stays plain on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::certs::{self, CertPaths, Role};

/// How long `kdfs local` waits for the cluster to serve before giving up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Where every component keeps its data (namenode/, datanode-N/).
    #[arg(long, env = "KDFS_DATA_DIR", default_value = "./kdfs-data")]
    pub data_dir: PathBuf,
    /// Number of datanodes.
    #[arg(long, env = "KDFS_DATANODES", default_value_t = 3)]
    pub datanodes: u16,
    /// Where the gateway listens.
    #[arg(long, env = "KDFS_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Replicas per block (default: min(3, datanodes)).
    #[arg(long, env = "KDFS_REPLICATION")]
    pub replication: Option<u32>,
    /// Block size.
    #[arg(long, env = "KDFS_BLOCK_SIZE", default_value = "64MiB")]
    pub block_size: kdfs_core::ByteSize,
    /// Space each datanode keeps free on its filesystem.
    #[arg(long, env = "KDFS_RESERVED", default_value = "1GiB")]
    pub reserved: kdfs_core::ByteSize,
    /// Mutual TLS on every internal gRPC link, with a CA and certificates in
    /// <data-dir>/tls (made on the first start, reused after; `kdfs certs --out
    /// <data-dir>/tls` rotates them). The gateway's HTTP stays plain.
    #[arg(long, env = "KDFS_TLS")]
    pub tls: bool,
    /// Log format: plain or json.
    #[arg(long, env = "KDFS_LOG_FORMAT", default_value = "plain")]
    pub log_format: kdfs_core::telemetry::LogFormat,
}

async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
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

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    kdfs_core::telemetry::init(args.log_format);
    anyhow::ensure!(args.datanodes >= 1, "--datanodes must be at least 1");
    let replication = args.replication.unwrap_or(u32::from(args.datanodes).min(3));
    anyhow::ensure!(
        replication >= 1 && replication <= u32::from(args.datanodes),
        "--replication {replication} needs at least that many datanodes (have {})",
        args.datanodes
    );
    let root = &args.data_dir;
    let shutdown = kdfs_core::shutdown::on_signals();
    let block_size = args.block_size.to_string();
    let tls_dir = root.join("tls");
    let tls = if args.tls {
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

    // Namenode.
    let nn_grpc = bind("127.0.0.1:0", "namenode").await?;
    let nn_http = bind("127.0.0.1:0", "namenode metrics").await?;
    let nn_addr = format!("http://{}", nn_grpc.local_addr()?);
    let nn_cfg = kdfs_namenode::Config::try_parse_from(
        [
            "kdfs-namenode".to_owned(),
            format!("--data-dir={}", dir(root, "namenode")?),
            format!("--replication={replication}"),
            format!("--block-size={block_size}"),
        ]
        .into_iter()
        .chain(tls_flags(tls, Role::Namenode)),
    )?;
    let nn_token = CancellationToken::new();
    let namenode: JoinHandle<_> = tokio::spawn(kdfs_namenode::run(
        nn_cfg,
        nn_grpc,
        nn_http,
        nn_token.clone(),
    ));

    // Datanodes.
    let dn_token = CancellationToken::new();
    let mut datanodes = Vec::new();
    for i in 0..args.datanodes {
        let grpc = bind("127.0.0.1:0", "datanode").await?;
        let http = bind("127.0.0.1:0", "datanode metrics").await?;
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
        datanodes.push(tokio::spawn(kdfs_datanode::run(
            cfg,
            grpc,
            http,
            dn_token.clone(),
        )));
    }

    // Gateway.
    let gw_listener = bind(&args.http, "gateway").await?;
    let gw_addr = gw_listener.local_addr()?;
    let gw_cfg = kdfs_client_gateway::Config::try_parse_from(
        [
            "kdfs-gateway".to_owned(),
            format!("--namenode={nn_addr}"),
            format!("--listen={gw_addr}"),
        ]
        .into_iter()
        .chain(tls_flags(tls, Role::Gateway)),
    )?;
    let gw_token = CancellationToken::new();
    let gateway = tokio::spawn(kdfs_client_gateway::run(
        gw_cfg,
        gw_listener,
        gw_token.clone(),
    ));

    let url = format!("http://{gw_addr}");
    tokio::select! {
        r = wait_ready(&url, args.datanodes) => r?,
        _ = shutdown.cancelled() => {}
    }
    if !shutdown.is_cancelled() {
        println!("gateway: {url}");
        if tls.is_some() {
            println!(
                "mTLS: every internal gRPC link; certificates in {} (the gateway's HTTP is plain)",
                tls_dir.display()
            );
        }
        tracing::info!(gateway = %url, data_dir = %root.display(), datanodes = args.datanodes, mtls = tls.is_some(), "local cluster ready");
    }

    shutdown.cancelled().await;
    // Outermost first, so each layer drains while the one below still serves.
    gw_token.cancel();
    report("gateway", gateway.await);
    dn_token.cancel();
    for dn in datanodes {
        report("datanode", dn.await);
    }
    nn_token.cancel();
    report("namenode", namenode.await);
    Ok(())
}

fn report<E: std::fmt::Display>(what: &str, r: Result<Result<(), E>, tokio::task::JoinError>) {
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "{what} stopped with an error"),
        Err(e) => tracing::error!(error = %e, "{what} task failed"),
    }
}

/// Waits until the gateway answers `/readyz` with 200 (namenode reachable, enough live
/// datanodes) and `/info` lists every datanode as live.
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
pub async fn is_ready(http: &reqwest::Client, url: &str, datanodes: usize) -> Option<()> {
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

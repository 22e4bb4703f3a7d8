//! The kdfs datanode: a verified, content-addressed block store served over gRPC.
//!
//! - [`store`]: blocks on disk (`<data>/blocks/ab/cd/<sha256>`), atomic verified commits,
//!   CRC32C sidecars for verified range reads, batches of small blocks with their
//!   journal, quarantine and its pruning, the in-memory index; a directory of small
//!   modules, one concern each (see its docs).
//! - `sys`: every system call beyond `std`, in one place (through `rustix`).
//! - [`capacity`], [`version`], [`scanner`]: room for writes, the disk's identity, and
//!   the background re-verification of stored blocks.
//! - [`service`]: the `Datanode` gRPC service (pipelined writes, batches of small
//!   blocks, reads, transfers), one file per rpc.
//! - [`link`]: registration, heartbeats, block reports and namenode commands.
//! - [`leaving`]: on a shutdown signal, how this datanode leaves (a restart stops at
//!   once; a decommission serves until drained).
//! - [`http`], [`metrics`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`config`] and [`run`]: what `main` parses and calls; tests call the same `run`.
//!
//! A datanode never imports namenode code: it knows the namenode only through the
//! protocol in `kdfs-proto`.

pub mod capacity;
pub mod config;
pub mod error;
pub mod http;
pub mod leaving;
pub mod link;
pub mod metrics;
pub mod scanner;
pub mod service;
pub mod store;
mod sys;
pub mod version;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kdfs_proto::transport;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, Result};

use crate::capacity::CapacitySource;
use crate::link::{Link, LinkConfig};
use crate::scanner::{ScannerConfig, ScannerStats};
use crate::service::{DatanodeService, Node};
use crate::store::{Store, StoreConfig};
use crate::version::Version;

/// A flag's value, else the customary downward-API variable (`POD_NAME`, `NODE_NAME`).
fn flag_or_env(flag: &Option<String>, var: &str) -> Option<String> {
    flag.clone()
        .or_else(|| std::env::var(var).ok())
        .filter(|p| !p.is_empty())
}

fn pod_name(config: &Config) -> Option<String> {
    flag_or_env(&config.pod_name, "POD_NAME")
}

/// The address peers dial: `--advertise`, else `$POD_NAME.<headless service>:<port>` in
/// Kubernetes, else the gRPC listener's address (loopback if it listens on all
/// interfaces, which only suits a single machine).
fn advertise(config: &Config, local: SocketAddr) -> Result<String> {
    if let Some(a) = &config.advertise {
        return kdfs_proto::wire::address("--advertise", a)
            .map_err(|s| Error::Config(s.message().to_owned()));
    }
    if let (Some(pod), Some(svc)) = (pod_name(config), &config.headless_service) {
        return Ok(format!("{pod}.{svc}:{}", local.port()));
    }
    if local.ip().is_unspecified() {
        let a = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), local.port());
        tracing::warn!(advertise = %a, "listening on all interfaces without --advertise: advertising loopback");
        return Ok(a.to_string());
    }
    Ok(local.to_string())
}

/// Runs a datanode until `shutdown` is cancelled (then asks the namenode how it leaves,
/// serving on while it is decommissioned and not yet drained, finishes its in-flight
/// transfers and returns `Ok`), or until the namenode refuses it for good (another
/// cluster's disk: returns the error).
///
/// Startup: open the store (clean `tmp/`, scan `blocks/`), serve gRPC and HTTP on the
/// given listeners, then register with the namenode in the background — the datanode
/// serves reads and writes even while the namenode is unreachable.
pub async fn run(
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let grpc_addr = grpc
        .local_addr()
        .map_err(|e| Error::io("gRPC listener", e))?;
    let http_addr = http
        .local_addr()
        .map_err(|e| Error::io("HTTP listener", e))?;
    let advertise = advertise(&config, grpc_addr)?;
    let tls = config
        .tls
        .load()
        .map_err(|e| Error::Config(e.to_string()))?;
    config
        .plaintext
        .check(grpc_addr, tls.is_some())
        .map_err(|e| Error::Config(e.to_string()))?;
    if let Some(tls) = &tls {
        // Peers refuse every call from a certificate without the datanode role, and the
        // namenode one that does not name the address the node advertises; say so now,
        // in words, instead of retrying registration forever.
        kdfs_proto::roles::require_own(&tls.certificate(), kdfs_proto::roles::Role::Datanode)
            .map_err(Error::Config)?;
        let host = kdfs_proto::tls::host_of(&advertise);
        kdfs_proto::tls::check_names(&tls.certificate(), host).map_err(|reason| {
            Error::Config(format!(
                "--tls-cert does not fit --advertise {advertise}: {reason}; the namenode \
                 would refuse this datanode (issue a certificate naming {host}, e.g. with \
                 `kdfs certs --host {host}`)"
            ))
        })?;
    }

    let root = config.data_dir.clone();
    let store_cfg = StoreConfig {
        reserved: config.reserved.bytes(),
        capacity_cap: config.capacity.map(|c| c.bytes()),
        capacity: config.fixed_capacity.map_or(CapacitySource::Statvfs, |c| {
            CapacitySource::Fixed { total: c.bytes() }
        }),
        unnamed_tmp: config.unnamed_tmp,
        ..StoreConfig::new(&root)
    };
    let (store, report, version) = tokio::task::spawn_blocking(move || -> Result<_> {
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::io(format!("create {}", root.display()), e))?;
        let version = Version::load_or_create(&root)?;
        let (store, report) = Store::open(store_cfg)?;
        Ok((store, report, version))
    })
    .await
    .map_err(|e| Error::io("store open task", std::io::Error::other(e)))??;
    tracing::info!(
        dir = %config.data_dir.display(),
        blocks = report.blocks,
        bytes = report.bytes,
        tmp_removed = report.tmp_removed,
        journal_restored = report.journal_restored,
        unnamed_tmp = store.unnamed_tmp(),
        took_ms = report.took.as_millis() as u64,
        "block store opened"
    );

    let node = Arc::new(Node {
        id: version.datanode_id,
        store: store.clone(),
        peers: kdfs_proto::pool::ChannelPool::new(tls.clone()),
        keys: Default::default(),
        metrics: Default::default(),
        write_idle_timeout: config.write_idle_timeout.get(),
    });
    let link = Arc::new(Link::new(
        node.clone(),
        version,
        LinkConfig {
            namenode: config.namenode.clone(),
            advertise: advertise.clone(),
            zone: config.zone.clone().unwrap_or_default(),
            block_report_interval: config.block_report_interval.get(),
            pod_name: pod_name(&config).unwrap_or_default(),
            node_name: flag_or_env(&config.node_name, "NODE_NAME").unwrap_or_default(),
            max_replication_streams: config.replication_streams,
            tls: tls.clone(),
        },
    )?);
    let scanner_stats = Arc::new(ScannerStats::default());

    // `stop` ends the servers: after the shutdown signal and the leave (a draining node
    // serves on meanwhile), or when a worker fails for good.
    let stop = CancellationToken::new();
    let workers_cancel = stop.child_token();
    let mut workers: JoinSet<(&'static str, Result<()>)> = JoinSet::new();
    {
        let (store, stats, cancel) = (store.clone(), scanner_stats.clone(), workers_cancel.clone());
        let cfg = ScannerConfig {
            interval: config.scan_interval.get(),
            rate: config.scan_rate.bytes(),
        };
        workers.spawn(async move { ("scanner", scanner::run(store, cfg, stats, cancel).await) });
        let (s, cancel) = (node.store.clone(), workers_cancel.clone());
        let retention = config.quarantine_retention.get();
        workers.spawn(async move {
            let r = store::run_quarantine_pruning(s, retention, cancel).await;
            ("quarantine", r)
        });
        let (s, cancel) = (node.store.clone(), workers_cancel.clone());
        workers.spawn(async move { ("journal", store::run_journal_checkpoints(s, cancel).await) });
        let (l, cancel) = (link.clone(), workers_cancel.clone());
        workers.spawn(async move { ("heartbeat", l.run_heartbeats(cancel).await) });
        let (l, cancel) = (link.clone(), workers_cancel.clone());
        workers.spawn(async move { ("incremental-report", l.run_incremental(cancel).await) });
    }

    // Accepted sockets get TCP_NODELAY there (the server's own setting applies only
    // to listeners it binds itself).
    let mtls = tls.is_some();
    let http_tls = tls.clone();
    let incoming = kdfs_proto::tls::accept(grpc, tls);
    let grpc_server = transport::server()
        .layer(kdfs_proto::authz::layer(&service::authz::RULES, mtls))
        .add_service(DatanodeService::new(node.clone()).into_server())
        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
    let mut grpc_task = tokio::spawn(grpc_server);
    let router = http::router(http::HttpState {
        node: node.clone(),
        link: link.clone(),
        scanner: scanner_stats,
        tls: http_tls,
    });
    let mut http_task = tokio::spawn(
        axum::serve(http, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    tracing::info!(
        node = %node.id,
        grpc = %grpc_addr,
        http = %http_addr,
        advertise = %advertise,
        namenode = %config.namenode,
        "datanode ready"
    );

    let mut fatal = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                leaving::leave(&link, config.drain_timeout.get()).await;
                break;
            }
            Some(joined) = workers.join_next() => match joined {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => {
                    tracing::error!(worker = name, error = %e, "datanode stopping");
                    fatal = Some(e);
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "a datanode worker panicked; stopping");
                    fatal = Some(Error::io("worker", std::io::Error::other(e.to_string())));
                    break;
                }
            },
            r = &mut grpc_task => {
                if stop.is_cancelled() {
                    break; // The normal end of a graceful shutdown.
                }
                let e = match r {
                    Ok(Ok(())) => Error::io("gRPC server", std::io::Error::other("stopped unexpectedly")),
                    Ok(Err(e)) => Error::Transport(e),
                    Err(e) => Error::io("gRPC server", std::io::Error::other(e.to_string())),
                };
                tracing::error!(error = %e, "gRPC server failed; stopping");
                fatal = Some(e);
                break;
            }
        }
    }

    // Phase 1: stop accepting. Phase 2: let in-flight transfers finish, with a deadline.
    tracing::info!("datanode shutting down: draining in-flight transfers");
    stop.cancel();
    let grace = config.shutdown_grace.get();
    let deadline = tokio::time::Instant::now() + grace;
    if !grpc_task.is_finished()
        && tokio::time::timeout_at(deadline, &mut grpc_task)
            .await
            .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "in-flight gRPC calls outlived the shutdown grace: aborted"
        );
        grpc_task.abort();
    }
    if tokio::time::timeout_at(deadline, &mut http_task)
        .await
        .is_err()
    {
        http_task.abort();
    }
    link.drain(
        deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(100)),
    )
    .await;
    if tokio::time::timeout_at(deadline + Duration::from_secs(1), async {
        while workers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        workers.abort_all();
    }
    tracing::info!("datanode stopped");
    fatal.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cfg(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("kdfs-datanode").chain(args.iter().copied()))
    }

    #[test]
    fn advertise_address_resolution() {
        let local: SocketAddr = "10.1.2.3:9866".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9866".parse().unwrap();
        let check = |args: &[&str], local: SocketAddr, want: &str| {
            assert_eq!(advertise(&cfg(args), local).unwrap(), want, "{args:?}");
        };
        check(
            &["--advertise", "dn-0.example:1234"],
            local,
            "dn-0.example:1234",
        );
        check(&[], local, "10.1.2.3:9866");
        check(&[], any, "127.0.0.1:9866");
        check(
            &[
                "--pod-name",
                "datanode-2",
                "--headless-service",
                "datanode.kdfs.svc",
            ],
            any,
            "datanode-2.datanode.kdfs.svc:9866",
        );
        assert!(matches!(
            advertise(&cfg(&["--advertise", "no port"]), local),
            Err(Error::Config(_))
        ));
    }
}

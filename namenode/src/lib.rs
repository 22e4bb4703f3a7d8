//! The kdfs namenode: the metadata authority of the cluster (DESIGN.md §5).
//!
//! - [`config`]: flags and defaults.
//! - [`meta`]: durable metadata in redb (files, refcounts, tombstones, leases) behind
//!   a group-commit writer.
//! - [`cluster`]: datanode membership and liveness; [`blockmap`]: block → replica
//!   locations in memory; [`placement`]: where new replicas go.
//! - [`replication`]: healing and trimming; [`gc`]: deleting unreferenced replicas
//!   and the fence that protects re-uploads from in-flight deletes.
//! - [`namesystem`]: all operations on domain types; [`service`]: the gRPC edge;
//!   [`http`]: health and metrics.
//! - [`kubernetes`]: optional Kubernetes awareness (zones, pod deletions).
//!
//! [`run`] serves until its token is cancelled, with named background workers:
//! `liveness` (stale/dead detection, safe mode), `replication` and `gc` (leases,
//! orphans, tombstones), and `kubernetes` (the datanode pod watch) when running in a
//! cluster.

pub mod blockmap;
pub mod cluster;
pub mod config;
pub mod error;
pub mod gc;
pub mod http;
pub mod kubernetes;
pub mod meta;
pub mod namesystem;
pub mod placement;
pub mod replication;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use kdfs_proto::transport;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{Config, DEFAULT_REPLICATION};
pub use error::{Error, Result};
pub use namesystem::NameSystem;

/// The internals the benchmark harness measures directly, below the gRPC API: the
/// block map's report path, the metadata store with its group-commit writer, and the
/// process's metrics recorder. Nothing else outside this crate needs them.
pub mod bench {
    pub use crate::blockmap::BlockMap;
    pub use crate::http::prometheus;
    pub use crate::meta::{FileRecord, Lease, Op, Store, Writer};
}

/// After shutdown begins, open requests get this long to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause of the liveness and replication workers.
pub const MAX_TICK: Duration = Duration::from_secs(1);
/// Shortest, so a tiny heartbeat interval in tests cannot spin.
pub const MIN_TICK: Duration = Duration::from_millis(10);
/// How often every block is rechecked for its replica count, behind the events.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(300);
/// How often the gc worker runs (leases expire with this precision).
pub const GC_TICK: Duration = Duration::from_secs(1);
/// Tombstones are purged every this many gc ticks (a scan of the tombstone table;
/// retention is counted in days, so every ten minutes is plenty).
pub const PURGE_EVERY_TICKS: u64 = 600;

/// Runs a namenode on the given listeners until `shutdown` is cancelled, then drains
/// and returns `Ok(())`.
pub async fn run(
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let _ = http::prometheus();
    let tls = config.tls.load()?;
    let ns = NameSystem::open(&config)?;
    let writer_done = ns.writer_done();
    let grpc_addr = grpc.local_addr()?;
    let http_addr = http.local_addr()?;

    let workers_token = shutdown.child_token();
    let mut workers = JoinSet::new();
    let tick = (ns.settings.heartbeat_interval / 2).clamp(MIN_TICK, MAX_TICK);
    let kick = Arc::new(tokio::sync::Notify::new());
    workers.spawn(liveness_worker(
        ns.clone(),
        tick,
        kick.clone(),
        workers_token.clone(),
    ));
    if let Some(watch) = kubernetes::connect(&config).await {
        workers.spawn(kubernetes::worker(
            watch,
            ns.clone(),
            kick.clone(),
            workers_token.clone(),
        ));
    }
    workers.spawn(replication_worker(
        ns.clone(),
        tick,
        kick,
        workers_token.clone(),
    ));
    workers.spawn(gc_worker(ns.clone(), workers_token.clone()));

    let grpc_server = transport::server()
        .add_service(service::NamenodeService::new(ns.clone()).into_server())
        .serve_with_incoming_shutdown(
            kdfs_proto::tls::accept(grpc, tls),
            shutdown.clone().cancelled_owned(),
        );
    let http_server = axum::serve(http, http::router(ns.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tracing::info!(
        grpc = %grpc_addr,
        http = %http_addr,
        cluster_id = %ns.cluster_id(),
        data_dir = %config.data_dir.display(),
        "namenode ready"
    );

    let servers = async { tokio::join!(grpc_server, http_server) };
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    let result = tokio::select! {
        (g, h) = servers => {
            g.map_err(Error::from).and(h.map_err(Error::from))
        }
        _ = deadline => {
            tracing::warn!("drain deadline passed, closing open requests");
            Ok(())
        }
    };
    tracing::info!("servers stopped, stopping workers");
    workers_token.cancel();
    while workers.join_next().await.is_some() {}
    drop(ns);
    if let Some(done) = writer_done {
        // The metadata writer finishes what was queued, then closes the database.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, done).await;
    }
    tracing::info!("namenode stopped");
    result
}

async fn liveness_worker(
    ns: Arc<NameSystem>,
    tick: Duration,
    kick: Arc<tokio::sync::Notify>,
    token: CancellationToken,
) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = interval.tick() => {}
        }
        let was_safe = ns.in_safe_mode();
        if ns.liveness_tick() {
            kick.notify_one();
        }
        if was_safe {
            let ns2 = ns.clone();
            let still = tokio::task::spawn_blocking(move || ns2.safe_mode_tick())
                .await
                .unwrap_or(true);
            if !still {
                kick.notify_one();
            }
        }
    }
}

async fn replication_worker(
    ns: Arc<NameSystem>,
    tick: Duration,
    kick: Arc<tokio::sync::Notify>,
    token: CancellationToken,
) {
    let mut last_rescan = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
            _ = kick.notified() => {}
        }
        let ns2 = ns.clone();
        let rescan = last_rescan.elapsed() >= RESCAN_INTERVAL;
        if rescan {
            last_rescan = tokio::time::Instant::now();
        }
        let _ = tokio::task::spawn_blocking(move || {
            if rescan && !ns2.in_safe_mode() {
                ns2.rescan();
            }
            ns2.replication_tick()
        })
        .await;
    }
}

async fn gc_worker(ns: Arc<NameSystem>, token: CancellationToken) {
    let mut interval = tokio::time::interval(GC_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = interval.tick() => {}
        }
        n += 1;
        if let Err(e) = ns.gc_tick(n % PURGE_EVERY_TICKS == 1).await {
            tracing::warn!(error = %e, "gc round failed");
        }
    }
}

//! The kdfs namenode: the metadata authority of the cluster (ARCHITECTURE.md).
//!
//! - `config`: flags and defaults.
//! - `meta`: durable metadata in redb (files, refcounts, tombstones, leases) behind
//!   a group-commit writer (docs/decisions/0001-redb-namenode-metadata.md).
//! - `cluster`: datanode membership and liveness; `blockmap`: block → replica
//!   locations in memory; `placement`: which datanodes a new block's pipeline uses;
//!   `usage`: storage a node gained or lost since its last heartbeat; `file_ids`: what
//!   a commit's block list must prove of its file id (docs/security.md).
//! - `block_keys`: the keys block access tokens are signed with (docs/security.md).
//! - `replication`: healing and trimming; `gc`: deleting unreferenced replicas
//!   and the fence that protects re-uploads from in-flight deletes.
//! - `namesystem`: every operation on domain types, one file per concern;
//!   `service`: the gRPC edge; `objects_service`: the bucket/key namespace's gRPC
//!   edge (docs/objects.md); `authz`: which role may call each rpc; `http`: health and
//!   metrics.
//! - `kubernetes`: optional Kubernetes awareness (zones, pod deletions).
//! - `workers`: the background loops; `supervisor`: restarts one that panics.
//!
//! [`run`] serves until its token is cancelled, with named background workers:
//! `liveness` (stale/dead detection, safe mode), `replication` and `gc` (leases,
//! orphans, tombstones), and `kubernetes` (the datanode pod watch) when running in a
//! cluster.
//!
//! The public API is [`run`] with its [`Config`], [`Error`] and [`Result`], and the
//! [`bench`](mod@bench) facade; every module is private to the crate.

mod authz;
mod block_keys;
mod blockmap;
mod cluster;
mod config;
mod error;
mod file_ids;
mod gc;
mod generations;
mod ha;
mod http;
mod kubernetes;
mod meta;
mod namesystem;
mod objects_service;
mod placement;
mod replication;
mod service;
mod supervisor;
mod usage;
mod verify;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use kdfs_proto::transport;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{Config, DEFAULT_REPLICATION};
pub use error::{Error, Result};

use namesystem::NameSystem;
use supervisor::spawn_worker;

/// The internals the benchmark harness measures directly, below the gRPC API: the
/// block map's report path, the metadata store with its group-commit writer, and the
/// process's metrics recorder. Nothing else outside this crate needs them.
pub mod bench {
    pub use crate::blockmap::BlockMap;
    pub use crate::http::prometheus;
    pub use crate::meta::{FileRecord, Lease, Op, Store, Writer};
}

/// Starts the background workers of `ns` under `token`: `liveness`, `replication`,
/// `gc`, and `kubernetes` when the pod watch is on. With HA only the leader's
/// instance runs them (`ha::leadership`).
async fn start_workers(
    ns: &Arc<NameSystem>,
    config: &Config,
    workers_token: &CancellationToken,
) -> JoinSet<()> {
    let mut workers = JoinSet::new();
    let tick = workers::tick_for(ns.settings.heartbeat_interval);
    let kick = Arc::new(tokio::sync::Notify::new());
    spawn_worker(&mut workers, "liveness", workers_token.clone(), {
        let (ns, kick, token) = (ns.clone(), kick.clone(), workers_token.clone());
        move || workers::liveness(ns.clone(), tick, kick.clone(), token.clone())
    });
    if let Some(watch) = kubernetes::connect(config).await {
        spawn_worker(&mut workers, "kubernetes", workers_token.clone(), {
            let (ns, kick, token) = (ns.clone(), kick.clone(), workers_token.clone());
            move || kubernetes::worker(watch.clone(), ns.clone(), kick.clone(), token.clone())
        });
    }
    spawn_worker(&mut workers, "replication", workers_token.clone(), {
        let (ns, kick, token) = (ns.clone(), kick.clone(), workers_token.clone());
        move || workers::replication(ns.clone(), tick, kick.clone(), token.clone())
    });
    spawn_worker(&mut workers, "gc", workers_token.clone(), {
        let (ns, token) = (ns.clone(), workers_token.clone());
        move || workers::gc(ns.clone(), token.clone())
    });
    workers
}

/// After shutdown begins, open requests get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a namenode on the given listeners until `shutdown` is cancelled, then drains
/// and returns `Ok(())`.
pub async fn run(
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    if !config.peers.is_empty() {
        return ha::run(config, grpc, http, shutdown).await;
    }
    let _ = http::prometheus();
    let tls = config.tls.load()?;
    block_keys::check(
        config.block_key_rotation.get(),
        config.block_token_lifetime.get(),
    )
    .map_err(Error::InvalidArgument)?;
    let grpc_addr = grpc.local_addr()?;
    config.plaintext.check(grpc_addr, tls.is_some())?;
    let ns = NameSystem::open(&config)?;
    let writer_done = ns.writer_done();
    let http_addr = http.local_addr()?;

    let workers_token = shutdown.child_token();
    let mut workers = start_workers(&ns, &config, &workers_token).await;

    let namenode_service = service::NamenodeService::new(ns.clone());
    let objects_service = objects_service::ObjectsService::new(ns.clone(), namenode_service.keys());
    let grpc_server = transport::server()
        .layer(kdfs_proto::authz::layer_for(
            &authz::SERVICES,
            tls.is_some(),
        ))
        .add_service(namenode_service.into_server())
        .add_service(objects_service.into_server())
        .serve_with_incoming_shutdown(
            kdfs_proto::tls::accept(grpc, tls.clone()),
            shutdown.clone().cancelled_owned(),
        );
    let http_server = axum::serve(http, http::router(ns.clone(), tls))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tracing::info!(
        grpc = %grpc_addr,
        http = %http_addr,
        cluster_id = %ns.cluster_id(),
        data_dir = %config.data_dir.display(),
        "namenode ready"
    );

    let result = serve_until_drained(grpc_server, http_server, &shutdown).await;
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

/// Runs the gRPC and HTTP servers until both stopped after `shutdown`, or until
/// `DRAIN_TIMEOUT` passed since it (open requests are then cut), in either mode.
pub(crate) async fn serve_until_drained<G, H>(
    grpc_server: G,
    http_server: H,
    shutdown: &CancellationToken,
) -> Result<()>
where
    G: std::future::Future<Output = std::result::Result<(), tonic::transport::Error>>,
    H: std::future::IntoFuture<Output = std::io::Result<()>>,
{
    let servers = async { tokio::join!(grpc_server, http_server.into_future()) };
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        (g, h) = servers => {
            g.map_err(Error::from).and(h.map_err(Error::from))
        }
        _ = deadline => {
            tracing::warn!("drain deadline passed, closing open requests");
            Ok(())
        }
    }
}

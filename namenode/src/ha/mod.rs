//! Namenode high availability (`--peers`): three (or five) namenodes replicate every
//! metadata change through Raft (openraft) before it is acknowledged; one leader
//! serves, the others refuse with the leader's address
//! (docs/decisions/0010-namenode-ha-raft.md). Without `--peers` none of this runs.
//!
//! - `peers.rs`: `--peers`.
//! - `log_store.rs`: the Raft log in `<data-dir>/raft.redb`.
//! - `state_machine.rs`: the metadata store as the state machine (entries applied
//!   through the single-mode op code; snapshots of the whole store).
//! - `propose.rs`: the leader's writes: group-commit batches become entries, and the
//!   proposing instance applies their effects and answers its callers.
//! - `network.rs`: the `RaftPeer` rpcs, client and server.
//! - `leadership.rs`: the leadership instance (namesystem, services, workers, block
//!   key rotation) built on becoming leader, torn down on losing it.
//! - `gate.rs`: the one place rpcs are served or refused; NamenodeRole.
//! - `status.rs`: role, readiness and the Raft gauges.
//! - `bootstrap.rs`: forming the group once.

mod bootstrap;
mod gate;
mod leadership;
mod log_store;
mod network;
mod peers;
mod propose;
mod state_machine;
mod status;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use kdfs_proto::transport;
use openraft::{Raft, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::meta::{Op, Store};
use crate::namesystem::NameSystem;
use crate::{authz, block_keys};

use gate::{Gate, NamenodeGate, ObjectsGate};
use log_store::LogStore;
use network::{Network, PeerService};
use peers::Peers;
use propose::Applier;
use state_machine::{Applied, StateMachine};
use status::RaftStatus;

openraft::declare_raft_types!(
    /// The namenode's Raft types: an entry's data is one group commit's batch.
    pub TypeConfig:
        D = Batch,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// A log entry's data: one group commit's ops, proposed by leadership instance
/// `instance` (0: none, such as the cluster id) as its `seq`-th batch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Batch {
    pub instance: u64,
    pub seq: u64,
    pub ops: Vec<Op>,
}

/// After shutdown begins, open requests get this long to finish (as `crate::run`).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything an HA member's parts share.
pub struct Context {
    pub config: Config,
    pub tls: Option<Arc<kdfs_proto::tls::Tls>>,
    pub store: Arc<Store>,
    pub raft: Raft<TypeConfig>,
    pub applier: Arc<Applier>,
    pub status: Arc<RaftStatus>,
    pub gate: Gate,
    /// The serving instance's namesystem, for `/metrics`.
    pub serving_ns: RwLock<Option<Arc<NameSystem>>>,
}

impl crate::http::Health for Context {
    fn ready(&self) -> (StatusCode, String) {
        let role = self.status.role();
        let name = match role.role {
            1 => "leader",
            2 => "follower",
            _ => "candidate",
        };
        let text = format!(
            "{} ({name}, term {}, applied {}, commit {})\n",
            if role.ready { "ready" } else { "not ready" },
            role.term,
            role.applied_index,
            role.commit_index
        );
        let code = if role.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, text)
    }

    fn export_metrics(&self) {
        self.status.export_metrics();
        let ns = self
            .serving_ns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(ns) = ns {
            ns.export_metrics();
        }
    }
}

/// openraft's settings from the flags.
fn raft_config(config: &Config) -> Result<Arc<openraft::Config>> {
    let heartbeat = config.raft_heartbeat_interval.get().as_millis() as u64;
    let election = config.raft_election_timeout.get().as_millis() as u64;
    let entries = config.raft_snapshot_entries;
    let c = openraft::Config {
        cluster_name: "kdfs".into(),
        heartbeat_interval: heartbeat,
        election_timeout_min: election,
        election_timeout_max: election * 2,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(entries),
        max_in_snapshot_log_to_keep: entries,
        install_snapshot_timeout: (election * 4).max(10_000),
        ..Default::default()
    };
    c.validate()
        .map(Arc::new)
        .map_err(|e| Error::InvalidArgument(format!("raft timings: {e}")))
}

/// `crate::run` with `--peers`: serves as a member of the HA group until `shutdown`.
pub async fn run(
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let _ = crate::http::prometheus();
    let tls = config.tls.load()?;
    block_keys::check(
        config.block_key_rotation.get(),
        config.block_token_lifetime.get(),
    )
    .map_err(Error::InvalidArgument)?;
    let grpc_addr = grpc.local_addr()?;
    config.plaintext.check(grpc_addr, tls.is_some())?;
    let peers = Peers::parse(&config.peers, config.id)?;
    let id = u64::from(config.id);
    let store = Arc::new(Store::open_replica(&config.data_dir)?);
    let log = LogStore::open(&config.data_dir)?;
    let pristine = log.is_pristine()?;
    let committed = log.committed();
    let applier = Arc::new(Applier::default());
    let network = Network { tls: tls.clone() };
    let state_machine = StateMachine::new(store.clone(), applier.clone());
    let raft = Raft::new(id, raft_config(&config)?, network, log, state_machine)
        .await
        .map_err(|e| Error::Unavailable(format!("raft: {e}")))?;
    let heard = Arc::default();
    let status = Arc::new(RaftStatus {
        id,
        peers: peers.clone(),
        raft: raft.clone(),
        committed,
        heard: Arc::clone(&heard),
        lease: config.raft_election_timeout.get(),
        instance: AtomicBool::new(false),
    });
    let gate = Gate::new(status.clone());
    let ctx = Arc::new(Context {
        config: config.clone(),
        tls: tls.clone(),
        store,
        raft: raft.clone(),
        applier,
        status,
        gate: gate.clone(),
        serving_ns: RwLock::new(None),
    });

    let peer_service = PeerService {
        raft: raft.clone(),
        heard,
    };
    let grpc_server = transport::server()
        .layer(kdfs_proto::authz::layer_for(
            &authz::HA_SERVICES,
            tls.is_some(),
        ))
        .add_service(NamenodeGate(gate.clone()))
        .add_service(ObjectsGate(gate))
        .add_service(peer_service.into_server())
        .serve_with_incoming_shutdown(
            kdfs_proto::tls::accept(grpc, tls.clone()),
            shutdown.clone().cancelled_owned(),
        );
    let http_addr = http.local_addr()?;
    let http_server = axum::serve(http, crate::http::router(ctx.clone(), tls))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let bootstrap = tokio::spawn(bootstrap::form(ctx.clone(), pristine, shutdown.clone()));
    let leadership = tokio::spawn(leadership::follow(ctx.clone(), shutdown.clone()));
    tracing::info!(
        grpc = %grpc_addr,
        http = %http_addr,
        id,
        peers = ?peers.0,
        data_dir = %config.data_dir.display(),
        "namenode ready (HA member)"
    );

    let result = crate::serve_until_drained(grpc_server, http_server, &shutdown).await;
    tracing::info!("servers stopped, stopping the leadership instance and raft");
    let _ = bootstrap.await;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, leadership).await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not stop cleanly");
    }
    drop(ctx);
    tracing::info!("namenode stopped");
    result
}

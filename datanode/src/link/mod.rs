//! The datanode's side of the namenode protocol: registration, heartbeats, full and
//! incremental block reports, and the commands that ride on their replies.
//!
//! Two named workers share a [`Link`]:
//! - **heartbeat** registers (adopting the namenode's cluster id on a fresh disk,
//!   refusing to run on another cluster's disk; learning the block keys that verify
//!   block access tokens, as every heartbeat reply may too), sends a full block report, then
//!   heartbeats every `heartbeat_interval` and sends a full report every
//!   `--block-report-interval`. A heartbeat reply asking to `reregister` starts over.
//! - **incremental-report** batches the store's [`Event`]s for [`INCREMENTAL_BATCH_WINDOW`] and sends
//!   them; a failed send puts them back.
//!
//! A namenode that is down or restarting never stops the datanode: calls are retried
//! with capped exponential backoff while the gRPC server keeps serving. Only a refusal
//! that retrying cannot fix (another cluster) ends the worker with an error, which
//! stops the datanode with a clear message.
//!
//! With several namenodes (HA), every call goes through [`Namenodes`], which follows the
//! leader. When the leader changes (another namenode answers, or the same one with a
//! higher term: a new leadership instance knows nothing of this datanode) the heartbeat
//! worker registers again and sends a full report. The highest `leader_term` seen in any
//! reply fences commands: those of a reply with a lower term are not run
//! ([`commands`]).

mod commands;
mod failed_copies;

pub use failed_copies::FailedCopies;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kdfs_core::BlockId;
use kdfs_proto::block_token;
use kdfs_proto::namenodes::{Namenodes, Retry, namenode_client};
use kdfs_proto::pb::{
    BlockEntry, FullBlockReportChunk, HeartbeatRequest, IncrementalBlockReportRequest,
    RegisterRequest, RegisterResponse,
};
use kdfs_proto::transport;
use kdfs_proto::wire;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Code, Status};

use crate::error::{Error, Result};
use crate::service::Node;
use crate::store::Event;
use crate::version::{Version, check_cluster_id};

/// Used until the namenode's registration reply says otherwise.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// Events are gathered this long before an incremental report goes out ("within about
/// a second of each change").
pub const INCREMENTAL_BATCH_WINDOW: Duration = Duration::from_millis(300);
/// Retry delays towards an unreachable namenode: from the first to the cap, doubling.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long one delete command may take; what it did not reach is reported again as
/// held, for the namenode to decide anew. (Not a safety margin: a delete only removes
/// a replica written before the namenode decided it, whenever it runs.)
pub const DELETE_DEADLINE: Duration = Duration::from_secs(8);
/// Per-call deadline for unary namenode calls (a full report gets one per chunk).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one call looks for the namenode leader before it fails (and the worker's
/// own backoff takes over).
pub const LEADER_SEARCH: Duration = Duration::from_secs(5);

/// What the link announces.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Namenode URIs, comma-separated, e.g. `http://127.0.0.1:8020` (several with HA).
    pub namenode: String,
    /// `host:port` others dial.
    pub advertise: String,
    pub zone: String,
    pub block_report_interval: Duration,
    pub pod_name: String,
    pub node_name: String,
    /// Replication transfers run at once (commands beyond wait).
    pub max_replication_streams: usize,
    /// mTLS towards the namenodes (their certificates must name the hosts of `namenode`).
    pub tls: Option<std::sync::Arc<kdfs_proto::tls::Tls>>,
}

/// Capped exponential backoff with a little jitter (so restarted datanodes do not
/// reconnect in lockstep).
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF_MIN }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0);
        d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Shared state of the namenode link.
#[derive(Debug)]
pub struct Link {
    node: Arc<Node>,
    cfg: LinkConfig,
    namenodes: Namenodes,
    version: Mutex<Version>,
    /// The namenode (`host:port`) and leader term this datanode last registered with:
    /// a reply from another, or with a higher term, means a new leader.
    registered_with: Mutex<(String, u64)>,
    /// The highest `leader_term` of any reply: commands of a lower one are fenced.
    highest_term: AtomicU64,
    registered: watch::Sender<bool>,
    /// Set when the event log overflowed: the next heartbeat round sends a full report.
    full_report_due: AtomicBool,
    replication: Arc<Semaphore>,
    /// Replication transfers and delete batches started by commands.
    tasks: TaskTracker,
    /// Cancels those tasks at shutdown (after their drain deadline).
    stop: CancellationToken,
    /// Serialises full and incremental reports, so that the namenode sees them in the
    /// order of the changes they describe.
    reports: tokio::sync::Mutex<()>,
    /// Replications that failed, for the next heartbeat (see [`FailedCopies`]).
    failed_copies: Arc<FailedCopies>,
    /// One verification run (a `VerifyBlocks` command) at a time.
    verifying: Arc<Semaphore>,
}

/// Sleeps unless cancelled first; false if cancelled.
async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

impl Link {
    pub fn new(node: Arc<Node>, version: Version, cfg: LinkConfig) -> Result<Self> {
        let namenodes = Namenodes::with_deadline(&cfg.namenode, cfg.tls.clone(), LEADER_SEARCH)
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            node,
            replication: Arc::new(Semaphore::new(cfg.max_replication_streams.max(1))),
            cfg,
            namenodes,
            version: Mutex::new(version),
            registered_with: Mutex::new((String::new(), 0)),
            highest_term: AtomicU64::new(0),
            registered: watch::Sender::new(false),
            full_report_due: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            reports: tokio::sync::Mutex::new(()),
            stop: CancellationToken::new(),
            failed_copies: Arc::default(),
            verifying: Arc::new(Semaphore::new(1)),
        })
    }

    /// This datanode's id.
    pub fn node_id(&self) -> kdfs_core::DatanodeId {
        self.node.id
    }

    /// The namenodes, for calls that follow the leader (shares the link's channels).
    pub fn namenodes(&self) -> &Namenodes {
        &self.namenodes
    }

    /// The highest leader term any namenode reply carried (0 without HA).
    pub fn highest_term(&self) -> u64 {
        self.highest_term.load(Ordering::Relaxed)
    }

    /// True while registered with the namenode (readiness).
    pub fn is_registered(&self) -> bool {
        *self.registered.borrow()
    }

    /// The cluster id the data directory belongs to (empty before the first registration).
    pub fn cluster_id(&self) -> String {
        self.version
            .lock()
            .expect("version lock poisoned")
            .cluster_id
            .clone()
    }

    /// Waits for running replication transfers and deletes (shutdown drain), giving up
    /// on transfers after `deadline`.
    pub async fn drain(&self, deadline: Duration) {
        self.tasks.close();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "replication transfers still running at the shutdown deadline: cancelled"
            );
            self.stop.cancel();
            self.tasks.wait().await;
        }
    }

    /// The heartbeat worker. Returns an error only for a refusal retrying cannot fix.
    pub async fn run_heartbeats(self: Arc<Self>, cancel: CancellationToken) -> Result<()> {
        let mut backoff = Backoff::default();
        'register: loop {
            self.registered.send_replace(false);
            let reply = loop {
                match self.register().await {
                    Ok(r) => break r,
                    Err(e @ (Error::ClusterMismatch { .. } | Error::Refused(_))) => {
                        tracing::error!(error = %e, "namenode refused this datanode");
                        return Err(e);
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot register with the namenode");
                        if !pause(&cancel, delay).await {
                            return Ok(());
                        }
                    }
                }
            };
            let interval = match reply.heartbeat_interval_ms {
                0 => DEFAULT_HEARTBEAT_INTERVAL,
                ms => Duration::from_millis(ms),
            };
            if let Err(e) = self.full_report().await {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "full block report failed; registering again");
                if !pause(&cancel, delay).await {
                    return Ok(());
                }
                continue 'register;
            }
            backoff.reset();
            self.registered.send_replace(true);
            let (namenode, term) = self.registered_with();
            tracing::info!(%namenode, term, cluster = %self.cluster_id(), "registered with the namenode");
            let mut next_full = tokio::time::Instant::now() + self.cfg.block_report_interval;
            let mut failures = 0u32;
            // The first heartbeat goes at once: until it arrives the namenode counts
            // this node as registering and sends it no writes.
            let mut first = true;
            loop {
                let wait = if first {
                    Duration::ZERO
                } else if failures == 0 {
                    interval
                } else {
                    backoff.next_delay().min(interval)
                };
                first = false;
                if !pause(&cancel, wait).await {
                    return Ok(());
                }
                match self.heartbeat().await {
                    Ok(reply) => {
                        if failures > 0 {
                            tracing::info!(after = failures, "namenode reachable again");
                        }
                        failures = 0;
                        backoff.reset();
                        if let Some(why) = reply.rejoin {
                            tracing::info!(reason = %why, "registering again with the namenode leader");
                            continue 'register;
                        }
                        if reply.reregister {
                            tracing::info!("namenode asked this datanode to register again");
                            continue 'register;
                        }
                        self.execute(reply.commands);
                    }
                    Err(status)
                        if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) =>
                    {
                        // A namenode that forgot us may answer with an error instead of
                        // `reregister`; registering again is the cure either way.
                        tracing::info!(error = %status, "heartbeat refused; registering again");
                        continue 'register;
                    }
                    Err(status) => {
                        failures += 1;
                        if failures == 1 || failures.is_power_of_two() {
                            tracing::warn!(error = %status, failures, "heartbeat failed; still serving, retrying");
                        }
                        continue;
                    }
                }
                let overflow = self.full_report_due.swap(false, Ordering::Relaxed);
                if overflow || tokio::time::Instant::now() >= next_full {
                    match self.full_report().await {
                        Ok(()) => {
                            next_full =
                                tokio::time::Instant::now() + self.cfg.block_report_interval;
                        }
                        Err(e) => {
                            self.full_report_due.store(overflow, Ordering::Relaxed);
                            tracing::warn!(error = %e, "periodic full block report failed; retrying next beat");
                        }
                    }
                }
            }
        }
    }

    #[tracing::instrument(name = "register", skip_all)]
    async fn register(&self) -> Result<RegisterResponse> {
        let (id, ours) = {
            let v = self.version.lock().expect("version lock poisoned");
            (v.datanode_id, v.cluster_id.clone())
        };
        let space = self.node.store.space()?;
        let req = RegisterRequest {
            datanode_id: id.to_string(),
            cluster_id: ours.clone(),
            address: self.cfg.advertise.clone(),
            zone: self.cfg.zone.clone(),
            capacity: space.capacity,
            used: space.used,
            available: space.available,
            version: kdfs_core::VERSION.to_owned(),
            pod_name: self.cfg.pod_name.clone(),
            node_name: self.cfg.node_name.clone(),
            write_generation: self.node.store.write_generation(),
        };
        let sent = self
            .namenodes
            .call_from(Retry::Idempotent, |c| {
                let req = with_timeout(req.clone());
                async move { namenode_client(c).register(req).await }
            })
            .await;
        let (reply, from) = match sent {
            Ok(answer) => answer,
            Err(s) if s.code() == Code::FailedPrecondition => {
                return Err(Error::Refused(s.message().to_owned()));
            }
            Err(s) => return Err(s.into()),
        };
        if !self.admit_term(&from, reply.leader_term, 0) {
            return Err(Status::unavailable(format!(
                "{from} answered as a deposed leader (term {} below {})",
                reply.leader_term,
                self.highest_term()
            ))
            .into());
        }
        check_cluster_id(&reply.cluster_id)?;
        self.node
            .keys
            .learn(&reply.block_keys, block_token::now_ms());
        if ours.is_empty() {
            let root = self.node.store.root().to_path_buf();
            let mut v = self.version.lock().expect("version lock poisoned").clone();
            let theirs = reply.cluster_id.clone();
            let v =
                tokio::task::spawn_blocking(move || v.adopt_cluster(&root, &theirs).map(|()| v))
                    .await
                    .map_err(|e| Error::io("version task", std::io::Error::other(e)))??;
            tracing::info!(cluster = %v.cluster_id, "fresh disk adopted the namenode's cluster id");
            *self.version.lock().expect("version lock poisoned") = v;
        } else if ours != reply.cluster_id {
            return Err(Error::ClusterMismatch {
                ours,
                theirs: reply.cluster_id,
            });
        }
        *self
            .registered_with
            .lock()
            .expect("registration lock poisoned") = (from, reply.leader_term);
        Ok(reply)
    }

    /// The namenode (`host:port`) and leader term of the last registration.
    fn registered_with(&self) -> (String, u64) {
        self.registered_with
            .lock()
            .expect("registration lock poisoned")
            .clone()
    }

    /// Why a reply from `from` with `term` means registering again: it comes from a
    /// namenode other than the one registered with, or from a newer leadership.
    fn rejoin_reason(&self, from: &str, term: u64) -> Option<String> {
        let (registered, registered_term) = self.registered_with();
        if from != registered {
            Some(format!(
                "the namenode leader is now {from} (was {registered})"
            ))
        } else if term > registered_term {
            Some(format!(
                "{from} leads again in term {term} (was {registered_term})"
            ))
        } else {
            None
        }
    }

    #[tracing::instrument(name = "heartbeat", level = "debug", skip_all)]
    async fn heartbeat(&self) -> Result<Beat, Status> {
        let space = self.node.store.space().map_err(Status::from)?;
        let failed_copies = self.failed_copies.take();
        let req = HeartbeatRequest {
            datanode_id: self.node.id.to_string(),
            capacity: space.capacity,
            used: space.used,
            available: space.available,
            in_flight: self.node.metrics.in_flight.load(Ordering::Relaxed),
            blocks: self.node.store.block_count() as u64,
            failed_copies,
            newest_block_key: self.node.keys.newest(),
            write_generation: self.node.store.write_generation(),
        };
        let sent = self
            .namenodes
            .call_from(Retry::Idempotent, |c| {
                let req = with_timeout(req.clone());
                async move { namenode_client(c).heartbeat(req).await }
            })
            .await;
        match sent {
            Ok((r, from)) => {
                // Before the reply's commands run: their transfer tokens may need them.
                self.node.keys.learn(&r.block_keys, block_token::now_ms());
                if !self.admit_term(&from, r.leader_term, r.commands.len()) {
                    return Ok(Beat {
                        commands: Vec::new(),
                        reregister: false,
                        rejoin: Some(format!("{from} is no longer the namenode leader")),
                    });
                }
                Ok(Beat {
                    rejoin: self.rejoin_reason(&from, r.leader_term),
                    commands: r.commands,
                    reregister: r.reregister,
                })
            }
            // The namenode was not reached (or did not answer): told on the next beat.
            // Anything else (a refusal) is not retried, so a report the namenode will
            // not take cannot fail every later heartbeat; its copy timeout still
            // replans those copies.
            Err(status) if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) => {
                self.failed_copies.restore(req.failed_copies);
                Err(status)
            }
            Err(status) => Err(status),
        }
    }

    /// Sends every stored block, in chunks of at most `MAX_REPORT_CHUNK` entries. Pending
    /// incremental events are dropped first: the full report supersedes them.
    #[tracing::instrument(name = "full_report", skip_all)]
    pub async fn full_report(&self) -> Result<()> {
        // Serialised with incremental reports: see `run_incremental`.
        let _reports = self.reports.lock().await;
        let _ = self.node.store.events().drain();
        let snapshot = Arc::new(self.node.store.snapshot());
        let blocks = snapshot.len();
        let started = std::time::Instant::now();
        let datanode_id = self.node.id.to_string();
        let (reply, from) = self
            .namenodes
            .call_from(Retry::Idempotent, |c| {
                let chunks = report_chunks(datanode_id.clone(), snapshot.clone());
                async move {
                    namenode_client(c)
                        .full_block_report(futures::stream::iter(chunks))
                        .await
                }
            })
            .await?;
        tracing::info!(
            blocks,
            accepted = reply.accepted,
            namenode = %from,
            took_ms = started.elapsed().as_millis() as u64,
            "full block report sent"
        );
        if self.admit_term(&from, reply.leader_term, reply.commands.len()) {
            self.execute(reply.commands);
        }
        if let Some(why) = self.rejoin_reason(&from, reply.leader_term) {
            return Err(Status::unavailable(format!("the report went astray: {why}")).into());
        }
        Ok(())
    }

    /// The incremental-report worker.
    pub async fn run_incremental(self: Arc<Self>, cancel: CancellationToken) -> Result<()> {
        let mut registered = self.registered.subscribe();
        let mut backoff = Backoff::default();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = self.node.store.events().wait() => {}
            }
            if !pause(&cancel, INCREMENTAL_BATCH_WINDOW).await {
                return Ok(());
            }
            loop {
                // Before registration the full report will carry everything.
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    r = registered.wait_for(|r| *r) => if r.is_err() { return Ok(()) },
                }
                // Held from drain to requeue: a full report never runs between the two,
                // so a stale event cannot be replayed after a newer full report.
                let reports = self.reports.lock().await;
                let drained = self.node.store.events().drain();
                if drained.overflowed {
                    tracing::warn!("too many unreported changes: a full block report will follow");
                    self.full_report_due.store(true, Ordering::Relaxed);
                    break;
                }
                if drained.events.is_empty() {
                    break;
                }
                match self.send_incremental(&drained.events).await {
                    Ok(()) => {
                        backoff.reset();
                        break;
                    }
                    Err(status) => {
                        self.node.store.events().requeue(drained);
                        drop(reports);
                        let delay = backoff.next_delay();
                        tracing::warn!(error = %status, retry_in_ms = delay.as_millis() as u64, "incremental block report failed");
                        if !pause(&cancel, delay).await {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    #[tracing::instrument(name = "incremental_report", level = "debug", skip_all)]
    async fn send_incremental(&self, events: &[Event]) -> Result<(), Status> {
        // The latest event per block wins (added then removed in one batch = removed).
        let mut last: HashMap<BlockId, Event> = HashMap::with_capacity(events.len());
        for e in events {
            let id = match e {
                Event::Added { id, .. } | Event::Removed(id) | Event::Corrupt(id) => *id,
            };
            last.insert(id, *e);
        }
        let all: Vec<Event> = last.into_values().collect();
        for batch in all.chunks(transport::MAX_REPORT_CHUNK) {
            let mut req = IncrementalBlockReportRequest {
                datanode_id: self.node.id.to_string(),
                ..Default::default()
            };
            for e in batch {
                match e {
                    Event::Added {
                        id,
                        length,
                        generation,
                    } => req.added.push(BlockEntry {
                        id: wire::raw(id.as_bytes()),
                        length: *length,
                        generation: *generation,
                    }),
                    Event::Removed(id) => req.removed.push(wire::raw(id.as_bytes())),
                    Event::Corrupt(id) => req.corrupt.push(wire::raw(id.as_bytes())),
                }
            }
            let (reply, from) = self
                .namenodes
                .call_from(Retry::Idempotent, |c| {
                    let req = with_timeout(req.clone());
                    async move { namenode_client(c).incremental_block_report(req).await }
                })
                .await?;
            tracing::debug!(changes = batch.len(), "incremental block report sent");
            if self.admit_term(&from, reply.leader_term, reply.commands.len()) {
                self.execute(reply.commands);
            }
        }
        Ok(())
    }
}

/// A heartbeat's reply, as the heartbeat worker acts on it.
#[derive(Debug)]
struct Beat {
    /// The leader's commands (none from a deposed one).
    commands: Vec<kdfs_proto::pb::Command>,
    /// The namenode asked for registration again.
    reregister: bool,
    /// Why this datanode must register again with the leader (it changed), if it must.
    rejoin: Option<String>,
}

/// A full report's chunks of at most `MAX_REPORT_CHUNK` entries; an empty store still
/// sends one (empty) chunk naming the datanode.
fn report_chunks(
    datanode_id: String,
    snapshot: Arc<Vec<(BlockId, u64)>>,
) -> impl Iterator<Item = FullBlockReportChunk> + Send + 'static {
    let mut next = 0;
    std::iter::from_fn(move || {
        if next > 0 && next >= snapshot.len() {
            return None;
        }
        let end = (next + transport::MAX_REPORT_CHUNK).min(snapshot.len());
        let blocks = snapshot[next..end]
            .iter()
            .map(|(id, length)| BlockEntry {
                id: wire::raw(id.as_bytes()),
                length: *length,
                ..BlockEntry::default()
            })
            .collect();
        next = end.max(1);
        Some(FullBlockReportChunk {
            datanode_id: datanode_id.clone(),
            blocks,
        })
    })
}

fn with_timeout<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(CALL_TIMEOUT);
    r
}

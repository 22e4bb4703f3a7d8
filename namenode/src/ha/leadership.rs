//! The leadership instance: what exists only on the leader. Once this namenode leads
//! a term and has applied that term's first (blank) entry, so the store holds every
//! earlier change, it builds a fresh [`NameSystem`] from the store (in safe mode, like
//! a restarted namenode: datanodes register and report again), with a writer that
//! proposes to the log, the replicated block keys, the gRPC services behind the gate,
//! and the workers. When it loses leadership (or the term moves on) the instance is
//! torn down: the gate closes, the workers are cancelled, waiting callers fail.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ServerState;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use super::Context;
use super::propose::{Proposer, propose_and_wait};
use crate::block_keys::BlockKeys;
use crate::error::Result;
use crate::meta::{Op, Writer};
use crate::namesystem::NameSystem;
use crate::objects_service::ObjectsService;
use crate::service::NamenodeService;
use crate::supervisor::spawn_worker;

/// How long a failed instance start waits before the next try.
const RETRY: Duration = Duration::from_millis(500);
/// How often the leader checks whether a new block key is due.
const KEY_CHECK: Duration = Duration::from_secs(1);
/// How long a torn-down instance's workers get to stop.
const WORKERS_STOP: Duration = Duration::from_secs(10);

/// A running leadership instance.
struct Instance {
    term: u64,
    token: CancellationToken,
    workers: JoinSet<()>,
}

/// Follows Raft's state until `shutdown`: builds the instance when this namenode
/// becomes a ready leader, tears it down when it stops being one.
pub async fn follow(ctx: Arc<Context>, shutdown: CancellationToken) {
    let mut metrics = ctx.raft.metrics();
    let mut current: Option<Instance> = None;
    loop {
        let (leads, term) = {
            let m = metrics.borrow_and_update();
            let applied_term = m.last_applied.map(|l| l.leader_id.term);
            (
                m.state == ServerState::Leader && applied_term == Some(m.current_term),
                m.current_term,
            )
        };
        if current.as_ref().is_some_and(|i| !leads || i.term != term) {
            stop(&ctx, current.take().expect("checked")).await;
        }
        let mut retry = false;
        if leads && current.is_none() {
            match start(&ctx, term).await {
                Ok(instance) => current = Some(instance),
                Err(e) => {
                    tracing::warn!(term, error = %e, "leadership instance failed to start");
                    retry = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = metrics.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(RETRY), if retry => {}
            _ = ctx.applier.stale() => {
                // An earlier instance's entry reached the store behind this one's
                // back: rebuild from the store.
                if let Some(instance) = current.take() {
                    tracing::warn!(term, "an entry of an earlier instance was applied: rebuilding");
                    stop(&ctx, instance).await;
                }
            }
        }
    }
    if let Some(instance) = current {
        stop(&ctx, instance).await;
    }
}

async fn start(ctx: &Arc<Context>, term: u64) -> Result<Instance> {
    let timeout = ctx.config.raft_write_timeout.get();
    if ctx.store.cluster_id()?.is_none() {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        tracing::info!(cluster_id = %id, "forming the cluster: choosing its id");
        propose_and_wait(&ctx.raft, vec![Op::SetClusterId(id)], timeout).await?;
    }
    // Unique per instance, so entries of an earlier instance of this node (another
    // term) never reach this one's memory.
    let instance = rand::random::<u64>().max(1);
    let ns = NameSystem::open_replicated(&ctx.config, ctx.store.clone(), |on_durable| {
        let proposer = Proposer::new(ctx.raft.clone(), ctx.applier.clone(), instance, timeout);
        let progress = Arc::new(tokio::sync::watch::Sender::new(0));
        ctx.applier
            .set(Some(proposer.hook(on_durable, progress.clone())));
        Writer::spawn_replicated(Box::new(proposer), progress)
    });
    let ns = match ns {
        Ok(ns) => ns,
        Err(e) => {
            ctx.applier.set(None);
            return Err(e);
        }
    };
    let keys = Arc::new(BlockKeys::replicated(
        ns.settings.block_key_rotation,
        ns.settings.block_token_lifetime,
        &ctx.store.block_keys()?,
    ));
    if let Err(e) = rotate(&ns, &keys).await {
        ctx.applier.set(None);
        return Err(e);
    }
    let token = CancellationToken::new();
    let mut workers = crate::start_workers(&ns, &ctx.config, &token).await;
    spawn_worker(&mut workers, "block-keys", token.clone(), {
        let (ns, keys, token) = (ns.clone(), keys.clone(), token.clone());
        move || rotation(ns.clone(), keys.clone(), token.clone())
    });
    let namenode = NamenodeService::leading(ns.clone(), keys.clone(), term);
    let objects = ObjectsService::new(ns.clone(), keys);
    ctx.gate
        .open(Routes::new(namenode.into_server()).add_service(objects.into_server()));
    *ctx.serving_ns.write().unwrap_or_else(|p| p.into_inner()) = Some(ns.clone());
    ctx.status.instance.store(true, Ordering::Relaxed);
    tracing::info!(
        term,
        cluster_id = %ns.cluster_id(),
        "leading: serving the namespace (safe mode until datanodes report)"
    );
    Ok(Instance {
        term,
        token,
        workers,
    })
}

async fn stop(ctx: &Context, mut instance: Instance) {
    ctx.status.instance.store(false, Ordering::Relaxed);
    ctx.gate.close();
    *ctx.serving_ns.write().unwrap_or_else(|p| p.into_inner()) = None;
    // Callers still waiting for this instance's entries fail (their writer's replies
    // are dropped); the entries may still commit, which a retry finds.
    ctx.applier.set(None);
    instance.token.cancel();
    let _ = tokio::time::timeout(WORKERS_STOP, async {
        while instance.workers.join_next().await.is_some() {}
    })
    .await;
    tracing::info!(term = instance.term, "no longer leading: instance stopped");
}

/// Makes and commits a new block key if one is due, then signs with it.
async fn rotate(ns: &NameSystem, keys: &BlockKeys) -> Result<()> {
    let now = kdfs_proto::block_token::now_ms();
    if keys.due(now) {
        let key = keys.make(now);
        ns.store_block_key(key.clone()).await?;
        keys.adopt(&key);
        tracing::debug!(key = key.id, "new replicated block key");
    }
    Ok(())
}

async fn rotation(ns: Arc<NameSystem>, keys: Arc<BlockKeys>, token: CancellationToken) {
    let mut interval = tokio::time::interval(KEY_CHECK);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(e) = rotate(&ns, &keys).await {
            tracing::warn!(error = %e, "block key rotation failed; retrying");
        }
    }
}

//! The leader's side of a write: the group-commit writer's batches become log entries
//! ([`Proposer`]), and once an entry is applied here the leadership instance that
//! proposed it runs its in-memory effects and answers its callers ([`Hook`]).
//!
//! An entry names the instance that proposed it (a random id per instance) and its
//! sequence number. Only the current instance's entries get their effects applied to
//! memory: `NodeIdx` values and the block map are that instance's own, and an instance
//! is built from the store after every earlier entry was applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, watch};

use super::{Batch, TypeConfig};
use crate::error::Error;
use crate::meta::{Effect, OnDurable, Op, Replicate, Reply};

/// Log entries one leader may have proposed and not yet seen applied: enough to keep
/// the log busy while the writer gathers the next batch, few enough that batches grow
/// under load instead of the log's entry count.
pub const IN_FLIGHT: usize = 8;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the state machine calls for the entries of the current leadership instance.
pub struct Hook {
    pub instance: u64,
    on_durable: OnDurable,
    /// Each proposed batch's replies by sequence number, until applied or failed.
    pending: Arc<Mutex<HashMap<u64, Vec<Reply>>>>,
    /// The instance's writer progress (`Writer::settled`).
    progress: Arc<watch::Sender<u64>>,
}

impl Hook {
    /// Before an apply that holds this instance's entries: the store may now run ahead
    /// of memory.
    pub fn begin(&self) {
        self.progress.send_modify(|s| *s += 1);
    }

    /// After it: memory has caught up.
    pub fn end(&self) {
        self.progress.send_modify(|s| *s += 1);
    }

    /// One applied entry of this instance: effects to memory in log order, then the
    /// answers (if the callers still wait: a batch that timed out was answered).
    pub fn applied(&self, seq: u64, ops: &[Op], results: Vec<crate::error::Result<Effect>>) {
        let mut replies = lock(&self.pending)
            .remove(&seq)
            .unwrap_or_default()
            .into_iter();
        for (op, result) in ops.iter().zip(results) {
            if let Ok(effect) = &result {
                (self.on_durable)(op, effect);
            }
            if let Some(reply) = replies.next() {
                let _ = reply.send(result);
            }
        }
    }
}

/// Where the state machine finds the current instance's hook.
#[derive(Default)]
pub struct Applier {
    hook: Mutex<Option<Arc<Hook>>>,
    /// Fired when an entry another instance proposed was applied while a hook was
    /// set: that instance's memory no longer matches the store, so it is rebuilt
    /// (`leadership.rs`).
    stale: tokio::sync::Notify,
}

impl Applier {
    pub fn current(&self) -> Option<Arc<Hook>> {
        lock(&self.hook).clone()
    }

    pub fn set(&self, hook: Option<Arc<Hook>>) {
        *lock(&self.hook) = hook;
    }

    /// Whether `instance` is the current one (its proposals may go to the log).
    pub fn is_current(&self, instance: u64) -> bool {
        lock(&self.hook)
            .as_ref()
            .is_some_and(|h| h.instance == instance)
    }

    pub fn mark_stale(&self) {
        self.stale.notify_one();
    }

    pub async fn stale(&self) {
        self.stale.notified().await;
    }
}

/// The group-commit writer's [`Replicate`] for one leadership instance.
pub struct Proposer {
    raft: Raft<TypeConfig>,
    applier: Arc<Applier>,
    runtime: tokio::runtime::Handle,
    instance: u64,
    seq: u64,
    pending: Arc<Mutex<HashMap<u64, Vec<Reply>>>>,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

impl Proposer {
    /// A proposer for `instance`; must be called inside the runtime.
    pub fn new(
        raft: Raft<TypeConfig>,
        applier: Arc<Applier>,
        instance: u64,
        timeout: Duration,
    ) -> Self {
        Self {
            raft,
            applier,
            runtime: tokio::runtime::Handle::current(),
            instance,
            seq: 0,
            pending: Arc::default(),
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            timeout,
        }
    }

    /// The hook the state machine calls for this proposer's entries: `on_durable`
    /// applies their effects, `progress` is the writer's (`Writer::progress`).
    pub fn hook(&self, on_durable: OnDurable, progress: Arc<watch::Sender<u64>>) -> Arc<Hook> {
        Arc::new(Hook {
            instance: self.instance,
            on_durable,
            pending: self.pending.clone(),
            progress,
        })
    }
}

/// Fails a batch's replies that still wait.
fn fail(pending: &Mutex<HashMap<u64, Vec<Reply>>>, seq: u64, why: &str) {
    if let Some(replies) = lock(pending).remove(&seq) {
        for reply in replies {
            let _ = reply.send(Err(Error::Unavailable(why.to_owned())));
        }
    }
}

impl Replicate for Proposer {
    fn propose(&mut self, ops: Vec<Op>, replies: Vec<Reply>) {
        self.seq += 1;
        let seq = self.seq;
        lock(&self.pending).insert(seq, replies);
        // A torn-down instance's last requests must not reach a later term's log.
        if !self.applier.is_current(self.instance) {
            return fail(&self.pending, seq, "this namenode is no longer the leader");
        }
        let batch = Batch {
            instance: self.instance,
            seq,
            ops,
        };
        let (raft, in_flight) = (self.raft.clone(), self.in_flight.clone());
        // Proposed here, on the writer's thread, so entries keep the queue's order.
        let proposed = self.runtime.block_on(async move {
            let permit = in_flight.acquire_owned().await.ok();
            raft.client_write_ff(batch).await.map(|rx| (rx, permit))
        });
        let (rx, permit) = match proposed {
            Ok(p) => p,
            Err(e) => return fail(&self.pending, seq, &format!("raft stopped: {e}")),
        };
        let (pending, timeout) = (self.pending.clone(), self.timeout);
        self.runtime.spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(_)))) => {
                    fail(&pending, seq, "this namenode is no longer the leader")
                }
                Ok(Ok(Err(e))) => fail(&pending, seq, &format!("metadata write refused: {e}")),
                Ok(Err(_)) => fail(&pending, seq, "raft stopped"),
                Err(_) => fail(
                    &pending,
                    seq,
                    &format!("metadata change not committed by a majority within {timeout:?}"),
                ),
            }
        });
    }
}

/// Proposes one batch outside any instance (the cluster id) and waits, at most
/// `timeout`, for it to be applied.
pub async fn propose_and_wait(
    raft: &Raft<TypeConfig>,
    ops: Vec<Op>,
    timeout: Duration,
) -> crate::error::Result<()> {
    let batch = Batch {
        instance: 0,
        seq: 0,
        ops,
    };
    match tokio::time::timeout(timeout, raft.client_write(batch)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(e))) => Err(Error::Unavailable(e.to_string())),
        Ok(Err(e)) => Err(Error::Unavailable(e.to_string())),
        Err(_) => Err(Error::Unavailable(format!(
            "not committed by a majority within {timeout:?}"
        ))),
    }
}

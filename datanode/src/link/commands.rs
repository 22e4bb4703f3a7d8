//! The namenode's commands, as they ride on heartbeat and report replies: deletes,
//! replications and verifications, run only if their reply comes from the current
//! leader's term (fencing: nothing is deleted or copied on a deposed leader's word).

use std::sync::atomic::Ordering;

use kdfs_core::BlockId;
use kdfs_proto::pb::Command;
use kdfs_proto::pb::command::Kind;
use kdfs_proto::wire::{self, Location};
use tracing::Instrument;

use super::{DELETE_DEADLINE, Link};
use crate::error::Error;

impl Link {
    /// Whether the `commands` commands of a reply from `from` with leader `term` may
    /// run: not when a reply of a higher term was seen (the sender was deposed; calls
    /// then pass it over). Remembers the highest term.
    pub(super) fn admit_term(&self, from: &str, term: u64, commands: usize) -> bool {
        let highest = self.highest_term.fetch_max(term, Ordering::Relaxed);
        if term >= highest {
            return true;
        }
        if commands > 0 {
            tracing::warn!(
                namenode = %from,
                term,
                highest,
                commands,
                "commands of a deposed namenode leader ignored"
            );
            self.node
                .metrics
                .fenced_commands
                .fetch_add(commands as u64, Ordering::Relaxed);
        }
        self.namenodes.pass_over(from);
        false
    }

    /// Runs the namenode's commands: deletes now (on the blocking pool), replications in
    /// the background, at most `max_replication_streams` at once.
    pub(super) fn execute(&self, commands: Vec<Command>) {
        for c in commands {
            match c.kind {
                Some(Kind::Delete(d)) => {
                    let ids = match wire::block_ids("delete.block_ids", &d.block_ids) {
                        Ok(ids) => ids,
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed delete command ignored");
                            continue;
                        }
                    };
                    let store = self.node.store.clone();
                    let below = d.below_generation;
                    let deadline = std::time::Instant::now() + DELETE_DEADLINE;
                    self.tasks.spawn_blocking(move || {
                        match store.delete_many(&ids, below, deadline) {
                            Ok(o) if o.skipped.is_empty() => {
                                tracing::info!(
                                    requested = ids.len(),
                                    deleted = o.deleted,
                                    kept = o.kept.len(),
                                    below,
                                    "delete command executed"
                                );
                            }
                            Ok(o) => tracing::warn!(
                                requested = ids.len(),
                                deleted = o.deleted,
                                kept = o.kept.len(),
                                skipped = o.skipped.len(),
                                "delete command ran past its deadline; the rest is reported again"
                            ),
                            Err(e) => tracing::warn!(error = %e, "delete command failed"),
                        }
                    });
                }
                Some(Kind::Replicate(r)) => {
                    let parsed = wire::block_id("replicate.block_id", &r.block_id).and_then(|id| {
                        let targets = r
                            .targets
                            .iter()
                            .map(Location::try_from)
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok((id, targets, r.token))
                    });
                    let (id, targets, token) = match parsed {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed replicate command ignored");
                            continue;
                        }
                    };
                    let node = self.node.clone();
                    let permits = self.replication.clone();
                    let cancel = self.stop.clone();
                    let failed = self.failed_copies.clone();
                    let span = tracing::info_span!("replicate", block = %id);
                    self.tasks.spawn(
                        async move {
                            let Ok(_permit) = permits.acquire_owned().await else {
                                return;
                            };
                            tokio::select! {
                                _ = cancel.cancelled() => {}
                                // Logged and counted inside `transfer`; failures also go to
                                // the namenode with the next heartbeat.
                                outcome = node.transfer(id, &targets, token) => {
                                    failed.record(id, &targets, &outcome);
                                }
                            }
                        }
                        .instrument(span),
                    );
                }
                Some(Kind::Verify(v)) => {
                    let ids = match wire::block_ids("verify.block_ids", &v.block_ids) {
                        Ok(ids) => ids,
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed verify command ignored");
                            continue;
                        }
                    };
                    self.verify(ids);
                }
                None => tracing::warn!("empty command from the namenode ignored"),
            }
        }
    }
}

impl Link {
    /// Re-hashes replicas a reader reported bad, one at a time on the blocking pool
    /// (one command's list at a time): a corrupt one is quarantined and reported like
    /// the scanner's finds.
    fn verify(&self, ids: Vec<BlockId>) {
        let store = self.node.store.clone();
        let permits = self.verifying.clone();
        let cancel = self.stop.clone();
        self.tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            for id in ids {
                if cancel.is_cancelled() {
                    return;
                }
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.verify(&id)).await {
                    Ok(Ok(true)) => {
                        tracing::info!(block = %id, "replica reported bad verified good")
                    }
                    Ok(Ok(false)) => {
                        tracing::warn!(block = %id, "replica reported bad is corrupt: quarantined")
                    }
                    Ok(Err(Error::NotFound(_))) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(block = %id, error = %e, "replica could not be verified")
                    }
                    Err(e) => tracing::warn!(block = %id, error = %e, "verify task failed"),
                }
            }
        });
    }
}

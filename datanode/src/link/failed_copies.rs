//! Replications that failed, kept for the next heartbeat to report.

use std::collections::VecDeque;
use std::sync::Mutex;

use kdfs_core::BlockId;
use kdfs_proto::pb::{FailedCopy, TransferBlockResponse};
use kdfs_proto::transport;
use kdfs_proto::wire::{self, Location};
use tonic::Status;

/// Bytes of a failed copy's reason sent to the namenode (for its log).
const MAX_REASON: usize = 256;

/// Replications that did not reach every target, waiting for the next heartbeat to
/// tell the namenode, which then plans them again at once (otherwise it waits for the
/// copy's timeout, 2 minutes by default, with the block short of replicas). Bounded:
/// beyond [`transport::MAX_FAILED_COPIES`] the oldest are dropped (the timeout still
/// catches them).
#[derive(Debug, Default)]
pub struct FailedCopies(Mutex<VecDeque<FailedCopy>>);

impl FailedCopies {
    /// Records the outcome of a replication of `id` to `targets`; a full success
    /// records nothing.
    pub fn record(
        &self,
        id: BlockId,
        targets: &[Location],
        outcome: &Result<TransferBlockResponse, Status>,
    ) {
        let mut copy = match outcome {
            Ok(r) if r.failed.is_empty() => return,
            Ok(r) => FailedCopy {
                block_id: wire::raw(id.as_bytes()),
                // Only the targets that were asked: a failure names a node by id, or
                // by address when its id is unknown.
                targets: targets
                    .iter()
                    .filter(|t| {
                        let tid = t.id.to_string();
                        r.failed
                            .iter()
                            .any(|f| f.node == tid || f.node == t.address)
                    })
                    .map(|t| t.id.to_string())
                    .collect(),
                whole: false,
                reason: r
                    .failed
                    .first()
                    .map(|f| f.reason.clone())
                    .unwrap_or_default(),
            },
            Err(status) => FailedCopy {
                block_id: wire::raw(id.as_bytes()),
                targets: targets.iter().map(|t| t.id.to_string()).collect(),
                whole: true,
                reason: status.message().to_owned(),
            },
        };
        if copy.reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !copy.reason.is_char_boundary(end) {
                end -= 1;
            }
            copy.reason.truncate(end);
        }
        if copy.targets.is_empty() {
            return; // Failures of nodes it was not asked about: nothing to replan.
        }
        let mut q = self.0.lock().expect("failed-copy lock poisoned");
        if q.len() >= transport::MAX_FAILED_COPIES {
            q.pop_front();
        }
        q.push_back(copy);
    }

    /// Everything recorded so far, oldest first.
    pub fn take(&self) -> Vec<FailedCopy> {
        self.0
            .lock()
            .expect("failed-copy lock poisoned")
            .drain(..)
            .collect()
    }

    /// Puts back what a failed heartbeat did not deliver (ahead of newer entries, still
    /// within the bound).
    pub fn restore(&self, copies: Vec<FailedCopy>) {
        let mut q = self.0.lock().expect("failed-copy lock poisoned");
        for c in copies.into_iter().rev() {
            if q.len() >= transport::MAX_FAILED_COPIES {
                break;
            }
            q.push_front(c);
        }
    }
}

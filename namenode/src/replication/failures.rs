//! What failed copies teach about a block: the nodes to try last for it, and how long
//! to wait before planning it again after a reported failure. Forgotten once the block
//! is healthy (or no longer referenced).

use std::collections::HashMap;

use kdfs_core::BlockId;
use smallvec::SmallVec;

use crate::blockmap::{IdBuild, NodeIdx};

/// The first wait before a block whose copy was reported failed is planned again.
pub const RETRY_BASE_MS: u64 = 1_000;

/// The wait after the `failures`-th failed copy of a block in a row (≥ 1): doubles from
/// [`RETRY_BASE_MS`] with each failure, at most `timeout_ms` (the copy timeout).
pub fn retry_delay(failures: u32, timeout_ms: u64) -> u64 {
    RETRY_BASE_MS
        .saturating_mul(1 << (failures.max(1) - 1).min(20))
        .min(timeout_ms)
}

/// Failed copies of one block in a row, and when the next may be planned.
#[derive(Debug, Default, Clone, Copy)]
struct Retry {
    failures: u32,
    not_before_ms: u64,
    /// Already put back among the blocks to look at.
    released: bool,
}

/// Per block: nodes to avoid and the retry wait.
#[derive(Debug, Default)]
pub struct Failures {
    /// Nodes that failed a copy of the block (timed out, or reported failing by the
    /// source): tried last.
    avoid: HashMap<BlockId, SmallVec<[NodeIdx; 4]>, IdBuild>,
    /// Blocks whose copies were reported failed: when the next may be planned.
    retry: HashMap<BlockId, Retry, IdBuild>,
}

impl Failures {
    /// Adds `nodes` to those tried last for `id`.
    pub fn avoid(&mut self, id: &BlockId, nodes: impl IntoIterator<Item = NodeIdx>) {
        let avoid = self.avoid.entry(*id).or_default();
        for n in nodes {
            if !avoid.contains(&n) {
                avoid.push(n);
            }
        }
    }

    /// Forgets `node` wherever it is avoided (its slot is being reused).
    pub fn forget_node(&mut self, node: NodeIdx) {
        self.avoid.retain(|_, a| {
            a.retain(|n| *n != node);
            !a.is_empty()
        });
    }

    /// The nodes tried last for `id`, if any were named.
    pub fn avoided(&self, id: &BlockId) -> Option<&[NodeIdx]> {
        self.avoid.get(id).map(|a| a.as_slice())
    }

    /// A copy of `id` was reported failed at `now_ms`: the block waits
    /// [`retry_delay`] before it is planned again.
    pub fn failed(&mut self, id: &BlockId, now_ms: u64, timeout_ms: u64) {
        let retry = self.retry.entry(*id).or_default();
        retry.failures = retry.failures.saturating_add(1);
        retry.not_before_ms = now_ms + retry_delay(retry.failures, timeout_ms);
        retry.released = false;
    }

    /// Whether `id` had a reported failure since it was last healthy.
    pub fn has_failed(&self, id: &BlockId) -> bool {
        self.retry.contains_key(id)
    }

    /// Whether `id` still waits after a failed copy at `now_ms`.
    pub fn waiting(&self, id: &BlockId, now_ms: u64) -> bool {
        self.retry.get(id).is_some_and(|r| r.not_before_ms > now_ms)
    }

    /// Blocks whose wait is over by `now_ms` and that were not handed back yet: to be
    /// looked at again.
    pub fn release(&mut self, now_ms: u64) -> Vec<BlockId> {
        let mut out = Vec::new();
        for (id, r) in self.retry.iter_mut() {
            if !r.released && r.not_before_ms <= now_ms {
                r.released = true;
                out.push(*id);
            }
        }
        out
    }

    /// Forgets the nodes to avoid for `id` (its copy completed without a failure).
    pub fn forget_avoided(&mut self, id: &BlockId) {
        self.avoid.remove(id);
    }

    /// Forgets everything about `id` (it is healthy or gone).
    pub fn forget(&mut self, id: &BlockId) {
        self.avoid.remove(id);
        self.retry.remove(id);
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.avoid.is_empty() && self.retry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_table() {
        for (failures, timeout_ms, want) in [
            (1, 120_000, RETRY_BASE_MS),
            (2, 120_000, 2 * RETRY_BASE_MS),
            (3, 120_000, 4 * RETRY_BASE_MS),
            (8, 120_000, 120_000),
            (u32::MAX, 120_000, 120_000),
            (1, 500, 500),
        ] {
            assert_eq!(
                retry_delay(failures, timeout_ms),
                want,
                "{failures} failures"
            );
        }
    }

    #[test]
    fn a_failed_block_waits_is_released_once_and_forgotten_when_healthy() {
        let id = BlockId::from_slice(&[1; 32]).unwrap();
        let mut f = Failures::default();
        f.avoid(&id, [3, 4, 3]);
        assert_eq!(f.avoided(&id), Some(&[3, 4][..]));
        f.failed(&id, 10, 120_000);
        assert!(f.waiting(&id, 10 + RETRY_BASE_MS - 1));
        assert!(f.release(10 + RETRY_BASE_MS - 1).is_empty());
        assert!(!f.waiting(&id, 10 + RETRY_BASE_MS));
        assert_eq!(f.release(10 + RETRY_BASE_MS), vec![id]);
        assert!(f.release(u64::MAX).is_empty(), "released once");
        assert!(f.has_failed(&id));
        f.forget(&id);
        assert!(f.is_empty());
    }
}

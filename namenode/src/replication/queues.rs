//! The blocks waiting for work: the dirty list (blocks to look at) and one queue per
//! [`Priority`], each block at most once across the queues.

use std::collections::{HashSet, VecDeque};

use kdfs_core::BlockId;

use super::priority::Priority;
use crate::blockmap::IdBuild;

/// Number of priority queues (one per [`Priority`]).
pub const QUEUES: usize = 4;

/// The dirty list and the priority queues.
#[derive(Debug, Default)]
pub struct Queues {
    queues: [VecDeque<BlockId>; QUEUES],
    queued: HashSet<BlockId, IdBuild>,
    /// Blocks to look at (duplicates are harmless: classification skips blocks
    /// already queued or being copied).
    dirty: VecDeque<BlockId>,
}

impl Queues {
    /// Asks for `ids` to be looked at on the next tick.
    pub fn mark_dirty(&mut self, ids: impl IntoIterator<Item = BlockId>) {
        self.dirty.extend(ids);
    }

    /// Takes at most `max` blocks to look at, oldest first.
    pub fn take_dirty(&mut self, max: usize) -> Vec<BlockId> {
        let n = self.dirty.len().min(max);
        self.dirty.drain(..n).collect()
    }

    /// Whether `id` waits in one of the queues.
    pub fn is_queued(&self, id: &BlockId) -> bool {
        self.queued.contains(id)
    }

    /// Puts `id` at the back of queue `q` (a [`Priority`] as an index).
    pub fn push(&mut self, q: usize, id: BlockId) {
        self.queued.insert(id);
        self.queues[q].push_back(id);
    }

    /// Puts `id` at the back of the queue of `p`.
    pub fn enqueue(&mut self, p: Priority, id: BlockId) {
        self.push(p as usize, id);
    }

    /// Takes the block at the front of queue `q`.
    pub fn pop(&mut self, q: usize) -> Option<BlockId> {
        let id = self.queues[q].pop_front()?;
        self.queued.remove(&id);
        Some(id)
    }

    /// Blocks per queue.
    pub fn lens(&self) -> [usize; QUEUES] {
        [0, 1, 2, 3].map(|i| self.queues[i].len())
    }

    /// Blocks waiting to be looked at.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> BlockId {
        BlockId::from_slice(&[n; 32]).unwrap()
    }

    #[test]
    fn queues_are_fifo_per_priority_and_remember_what_they_hold() {
        let mut q = Queues::default();
        q.enqueue(Priority::Under, b(1));
        q.enqueue(Priority::Under, b(2));
        q.enqueue(Priority::Over, b(3));
        assert_eq!(q.lens(), [0, 2, 0, 1]);
        assert!(q.is_queued(&b(1)) && q.is_queued(&b(3)));
        assert_eq!(q.pop(Priority::Under as usize), Some(b(1)));
        assert!(!q.is_queued(&b(1)));
        assert_eq!(q.pop(Priority::OneReplica as usize), None);
        q.push(Priority::Under as usize, b(1));
        assert_eq!(q.pop(1), Some(b(2)));
        assert_eq!(q.pop(1), Some(b(1)));
    }

    #[test]
    fn dirty_blocks_are_taken_oldest_first_in_bounded_slices() {
        let mut q = Queues::default();
        q.mark_dirty([b(1), b(2), b(3)]);
        assert_eq!(q.take_dirty(2), vec![b(1), b(2)]);
        assert_eq!(q.dirty_len(), 1);
        assert_eq!(q.take_dirty(5), vec![b(3)]);
        assert!(q.take_dirty(5).is_empty());
    }
}

//! Verifications of replicas readers reported bad (issue 24, finding 4): instead of
//! dropping a location on a reader's word, the namenode asks the holder to re-hash
//! the replica (a `VerifyBlocks` command on its heartbeat reply); a replica that
//! really is corrupt is quarantined by the datanode and reported, as the scanner's
//! finds are.
//!
//! One queue per datanode, bounded and de-duplicated: a flood of reports costs each
//! datanode at most [`VERIFY_PER_HEARTBEAT`] re-reads per heartbeat, and a replica
//! verified within [`VERIFY_COOLDOWN`] is not verified again.

use std::collections::{HashMap, HashSet, VecDeque};

use kdfs_core::BlockId;
use tokio::time::{Duration, Instant};

/// Verifications waiting per datanode, at most: more reports are ignored.
pub const MAX_PENDING_VERIFICATIONS: usize = 256;
/// Verifications handed to a datanode per heartbeat reply, at most.
pub const VERIFY_PER_HEARTBEAT: usize = 8;
/// A replica verified this recently is not verified again.
pub const VERIFY_COOLDOWN: Duration = Duration::from_secs(60);
/// Recently verified replicas remembered per datanode, at most.
const MAX_RECENT: usize = 4096;

/// What happened to a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Yes,
    /// Already waiting, or verified within the cooldown.
    Duplicate,
    /// The queue is full.
    Full,
}

/// One datanode's verifications.
#[derive(Debug, Default)]
pub struct VerifyQueue {
    pending: VecDeque<BlockId>,
    queued: HashSet<BlockId>,
    /// When each recently handed-out verification went out.
    recent: HashMap<BlockId, Instant>,
}

impl VerifyQueue {
    /// Queues a verification of `id`.
    pub fn push(&mut self, id: BlockId, now: Instant) -> Queued {
        if self.queued.contains(&id)
            || self
                .recent
                .get(&id)
                .is_some_and(|t| now.saturating_duration_since(*t) < VERIFY_COOLDOWN)
        {
            return Queued::Duplicate;
        }
        if self.pending.len() >= MAX_PENDING_VERIFICATIONS {
            return Queued::Full;
        }
        self.pending.push_back(id);
        self.queued.insert(id);
        Queued::Yes
    }

    /// Takes up to `n` verifications to hand out now.
    pub fn take(&mut self, now: Instant, n: usize) -> Vec<BlockId> {
        let k = self.pending.len().min(n);
        let out: Vec<BlockId> = self.pending.drain(..k).collect();
        if self.recent.len() + out.len() > MAX_RECENT {
            self.recent
                .retain(|_, t| now.saturating_duration_since(*t) < VERIFY_COOLDOWN);
        }
        for id in &out {
            self.queued.remove(id);
            if self.recent.len() < MAX_RECENT {
                self.recent.insert(*id, now);
            }
        }
        out
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> BlockId {
        BlockId::from_slice(&[n; 32]).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn verifications_are_deduplicated_bounded_and_cooled_down() {
        let mut q = VerifyQueue::default();
        let now = Instant::now();
        assert_eq!(q.push(b(1), now), Queued::Yes);
        assert_eq!(q.push(b(1), now), Queued::Duplicate);
        for n in 2..=255u8 {
            q.push(b(n), now);
        }
        assert_eq!(q.len(), 255);
        q.push(BlockId::from_slice(&[0; 32]).unwrap(), now);
        assert_eq!(q.push(BlockId::of(b"x"), now), Queued::Full);
        let first = q.take(now, VERIFY_PER_HEARTBEAT);
        assert_eq!(first.len(), VERIFY_PER_HEARTBEAT);
        assert_eq!(first[0], b(1));
        assert_eq!(q.push(b(1), now), Queued::Duplicate, "just verified");
        tokio::time::advance(VERIFY_COOLDOWN).await;
        assert_eq!(q.push(b(1), Instant::now()), Queued::Yes);
        assert!(!q.is_empty());
    }
}

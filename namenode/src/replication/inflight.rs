//! Copies under way: for each block being copied, its source, the targets that have not
//! confirmed yet and its deadline, and how many copies each node serves as a source
//! and receives as a target (the stream limits are checked against these).

use std::collections::HashMap;

use kdfs_core::BlockId;
use smallvec::SmallVec;

use crate::blockmap::{IdBuild, NodeIdx};

/// One outstanding copy.
#[derive(Debug, Clone)]
pub struct Pending {
    pub source: NodeIdx,
    /// Targets that have not confirmed the replica yet.
    pub targets: SmallVec<[NodeIdx; 4]>,
    pub deadline_ms: u64,
}

/// Every outstanding copy and the per-node stream counts.
#[derive(Debug, Default)]
pub struct InFlight {
    pending: HashMap<BlockId, Pending, IdBuild>,
    source_load: HashMap<NodeIdx, u32>,
    target_load: HashMap<NodeIdx, u32>,
}

impl InFlight {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn contains(&self, id: &BlockId) -> bool {
        self.pending.contains_key(id)
    }

    pub fn get(&self, id: &BlockId) -> Option<&Pending> {
        self.pending.get(id)
    }

    /// Copies `node` serves as a source now.
    pub fn source_load(&self, node: NodeIdx) -> u32 {
        self.source_load.get(&node).copied().unwrap_or(0)
    }

    /// Copies `node` receives as a target now.
    pub fn target_load(&self, node: NodeIdx) -> u32 {
        self.target_load.get(&node).copied().unwrap_or(0)
    }

    /// Records a copy of `id` from `source` to `targets`, due by `deadline_ms`.
    pub fn start(&mut self, id: BlockId, source: NodeIdx, targets: &[NodeIdx], deadline_ms: u64) {
        *self.source_load.entry(source).or_default() += 1;
        for t in targets {
            *self.target_load.entry(*t).or_default() += 1;
        }
        self.pending.insert(
            id,
            Pending {
                source,
                targets: targets.iter().copied().collect(),
                deadline_ms,
            },
        );
    }

    /// `node` now holds `id`: that target of its copy is done. Returns whether that
    /// completed the copy (which then leaves).
    pub fn target_done(&mut self, id: &BlockId, node: NodeIdx) -> bool {
        let Some(p) = self.pending.get_mut(id) else {
            return false;
        };
        let Some(pos) = p.targets.iter().position(|t| *t == node) else {
            return false;
        };
        p.targets.remove(pos);
        dec(&mut self.target_load, node);
        if !p.targets.is_empty() {
            return false;
        }
        let source = p.source;
        self.pending.remove(id);
        dec(&mut self.source_load, source);
        true
    }

    /// `source` reports that its copy of `id` failed to reach the targets `hit`
    /// accepts: they leave the copy, which leaves too once no target is left. `None`
    /// when there is no such copy (none of `id`, or one from another source); else the
    /// targets that left.
    pub fn fail_targets(
        &mut self,
        id: &BlockId,
        source: NodeIdx,
        hit: impl Fn(NodeIdx) -> bool,
    ) -> Option<SmallVec<[NodeIdx; 4]>> {
        let p = self.pending.get_mut(id).filter(|p| p.source == source)?;
        let mut gone = SmallVec::<[NodeIdx; 4]>::new();
        p.targets.retain(|t| {
            let failed = hit(*t);
            if failed {
                gone.push(*t);
            }
            !failed
        });
        let empty = p.targets.is_empty();
        for t in &gone {
            dec(&mut self.target_load, *t);
        }
        if empty {
            self.pending.remove(id);
            dec(&mut self.source_load, source);
        }
        Some(gone)
    }

    /// Drops the copy of `id`, freeing its streams. Returns whether there was one.
    pub fn cancel(&mut self, id: &BlockId) -> bool {
        let Some(p) = self.pending.remove(id) else {
            return false;
        };
        dec(&mut self.source_load, p.source);
        for t in &p.targets {
            dec(&mut self.target_load, *t);
        }
        true
    }

    /// Blocks whose copy is due by `now_ms`.
    pub fn overdue(&self, now_ms: u64) -> Vec<BlockId> {
        self.matching(|p| p.deadline_ms <= now_ms)
    }

    /// Blocks whose copy `keep` accepts.
    pub fn matching(&self, keep: impl Fn(&Pending) -> bool) -> Vec<BlockId> {
        self.pending
            .iter()
            .filter(|(_, p)| keep(p))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Blocks whose copy `keep` accepts, given the block too.
    pub fn matching_blocks(&self, keep: impl Fn(&BlockId, &Pending) -> bool) -> Vec<BlockId> {
        self.pending
            .iter()
            .filter(|(id, p)| keep(id, p))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forgets `node`'s stream counts (it died; its copies were cancelled).
    pub fn forget_node(&mut self, node: NodeIdx) {
        self.source_load.remove(&node);
        self.target_load.remove(&node);
    }
}

fn dec(m: &mut HashMap<NodeIdx, u32>, n: NodeIdx) {
    if let Some(v) = m.get_mut(&n) {
        *v = v.saturating_sub(1);
        if *v == 0 {
            m.remove(&n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> BlockId {
        BlockId::from_slice(&[n; 32]).unwrap()
    }

    fn loads(f: &InFlight, nodes: u32) -> Vec<(u32, u32)> {
        (0..nodes)
            .map(|n| (f.source_load(n), f.target_load(n)))
            .collect()
    }

    #[test]
    fn a_copy_holds_its_streams_until_every_target_confirms() {
        let mut f = InFlight::default();
        f.start(b(1), 0, &[1, 2], 100);
        f.start(b(2), 0, &[2], 100);
        assert_eq!(loads(&f, 3), [(2, 0), (0, 1), (0, 2)]);
        assert!(!f.target_done(&b(1), 3), "not a target");
        assert!(!f.target_done(&b(1), 1));
        assert!(f.target_done(&b(1), 2));
        assert!(!f.contains(&b(1)));
        assert_eq!(loads(&f, 3), [(1, 0), (0, 0), (0, 1)]);
        assert!(f.cancel(&b(2)));
        assert!(!f.cancel(&b(2)));
        assert!(f.is_empty());
        assert_eq!(loads(&f, 3), [(0, 0); 3]);
    }

    #[test]
    fn failed_targets_leave_and_an_emptied_copy_goes() {
        let mut f = InFlight::default();
        f.start(b(1), 0, &[1, 2], 100);
        assert_eq!(f.fail_targets(&b(1), 5, |_| true), None, "another source");
        assert_eq!(f.fail_targets(&b(2), 0, |_| true), None, "another block");
        assert_eq!(
            f.fail_targets(&b(1), 0, |t| t == 1).unwrap().as_slice(),
            &[1]
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f.fail_targets(&b(1), 0, |_| true).unwrap().as_slice(), &[2]);
        assert!(f.is_empty());
        assert_eq!(loads(&f, 3), [(0, 0); 3]);
    }

    #[test]
    fn overdue_copies_are_those_past_their_deadline() {
        let mut f = InFlight::default();
        f.start(b(1), 0, &[1], 100);
        f.start(b(2), 0, &[1], 200);
        assert!(f.overdue(99).is_empty());
        assert_eq!(f.overdue(100), vec![b(1)]);
        let mut both = f.overdue(200);
        both.sort_unstable();
        assert_eq!(both, vec![b(1), b(2)]);
    }
}

//! What the block map remembers about a block's replicas beyond its confirmed
//! locations: replicas reported by nodes the namenode never placed the block on
//! (*unconfirmed*), and nodes that held a confirmed replica and went away (*departed*:
//! a dead node that comes back with the block is confirmed again).
//!
//! Only blocks with such replicas have an entry, and each list holds at most a few
//! node ids, so the memory stays a small fraction of the map however many forged
//! reports arrive (docs/security.md, "Replica reports").

use smallvec::SmallVec;

use super::NodeIdx;

/// Unconfirmed replicas remembered per block, at most: more forged reports of one
/// block are not recorded at all.
pub const MAX_UNCONFIRMED: usize = 2;
/// Departed confirmed holders remembered per block, at most (the oldest is forgotten).
pub const MAX_DEPARTED: usize = 4;

/// A block's unconfirmed replicas and departed confirmed holders.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Memory {
    /// Nodes that report a replica the namenode did not place there.
    pub unconfirmed: SmallVec<[NodeIdx; MAX_UNCONFIRMED]>,
    /// Nodes whose confirmed replica left the map because the node died.
    pub departed: SmallVec<[NodeIdx; MAX_DEPARTED]>,
}

impl Memory {
    pub fn is_empty(&self) -> bool {
        self.unconfirmed.is_empty() && self.departed.is_empty()
    }

    /// Records an unconfirmed replica on `node`; false if the list is full.
    pub fn add_unconfirmed(&mut self, node: NodeIdx) -> bool {
        if self.unconfirmed.contains(&node) {
            return true;
        }
        if self.unconfirmed.len() >= MAX_UNCONFIRMED {
            return false;
        }
        self.unconfirmed.push(node);
        true
    }

    /// Remembers that `node` held a confirmed replica (it died).
    pub fn add_departed(&mut self, node: NodeIdx) {
        if self.departed.contains(&node) {
            return;
        }
        if self.departed.len() >= MAX_DEPARTED {
            self.departed.remove(0);
        }
        self.departed.push(node);
    }

    /// Takes `node` out of the departed list; true if it was there.
    pub fn take_departed(&mut self, node: NodeIdx) -> bool {
        let before = self.departed.len();
        self.departed.retain(|n| *n != node);
        before != self.departed.len()
    }

    /// Forgets `node` entirely; true if it was an unconfirmed holder.
    pub fn forget(&mut self, node: NodeIdx) -> bool {
        self.take_departed(node);
        let before = self.unconfirmed.len();
        self.unconfirmed.retain(|n| *n != node);
        before != self.unconfirmed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_bounded() {
        let mut m = Memory::default();
        assert!(m.add_unconfirmed(1));
        assert!(m.add_unconfirmed(2));
        assert!(m.add_unconfirmed(1), "already there");
        assert!(!m.add_unconfirmed(3), "full");
        for n in 10..20 {
            m.add_departed(n);
        }
        assert_eq!(m.departed.as_slice(), &[16, 17, 18, 19]);
        assert!(m.take_departed(17));
        assert!(!m.take_departed(17));
        assert!(m.forget(1));
        assert!(!m.forget(1));
        assert_eq!(m.unconfirmed.as_slice(), &[2]);
        assert!(!m.is_empty());
    }
}

//! Storage a datanode gained or lost since its last heartbeat, as the namenode learnt
//! it (a commit's pipeline acks, incremental reports), so `/info` and placement see a
//! new replica's bytes at once rather than a heartbeat later.
//!
//! Only a location the block map gains or loses counts: a replica acknowledged by a
//! commit and then reported again, or content a node already held, adds nothing.
//! A full report's locations are not counted (it follows a registration whose figures
//! already include them); replicas that left the map before their removal was
//! reported (trims, deleted files) free their bytes at the next heartbeat.
//! A heartbeat (or registration) replaces the estimate with the datanode's own
//! figures: they are the truth (sidecars, quarantine, other files on the disk).

use crate::blockmap::NodeIdx;

/// Storage and load figures from registration and heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub capacity: u64,
    pub used: u64,
    pub available: u64,
    pub in_flight: u32,
    pub blocks: u64,
    /// The node's write generation counter (what its deletes may name: `crate::gc`).
    pub write_generation: u64,
}

/// Replica bytes and blocks per node since its last heartbeat (may be negative).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Delta {
    bytes: i64,
    blocks: i64,
}

/// Every node's change since its last heartbeat.
#[derive(Debug, Default)]
pub struct Usage {
    since_beat: Vec<Delta>,
}

impl Usage {
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` holds a new replica of `length` bytes.
    pub fn gained(&mut self, node: NodeIdx, length: u64) {
        self.change(node, clamp(length), 1);
    }

    /// A replica of `length` bytes left `node`.
    pub fn lost(&mut self, node: NodeIdx, length: u64) {
        self.change(node, -clamp(length), -1);
    }

    fn change(&mut self, node: NodeIdx, bytes: i64, blocks: i64) {
        let i = node as usize;
        if self.since_beat.len() <= i {
            self.since_beat.resize(i + 1, Delta::default());
        }
        let d = &mut self.since_beat[i];
        d.bytes = d.bytes.saturating_add(bytes);
        d.blocks = d.blocks.saturating_add(blocks);
    }

    /// `node` sent its own figures: they replace the estimate.
    pub fn reset(&mut self, node: NodeIdx) {
        if let Some(d) = self.since_beat.get_mut(node as usize) {
            *d = Delta::default();
        }
    }

    /// `reported` (the node's last heartbeat) with what was learnt since.
    ///
    /// Free space is the smaller of the reported `available` and `capacity − used`:
    /// the reported figure already excludes room reserved by writes in flight at the
    /// heartbeat (often the very block committed since), so subtracting the new bytes
    /// from it would count them twice; `capacity − used` counts each byte once. Bytes
    /// removed since free nothing until the node says so.
    pub fn estimate(&self, node: NodeIdx, reported: Load) -> Load {
        let d = self
            .since_beat
            .get(node as usize)
            .copied()
            .unwrap_or_default();
        if d == Delta::default() {
            return reported;
        }
        let used = reported.used.saturating_add_signed(d.bytes);
        Load {
            used,
            blocks: reported.blocks.saturating_add_signed(d.blocks),
            available: if d.bytes > 0 {
                reported
                    .available
                    .min(reported.capacity.saturating_sub(used))
            } else {
                reported.available
            },
            ..reported
        }
    }
}

fn clamp(length: u64) -> i64 {
    i64::try_from(length).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(capacity: u64, used: u64, available: u64, blocks: u64) -> Load {
        Load {
            capacity,
            used,
            available,
            blocks,
            in_flight: 2,
            write_generation: 0,
        }
    }

    /// (changes to node 0 since its heartbeat, reported load, expected estimate).
    #[test]
    fn estimate_table() {
        enum C {
            Gain(u64),
            Lose(u64),
            Beat,
        }
        use C::*;
        let check = |changes: &[C], reported: Load, expected: Load| {
            let mut u = Usage::new();
            u.gained(1, 999); // another node's changes stay its own
            for c in changes {
                match c {
                    Gain(n) => u.gained(0, *n),
                    Lose(n) => u.lost(0, *n),
                    Beat => u.reset(0),
                }
            }
            assert_eq!(u.estimate(0, reported), expected);
        };
        let r = load(100, 10, 90, 1);
        check(&[], r, r);
        check(&[Gain(5)], r, load(100, 15, 85, 2));
        check(&[Gain(5), Gain(20)], r, load(100, 35, 65, 3));
        // Room reserved for the block in flight at the heartbeat is not taken twice.
        check(&[Gain(30)], load(100, 10, 60, 1), load(100, 40, 60, 2));
        // Estimated full: nothing free, never below zero.
        check(&[Gain(95)], r, load(100, 105, 0, 2));
        // A removal lowers used, frees nothing until the node says so.
        check(&[Lose(4)], r, load(100, 6, 90, 0));
        check(&[Gain(5), Lose(5)], r, r);
        check(&[Lose(50)], r, load(100, 0, 90, 0));
        // A heartbeat's figures replace the estimate.
        check(&[Gain(5), Beat], r, r);
        check(&[Gain(5), Beat, Gain(1)], r, load(100, 11, 89, 2));
        // A node never changed, or never seen: as reported.
        assert_eq!(Usage::new().estimate(7, r), r);
    }
}

//! The block map: for every block a live file references, its length, reference
//! count, wanted replication and the datanodes holding a replica.
//!
//! Only the reference counts are durable (`meta/`); locations live in memory and are
//! rebuilt from block reports and pipeline acknowledgements, as in HDFS.
//!
//! Compactness: datanodes are interned to small integers ([`NodeIdx`], see
//! `cluster.rs`) and a block's locations are an inline `SmallVec` of four of them, so
//! an entry is a 32-byte key plus a 40-byte value with no heap allocation for up to
//! four replicas. Block ids are already uniformly distributed (they are SHA-256
//! digests), so the hash is just their first eight bytes ([`IdHasher`]) and the map is
//! split into [`SHARDS`] independently locked shards chosen by another byte, so a big
//! report never holds one lock for long.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use kdfs_core::BlockId;
use smallvec::SmallVec;

mod memory;

pub use memory::MAX_UNCONFIRMED;
use memory::Memory;

/// A datanode, interned (see `cluster.rs`).
pub type NodeIdx = u32;
/// Where a block's replicas are: up to four inline.
pub type Locs = SmallVec<[NodeIdx; 4]>;
/// Number of independently locked shards.
pub const SHARDS: usize = 64;
/// Tag bit on a location while a full report is applied (see
/// [`BlockMap::apply_full_report`]); node indices stay below it.
pub const SEEN: NodeIdx = 1 << 31;

/// Hashes a SHA-256 id by taking eight of its bytes: they are already uniform.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() >= 8 {
            let v = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
            self.0 = self.0.rotate_left(7) ^ v;
        } else {
            for b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(*b);
            }
        }
    }
    fn write_usize(&mut self, _: usize) {
        // Length prefixes of the fixed-size id carry no information.
    }
}

pub type IdBuild = BuildHasherDefault<IdHasher>;

/// One lock's worth of the map: the blocks, and what is remembered beyond their
/// confirmed locations for the few that need it.
#[derive(Default)]
struct Shard {
    blocks: HashMap<BlockId, BlockInfo, IdBuild>,
    memory: HashMap<BlockId, Memory, IdBuild>,
}

/// What the namenode knows about one referenced block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    pub length: u64,
    /// Datanodes with a confirmed replica believed good: the namenode placed it there
    /// (a pipeline's ack, a copy it ordered), or a report confirmed it (see
    /// [`BlockMap::report_replica`]). Only these count towards the target.
    pub locs: Locs,
    /// Live files referencing the block.
    pub refs: u32,
    /// Replicas wanted (the largest replication of its files).
    pub target: u8,
    /// Loaded at start, with no memory of where it was placed: while the namenode is
    /// in safe mode, full reports confirm its replicas up to `target`.
    pub bootstrap: bool,
}

/// What [`BlockMap::add_location`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// The location was not mapped before (a replica the namenode just learnt of;
    /// the datanode's storage figures may not count it yet).
    pub new: bool,
    /// The block now has more replicas than wanted.
    pub over: bool,
    pub length: u64,
}

/// What [`BlockMap::report_replica`] made of a reported replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// A confirmed location (it was, or the node held it before it died).
    Confirmed(Added),
    /// Not placed there by the namenode: remembered (if there was room), not counted.
    Unconfirmed,
}

/// Totals for `/info` and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub blocks: u64,
    /// Blocks with at least one replica (safe mode's numerator).
    pub reported: u64,
    pub under_replicated: u64,
    pub missing: u64,
    pub replicas: u64,
    /// Unconfirmed replicas remembered (not in `replicas`).
    pub unconfirmed: u64,
    /// Replicas per node index.
    pub per_node: Vec<u64>,
}

/// What applying a report changed.
#[derive(Debug, Default)]
pub struct ReportOutcome {
    /// Replicas of referenced blocks now mapped to the node as confirmed.
    pub accepted: u64,
    /// Replicas of referenced blocks the namenode never placed on the node (newly
    /// remembered ones are in `dirty` too: they may be surplus).
    pub unconfirmed: u64,
    /// Reported blocks no live file references: for `gc.rs` to judge.
    pub unknown: Vec<(BlockId, u64)>,
    /// Blocks whose replica count changed in a way re-replication must look at.
    pub dirty: Vec<BlockId>,
    /// Replicas that were mapped but missing from the report.
    pub dropped: u64,
}

/// The sharded block map.
pub struct BlockMap {
    shards: Vec<Mutex<Shard>>,
}

impl Default for BlockMap {
    fn default() -> Self {
        Self::new()
    }
}

fn shard_of(id: &BlockId) -> usize {
    // The hasher uses bytes 0..8; the shard uses byte 31 so the two are independent.
    id.as_bytes()[31] as usize % SHARDS
}

impl BlockMap {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    fn shard(&self, id: &BlockId) -> std::sync::MutexGuard<'_, Shard> {
        self.lock(shard_of(id))
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave it half-updated in a way later
        // users could not cope with (every update is a single field change), so a
        // poisoned lock is taken over rather than propagated.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a reference from a newly committed file; creates the entry if needed.
    /// Returns true if the block was unreferenced before.
    pub fn add_ref(&self, id: BlockId, length: u64, replication: u32) -> bool {
        let mut s = self.shard(&id);
        let e = s.blocks.entry(id).or_insert_with(|| BlockInfo {
            length,
            locs: Locs::new(),
            refs: 0,
            target: 0,
            bootstrap: false,
        });
        e.refs += 1;
        e.target = e.target.max(replication.min(u8::MAX as u32) as u8);
        e.refs == 1
    }

    /// Loads a reference count from the store at start.
    pub fn load(&self, id: BlockId, refs: u64, length: u64, replication: u32) {
        self.shard(&id).blocks.insert(
            id,
            BlockInfo {
                length,
                locs: Locs::new(),
                refs: refs.min(u32::MAX as u64) as u32,
                target: replication.clamp(1, u8::MAX as u32) as u8,
                bootstrap: true,
            },
        );
    }

    /// Drops a reference from a deleted file. At zero the entry leaves the map and its
    /// last known locations (unconfirmed ones too) are returned, so the replicas can
    /// be deleted.
    pub fn release(&self, id: &BlockId) -> Option<(u64, Locs)> {
        let mut s = self.shard(id);
        let e = s.blocks.get_mut(id)?;
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 {
            let memory = s.memory.remove(id).unwrap_or_default();
            return s.blocks.remove(id).map(|b| {
                let mut locs = b.locs;
                locs.extend(memory.unconfirmed);
                (b.length, locs)
            });
        }
        None
    }

    pub fn get(&self, id: &BlockId) -> Option<BlockInfo> {
        self.shard(id).blocks.get(id).cloned()
    }

    /// Nodes that reported a replica of `id` the namenode did not place there.
    pub fn unconfirmed(&self, id: &BlockId) -> SmallVec<[NodeIdx; MAX_UNCONFIRMED]> {
        self.shard(id)
            .memory
            .get(id)
            .map(|m| m.unconfirmed.clone())
            .unwrap_or_default()
    }

    /// Whether `node` holds a replica of `id`, confirmed or not.
    pub fn holds(&self, id: &BlockId, node: NodeIdx) -> bool {
        let s = self.shard(id);
        s.blocks.get(id).is_some_and(|e| e.locs.contains(&node))
            || s.memory
                .get(id)
                .is_some_and(|m| m.unconfirmed.contains(&node))
    }

    pub fn contains(&self, id: &BlockId) -> bool {
        self.shard(id).blocks.contains_key(id)
    }

    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).blocks.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a confirmed replica of a referenced block on `node`: one the namenode
    /// placed there (a pipeline ack, a copy it ordered) or one it had mapped before.
    /// Returns `None` if the block is not referenced.
    pub fn add_location(&self, id: &BlockId, node: NodeIdx) -> Option<Added> {
        let mut s = self.shard(id);
        let Shard { blocks, memory } = &mut *s;
        let e = blocks.get_mut(id)?;
        if let Some(m) = memory.get_mut(id) {
            m.forget(node);
            if m.is_empty() {
                memory.remove(id);
            }
        }
        let new = !e.locs.contains(&node);
        if new {
            e.locs.push(node);
        }
        Some(Added {
            new,
            over: e.locs.len() > e.target as usize,
            length: e.length,
        })
    }

    /// A node reports a replica of a referenced block. It is confirmed if it already
    /// was, or if the node held it when it died; otherwise it is unconfirmed: it is
    /// remembered (at most [`MAX_UNCONFIRMED`] per block) but never counted, so a
    /// forged report cannot make the block look over-replicated. `None` if the block
    /// is not referenced.
    pub fn report_replica(&self, id: &BlockId, node: NodeIdx) -> Option<Reported> {
        let mut s = self.shard(id);
        let Shard { blocks, memory } = &mut *s;
        let e = blocks.get_mut(id)?;
        if e.locs.contains(&node) {
            return Some(Reported::Confirmed(Added {
                new: false,
                over: e.locs.len() > e.target as usize,
                length: e.length,
            }));
        }
        let m = memory.entry(*id).or_default();
        if m.take_departed(node) {
            if m.is_empty() {
                memory.remove(id);
            }
            e.locs.push(node);
            return Some(Reported::Confirmed(Added {
                new: true,
                over: e.locs.len() > e.target as usize,
                length: e.length,
            }));
        }
        m.add_unconfirmed(node);
        if m.is_empty() {
            memory.remove(id);
        }
        Some(Reported::Unconfirmed)
    }

    /// Promotes the unconfirmed replica of `id` on `node` to confirmed (the namenode
    /// ordered a copy there). `None` if there is no such replica.
    pub fn confirm(&self, id: &BlockId, node: NodeIdx) -> Option<Added> {
        if !self
            .shard(id)
            .memory
            .get(id)
            .is_some_and(|m| m.unconfirmed.contains(&node))
        {
            return None;
        }
        self.add_location(id, node)
    }

    /// Forgets the replica of `id` on `node`, confirmed or not, and that the node held
    /// it. Returns the block's length if a confirmed location was mapped.
    pub fn remove_location(&self, id: &BlockId, node: NodeIdx) -> Option<u64> {
        let mut s = self.shard(id);
        let Shard { blocks, memory } = &mut *s;
        if let Some(m) = memory.get_mut(id) {
            m.forget(node);
            if m.is_empty() {
                memory.remove(id);
            }
        }
        let e = blocks.get_mut(id)?;
        let before = e.locs.len();
        e.locs.retain(|n| *n != node);
        (before != e.locs.len()).then_some(e.length)
    }

    /// Forgets every replica on `node` (it died), remembering where it held confirmed
    /// ones so that they are confirmed again if it comes back with them. Returns the
    /// blocks that lost a confirmed replica.
    pub fn remove_node(&self, node: NodeIdx) -> Vec<BlockId> {
        self.remove_nodes(&[node])
    }

    /// [`BlockMap::remove_node`] for several nodes in one sweep of the map.
    pub fn remove_nodes(&self, nodes: &[NodeIdx]) -> Vec<BlockId> {
        let gone: HashSet<NodeIdx> = nodes.iter().copied().collect();
        let mut out = Vec::new();
        for i in 0..SHARDS {
            let mut s = self.lock(i);
            let Shard { blocks, memory } = &mut *s;
            memory.retain(|_, m| {
                m.unconfirmed.retain(|n| !gone.contains(n));
                !m.is_empty()
            });
            for (id, e) in blocks.iter_mut() {
                if e.locs.iter().any(|n| gone.contains(n)) {
                    let m = memory.entry(*id).or_default();
                    e.locs.retain(|n| {
                        let keep = !gone.contains(n);
                        if !keep {
                            m.add_departed(*n);
                        }
                        keep
                    });
                    out.push(*id);
                }
            }
        }
        out
    }

    /// Forgets `nodes` everywhere, memory included (their slots are being reused).
    pub fn forget_nodes(&self, nodes: &[NodeIdx]) {
        let gone: HashSet<NodeIdx> = nodes.iter().copied().collect();
        for i in 0..SHARDS {
            let mut s = self.lock(i);
            let Shard { blocks, memory } = &mut *s;
            memory.retain(|_, m| {
                m.unconfirmed.retain(|n| !gone.contains(n));
                m.departed.retain(|n| !gone.contains(n));
                !m.is_empty()
            });
            for e in blocks.values_mut() {
                e.locs.retain(|n| !gone.contains(n));
            }
        }
    }

    /// Blocks with a confirmed replica on `node`.
    pub fn blocks_on(&self, node: NodeIdx) -> Vec<BlockId> {
        let mut out = Vec::new();
        for i in 0..SHARDS {
            let s = self.lock(i);
            out.extend(
                s.blocks
                    .iter()
                    .filter(|(_, e)| e.locs.contains(&node))
                    .map(|(id, _)| *id),
            );
        }
        out
    }

    /// Applies a complete full report of `node`: every listed replica of a referenced
    /// block is mapped (confirmed as [`BlockMap::report_replica`] decides, or, with
    /// `bootstrap` (safe mode), confirmed while a block loaded at start has fewer
    /// confirmed replicas than its target), every replica of `node` not listed is
    /// dropped, and unreferenced blocks are handed back for `gc.rs` to judge.
    ///
    /// One pass over the report and one over the map, no sorting: while a shard is
    /// locked, the node's locations of reported blocks are tagged with `SEEN`; the
    /// sweep of the shard then drops untagged ones and clears the tags before the lock
    /// is released, so no other reader ever sees a tag.
    pub fn apply_full_report(
        &self,
        node: NodeIdx,
        blocks: Vec<(BlockId, u64)>,
        bootstrap: bool,
    ) -> ReportOutcome {
        debug_assert!(node & SEEN == 0, "node indices stay below 2^31");
        let mut buckets: Vec<Vec<(BlockId, u64)>> = vec![Vec::new(); SHARDS];
        let per = blocks.len() / SHARDS + 1;
        for b in &mut buckets {
            b.reserve(per + per / 4);
        }
        for (id, len) in blocks {
            buckets[shard_of(&id)].push((id, len));
        }
        let mut out = ReportOutcome::default();
        for (i, bucket) in buckets.into_iter().enumerate() {
            let mut s = self.lock(i);
            let Shard { blocks, memory } = &mut *s;
            for (id, len) in bucket {
                let Some(e) = blocks.get_mut(&id) else {
                    out.unknown.push((id, len));
                    continue;
                };
                if let Some(n) = e.locs.iter_mut().find(|n| **n & !SEEN == node) {
                    if *n & SEEN == 0 {
                        out.accepted += 1;
                        *n |= SEEN;
                    }
                    continue;
                }
                let m = memory.entry(id).or_default();
                let departed = m.take_departed(node);
                if departed || (bootstrap && e.bootstrap && e.locs.len() < e.target as usize) {
                    m.forget(node);
                    out.accepted += 1;
                    e.locs.push(node | SEEN);
                    if e.locs.len() > e.target as usize {
                        out.dirty.push(id);
                    }
                } else if let Some(n) = m.unconfirmed.iter_mut().find(|n| **n & !SEEN == node) {
                    if *n & SEEN == 0 {
                        out.unconfirmed += 1;
                        *n |= SEEN;
                    }
                } else if m.unconfirmed.len() < MAX_UNCONFIRMED {
                    out.unconfirmed += 1;
                    m.unconfirmed.push(node | SEEN);
                    out.dirty.push(id);
                }
                if m.is_empty() {
                    memory.remove(&id);
                }
            }
            for (id, e) in blocks.iter_mut() {
                if let Some(pos) = e.locs.iter().position(|n| *n & !SEEN == node) {
                    if e.locs[pos] & SEEN != 0 {
                        e.locs[pos] = node;
                    } else {
                        e.locs.remove(pos);
                        out.dropped += 1;
                        out.dirty.push(*id);
                    }
                }
            }
            // The report is the node's whole truth: what it no longer lists is neither
            // an unconfirmed replica nor a departed one.
            memory.retain(|_, m| {
                m.unconfirmed
                    .retain(|n| *n & !SEEN != node || *n & SEEN != 0);
                for n in m.unconfirmed.iter_mut() {
                    *n &= !SEEN;
                }
                m.take_departed(node);
                !m.is_empty()
            });
        }
        out
    }

    /// Totals over the whole map (a scan: call at most every few seconds).
    pub fn stats(&self, nodes: usize) -> Stats {
        let mut st = Stats {
            per_node: vec![0; nodes],
            ..Stats::default()
        };
        for i in 0..SHARDS {
            let s = self.lock(i);
            for e in s.blocks.values() {
                st.blocks += 1;
                let n = e.locs.len();
                st.replicas += n as u64;
                if n == 0 {
                    st.missing += 1;
                } else {
                    st.reported += 1;
                }
                if n < e.target as usize {
                    st.under_replicated += 1;
                }
                for l in &e.locs {
                    if let Some(c) = st.per_node.get_mut(*l as usize) {
                        *c += 1;
                    }
                }
            }
            st.unconfirmed += s
                .memory
                .values()
                .map(|m| m.unconfirmed.len() as u64)
                .sum::<u64>();
        }
        st
    }

    /// Blocks whose replica count differs from the target (for a full rescan after
    /// safe mode and periodically).
    pub fn misreplicated(&self) -> Vec<BlockId> {
        let mut out = Vec::new();
        for i in 0..SHARDS {
            let s = self.lock(i);
            out.extend(
                s.blocks
                    .iter()
                    .filter(|(_, e)| e.locs.len() != e.target as usize)
                    .map(|(id, _)| *id),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> BlockId {
        BlockId::from_slice(&[n; 32]).unwrap()
    }

    #[test]
    fn entries_are_compact() {
        assert_eq!(std::mem::size_of::<Locs>(), 24);
        assert!(std::mem::size_of::<BlockInfo>() <= 40);
    }

    #[test]
    fn refs_count_and_release_returns_locations() {
        let m = BlockMap::new();
        assert!(m.add_ref(b(1), 10, 3));
        assert!(!m.add_ref(b(1), 10, 2));
        m.add_location(&b(1), 4);
        assert_eq!(m.release(&b(1)), None);
        let (len, locs) = m.release(&b(1)).unwrap();
        assert_eq!((len, locs.as_slice()), (10, &[4][..]));
        assert!(!m.contains(&b(1)));
    }

    #[test]
    fn full_report_maps_drops_and_hands_back_unknown() {
        let m = BlockMap::new();
        for n in 1..=3 {
            m.load(b(n), 1, 10, 1);
        }
        m.add_location(&b(1), 7);
        m.add_location(&b(3), 7);
        // Node 7 now reports blocks 1 and 2, plus an unreferenced 9; 3 is missing.
        // In safe mode (bootstrap) its replica of the loaded block 2 is confirmed.
        let out = m.apply_full_report(7, vec![(b(1), 10), (b(2), 10), (b(9), 10)], true);
        assert_eq!(out.accepted, 2);
        assert_eq!(out.unknown, vec![(b(9), 10)]);
        assert_eq!(out.dropped, 1);
        assert_eq!(out.dirty, vec![b(3)]);
        assert_eq!(m.get(&b(2)).unwrap().locs.as_slice(), &[7]);
        assert!(m.get(&b(3)).unwrap().locs.is_empty());
        let st = m.stats(8);
        assert_eq!((st.blocks, st.reported, st.missing), (3, 2, 1));
        assert_eq!(st.per_node[7], 2);

        // Duplicates in a report count once and leave one location.
        let out = m.apply_full_report(7, vec![(b(1), 10), (b(1), 10), (b(2), 10)], false);
        assert_eq!((out.accepted, out.dropped), (2, 0));
        assert_eq!(m.get(&b(1)).unwrap().locs.as_slice(), &[7]);
        assert!(m.stats(8).per_node[7] == 2);
    }

    /// One full report of node 7 against a map of blocks 1..=4 (each wanting two
    /// replicas, loaded at start) with the given confirmed locations; `reported` lists
    /// block numbers (9 is unreferenced); `bootstrap`: in safe mode. Expected:
    /// (accepted, unconfirmed, unknown, dropped, dirty, blocks on node 7).
    #[test]
    fn full_report_reconciliation_table() {
        type Expected = (u64, u64, Vec<u8>, u64, Vec<u8>, Vec<u8>);
        let check =
            |mapped: &[(u8, &[NodeIdx])], reported: &[u8], bootstrap: bool, expected: Expected| {
                let m = BlockMap::new();
                for n in 1..=4 {
                    m.load(b(n), 1, 10, 2);
                }
                for (n, locs) in mapped {
                    for l in *locs {
                        m.add_location(&b(*n), *l);
                    }
                }
                let reports = reported.iter().map(|n| (b(*n), 10)).collect();
                let out = m.apply_full_report(7, reports, bootstrap);
                let first = |ids: &[BlockId]| -> Vec<u8> {
                    let mut v: Vec<u8> = ids.iter().map(|id| id.as_bytes()[0]).collect();
                    v.sort_unstable();
                    v
                };
                let unknown: Vec<BlockId> = out.unknown.iter().map(|(id, _)| *id).collect();
                let got = (
                    out.accepted,
                    out.unconfirmed,
                    first(&unknown),
                    out.dropped,
                    first(&out.dirty),
                    first(&m.blocks_on(7)),
                );
                assert_eq!(
                    got, expected,
                    "mapped {mapped:?}, reported {reported:?}, bootstrap {bootstrap}"
                );
                // No location keeps the tag once the report is applied.
                for n in 1..=4 {
                    assert!(m.get(&b(n)).unwrap().locs.iter().all(|l| l & SEEN == 0));
                    assert!(m.unconfirmed(&b(n)).iter().all(|l| l & SEEN == 0));
                }
            };
        check(&[], &[], true, (0, 0, vec![], 0, vec![], vec![]));
        check(&[], &[1, 2], true, (2, 0, vec![], 0, vec![], vec![1, 2]));
        // Outside safe mode a replica the namenode never placed is not confirmed.
        check(&[], &[1, 2], false, (0, 2, vec![], 0, vec![1, 2], vec![]));
        check(
            &[(1, &[7])],
            &[1],
            false,
            (1, 0, vec![], 0, vec![], vec![1]),
        );
        check(
            &[(1, &[7]), (2, &[7])],
            &[1],
            false,
            (1, 0, vec![], 1, vec![2], vec![1]),
        );
        check(&[(1, &[7])], &[], false, (0, 0, vec![], 1, vec![1], vec![]));
        check(
            &[],
            &[9, 9, 1],
            true,
            (1, 0, vec![9, 9], 0, vec![], vec![1]),
        );
        // A third replica where two are confirmed: unconfirmed even in safe mode, never
        // counted (dirty: it is surplus, to be dropped).
        check(
            &[(3, &[0, 1])],
            &[3],
            true,
            (0, 1, vec![], 0, vec![3], vec![]),
        );
        // Other nodes' replicas are left alone.
        check(
            &[(4, &[0, 7])],
            &[],
            false,
            (0, 0, vec![], 1, vec![4], vec![]),
        );
    }

    /// Forged reports of a block with confirmed replicas: never counted, at most
    /// `MAX_UNCONFIRMED` remembered, dropped when their node's full report no longer
    /// lists them; a dead node back with a block it held is confirmed again.
    #[test]
    fn unconfirmed_replicas_are_bounded_and_departed_ones_come_back_confirmed() {
        let m = BlockMap::new();
        m.add_ref(b(1), 10, 2);
        m.add_location(&b(1), 0);
        m.add_location(&b(1), 1);
        for fake in 10..20 {
            assert_eq!(m.report_replica(&b(1), fake), Some(Reported::Unconfirmed));
        }
        assert_eq!(m.get(&b(1)).unwrap().locs.as_slice(), &[0, 1]);
        assert_eq!(m.unconfirmed(&b(1)).as_slice(), &[10, 11]);
        assert!(m.holds(&b(1), 10) && !m.holds(&b(1), 12));
        assert!(m.misreplicated().is_empty(), "not over-replicated");
        assert_eq!(m.stats(0).unconfirmed, 2);
        // Node 10's full report no longer lists it.
        m.apply_full_report(10, Vec::new(), false);
        assert_eq!(m.unconfirmed(&b(1)).as_slice(), &[11]);
        // A copy the namenode ordered to node 11 confirms it.
        assert!(m.confirm(&b(1), 11).is_some_and(|a| a.new && a.over));
        assert!(m.confirm(&b(1), 12).is_none());
        m.remove_location(&b(1), 11);

        // Node 0 dies and comes back with the block: confirmed again.
        assert_eq!(m.remove_node(0), vec![b(1)]);
        assert_eq!(m.get(&b(1)).unwrap().locs.as_slice(), &[1]);
        assert!(matches!(
            m.report_replica(&b(1), 0),
            Some(Reported::Confirmed(Added { new: true, .. }))
        ));
        m.remove_node(0);
        let out = m.apply_full_report(0, vec![(b(1), 10)], false);
        assert_eq!((out.accepted, out.unconfirmed), (1, 0));
        // Forgotten (its slot reused): a new node there is not confirmed.
        m.remove_node(0);
        m.forget_nodes(&[0]);
        assert_eq!(m.report_replica(&b(1), 0), Some(Reported::Unconfirmed));
        // Released: every holder, unconfirmed ones too, is handed back for deletes.
        let (_, locs) = m.release(&b(1)).unwrap();
        assert_eq!(locs.as_slice(), &[1, 0]);
    }

    #[test]
    fn locations_are_added_once_and_removed_per_node() {
        let m = BlockMap::new();
        assert_eq!(m.add_location(&b(1), 0), None, "unreferenced");
        m.add_ref(b(1), 10, 1);
        let added = |new, over| {
            Some(Added {
                new,
                over,
                length: 10,
            })
        };
        assert_eq!(m.add_location(&b(1), 0), added(true, false));
        assert_eq!(m.add_location(&b(1), 0), added(false, false), "once");
        assert_eq!(
            m.add_location(&b(1), 1),
            added(true, true),
            "over-replicated"
        );
        assert_eq!(m.misreplicated(), vec![b(1)]);
        assert_eq!(m.remove_location(&b(1), 1), Some(10));
        assert_eq!(m.remove_location(&b(1), 1), None);
        assert_eq!(m.remove_location(&b(9), 1), None, "unreferenced");
        assert!(m.misreplicated().is_empty());
        m.add_ref(b(2), 10, 1);
        m.add_location(&b(2), 0);
        let mut lost = m.remove_node(0);
        lost.sort_unstable();
        assert_eq!(lost, vec![b(1), b(2)]);
        assert!(m.blocks_on(0).is_empty());
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn loaded_targets_are_at_least_one() {
        let m = BlockMap::new();
        m.load(b(1), 2, 10, 0);
        m.load(b(2), 1, 10, 1_000);
        assert_eq!(m.get(&b(1)).unwrap().target, 1);
        assert_eq!(m.get(&b(2)).unwrap().target, u8::MAX);
        assert_eq!(m.get(&b(1)).unwrap().refs, 2);
    }
}

//! Planning one copy: a source among a block's holders and targets among the other
//! nodes, within the stream limits, trying nodes that failed the block last.
//!
//! Sources are confirmed holders; an unconfirmed holder (a node that reported a
//! replica the namenode never placed there) is a source only when the block has no
//! confirmed holder: a target checks the block's SHA-256 before it commits, so a lying
//! source yields nothing. Unconfirmed holders are not excluded as targets: a copy
//! the namenode orders there confirms the replica.

use std::collections::HashSet;

use crate::blockmap::NodeIdx;
use crate::placement::{self, Candidate};

use super::inflight::InFlight;

/// What a copy is planned around besides the nodes themselves.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// Copies each node may serve as a source, and receive as a target, at once.
    pub streams: u32,
    /// The copies under way (their stream counts).
    pub inflight: &'a InFlight,
    /// Nodes that failed a copy of this block: tried last.
    pub avoid: Option<&'a [NodeIdx]>,
    /// Nodes that held a corrupt replica of this block: tried last as targets.
    pub corrupt: Option<&'a [NodeIdx]>,
}

/// Who holds a block.
#[derive(Debug, Clone, Copy)]
pub struct Holders<'a> {
    pub confirmed: &'a [NodeIdx],
    pub unconfirmed: &'a [NodeIdx],
}

/// A source among `holders` and `need` targets among the others that have `room` bytes
/// free, or `None` if the limits leave no source or no target now. The source is the
/// least busy holder, preferring ones that did not fail this block and are writable
/// (live); targets come from placement, avoiding nodes that failed this block or
/// held a corrupt replica of it when enough others are open.
pub fn plan_copy(
    limits: Limits<'_>,
    holders: Holders<'_>,
    need: usize,
    nodes: &[Candidate],
    room: u64,
) -> Option<(NodeIdx, Vec<NodeIdx>)> {
    let Limits {
        streams,
        inflight,
        avoid,
        corrupt,
    } = limits;
    let avoided = |n: NodeIdx| avoid.is_some_and(|a| a.contains(&n));
    let best = |among: &[NodeIdx]| {
        among
            .iter()
            .filter(|n| inflight.source_load(**n) < streams)
            .filter_map(|n| nodes.iter().find(|c| c.node == *n))
            .min_by_key(|c| {
                (
                    avoided(c.node),
                    !c.writable,
                    inflight.source_load(c.node),
                    c.load,
                )
            })
            .map(|c| c.node)
    };
    let source = if holders.confirmed.is_empty() {
        best(holders.unconfirmed)
    } else {
        best(holders.confirmed)
    }?;
    let holders = holders.confirmed;
    let open: Vec<Candidate> = nodes
        .iter()
        .filter(|c| inflight.target_load(c.node) < streams)
        .cloned()
        .collect();
    let mut exclude: HashSet<NodeIdx> = holders.iter().copied().collect();
    exclude.insert(source);
    let request = |exclude: HashSet<NodeIdx>| placement::Request {
        wanted: need,
        min: 1,
        room,
        exclude,
    };
    // Prefer nodes that have not failed this block (nor held a corrupt replica of
    // it); fall back to them rather than leave the block short.
    if avoid.is_some() || corrupt.is_some() {
        let mut strict = exclude.clone();
        strict.extend(avoid.into_iter().flatten().copied());
        strict.extend(corrupt.into_iter().flatten().copied());
        if let Ok(t) = placement::choose_pipeline(&open, &request(strict)) {
            return Some((source, t));
        }
    }
    placement::choose_pipeline(&open, &request(exclude))
        .ok()
        .map(|t| (source, t))
}

#[cfg(test)]
mod tests {
    use kdfs_core::BlockId;

    use super::*;

    /// Nodes 0..n, live, empty, in one zone.
    fn nodes(n: u32) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                node: i,
                zone: String::new(),
                writable: true,
                available: 1 << 40,
                load: 0,
            })
            .collect()
    }

    struct Case {
        what: &'static str,
        holders: &'static [NodeIdx],
        unconfirmed: &'static [NodeIdx],
        need: usize,
        avoid: Option<&'static [NodeIdx]>,
        corrupt: Option<&'static [NodeIdx]>,
        /// Nodes that are stale (readable, not writable).
        stale: &'static [NodeIdx],
        /// Nodes already serving or receiving one copy (streams = 1).
        busy: &'static [NodeIdx],
        /// The source and the sorted targets, or `None`.
        expected: Option<(NodeIdx, Vec<NodeIdx>)>,
    }

    #[test]
    fn plan_copy_table() {
        let case = |what| Case {
            what,
            holders: &[0],
            unconfirmed: &[],
            need: 1,
            avoid: None,
            corrupt: None,
            stale: &[],
            busy: &[],
            expected: None,
        };
        let cases = [
            Case {
                need: 2,
                expected: Some((0, vec![1, 2])),
                ..case("one holder, two targets")
            },
            Case {
                holders: &[0, 1],
                stale: &[0],
                expected: Some((1, vec![2])),
                ..case("a writable source is preferred to a stale one")
            },
            Case {
                holders: &[0, 1],
                stale: &[0, 1],
                expected: Some((0, vec![2])),
                ..case("a stale source when nothing else holds it")
            },
            Case {
                holders: &[0, 1],
                avoid: Some(&[0]),
                expected: Some((1, vec![2])),
                ..case("a source that failed the block goes last")
            },
            Case {
                avoid: Some(&[1]),
                expected: Some((0, vec![2])),
                ..case("a target that failed the block is avoided")
            },
            Case {
                corrupt: Some(&[1, 2]),
                expected: Some((0, vec![1])),
                ..case("no other target: the avoided one rather than none")
            },
            Case {
                busy: &[0],
                ..case("the only holder is busy: nothing")
            },
            Case {
                busy: &[1],
                expected: Some((0, vec![2])),
                ..case("a busy target is skipped")
            },
            Case {
                busy: &[1, 2],
                ..case("every target is busy: nothing")
            },
            Case {
                holders: &[0],
                unconfirmed: &[1],
                expected: Some((0, vec![1])),
                ..case("a confirmed source; an unconfirmed holder may be a target")
            },
            Case {
                holders: &[],
                unconfirmed: &[1],
                expected: Some((1, vec![0])),
                ..case("no confirmed holder: an unconfirmed one is the source")
            },
            Case {
                holders: &[0],
                unconfirmed: &[1],
                busy: &[0],
                expected: None,
                ..case("a busy confirmed holder is waited for, not replaced by an unconfirmed one")
            },
        ];
        for c in cases {
            let mut cluster = nodes(3);
            for n in c.stale {
                cluster[*n as usize].writable = false;
            }
            let mut inflight = InFlight::default();
            for (i, n) in c.busy.iter().enumerate() {
                // A copy served and received by `n` itself uses both its streams.
                inflight.start(
                    BlockId::from_slice(&[i as u8 + 100; 32]).unwrap(),
                    *n,
                    &[*n],
                    0,
                );
            }
            let limits = Limits {
                streams: 1,
                inflight: &inflight,
                avoid: c.avoid,
                corrupt: c.corrupt,
            };
            let holders = Holders {
                confirmed: c.holders,
                unconfirmed: c.unconfirmed,
            };
            let got = plan_copy(limits, holders, c.need, &cluster, 1).map(|(s, mut t)| {
                t.sort_unstable();
                (s, t)
            });
            assert_eq!(got, c.expected, "{}", c.what);
        }
    }
}

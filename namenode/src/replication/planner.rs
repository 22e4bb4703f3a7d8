//! Planning one copy: a source among a block's holders and targets among the other
//! nodes, within the stream limits, trying nodes that failed the block last.

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

/// A source among `holders` and `need` targets among the others that have `room` bytes
/// free, or `None` if the limits leave no source or no target now. The source is the
/// least busy holder, preferring ones that did not fail this block and are writable
/// (live); targets come from placement, avoiding nodes that failed this block or
/// held a corrupt replica of it when enough others are open.
pub fn plan_copy(
    limits: Limits<'_>,
    holders: &[NodeIdx],
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
    let source = holders
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
        })?
        .node;
    let open: Vec<Candidate> = nodes
        .iter()
        .filter(|c| inflight.target_load(c.node) < streams)
        .cloned()
        .collect();
    let mut exclude: HashSet<NodeIdx> = holders.iter().copied().collect();
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
    exclude.insert(source);
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
            let got = plan_copy(limits, c.holders, c.need, &cluster, 1).map(|(s, mut t)| {
                t.sort_unstable();
                (s, t)
            });
            assert_eq!(got, c.expected, "{}", c.what);
        }
    }
}

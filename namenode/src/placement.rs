//! Where new replicas go: a pure function of the cluster's state and a request.
//!
//! Rules, in order:
//! 1. Only live, non-stale nodes that are not excluded and have room for the block
//!    (`available >= room`: a whole block, or less when the block is known to be
//!    smaller, e.g. a small file's only block) are eligible.
//! 2. Too few live nodes at all is `Unavailable` (the gateway answers 503); live nodes
//!    but too few with room is `ResourceExhausted` (507). "Too few" means fewer than
//!    `min(wanted, min_replicas)`: a write may go ahead with fewer nodes than wanted
//!    and be healed later, but not with fewer than can be acknowledged.
//! 3. Spread: one node per zone first (zones visited best node first), then the
//!    remaining nodes, so a zone outage never takes every replica.
//! 4. Balance: nodes are ranked by load (reported in-flight transfers plus pipelines
//!    handed out since their last heartbeat), then by free space.

use std::cmp::Reverse;
use std::collections::HashSet;

use crate::blockmap::NodeIdx;
use crate::error::{Error, Result};

/// What placement knows about one datanode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeIdx,
    pub zone: String,
    /// Live and not stale (nor decommissioning).
    pub writable: bool,
    pub available: u64,
    /// Transfers in flight plus pipelines allocated since the last heartbeat.
    pub load: u32,
}

/// One placement question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Replicas wanted.
    pub wanted: usize,
    /// Fewest acceptable (a pipeline shorter than this is refused).
    pub min: usize,
    /// Bytes each chosen node must have free: the most the block can hold.
    pub room: u64,
    pub exclude: HashSet<NodeIdx>,
}

/// Chooses an ordered pipeline for `req` among `cluster`.
pub fn choose_pipeline(cluster: &[Candidate], req: &Request) -> Result<Vec<NodeIdx>> {
    let floor = req.min.min(req.wanted).max(1);
    let live: Vec<&Candidate> = cluster
        .iter()
        .filter(|c| c.writable && !req.exclude.contains(&c.node))
        .collect();
    if live.len() < floor {
        return Err(Error::Unavailable(format!(
            "not enough live datanodes: {} usable, {} needed",
            live.len(),
            floor
        )));
    }
    let mut roomy: Vec<&Candidate> = live
        .into_iter()
        .filter(|c| c.available >= req.room)
        .collect();
    if roomy.len() < floor {
        return Err(Error::ResourceExhausted(format!(
            "not enough datanodes with {} bytes free: {} have room, {} needed",
            req.room,
            roomy.len(),
            floor
        )));
    }
    roomy.sort_by_key(|c| (c.load, Reverse(c.available), c.node));
    let want = req.wanted.min(roomy.len());
    let mut chosen: Vec<NodeIdx> = Vec::with_capacity(want);
    let mut zones: HashSet<&str> = HashSet::new();
    // First pass: the best node of each zone, best zones first.
    for c in &roomy {
        if chosen.len() == want {
            break;
        }
        if zones.insert(c.zone.as_str()) {
            chosen.push(c.node);
        }
    }
    // Second pass: fill up with the best remaining nodes.
    for c in &roomy {
        if chosen.len() == want {
            break;
        }
        if !chosen.contains(&c.node) {
            chosen.push(c.node);
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1 << 30;

    fn node(node: NodeIdx, zone: &str, available_gb: u64, load: u32) -> Candidate {
        Candidate {
            node,
            zone: zone.into(),
            writable: true,
            available: available_gb * GB,
            load,
        }
    }

    /// A node with 1 MiB free: room for a small file, not for a block.
    fn nearly_full(node: NodeIdx) -> Candidate {
        Candidate {
            available: 1 << 20,
            ..self::node(node, "", 0, 0)
        }
    }

    fn req(wanted: usize, exclude: &[NodeIdx]) -> Request {
        Request {
            wanted,
            min: 2,
            room: 64 << 20,
            exclude: exclude.iter().copied().collect(),
        }
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        Pipeline(Vec<NodeIdx>),
        Unavailable,
        Exhausted,
    }

    fn expect(cluster: &[Candidate], request: Request, want: Want) {
        let got = match choose_pipeline(cluster, &request) {
            Ok(p) => Want::Pipeline(p),
            Err(Error::Unavailable(_)) => Want::Unavailable,
            Err(Error::ResourceExhausted(_)) => Want::Exhausted,
            Err(e) => panic!("unexpected {e}"),
        };
        assert_eq!(got, want, "cluster {cluster:?} request {request:?}");
    }

    #[test]
    fn placement_table() {
        use Want::*;
        let stale = Candidate {
            writable: false,
            ..node(9, "a", 100, 0)
        };
        let cases: Vec<(Vec<Candidate>, Request, Want)> = vec![
            // Three zones: one node from each, most free space first.
            (
                vec![
                    node(0, "a", 10, 0),
                    node(1, "a", 20, 0),
                    node(2, "b", 5, 0),
                    node(3, "c", 1, 0),
                ],
                req(3, &[]),
                Pipeline(vec![1, 2, 3]),
            ),
            // One zone: nodes by free space.
            (
                vec![node(0, "", 10, 0), node(1, "", 30, 0), node(2, "", 20, 0)],
                req(3, &[]),
                Pipeline(vec![1, 2, 0]),
            ),
            // Load beats free space.
            (
                vec![node(0, "", 10, 0), node(1, "", 30, 5), node(2, "", 20, 0)],
                req(2, &[]),
                Pipeline(vec![2, 0]),
            ),
            // Two zones, three replicas: both zones, then the best remaining node.
            (
                vec![node(0, "a", 10, 0), node(1, "a", 9, 0), node(2, "b", 1, 0)],
                req(3, &[]),
                Pipeline(vec![0, 2, 1]),
            ),
            // Excluded and stale nodes are never chosen; fewer than wanted is fine
            // as long as min_replicas can be met.
            (
                vec![
                    node(0, "", 10, 0),
                    node(1, "", 10, 0),
                    node(2, "", 10, 0),
                    stale.clone(),
                ],
                req(3, &[0]),
                Pipeline(vec![1, 2]),
            ),
            // Too few live nodes: 503.
            (
                vec![node(0, "", 10, 0), stale.clone()],
                req(3, &[]),
                Unavailable,
            ),
            (vec![], req(1, &[]), Unavailable),
            // Live nodes but no room: 507.
            (
                vec![node(0, "", 0, 0), node(1, "", 0, 0), node(2, "", 10, 0)],
                req(3, &[]),
                Exhausted,
            ),
            // A small block fits where a whole one does not: 1 MiB free is room
            // enough for a 4 KiB file, not for a 64 MiB block.
            (
                vec![nearly_full(0), nearly_full(1)],
                Request {
                    room: 4096,
                    ..req(3, &[])
                },
                Pipeline(vec![0, 1]),
            ),
            (vec![nearly_full(0), nearly_full(1)], req(3, &[]), Exhausted),
            // Replication 1 needs one node.
            (
                vec![node(0, "", 1, 0), node(1, "", 2, 0)],
                Request {
                    min: 1,
                    ..req(1, &[])
                },
                Pipeline(vec![1]),
            ),
        ];
        for (cluster, request, want) in cases {
            expect(&cluster, request, want);
        }
    }
}

//! Which queue a block belongs in: the pure classification of a block by its replicas.

use std::collections::HashSet;

use crate::blockmap::NodeIdx;

/// Why a block needs work, most urgent first; also the index of its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// One live replica left: losing one more node loses data.
    OneReplica = 0,
    /// Fewer live replicas than wanted.
    Under = 1,
    /// Enough good replicas; corrupt ones are left to delete.
    Corrupt = 2,
    /// More replicas than wanted.
    Over = 3,
}

/// Classifies a block. `None`: nothing to do (or nothing possible: no replica left).
pub fn priority(live: usize, target: usize, corrupt: bool) -> Option<Priority> {
    if live == 0 {
        None
    } else if live < target && live == 1 {
        Some(Priority::OneReplica)
    } else if live < target {
        Some(Priority::Under)
    } else if corrupt {
        Some(Priority::Corrupt)
    } else if live > target {
        Some(Priority::Over)
    } else {
        None
    }
}

/// Nodes that are leaving, as replication sees them.
#[derive(Debug, Default, Clone)]
pub struct Leaving {
    /// Decommissioning: their replicas serve as sources but never count.
    pub retiring: HashSet<NodeIdx>,
    /// In maintenance: their replicas count while at least `min_replicas` other
    /// replicas remain; below that the block is brought back to `min_replicas`
    /// (not to its full target: the node is expected back).
    pub maintenance: HashSet<NodeIdx>,
    pub min_replicas: usize,
}

/// How a block stands: the replicas that count, how many it should have now, and the
/// priority that gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    pub live: usize,
    pub want: usize,
    pub priority: Option<Priority>,
}

/// The replicas of a block on `locs` that count (none on a retiring node; those on
/// nodes in maintenance only while `min_replicas` others remain), and the priority
/// they give it. A block held only by leaving nodes is as urgent as a last replica.
pub fn judge(locs: &[NodeIdx], target: usize, corrupt: bool, leaving: &Leaving) -> Judgement {
    let away = locs
        .iter()
        .filter(|n| leaving.maintenance.contains(n))
        .count();
    let others = locs
        .iter()
        .filter(|n| !leaving.retiring.contains(n) && !leaving.maintenance.contains(n))
        .count();
    let (live, want) = if away > 0 && others < leaving.min_replicas.min(target) {
        (others, leaving.min_replicas.min(target))
    } else {
        (others + away, target)
    };
    let priority = match priority(live, want, corrupt) {
        None if live == 0 && !locs.is_empty() => Some(Priority::OneReplica),
        p => p,
    };
    Judgement {
        live,
        want,
        priority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_table() {
        for (live, target, corrupt, want) in [
            (0, 3, false, None),
            (1, 3, false, Some(Priority::OneReplica)),
            (2, 3, false, Some(Priority::Under)),
            (2, 3, true, Some(Priority::Under)),
            (3, 3, true, Some(Priority::Corrupt)),
            (3, 3, false, None),
            (4, 3, false, Some(Priority::Over)),
            (1, 1, false, None),
        ] {
            assert_eq!(
                priority(live, target, corrupt),
                want,
                "{live}/{target} {corrupt}"
            );
        }
    }

    #[test]
    fn judge_table() {
        // (locations, target, retiring, in maintenance, (live, want, priority))
        let min = 2;
        type Case<'a> = (
            &'a [NodeIdx],
            usize,
            &'a [NodeIdx],
            &'a [NodeIdx],
            (usize, usize, Option<Priority>),
        );
        let cases: &[Case] = &[
            (&[], 3, &[], &[], (0, 3, None)),
            (&[0, 1, 2], 3, &[], &[], (3, 3, None)),
            (&[0, 1, 2], 3, &[2], &[], (2, 3, Some(Priority::Under))),
            (
                &[0, 1, 2],
                3,
                &[1, 2],
                &[],
                (1, 3, Some(Priority::OneReplica)),
            ),
            (&[0, 1], 3, &[0, 1], &[], (0, 3, Some(Priority::OneReplica))),
            (&[0, 1, 2, 3], 3, &[3], &[], (3, 3, None)),
            (&[0, 1, 2, 3], 2, &[3], &[], (3, 2, Some(Priority::Over))),
            (&[5], 1, &[7], &[], (1, 1, None)),
            // Maintenance: counted while min_replicas others remain.
            (&[0, 1, 2], 3, &[], &[2], (3, 3, None)),
            (&[0, 1], 3, &[], &[1], (1, 2, Some(Priority::OneReplica))),
            (&[0, 1, 2], 3, &[], &[2], (3, 3, None)),
            // Below min_replicas elsewhere: back up to min_replicas only.
            (
                &[0, 1, 2],
                3,
                &[],
                &[1, 2],
                (1, 2, Some(Priority::OneReplica)),
            ),
            (&[0, 1], 2, &[], &[1], (1, 2, Some(Priority::OneReplica))),
            (&[1], 2, &[], &[1], (0, 2, Some(Priority::OneReplica))),
            (&[0, 1, 3], 2, &[], &[1], (3, 2, Some(Priority::Over))),
            (&[1], 1, &[], &[1], (0, 1, Some(Priority::OneReplica))),
            // Retiring and maintenance together.
            (
                &[0, 1, 2],
                3,
                &[0],
                &[1],
                (1, 2, Some(Priority::OneReplica)),
            ),
        ];
        for (locs, target, retiring, maintenance, (live, want, priority)) in cases {
            let leaving = Leaving {
                retiring: retiring.iter().copied().collect(),
                maintenance: maintenance.iter().copied().collect(),
                min_replicas: min,
            };
            assert_eq!(
                judge(locs, *target, false, &leaving),
                Judgement {
                    live: *live,
                    want: *want,
                    priority: *priority
                },
                "{locs:?} want {target}, retiring {retiring:?}, maintenance {maintenance:?}"
            );
        }
    }
}

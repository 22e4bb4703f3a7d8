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

/// The replicas of a block on `locs` that count (those not on a `retiring` node), and
/// the priority they give it. A block held only by retiring nodes is as urgent as a
/// last replica: they are about to go.
pub fn judge(
    locs: &[NodeIdx],
    target: usize,
    corrupt: bool,
    retiring: &HashSet<NodeIdx>,
) -> (usize, Option<Priority>) {
    let live = locs.iter().filter(|n| !retiring.contains(n)).count();
    let p = match priority(live, target, corrupt) {
        None if live == 0 && !locs.is_empty() => Some(Priority::OneReplica),
        p => p,
    };
    (live, p)
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
        let check = |locs: &[NodeIdx], target, retiring: &[NodeIdx], expected| {
            let retiring = retiring.iter().copied().collect();
            assert_eq!(
                judge(locs, target, false, &retiring),
                expected,
                "{locs:?} want {target}, retiring {retiring:?}"
            );
        };
        check(&[], 3, &[], (0, None));
        check(&[0, 1, 2], 3, &[], (3, None));
        check(&[0, 1, 2], 3, &[2], (2, Some(Priority::Under)));
        check(&[0, 1, 2], 3, &[1, 2], (1, Some(Priority::OneReplica)));
        check(&[0, 1], 3, &[0, 1], (0, Some(Priority::OneReplica)));
        check(&[0, 1, 2, 3], 3, &[3], (3, None));
        check(&[0, 1, 2, 3], 2, &[3], (3, Some(Priority::Over)));
        check(&[5], 1, &[7], (1, None));
    }
}

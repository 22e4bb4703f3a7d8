//! What a delete command may name as its `below_generation`: the datanode's write
//! generation counter as it reported it before every upload still open began
//! (docs/decisions/0009-delete-generations.md).
//!
//! A datanode gives every replica it writes (a new block, a block it already held
//! written again, a copy) the next value of a counter that only grows, and reports the
//! counter with each registration and heartbeat. A report received at `t` says: every
//! write that completes after `t` gets a generation at least this high. An upload
//! writes only after it began, so a value reported before the oldest open upload
//! began is below every replica any open upload wrote; a delete naming it can never
//! remove one of them, and the commit that acknowledged them needs no fence.

use std::collections::VecDeque;

/// Reports kept per node at most; the oldest is always kept (the safest fallback).
const MAX_KEPT: usize = 4096;

/// One datanode's reported write generations, oldest first.
#[derive(Debug, Default, Clone)]
pub struct GenerationLog {
    seen: VecDeque<(u64, u64)>,
}

impl GenerationLog {
    /// The node reported `generation` at `now_ms`. A value lower than one it reported
    /// before (a wiped disk under the same id) starts the log again.
    pub fn record(&mut self, now_ms: u64, generation: u64) {
        if self.seen.back().is_some_and(|(_, g)| *g > generation) {
            self.seen.clear();
        }
        self.seen.push_back((now_ms, generation));
        if self.seen.len() > MAX_KEPT {
            // Keep the oldest: dropping a middle one only makes the choice coarser.
            self.seen.remove(1);
        }
    }

    /// The value a delete sent now may name: the newest reported strictly before
    /// `oldest_upload_ms` (the oldest open upload's start), or the newest of all
    /// without one. `None`: nothing safe to name yet (no delete goes out).
    pub fn below(&self, oldest_upload_ms: Option<u64>) -> Option<u64> {
        match oldest_upload_ms {
            None => self.seen.back().map(|(_, g)| *g),
            Some(begin) => self
                .seen
                .iter()
                .rev()
                .find(|(t, _)| *t < begin)
                .map(|(_, g)| *g),
        }
    }

    /// Forgets reports no delete can name any more: every one older than the newest
    /// that precedes `oldest_upload_ms` (or than the newest of all).
    pub fn prune(&mut self, oldest_upload_ms: Option<u64>) {
        let keep_from = match oldest_upload_ms {
            None => self.seen.len().saturating_sub(1),
            Some(begin) => self.seen.iter().rposition(|(t, _)| *t < begin).unwrap_or(0),
        };
        self.seen.drain(..keep_from);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(reports: &[(u64, u64)]) -> GenerationLog {
        let mut l = GenerationLog::default();
        for (t, g) in reports {
            l.record(*t, *g);
        }
        l
    }

    #[test]
    fn below_table() {
        // Reports at 1 s (gen 10), 4 s (gen 20), 7 s (gen 35); the oldest open upload
        // began at `oldest`: what may a delete name?
        let reports = [(1000, 10), (4000, 20), (7000, 35)];
        for (what, oldest, below) in [
            ("no upload open", None, Some(35)),
            ("an upload began after every report", Some(9000), Some(35)),
            ("an upload began between reports", Some(5000), Some(20)),
            (
                "an upload began at a report's instant",
                Some(4000),
                Some(10),
            ),
            ("an upload older than every report", Some(500), None),
        ] {
            assert_eq!(log(&reports).below(oldest), below, "{what}");
        }
        assert_eq!(
            GenerationLog::default().below(None),
            None,
            "nothing reported"
        );
    }

    #[test]
    fn prune_keeps_what_a_delete_may_still_name() {
        let mut l = log(&[(1000, 10), (4000, 20), (7000, 35)]);
        l.prune(Some(5000));
        assert_eq!(l.len(), 2);
        assert_eq!(l.below(Some(5000)), Some(20));
        l.prune(None);
        assert_eq!(l.len(), 1);
        assert_eq!(l.below(None), Some(35));
        // An upload older than every report keeps them all.
        let mut l = log(&[(1000, 10), (4000, 20)]);
        l.prune(Some(500));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn a_counter_that_went_back_starts_again() {
        // A wiped disk under the same id: its earlier values name nothing now.
        let l = log(&[(1000, 1 << 41), (4000, (1 << 40) + 3)]);
        assert_eq!(l.below(Some(2000)), None);
        assert_eq!(l.below(None), Some((1 << 40) + 3));
    }

    #[test]
    fn the_oldest_report_survives_the_cap() {
        let mut l = GenerationLog::default();
        for i in 0..(MAX_KEPT as u64 + 10) {
            l.record(1000 + i, 10 + i);
        }
        assert_eq!(l.len(), MAX_KEPT);
        assert_eq!(l.below(Some(1001)), Some(10));
    }
}

//! The store's change log: every block added, removed or found corrupt, queued for the
//! namenode's incremental block reports.

use std::sync::Mutex;

use kdfs_core::BlockId;
use tokio::sync::Notify;

/// Events kept for the incremental reporter before the log declares an overflow (the
/// reporter then sends a full report instead): bounds memory while a namenode is down.
pub const MAX_PENDING_EVENTS: usize = 1_000_000;

/// A change of the store's content, for the namenode's incremental block reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Written (or written again), or kept by a delete: held at `generation`.
    Added {
        id: BlockId,
        length: u64,
        generation: u64,
    },
    Removed(BlockId),
    Corrupt(BlockId),
}

/// Events since the reporter last drained; `overflowed` means some were dropped and only
/// a full report restores the namenode's view.
#[derive(Debug, Default)]
pub struct Drained {
    pub events: Vec<Event>,
    pub overflowed: bool,
}

/// A single-consumer, bounded log of [`Event`]s with an async wake-up.
#[derive(Debug, Default)]
pub struct EventLog {
    queue: Mutex<Drained>,
    notify: Notify,
}

impl EventLog {
    pub(crate) fn push(&self, e: Event) {
        {
            let mut q = self.queue.lock().expect("event log lock poisoned");
            if q.events.len() >= MAX_PENDING_EVENTS {
                q.overflowed = true;
            } else {
                q.events.push(e);
            }
        }
        self.notify.notify_one();
    }

    /// Takes every pending event.
    pub fn drain(&self) -> Drained {
        std::mem::take(&mut *self.queue.lock().expect("event log lock poisoned"))
    }

    /// Puts events back at the front (a report that failed is retried later).
    pub fn requeue(&self, mut d: Drained) {
        let mut q = self.queue.lock().expect("event log lock poisoned");
        d.events.append(&mut q.events);
        if d.events.len() > MAX_PENDING_EVENTS {
            d.events.truncate(MAX_PENDING_EVENTS);
            d.overflowed = true;
        }
        q.overflowed |= d.overflowed;
        q.events = d.events;
    }

    /// Waits until an event was pushed since the last wait (cancellation-safe).
    pub async fn wait(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_log_requeues_in_order() {
        let log = EventLog::default();
        let a = Event::Removed(BlockId::of(b"a"));
        let b = Event::Removed(BlockId::of(b"b"));
        log.push(a);
        let d = log.drain();
        log.push(b);
        log.requeue(d);
        assert_eq!(log.drain().events, vec![a, b]);
    }
}

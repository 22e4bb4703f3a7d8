//! The client-wide upload budget: bytes that all uploads together may hold until their
//! pipelines acknowledge them ([`crate::ClientOptions::upload_budget`]).
//!
//! Bytes are counted **as they arrive**, never before: a [`Claim`] (one per block, or
//! per small upload read whole) grows by each chunk it receives and gives everything
//! back when dropped. A client that announces a large body, sends a little and goes
//! silent therefore holds only what it sent, and cannot freeze other uploads by
//! reserving room it never fills (issue 24, finding 9).
//!
//! Growing reservations can deadlock: when the budget is spent by blocks that are each
//! half full, none can finish. So the **oldest** live claim may always grow, past the
//! budget if need be: some block always finishes and gives its bytes back. The budget
//! is thus exceeded by at most what one claim holds (one block), and a claim whose
//! client went silent is ended by the gateway's body idle timeout.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The byte budget shared by a client's uploads.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    total: u64,
    state: Mutex<State>,
    /// Woken whenever bytes are given back or the oldest claim changes.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes held by every claim (may exceed `total` by the oldest claim's overdraft).
    used: u64,
    /// Live claims by age: the first one may always grow.
    live: BTreeSet<u64>,
    next_id: u64,
}

impl ByteBudget {
    pub(crate) fn new(total: u64) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            state: Mutex::default(),
            changed: Notify::new(),
        })
    }

    /// A new claim, holding nothing yet, younger than every live one.
    pub(crate) fn claim(self: &Arc<Self>) -> Claim {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.live.insert(id);
        Claim {
            budget: Arc::clone(self),
            id,
            held: 0,
        }
    }

    /// Bytes not held by any claim.
    pub(crate) fn available(&self) -> u64 {
        self.total.saturating_sub(self.lock().used)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Bytes one block (or one small upload) holds from the [`ByteBudget`]; given back
/// when dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    budget: Arc<ByteBudget>,
    id: u64,
    held: u64,
}

impl Claim {
    /// Adds `bytes` that just arrived, waiting while the budget has no room for them
    /// (unless this is the oldest claim). Cancellation-safe: nothing is taken until it
    /// returns.
    pub(crate) async fn grow(&mut self, bytes: u64) {
        loop {
            let notified = self.budget.changed.notified();
            tokio::pin!(notified);
            {
                let mut st = self.budget.lock();
                let oldest = st.live.first() == Some(&self.id);
                if oldest || st.used + bytes <= self.budget.total {
                    st.used += bytes;
                    self.held += bytes;
                    return;
                }
                // Registered before the lock is let go, so no wake-up is lost.
                notified.as_mut().enable();
            }
            metrics::counter!("kdfs_gateway_upload_budget_waits_total").increment(1);
            notified.await;
        }
    }

    /// Bytes this claim holds.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut st = self.budget.lock();
        st.used -= self.held;
        st.live.remove(&self.id);
        drop(st);
        self.budget.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether `grow` completes at once.
    async fn grows_now(c: &mut Claim, bytes: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(50), c.grow(bytes))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn silent_claims_hold_only_what_arrived() {
        let b = ByteBudget::new(100);
        // Eight uploads announce far more than the budget, send 1 byte each, go silent.
        let mut silent: Vec<Claim> = (0..8).map(|_| b.claim()).collect();
        for c in &mut silent {
            assert!(grows_now(c, 1).await);
        }
        assert_eq!(b.available(), 92);
        let mut other = b.claim();
        assert!(
            grows_now(&mut other, 90).await,
            "another upload is not held up"
        );
        drop(silent);
        drop(other);
        assert_eq!(b.available(), 100);
    }

    #[tokio::test]
    async fn the_oldest_claim_always_grows_so_half_full_blocks_cannot_deadlock() {
        let b = ByteBudget::new(100);
        let mut old = b.claim();
        let mut young = b.claim();
        assert!(grows_now(&mut old, 50).await);
        assert!(grows_now(&mut young, 50).await);
        // The budget is spent: the young claim waits, the oldest goes over.
        assert!(!grows_now(&mut young, 10).await);
        assert!(grows_now(&mut old, 50).await);
        assert_eq!(b.available(), 0);
        // The oldest block finishes: the young one is now the oldest and room is back.
        let waiting = tokio::spawn(async move {
            young.grow(10).await;
            young
        });
        drop(old);
        let young = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting claim is woken")
            .unwrap();
        assert_eq!(young.held(), 60);
        assert_eq!(b.available(), 40);
    }
}

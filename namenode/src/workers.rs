//! The namenode's background workers, each a loop that calls one tick of the
//! namesystem ([`crate::namesystem`]'s `ticks.rs`) on its own cadence until its token is
//! cancelled. [`crate::run`] starts them under [`crate::supervisor::spawn_worker`]:
//! - `liveness`: stale and dead datanodes, and safe mode while it lasts;
//! - `replication`: copies and trims, on a timer and whenever kicked (a node died,
//!   safe mode ended), with a full rescan every [`RESCAN_INTERVAL`];
//! - `gc`: expired leases, orphans and tombstones, every [`GC_TICK`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::namesystem::NameSystem;

/// Longest pause of the liveness and replication workers.
pub const MAX_TICK: Duration = Duration::from_secs(1);
/// Shortest, so a tiny heartbeat interval in tests cannot spin.
pub const MIN_TICK: Duration = Duration::from_millis(10);
/// How often every block is rechecked for its replica count, behind the events.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(300);
/// How often the gc worker runs (leases expire with this precision).
pub const GC_TICK: Duration = Duration::from_secs(1);
/// Tombstones are purged every this many gc ticks (a scan of the tombstone table;
/// retention is counted in days, so every ten minutes is plenty).
pub const PURGE_EVERY_TICKS: u64 = 600;

/// The liveness and replication workers' pause: half a heartbeat, within bounds.
pub fn tick_for(heartbeat_interval: Duration) -> Duration {
    (heartbeat_interval / 2).clamp(MIN_TICK, MAX_TICK)
}

/// Runs `f` off the runtime (it takes locks and scans the block map); a panic in it
/// is raised again here so the supervisor sees it. `None` if the runtime is shutting
/// down and `f` never ran.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

pub async fn liveness(
    ns: Arc<NameSystem>,
    tick: Duration,
    kick: Arc<Notify>,
    token: CancellationToken,
) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = interval.tick() => {}
        }
        let was_safe = ns.in_safe_mode();
        if ns.liveness_tick() {
            kick.notify_one();
        }
        if was_safe {
            let ns2 = ns.clone();
            if !blocking(move || ns2.safe_mode_tick()).await.unwrap_or(true) {
                kick.notify_one();
            }
        }
    }
}

pub async fn replication(
    ns: Arc<NameSystem>,
    tick: Duration,
    kick: Arc<Notify>,
    token: CancellationToken,
) {
    let mut last_rescan = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
            _ = kick.notified() => {}
        }
        let ns2 = ns.clone();
        let rescan = last_rescan.elapsed() >= RESCAN_INTERVAL;
        if rescan {
            last_rescan = tokio::time::Instant::now();
        }
        blocking(move || {
            if rescan && !ns2.in_safe_mode() {
                ns2.rescan();
            }
            ns2.replication_tick()
        })
        .await;
    }
}

pub async fn gc(ns: Arc<NameSystem>, token: CancellationToken) {
    let mut interval = tokio::time::interval(GC_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = interval.tick() => {}
        }
        n += 1;
        if let Err(e) = ns.gc_tick(n % PURGE_EVERY_TICKS == 1).await {
            tracing::warn!(error = %e, "gc round failed");
        }
    }
}

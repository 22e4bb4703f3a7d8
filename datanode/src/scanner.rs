//! The block scanner: a background worker that re-reads every stored block at a bounded
//! rate and checks its full SHA-256, so bit rot is found before a reader needs the
//! replica.
//!
//! A pass starts at most once per `interval`; the time the last pass finished is kept in
//! `<data>/scanner.state` so a datanode restarted every few hours still scans on schedule
//! instead of starting over (or never finishing). Reads go through the store's verified
//! reader, so a corrupt block is quarantined and its [`crate::store::Event::Corrupt`]
//! reaches the namenode through the incremental reports like any other change.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::version::now_ms;

const STATE_FILE: &str = "scanner.state";

/// Scanner settings.
#[derive(Debug, Clone, Copy)]
pub struct ScannerConfig {
    /// A full pass starts at most this often.
    pub interval: Duration,
    /// Bytes per second the scanner may read.
    pub rate: u64,
}

/// Progress counters, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct ScannerStats {
    pub passes_completed: AtomicU64,
    pub blocks_scanned: AtomicU64,
    pub bytes_scanned: AtomicU64,
    pub corrupt_found: AtomicU64,
    /// Blocks verified in the current pass, and the pass's size.
    pub pass_done: AtomicU64,
    pub pass_total: AtomicU64,
}

/// Paces reads to `rate` bytes per second (a token bucket with one second of burst).
#[derive(Debug)]
struct Pacer {
    rate: u64,
    start: Instant,
    bytes: u64,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// Accounts `n` bytes and returns how long to sleep to stay within the rate.
    fn account(&mut self, n: u64) -> Duration {
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        due.saturating_sub(self.start.elapsed())
    }
}

/// Runs passes until `cancel`. Blocking I/O happens on `spawn_blocking`, one block piece
/// at a time, with the pacing sleeps in async code.
pub async fn run(
    store: Store,
    cfg: ScannerConfig,
    stats: Arc<ScannerStats>,
    cancel: CancellationToken,
) -> Result<()> {
    let state = store.root().join(STATE_FILE);
    loop {
        let last = std::fs::read_to_string(&state)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let wait = match last {
            Some(ms) => {
                let next = ms.saturating_add(cfg.interval.as_millis() as u64);
                Duration::from_millis(next.saturating_sub(now_ms()))
            }
            // A fresh store has nothing old to verify: first pass one interval from now.
            None => {
                let _ = std::fs::write(&state, now_ms().to_string());
                cfg.interval
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        if !pass(&store, cfg.rate, &stats, &cancel).await? {
            return Ok(());
        }
        stats.passes_completed.fetch_add(1, Ordering::Relaxed);
        let _ = std::fs::write(&state, now_ms().to_string());
    }
}

/// One full pass; false if it was cancelled.
#[tracing::instrument(name = "scanner_pass", skip_all)]
async fn pass(
    store: &Store,
    rate: u64,
    stats: &ScannerStats,
    cancel: &CancellationToken,
) -> Result<bool> {
    let mut blocks = store.snapshot();
    // A stable order spreads the work evenly over the id space pass after pass.
    blocks.sort_unstable_by_key(|(id, _)| *id);
    stats
        .pass_total
        .store(blocks.len() as u64, Ordering::Relaxed);
    stats.pass_done.store(0, Ordering::Relaxed);
    tracing::info!(blocks = blocks.len(), rate, "block scanner pass started");
    let started = Instant::now();
    let mut pacer = Pacer::new(rate);
    let mut corrupt = 0u64;
    for (id, _) in blocks {
        let s = store.clone();
        let reader = tokio::task::spawn_blocking(move || s.read_range(&id, 0, 0))
            .await
            .map_err(|e| Error::io("scanner task", std::io::Error::other(e)))?;
        let mut reader = match reader {
            Ok(r) => Some(r),
            Err(Error::NotFound(_)) => None, // Deleted since the snapshot.
            Err(Error::Corrupt { .. }) => {
                corrupt += 1;
                stats.corrupt_found.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                // An I/O problem (not corruption) is logged; the pass goes on.
                tracing::warn!(block = %id, error = %e, "scanner could not open block");
                None
            }
        };
        while let Some(mut r) = reader.take() {
            let (r, piece) = tokio::task::spawn_blocking(move || {
                let p = r.next();
                (r, p)
            })
            .await
            .map_err(|e| Error::io("scanner task", std::io::Error::other(e)))?;
            match piece {
                None => break,
                Some(Ok(p)) => {
                    stats
                        .bytes_scanned
                        .fetch_add(p.data.len() as u64, Ordering::Relaxed);
                    let pause = pacer.account(p.data.len() as u64);
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(false),
                        _ = tokio::time::sleep(pause) => {}
                    }
                    reader = Some(r);
                }
                Some(Err(Error::Corrupt { .. })) => {
                    corrupt += 1;
                    stats.corrupt_found.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(Error::NotFound(_))) => {}
                Some(Err(e)) => {
                    tracing::warn!(block = %id, error = %e, "scanner could not read block");
                }
            }
        }
        stats.blocks_scanned.fetch_add(1, Ordering::Relaxed);
        stats.pass_done.fetch_add(1, Ordering::Relaxed);
        if cancel.is_cancelled() {
            return Ok(false);
        }
    }
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        corrupt,
        "block scanner pass finished"
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_enforces_rate() {
        let mut p = Pacer::new(1000);
        let d = p.account(2000);
        assert!(d > Duration::from_millis(1900) && d <= Duration::from_secs(2));
    }
}

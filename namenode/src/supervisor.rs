//! One supervisor for the namenode's background workers: a worker is a named loop
//! that runs until its token is cancelled; if it panics, the panic is logged as an
//! error and the loop is started again after a short pause, so a bug in one tick never
//! silently stops healing, liveness or garbage collection.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Pause before a panicked worker starts again, so a tick that always panics logs
/// once a second instead of spinning.
pub const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// Spawns the worker `name` on `set`: `start()` builds its loop, which should return
/// once `token` is cancelled. A loop that panics is logged at ERROR, counted in
/// `kdfs_namenode_worker_restarts_total{worker}` and started again (with fresh state
/// from `start()`) after [`RESTART_BACKOFF`]; one that returns ends the worker.
pub fn spawn_worker<F, Fut>(
    set: &mut JoinSet<()>,
    name: &'static str,
    token: CancellationToken,
    mut start: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    set.spawn(async move {
        loop {
            // The loop's state is rebuilt by `start` on a restart, so nothing it
            // left half-done is observed again.
            match AssertUnwindSafe(start()).catch_unwind().await {
                Ok(()) => return,
                Err(panic) => {
                    tracing::error!(
                        worker = name,
                        panic = panic_message(&panic),
                        "worker panicked; restarting it"
                    );
                    metrics::counter!("kdfs_namenode_worker_restarts_total", "worker" => name)
                        .increment(1);
                }
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(RESTART_BACKOFF) => {}
            }
        }
    });
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_worker_is_restarted_until_cancelled() {
        let starts = Arc::new(AtomicU32::new(0));
        let token = CancellationToken::new();
        let mut set = JoinSet::new();
        let (s, t) = (starts.clone(), token.clone());
        spawn_worker(&mut set, "flaky", token.clone(), move || {
            let (starts, token) = (s.clone(), t.clone());
            async move {
                // The first two runs panic in their first tick; the third runs until
                // cancelled, as a healthy worker does.
                if starts.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("tick failed");
                }
                token.cancelled().await;
            }
        });
        tokio::time::sleep(RESTART_BACKOFF * 3).await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "restarted after each panic"
        );
        token.cancel();
        set.join_next()
            .await
            .expect("one worker")
            .expect("the supervisor itself does not panic");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_returns_is_not_restarted() {
        let starts = Arc::new(AtomicU32::new(0));
        let mut set = JoinSet::new();
        let s = starts.clone();
        spawn_worker(&mut set, "once", CancellationToken::new(), move || {
            let starts = s.clone();
            async move {
                starts.fetch_add(1, Ordering::SeqCst);
            }
        });
        set.join_next().await.expect("one worker").unwrap();
        tokio::time::sleep(RESTART_BACKOFF * 3).await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let literal: Box<dyn std::any::Any + Send> = Box::new("boom");
        let formatted: Box<dyn std::any::Any + Send> = Box::new(format!("boom {}", 2));
        let other: Box<dyn std::any::Any + Send> = Box::new(7u8);
        assert_eq!(panic_message(&*literal), "boom");
        assert_eq!(panic_message(&*formatted), "boom 2");
        assert_eq!(panic_message(&*other), "(not a string)");
    }
}

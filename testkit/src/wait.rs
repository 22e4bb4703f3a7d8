//! Waiting on a condition instead of sleeping and hoping: poll it until it holds or a
//! deadline passes, then fail the test naming what was awaited.
//!
//! Each returns how long the condition took, so a test can also bound a latency (e.g.
//! how quickly a dead node is noticed). The condition is checked once more at the
//! deadline, so a deadline shorter than the poll period still gets a last look.

use std::future::Future;
use std::time::{Duration, Instant};

/// Poll period of the async waits: their conditions are cheap in-process checks
/// (a field, a directory listing, one local rpc).
pub const ASYNC_POLL: Duration = Duration::from_millis(20);
/// Poll period of [`wait_until_blocking`]: its conditions usually ask a child process
/// over HTTP, and polling faster would take CPU from the processes under test.
pub const BLOCKING_POLL: Duration = Duration::from_millis(100);

/// Polls the async `cond` every [`ASYNC_POLL`] until it holds or `within` passes;
/// panics naming `what` on timeout. Returns how long it took.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        match next_pause(start, within, ASYNC_POLL) {
            Some(pause) => tokio::time::sleep(pause).await,
            None => timed_out(within, what),
        }
    }
}

/// [`wait_until`] for a condition that needs no `.await`.
pub async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    wait_until(what, within, || std::future::ready(cond())).await
}

/// Polls `cond` every [`BLOCKING_POLL`], sleeping the thread in between, until it holds
/// or `within` passes; panics naming `what` on timeout. Returns how long it took.
pub fn wait_until_blocking(
    what: &str,
    within: Duration,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        match next_pause(start, within, BLOCKING_POLL) {
            Some(pause) => std::thread::sleep(pause),
            None => timed_out(within, what),
        }
    }
}

/// How long to sleep before the next check: a poll period, cut short at the deadline so
/// the last check falls on it; `None` once the deadline has passed.
fn next_pause(start: Instant, within: Duration, poll: Duration) -> Option<Duration> {
    let left = within
        .checked_sub(start.elapsed())
        .filter(|d| !d.is_zero())?;
    Some(left.min(poll))
}

fn timed_out(within: Duration, what: &str) -> ! {
    panic!("timed out after {within:?} waiting for: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    #[should_panic(expected = "waiting for: the impossible")]
    fn blocking_names_what_it_waited_for() {
        wait_until_blocking("the impossible", Duration::from_millis(250), || false);
    }

    #[test]
    fn blocking_returns_once_the_condition_holds() {
        let mut n = 0;
        let took = wait_until_blocking("three polls", Duration::from_secs(5), || {
            n += 1;
            n >= 3
        });
        assert_eq!(n, 3);
        assert!(took >= 2 * BLOCKING_POLL, "{took:?}");
    }

    #[test]
    fn blocking_checks_once_more_at_a_short_deadline() {
        let within = Duration::from_millis(10);
        let start = Instant::now();
        let mut n = 0;
        let took = wait_until_blocking("the last look", within, || {
            n += 1;
            start.elapsed() >= within
        });
        assert_eq!(n, 2, "checked first and then at the deadline");
        assert!(took < BLOCKING_POLL, "did not sleep a whole poll: {took:?}");
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50ms waiting for: never")]
    async fn async_names_what_it_waited_for() {
        wait_until("never", Duration::from_millis(50), || async { false }).await;
    }

    #[tokio::test]
    async fn async_returns_once_the_condition_holds() {
        let n = Cell::new(0);
        let took = wait_until("three polls", Duration::from_secs(5), || {
            n.set(n.get() + 1);
            let done = n.get() >= 3;
            async move { done }
        })
        .await;
        assert_eq!(n.get(), 3);
        assert!(took >= 2 * ASYNC_POLL, "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    #[tokio::test]
    async fn wait_for_takes_a_plain_closure() {
        let mut n = 0;
        wait_for("two polls", Duration::from_secs(5), || {
            n += 1;
            n == 2
        })
        .await;
        assert_eq!(n, 2);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for: a false flag")]
    async fn wait_for_names_what_it_waited_for() {
        wait_for("a false flag", Duration::from_millis(30), || false).await;
    }

    #[test]
    fn the_pause_is_cut_at_the_deadline() {
        let start = Instant::now();
        let poll = Duration::from_millis(100);
        let pause = next_pause(start, Duration::from_secs(10), poll).unwrap();
        assert_eq!(pause, poll);
        let pause = next_pause(start, Duration::from_millis(30), poll).unwrap();
        assert!(pause <= Duration::from_millis(30), "{pause:?}");
        assert_eq!(next_pause(start, Duration::ZERO, poll), None);
    }
}

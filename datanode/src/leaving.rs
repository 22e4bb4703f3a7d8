//! What a datanode does when told to stop (SIGTERM), before it stops serving: it asks
//! the namenode how it is leaving (`Leaving`, DESIGN.md §5).
//!
//! - A restart (a rollout, an eviction, a drain of its Kubernetes node, or SIGTERM
//!   outside Kubernetes): the namenode puts it in maintenance and it stops at once;
//!   nothing of it is copied.
//! - Leaving for good (its pod scaled away, or an operator's decommission): it keeps
//!   serving reads and the copies the namenode hands out on its heartbeats until the
//!   namenode says every block it holds is at full replication elsewhere, or until
//!   `--drain-timeout`.
//! - The namenode has not yet judged its pod: it asks again for up to [`UNDECIDED_WAIT`].
//! - The namenode cannot be reached: it stops at once, as before (silence then kills
//!   it after `--dead-after`, and its blocks are healed).

use std::time::Duration;

use kdfs_proto::namenodes::{Retry, namenode_client};
use kdfs_proto::pb::{LeavingRequest, LeavingVerdict};
use tokio::time::Instant;

use crate::link::Link;

/// How long the namenode may take to see why this pod stops.
pub const UNDECIDED_WAIT: Duration = Duration::from_secs(15);
/// Between two questions while draining or undecided.
pub const POLL: Duration = Duration::from_secs(1);
/// One question's deadline: a namenode that does not answer promptly is treated as
/// unreachable (a shutdown must not hang on it).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// A draining node logs its progress this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How the leave ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In maintenance: a restart is expected.
    Restart,
    /// Decommissioned, and every block is at full replication elsewhere.
    Drained,
    /// Decommissioning, but `--drain-timeout` passed first (this many blocks left).
    DrainTimedOut(u64),
    /// The namenode never said (it did not see the pod's termination in time).
    Undecided,
    /// The namenode could not be asked.
    Unreachable(String),
}

/// Asks the namenode how to leave and, when draining, waits (serving) until drained or
/// `drain_timeout`.
pub async fn leave(link: &Link, drain_timeout: Duration) -> Outcome {
    let start = Instant::now();
    let mut logged = start;
    let outcome = loop {
        let asked = link.namenodes().call(Retry::Idempotent, |c| async move {
            let mut req = tonic::Request::new(LeavingRequest {
                datanode_id: link.node_id().to_string(),
            });
            req.set_timeout(CALL_TIMEOUT);
            namenode_client(c).leaving(req).await
        });
        let reply = match tokio::time::timeout(CALL_TIMEOUT, asked).await {
            Ok(Ok(r)) => r,
            Ok(Err(status)) => break Outcome::Unreachable(status.message().to_owned()),
            Err(_) => break Outcome::Unreachable("no answer in time".to_owned()),
        };
        let waited = start.elapsed();
        match LeavingVerdict::try_from(reply.verdict) {
            Ok(LeavingVerdict::Restart) => break Outcome::Restart,
            Ok(LeavingVerdict::Drain) if reply.drained => break Outcome::Drained,
            Ok(LeavingVerdict::Drain) if waited >= drain_timeout => {
                break Outcome::DrainTimedOut(reply.blocks_left);
            }
            Ok(LeavingVerdict::Drain) if logged.elapsed() >= PROGRESS_EVERY || logged == start => {
                logged = Instant::now();
                tracing::info!(
                    blocks_left = reply.blocks_left,
                    waited_s = waited.as_secs(),
                    "decommissioning: serving until every block is at full replication elsewhere"
                );
            }
            Ok(LeavingVerdict::Drain) => {}
            _ if waited >= UNDECIDED_WAIT => break Outcome::Undecided,
            _ => {}
        }
        tokio::time::sleep(POLL).await;
    };
    match &outcome {
        Outcome::Restart => tracing::info!("in maintenance: stopping now (a restart is expected)"),
        Outcome::Drained => tracing::info!(
            took_s = start.elapsed().as_secs(),
            "decommissioned: every block is at full replication elsewhere; stopping"
        ),
        Outcome::DrainTimedOut(left) => tracing::warn!(
            blocks_left = left,
            "--drain-timeout passed before the drain finished: stopping; the namenode heals the rest"
        ),
        Outcome::Undecided => {
            tracing::warn!("the namenode did not say how this datanode leaves: stopping")
        }
        Outcome::Unreachable(e) => {
            tracing::warn!(error = %e, "cannot ask the namenode how to leave: stopping")
        }
    }
    outcome
}

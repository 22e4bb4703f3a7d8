//! Block access tokens at the datanode: every write, read and transfer is checked
//! against a grant the namenode signed (kdfs_proto::block_token; docs/security.md,
//! "Block access tokens") before it reserves, reads, writes or dials anything. A
//! refusal is counted, logged on the audit target, and answered PERMISSION_DENIED
//! (UNAVAILABLE while this node has no keys yet).

use std::sync::atomic::Ordering;

use kdfs_core::telemetry::AUDIT_TARGET;
use kdfs_proto::block_token::{self, Grant, TokenError};
use kdfs_proto::pb;
use tonic::Status;

use super::Node;

impl Node {
    /// The grant `token` carries, once `check` (given the grant) accepts the request;
    /// `action` names the rpc in the refusal's audit line.
    pub(super) fn authorize(
        &self,
        action: &'static str,
        token: Option<&pb::BlockToken>,
        check: impl FnOnce(&Grant) -> Result<(), TokenError>,
    ) -> Result<Grant, Status> {
        self.keys
            .verify(token, block_token::now_ms())
            .and_then(|g| check(&g).map(|()| g))
            .map_err(|e| self.refused(action, e))
    }

    /// Counts and logs a refused token, and says why to the caller.
    pub(super) fn refused(&self, action: &'static str, e: TokenError) -> Status {
        self.metrics.token_refusals.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            target: AUDIT_TARGET,
            action,
            result = "refused",
            reason = %e,
            "block access token refused: {e}"
        );
        e.into()
    }
}

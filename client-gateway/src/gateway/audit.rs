//! The gateway's audit log: one structured INFO line on the target
//! [`AUDIT_TARGET`] per upload, delete and refused
//! authentication, so an operator can route it apart from the other logs
//! (`RUST_LOG=info,kdfs::audit=info`, or a filter on `target` in JSON logs).
//!
//! Fields: `who` (the [`Who`](crate::gateway::auth::Who) of an accepted request, `none` or
//! `bad-token` for a refused one, `limited` for a client over the failure limit),
//! `client` (the peer's IP address), `action` (`upload`, `delete`, `decommission`,
//! `recommission` or `auth`), `wanted` (what a refused request tried), `file` (the
//! file's hash when known), `datanode` (the node a decommission names), `size` (bytes,
//! when known), `status` (the HTTP status) and `result` (`ok`, or the status's reason in
//! kebab case such as `service-unavailable`, or `aborted` when the client went away
//! before the answer). A token itself is never logged.
//!
//! The line is written by the guard middleware after the handler answered; a handler
//! adds what only it knows (the hash and size of an upload) as an [`Audited`] response
//! extension. An [`AuditGuard`] writes the `aborted` line if the request's future is
//! dropped first (a client disconnecting mid-upload).

use std::fmt;
use std::net::IpAddr;

use axum::http::StatusCode;
use kdfs_core::telemetry::AUDIT_TARGET;
use kdfs_core::{DatanodeId, FileId};
use tracing::info;

/// What an audited request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Upload,
    Delete,
    /// `POST /datanodes/{id}/decommission`.
    Decommission,
    /// `DELETE /datanodes/{id}/decommission`: its cancellation.
    Recommission,
    /// A read under `--auth-reads` (audited only when refused).
    Read,
    /// A refused authentication (the request was not run).
    Auth,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Upload => "upload",
            Action::Delete => "delete",
            Action::Decommission => "decommission",
            Action::Recommission => "recommission",
            Action::Read => "read",
            Action::Auth => "auth",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a handler tells the audit line about the file it handled (a response extension).
#[derive(Debug, Clone, Copy, Default)]
pub struct Audited {
    pub file: Option<FileId>,
    pub size: Option<u64>,
}

/// One audit line, written once: by [`AuditGuard::finish`], or as `aborted` on drop.
#[derive(Debug)]
pub struct AuditGuard {
    who: String,
    client: IpAddr,
    action: Action,
    wanted: Option<Action>,
    file: Option<FileId>,
    /// The datanode a (de)commission names.
    datanode: Option<DatanodeId>,
    /// The bucket (and key) a namespace route names, as sent.
    object: Option<String>,
    done: bool,
}

impl AuditGuard {
    /// An accepted request by `who` from `client`; `file` when the route names one.
    pub fn new(
        who: impl fmt::Display,
        client: IpAddr,
        action: Action,
        file: Option<FileId>,
    ) -> Self {
        Self {
            who: who.to_string(),
            client,
            action,
            wanted: None,
            file,
            datanode: None,
            object: None,
            done: false,
        }
    }

    /// Names the datanode the request is about.
    pub fn on_datanode(mut self, datanode: Option<DatanodeId>) -> Self {
        self.datanode = datanode;
        self
    }

    /// Names the bucket, or bucket and key, the request is about.
    pub fn on_object(mut self, object: Option<String>) -> Self {
        self.object = object;
        self
    }

    /// A refused authentication of a request that wanted `wanted`.
    pub fn refused(who: &str, client: IpAddr, wanted: Action, file: Option<FileId>) -> Self {
        let mut guard = Self::new(who, client, Action::Auth, file);
        guard.wanted = Some(wanted);
        guard
    }

    /// Writes the line for an answer with `status`, completed by the handler's `audited`.
    pub fn finish(mut self, status: StatusCode, audited: Option<&Audited>) {
        self.done = true;
        let file = audited.and_then(|a| a.file).or(self.file);
        let size = audited.and_then(|a| a.size);
        let result = if status.is_success() {
            "ok".to_owned()
        } else {
            kebab(status)
        };
        self.write(file, size, Some(status.as_u16()), &result);
    }

    fn write(&self, file: Option<FileId>, size: Option<u64>, status: Option<u16>, result: &str) {
        // `display` is tracing's, in scope inside its macros.
        info!(
            target: AUDIT_TARGET,
            who = %self.who,
            client = %self.client,
            action = %self.action,
            wanted = self.wanted.map(display),
            file = file.map(display),
            datanode = self.datanode.map(display),
            object = self.object.as_deref(),
            size,
            status,
            result = %result,
            "audit"
        );
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        if !self.done {
            self.write(self.file, None, None, "aborted");
        }
    }
}

/// A status's reason phrase in kebab case (`503` → `service-unavailable`).
fn kebab(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(r) => r.to_ascii_lowercase().replace([' ', '\''], "-"),
        None => status.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_name_the_status() {
        for (code, want) in [
            (401, "unauthorized"),
            (429, "too-many-requests"),
            (503, "service-unavailable"),
            (507, "insufficient-storage"),
            (413, "payload-too-large"),
            (599, "599"),
        ] {
            assert_eq!(kebab(StatusCode::from_u16(code).unwrap()), want);
        }
    }
}

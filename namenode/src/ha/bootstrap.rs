//! Forming the group, once. Only the member with the lowest id in `--peers` may call
//! openraft's `initialize`, and only while its own log is pristine (no vote, no entry)
//! and every other member answers NamenodeRole with term 0 and nothing applied, i.e.
//! no member ever took part in a group. Otherwise it waits to be contacted by a
//! leader, like every other member: a namenode restarted empty (its disk lost) never
//! forms a second group; it catches up by snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kdfs_proto::pb::{self, namenode_client::NamenodeClient};
use openraft::BasicNode;
use tokio_util::sync::CancellationToken;

use super::Context;

/// How often the forming member asks the others again.
const ASK_EVERY: Duration = Duration::from_millis(500);
/// How long one NamenodeRole question may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the bootstrap rule until the group is formed (by this member or another) or
/// `shutdown`. `pristine`: this member's log was empty at start.
pub async fn form(ctx: Arc<Context>, pristine: bool, shutdown: CancellationToken) {
    let status = &ctx.status;
    if status.id != status.peers.lowest() || !pristine {
        return;
    }
    loop {
        if ctx.raft.metrics().borrow().current_term > 0 {
            return;
        }
        if everyone_pristine(&ctx).await {
            let members: BTreeMap<u64, BasicNode> = status
                .peers
                .0
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            match ctx.raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(peers = ?status.peers.0, "HA group formed");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "forming the HA group failed"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(ASK_EVERY) => {}
        }
    }
}

/// Whether every other member answers that it never took part in a group.
async fn everyone_pristine(ctx: &Context) -> bool {
    let status = &ctx.status;
    let asks = status
        .peers
        .0
        .iter()
        .filter(|(id, _)| **id != status.id)
        .map(|(id, addr)| async move {
            let answer = ask(addr, ctx.tls.as_ref()).await;
            match &answer {
                Some(r) if r.term == 0 && r.applied_index == 0 => true,
                Some(r) => {
                    tracing::info!(
                        peer = id,
                        term = r.term,
                        "a peer has been in a group: not forming one"
                    );
                    false
                }
                None => {
                    tracing::debug!(peer = id, "peer not reachable yet");
                    false
                }
            }
        });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .all(|ok| ok)
}

async fn ask(
    address: &str,
    tls: Option<&Arc<kdfs_proto::tls::Tls>>,
) -> Option<pb::NamenodeRoleResponse> {
    let channel = kdfs_proto::tls::channel(address, tls).ok()?;
    let mut client = NamenodeClient::new(channel);
    let call = client.namenode_role(pb::NamenodeRoleRequest {});
    match tokio::time::timeout(ASK_TIMEOUT, call).await {
        Ok(Ok(r)) => Some(r.into_inner()),
        _ => None,
    }
}

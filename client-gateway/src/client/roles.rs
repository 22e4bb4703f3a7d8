//! Each configured namenode's place in the HA group, as `/info` lists it: every one is
//! asked `NamenodeRole` at once, each within [`ROLE_TIMEOUT`], so a namenode that is
//! down or cut off shows as `unreachable` instead of holding `/info` up.

use std::time::Duration;

use kdfs_proto::namenodes::namenode_client;
use kdfs_proto::pb;
use serde::Serialize;

use super::Client;

/// How long `/info` waits for each namenode's role.
pub const ROLE_TIMEOUT: Duration = Duration::from_secs(2);

/// One configured namenode as `/info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamenodeInfo {
    /// Its `--id` (0 without HA); `None` when it did not answer and no other namenode
    /// named it among its peers.
    pub id: Option<u32>,
    /// `host:port`, as this gateway dials it.
    pub address: String,
    /// `leader`, `follower` (also while campaigning or catching up) or `unreachable`.
    pub role: &'static str,
}

impl Client {
    /// Every configured namenode's id, address and role, asked concurrently.
    pub async fn namenode_roles(&self) -> Vec<NamenodeInfo> {
        let asks =
            self.inner
                .namenodes
                .members()
                .into_iter()
                .map(|(address, channel)| async move {
                    let mut req = tonic::Request::new(pb::NamenodeRoleRequest {});
                    req.set_timeout(ROLE_TIMEOUT);
                    let mut client = namenode_client(channel);
                    let asked = client.namenode_role(req);
                    let answer = match tokio::time::timeout(ROLE_TIMEOUT, asked).await {
                        Ok(Ok(r)) => Ok(r.into_inner()),
                        Ok(Err(status)) => Err(status.code()),
                        Err(_) => Err(tonic::Code::DeadlineExceeded),
                    };
                    (address, answer)
                });
        let answers = futures::future::join_all(asks).await;
        // An unreachable namenode's id, from the peers the others list.
        let peers: Vec<(u32, String)> = answers
            .iter()
            .filter_map(|(_, a)| a.as_ref().ok())
            .flat_map(|r| &r.peers)
            .map(|p| (p.id, p.address.to_ascii_lowercase()))
            .collect();
        answers
            .into_iter()
            .map(|(address, answer)| {
                let (id, role) = match answer {
                    Ok(r) => (Some(r.id), role_name(r.role)),
                    // A namenode from before HA leads alone.
                    Err(tonic::Code::Unimplemented) => (Some(0), "leader"),
                    Err(_) => {
                        let id = peers.iter().find(|(_, a)| *a == address).map(|(id, _)| *id);
                        (id, "unreachable")
                    }
                };
                NamenodeInfo { id, address, role }
            })
            .collect()
    }
}

fn role_name(role: i32) -> &'static str {
    match pb::RaftRole::try_from(role) {
        Ok(pb::RaftRole::Leader) => "leader",
        _ => "follower",
    }
}

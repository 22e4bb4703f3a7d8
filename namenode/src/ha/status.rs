//! What this member of the HA group is, for the gate (serve or refuse), NamenodeRole,
//! `/readyz` and `/metrics`: all read from openraft's metrics, the committed index the
//! log store saved, and the leader's commit index its appends carried ([`Heard`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kdfs_proto::pb;
use openraft::{Raft, RaftMetrics, ServerState};

use super::TypeConfig;
use super::peers::Peers;

/// How far (in log entries) a follower's applied index may trail the leader's commit
/// and still count as caught up.
pub const READY_SLACK: u64 = 16;

/// The leader's commit index as the last append from it said.
#[derive(Debug, Default)]
pub struct Heard {
    commit: AtomicU64,
    any: AtomicBool,
}

impl Heard {
    pub fn leader_commit(&self, index: u64) {
        self.commit.store(index, Ordering::Relaxed);
        self.any.store(true, Ordering::Relaxed);
    }

    fn get(&self) -> Option<u64> {
        self.any
            .load(Ordering::Relaxed)
            .then(|| self.commit.load(Ordering::Relaxed))
    }
}

/// This member's standing.
pub struct RaftStatus {
    pub id: u64,
    pub peers: Peers,
    pub raft: Raft<TypeConfig>,
    /// The committed index the log store last saved.
    pub committed: Arc<AtomicU64>,
    pub heard: Arc<Heard>,
    /// A leader that heard no majority for this long stops serving.
    pub lease: Duration,
    /// A leadership instance serves here (`leadership.rs`).
    pub instance: AtomicBool,
}

impl RaftStatus {
    fn metrics(&self) -> RaftMetrics<u64, openraft::BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Leader, and a majority acknowledged it within the lease: its reads are current
    /// and its writes can commit.
    fn leads(m: &RaftMetrics<u64, openraft::BasicNode>, lease: Duration) -> bool {
        m.state == ServerState::Leader
            && m.millis_since_quorum_ack
                .is_some_and(|ms| u128::from(ms) <= lease.as_millis())
    }

    /// Whether client and datanode rpcs are served here now.
    pub fn serving(&self) -> bool {
        self.instance.load(Ordering::Relaxed) && Self::leads(&self.metrics(), self.lease)
    }

    /// The leader's address, for a refusal.
    pub fn leader_hint(&self) -> Option<String> {
        let m = self.metrics();
        let leader = m.current_leader?;
        // A leader cut off from its majority names nobody: naming itself would keep
        // clients asking it while the others elect a new leader.
        if leader == self.id && m.state == ServerState::Leader && !Self::leads(&m, self.lease) {
            return None;
        }
        self.peers.address(leader).map(str::to_owned)
    }

    /// A member that is caught up: the serving leader, or a follower that knows a
    /// leader and applied what that leader last said was committed (within
    /// [`READY_SLACK`]).
    pub fn ready(&self) -> bool {
        let m = self.metrics();
        if m.state == ServerState::Leader {
            return self.serving();
        }
        let applied = m.last_applied.map_or(0, |l| l.index);
        m.current_leader.is_some_and(|l| l != self.id)
            && self
                .heard
                .get()
                .is_some_and(|commit| applied + READY_SLACK >= commit)
    }

    /// NamenodeRole's answer.
    pub fn role(&self) -> pb::NamenodeRoleResponse {
        let m = self.metrics();
        let role = match m.state {
            ServerState::Leader => pb::RaftRole::Leader,
            ServerState::Follower | ServerState::Learner => pb::RaftRole::Follower,
            _ => pb::RaftRole::Candidate,
        };
        let leader = m.current_leader;
        pb::NamenodeRoleResponse {
            id: self.id as u32,
            role: role as i32,
            term: m.current_term,
            leader_id: leader.map(|l| l as u32),
            leader_address: leader
                .and_then(|l| self.peers.address(l))
                .unwrap_or_default()
                .to_owned(),
            commit_index: self.committed.load(Ordering::Relaxed),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            peers: self
                .peers
                .0
                .iter()
                .map(|(id, address)| pb::NamenodePeer {
                    id: *id as u32,
                    address: address.clone(),
                })
                .collect(),
            ready: self.ready(),
        }
    }

    /// The Raft gauges of `/metrics`.
    pub fn export_metrics(&self) {
        let m = self.metrics();
        let role = match m.state {
            ServerState::Leader => 1.0,
            ServerState::Follower | ServerState::Learner => 2.0,
            _ => 3.0,
        };
        metrics::gauge!("kdfs_namenode_raft_role").set(role);
        metrics::gauge!("kdfs_namenode_raft_term").set(m.current_term as f64);
        metrics::gauge!("kdfs_namenode_raft_commit_index")
            .set(self.committed.load(Ordering::Relaxed) as f64);
        metrics::gauge!("kdfs_namenode_raft_applied_index")
            .set(m.last_applied.map_or(0, |l| l.index) as f64);
    }
}

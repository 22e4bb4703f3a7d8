//! The namenodes of a [`ProcessCluster`], one or an HA group: each one's Raft role, term
//! and indexes as its `/metrics` exports them, which one leads, and the operator's and
//! the kernel's moves on one of them (SIGKILL, SIGTERM, start, a wiped disk, a
//! partition from the other namenodes).
//!
//! Everything is read from the outside: `/metrics` (`kdfs_namenode_raft_role`, `…_term`,
//! `…_commit_index`, `…_applied_index`), `/readyz`, and the gateway's `/info`. A single
//! namenode exports no Raft figures and is its own leader.

use std::process::ExitStatus;
use std::time::Duration;

use crate::cluster::ProcessCluster;

/// A namenode's Raft role, as its `/metrics` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftRole {
    Leader,
    Follower,
    Candidate,
}

impl RaftRole {
    fn from_label(label: &str) -> Option<Self> {
        match label {
            "leader" => Some(Self::Leader),
            "follower" => Some(Self::Follower),
            "candidate" => Some(Self::Candidate),
            _ => None,
        }
    }

    fn from_code(code: f64) -> Option<Self> {
        match code.round() as i64 {
            1 => Some(Self::Leader),
            2 => Some(Self::Follower),
            3 => Some(Self::Candidate),
            _ => None,
        }
    }
}

/// Most rounds [`ProcessCluster::lead_with`] kills a leader before giving up.
const MAX_LEAD_ROUNDS: usize = 12;

impl ProcessCluster {
    /// How many namenodes the cluster has.
    pub fn namenode_count(&self) -> usize {
        self.namenodes.len()
    }

    /// Namenode `i`'s `/metrics` text, if it answers.
    pub fn namenode_metrics_text(&self, i: usize) -> Option<String> {
        let http = self.namenodes[i].flag("http")?;
        self.api
            .http()
            .get(format!("http://{http}/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .ok()?
            .text()
            .ok()
    }

    /// The sum of every sample of `metric` (any labels) on namenode `i`'s `/metrics`;
    /// None if it cannot be read. A counter never incremented reads 0.
    pub fn namenode_metric_at(&self, i: usize, metric: &str) -> Option<f64> {
        self.namenode_metrics_text(i)
            .map(|body| samples(&body, metric).map(|(_, v)| v).sum())
    }

    /// Namenode `i`'s Raft role; a single namenode (no Raft figures) leads.
    pub fn namenode_role(&self, i: usize) -> Option<RaftRole> {
        let body = self.namenode_metrics_text(i)?;
        let role = role_of_metrics(&body);
        if role.is_none() && self.namenode_count() == 1 {
            return Some(RaftRole::Leader);
        }
        role
    }

    /// Namenode `i`'s current term, last commit index and last applied index.
    pub fn namenode_raft_figures(&self, i: usize) -> Option<(u64, u64, u64)> {
        let body = self.namenode_metrics_text(i)?;
        let one = |m: &str| samples(&body, m).map(|(_, v)| v as u64).next();
        Some((
            one("kdfs_namenode_raft_term")?,
            one("kdfs_namenode_raft_commit_index")?,
            one("kdfs_namenode_raft_applied_index")?,
        ))
    }

    /// Whether namenode `i`'s `/readyz` answers 200.
    pub fn namenode_ready(&self, i: usize) -> bool {
        let Some(http) = self.namenodes[i].flag("http") else {
            return false;
        };
        self.api
            .http()
            .get(format!("http://{http}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .is_ok_and(|r| r.status() == 200)
    }

    /// Every namenode that says it leads and is ready, with its term.
    pub fn leaders(&self) -> Vec<(usize, u64)> {
        (0..self.namenode_count())
            .filter(|&i| self.namenode_role(i) == Some(RaftRole::Leader) && self.namenode_ready(i))
            .map(|i| {
                let term = self.namenode_raft_figures(i).map_or(0, |f| f.0);
                (i, term)
            })
            .collect()
    }

    /// The namenode that leads and serves in the highest term, if one does.
    pub fn leader(&self) -> Option<usize> {
        self.leaders()
            .into_iter()
            .max_by_key(|&(_, term)| term)
            .map(|(i, _)| i)
    }

    /// Waits until a namenode leads and serves, and the gateway's `/info` answers
    /// through it (safe mode over, every running datanode live). Returns its index.
    pub fn wait_leader(&self, what: &str, within: Duration) -> usize {
        let mut found = None;
        let running = self.datanodes.iter().filter(|d| d.pid().is_some()).count();
        self.wait_until(what, within, || {
            found = self.leader();
            found.is_some() && self.safe_mode() == Some(false) && self.live_datanodes() >= running
        });
        found.expect("a leader was found")
    }

    /// Waits until every running namenode has applied what the leader committed.
    pub fn wait_caught_up(&self, what: &str, within: Duration) {
        self.wait_until(what, within, || {
            let Some(l) = self.leader() else {
                return false;
            };
            let Some((_, commit, _)) = self.namenode_raft_figures(l) else {
                return false;
            };
            (0..self.namenode_count())
                .filter(|&i| self.namenodes[i].pid().is_some())
                .all(|i| {
                    self.namenode_raft_figures(i)
                        .is_some_and(|(_, _, applied)| applied >= commit)
                })
        });
    }

    // ---- process control -------------------------------------------------------

    /// SIGKILLs namenode `i`.
    pub fn kill_namenode_at(&mut self, i: usize) {
        self.namenodes[i].kill();
        self.note_namenode_pids();
    }

    /// SIGTERMs namenode `i` and waits for its exit.
    pub fn stop_namenode_at(&mut self, i: usize) -> ExitStatus {
        let status = self.namenodes[i].stop();
        self.note_namenode_pids();
        status
    }

    /// Starts namenode `i` (stopped or killed before) on its data dir, ports and flags.
    pub fn start_namenode_at(&mut self, i: usize) {
        self.namenodes[i].start();
        self.note_namenode_pids();
    }

    /// SIGKILLs namenode `i` (if running) and starts it again.
    pub fn restart_namenode_at(&mut self, i: usize) {
        self.namenodes[i].restart();
        self.note_namenode_pids();
    }

    /// SIGKILLs namenode `i`, empties its data dir (a lost disk) and starts it again
    /// with the same id and flags.
    pub fn wipe_namenode_at(&mut self, i: usize) {
        self.namenodes[i].kill();
        let dir = self.namenodes[i].dir.clone();
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("wiping {}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).expect("recreating the data dir");
        self.start_namenode_at(i);
    }

    /// Until namenode `i` leads: SIGKILL the leader and wait for another. If that one is
    /// not `i` either, SIGKILL it too and only then start the first again: `i` has been
    /// campaigning alone and holds every committed entry, so the returning namenode
    /// votes for it (two symmetric survivors would be a coin toss each round). Every
    /// killed namenode is started again and caught up before this returns. Returns how
    /// many leaders were killed.
    pub fn lead_with(&mut self, i: usize, within: Duration) -> usize {
        let mut kills = 0;
        for _ in 0..MAX_LEAD_ROUNDS {
            let leader = self.wait_leader(&format!("a leader (to make {i} lead)"), within);
            if leader == i {
                return kills;
            }
            self.kill_namenode_at(leader);
            kills += 1;
            let next =
                self.wait_leader(&format!("a leader other than the killed {leader}"), within);
            if next != i && next != leader {
                self.kill_namenode_at(next);
                kills += 1;
                self.start_namenode_at(leader);
                self.wait_until(&format!("namenode {i} leads"), within, || {
                    self.leader().is_some()
                });
                self.start_namenode_at(next);
            } else {
                self.start_namenode_at(leader);
            }
            self.wait_caught_up(&format!("namenode {leader} caught up again"), within);
        }
        panic!("namenode {i} did not lead within {MAX_LEAD_ROUNDS} rounds ({kills} kills)");
    }

    // ---- partitions ------------------------------------------------------------

    /// Cuts namenode `i` off from the other namenodes (both ways); the gateway and the
    /// datanodes still reach every namenode.
    pub fn partition_namenode(&mut self, i: usize) {
        self.note_namenode_pids();
        self.links
            .as_ref()
            .expect("an HA cluster (Options::namenodes > 1)")
            .isolate(i);
    }

    /// Restores every link between namenodes.
    pub fn heal_namenodes(&mut self) {
        if let Some(links) = &self.links {
            links.heal();
        }
    }

    /// Tells the relays which process is which namenode now.
    pub(crate) fn note_namenode_pids(&self) {
        if let Some(links) = &self.links {
            for (i, nn) in self.namenodes.iter().enumerate() {
                links.set_pid(i, nn.pid());
            }
        }
    }
}

/// The `(labels, value)` of every sample of `metric` in a Prometheus text body.
fn samples<'a>(body: &'a str, metric: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    body.lines().filter_map(move |l| {
        let rest = l.strip_prefix(metric)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once('}')?,
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        Some((labels, value.trim().parse().ok()?))
    })
}

/// The role `kdfs_namenode_raft_role` names: a sample labelled `role="…"` with value 1,
/// or one unlabelled sample coding it (1 leader, 2 follower, 3 candidate).
fn role_of_metrics(body: &str) -> Option<RaftRole> {
    samples(body, "kdfs_namenode_raft_role").find_map(|(labels, value)| {
        if labels.is_empty() {
            return RaftRole::from_code(value);
        }
        let label = labels
            .split(',')
            .find_map(|kv| kv.trim().strip_prefix("role="))?
            .trim_matches('"');
        (value >= 0.5)
            .then(|| RaftRole::from_label(label))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_is_read_labelled_or_coded() {
        let labelled = "# TYPE kdfs_namenode_raft_role gauge
kdfs_namenode_raft_role{role=\"leader\"} 0
kdfs_namenode_raft_role{role=\"follower\"} 1
kdfs_namenode_raft_role_other 1
kdfs_namenode_raft_term 7";
        assert_eq!(role_of_metrics(labelled), Some(RaftRole::Follower));
        assert_eq!(
            role_of_metrics("kdfs_namenode_raft_role 1\n"),
            Some(RaftRole::Leader)
        );
        assert_eq!(
            role_of_metrics("kdfs_namenode_raft_role 3\n"),
            Some(RaftRole::Candidate)
        );
        assert_eq!(role_of_metrics("kdfs_namenode_up 1\n"), None);
        let terms: Vec<f64> = samples(labelled, "kdfs_namenode_raft_term")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(terms, [7.0]);
    }
}

//! Membership: registered datanodes, their load and liveness, and the commands waiting
//! for their next heartbeat.
//!
//! Datanode ids are interned to small integers ([`NodeIdx`]) the first time a node
//! registers; an index is never reused, so the block map can store indices instead of
//! 16-byte UUIDs. Liveness is a function of the time since the last heartbeat:
//! live → stale (after `stale_after`: still read from, not written to) → dead (after
//! `dead_after`: its replicas leave the block map and are re-replicated). A dead node
//! that heartbeats again is told to re-register and send a full report.
//!
//! Two states say a node is leaving (DESIGN.md §5): *decommissioning* (for good: its
//! replicas are copied away; it still dies of silence after `dead_after`) and
//! *maintenance* (a restart is expected: its replicas still count, and silence kills
//! it only at its maintenance deadline, `--maintenance-timeout` after it entered).
//! Registering again (a restarted process) makes either node live.
//!
//! Memory is bounded whoever calls `Register` (issue 24, finding 5): a node is only
//! *pending* until its first heartbeat (not written to), at most
//! [`MAX_PENDING_REGISTRATIONS`] are pending at once, a pending node that dies is
//! forgotten and its slot reused, and at most [`MAX_DATANODES`] slots exist (the
//! longest-dead node's slot is reused first). The namesystem purges a reused slot's
//! index from the block map first ([`Cluster::vacate`]).

use std::collections::{HashMap, HashSet, VecDeque};

use kdfs_core::{BlockId, DatanodeId};
use tokio::time::{Duration, Instant};

use crate::blockmap::NodeIdx;
use crate::error::{Error, Result};
use crate::placement::Candidate;
pub use crate::usage::Load;
use crate::usage::Usage;
use crate::verify::VerifyQueue;

/// Registrations that have not heartbeated yet, at most: more are refused
/// (RESOURCE_EXHAUSTED) until some heartbeat or die.
pub const MAX_PENDING_REGISTRATIONS: usize = 1024;
/// Datanode slots, at most (live, pending and remembered dead ones together).
pub const MAX_DATANODES: usize = 10_000;

/// Liveness of a datanode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Live,
    Stale,
    Dead,
    /// Leaving for good (scaled away, or decommissioned by an operator): read from,
    /// not written to, and its replicas are copied elsewhere as if they were missing.
    Decommissioning,
    /// Restarting (a rollout, eviction or drain of its pod; SIGTERM outside
    /// Kubernetes): read from while up, not written to, its replicas still count
    /// (unless fewer than `min_replicas` others remain); dead at its deadline.
    Maintenance,
}

impl NodeState {
    /// The name `/info` and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Live => "live",
            NodeState::Stale => "stale",
            NodeState::Dead => "dead",
            NodeState::Decommissioning => "decommissioning",
            NodeState::Maintenance => "maintenance",
        }
    }
}

/// Work for a datanode that rides on its next heartbeat reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// Copy a local replica of `block` to `targets` (the first forwards to the rest).
    Replicate {
        block: BlockId,
        length: u64,
        targets: Vec<NodeIdx>,
    },
    /// Remove surplus replicas of referenced blocks (over-replication trim). The
    /// location already left the block map; at delivery the trim is dropped (and the
    /// location restored) if the block meanwhile fell below its target.
    Trim(Vec<BlockId>),
    /// Remove replicas found corrupt, now that the block is healthy again.
    DropCorrupt(Vec<BlockId>),
    /// Remove unconfirmed replicas (the namenode never placed them there) of blocks
    /// with enough confirmed ones; dropped at delivery if that no longer holds.
    DropUnconfirmed(Vec<BlockId>),
}

/// What a datanode says about itself at registration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    pub id: Option<DatanodeId>,
    pub cluster_id: String,
    pub address: String,
    pub zone: String,
    pub version: String,
    pub pod_name: String,
    pub node_name: String,
    pub load: Load,
}

/// One datanode as the namenode sees it.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: DatanodeId,
    pub address: String,
    pub zone: String,
    pub version: String,
    pub pod_name: String,
    pub load: Load,
    pub state: NodeState,
    pub last_heartbeat: Instant,
    /// When it last registered (an orchestrator's late news about an older
    /// incarnation must not touch it).
    pub registered_at: Instant,
    /// Pipelines handed out since the last heartbeat (its `in_flight` does not know
    /// them yet): spreads a burst of allocations.
    pub allocated: u32,
    pub commands: VecDeque<Cmd>,
    /// It heartbeated since it registered: until then it is *pending*, never chosen
    /// for writes.
    pub heartbeated: bool,
    /// The slot is free (its node was forgotten): it is dead and in no list.
    pub vacant: bool,
    /// In maintenance: when it is declared dead unless it registers again first.
    pub maintenance_until: Option<Instant>,
}

impl Node {
    pub fn writable(&self) -> bool {
        self.state == NodeState::Live && self.heartbeated
    }

    /// Registered, not dead, and not heartbeated yet.
    pub fn pending(&self) -> bool {
        !self.heartbeated && !self.vacant && self.state != NodeState::Dead
    }
}

/// Every datanode ever registered since start.
#[derive(Debug)]
pub struct Cluster {
    cluster_id: String,
    nodes: Vec<Node>,
    index: HashMap<DatanodeId, NodeIdx>,
    /// Slots of forgotten nodes, reused first.
    free: Vec<NodeIdx>,
    /// Replicas readers reported bad, to be verified by their holders.
    verify: HashMap<NodeIdx, VerifyQueue>,
}

/// How many nodes are in each state (pending ones are counted apart from live).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub live: usize,
    pub pending: usize,
    pub stale: usize,
    pub dead: usize,
    pub decommissioning: usize,
    pub maintenance: usize,
}

/// What a heartbeat found.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    /// Known and alive: its index.
    Known(NodeIdx),
    /// Unknown or declared dead: it must register again.
    Reregister,
}

impl Cluster {
    pub fn new(cluster_id: String) -> Self {
        Self {
            cluster_id,
            nodes: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
            verify: HashMap::new(),
        }
    }

    /// Whether a new node (not `id`) could not register now: too many are pending,
    /// or every slot is taken and none is free.
    pub fn full_for(&self, id: &DatanodeId) -> Option<Error> {
        if self.index.contains_key(id) {
            return None;
        }
        let pending = self.nodes.iter().filter(|n| n.pending()).count();
        if pending >= MAX_PENDING_REGISTRATIONS {
            return Some(Error::ResourceExhausted(format!(
                "{pending} datanodes are registering and have not heartbeated yet: try again later"
            )));
        }
        None
    }

    /// A slot to reuse for a new node when every slot is taken: the node dead the
    /// longest. `None` if slots remain or none is dead.
    pub fn slot_to_reclaim(&self) -> Option<NodeIdx> {
        if self.nodes.len() < MAX_DATANODES || !self.free.is_empty() {
            return None;
        }
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.state == NodeState::Dead && !n.vacant)
            .min_by_key(|(_, n)| n.last_heartbeat)
            .map(|(i, _)| i as NodeIdx)
    }

    /// Dead nodes that never heartbeated: forgotten at once (their slots reused).
    pub fn dead_pending(&self) -> Vec<NodeIdx> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.state == NodeState::Dead && !n.heartbeated && !n.vacant)
            .map(|(i, _)| i as NodeIdx)
            .collect()
    }

    /// Forgets a dead node: its id is unknown from now on and its slot is reused. The
    /// caller has purged `idx` from the block map.
    pub fn vacate(&mut self, idx: NodeIdx) {
        let Some(n) = self.nodes.get_mut(idx as usize) else {
            return;
        };
        if n.vacant || n.state != NodeState::Dead {
            return;
        }
        self.index.remove(&n.id);
        n.vacant = true;
        n.address.clear();
        n.zone.clear();
        n.version.clear();
        n.pod_name.clear();
        n.commands = VecDeque::new();
        self.verify.remove(&idx);
        self.free.push(idx);
    }

    /// The verification queue of `idx`, created if needed.
    pub fn verify_queue(&mut self, idx: NodeIdx) -> &mut VerifyQueue {
        self.verify.entry(idx).or_default()
    }

    /// Takes up to `n` verifications for `idx`'s heartbeat reply.
    pub fn take_verifications(&mut self, idx: NodeIdx, now: Instant, n: usize) -> Vec<BlockId> {
        self.verify
            .get_mut(&idx)
            .map(|q| q.take(now, n))
            .unwrap_or_default()
    }

    /// Registers (or re-registers) a datanode. A node from another cluster is refused;
    /// a fresh disk (empty cluster id) adopts ours.
    pub fn register(
        &mut self,
        reg: &Registration,
        id: DatanodeId,
        now: Instant,
    ) -> Result<NodeIdx> {
        if !reg.cluster_id.is_empty() && reg.cluster_id != self.cluster_id {
            return Err(Error::FailedPrecondition(format!(
                "datanode {id} belongs to cluster {} but this namenode serves cluster {}; \
                 its data directory is from another cluster (wipe it or point it at the right namenode)",
                reg.cluster_id, self.cluster_id
            )));
        }
        // A zone learnt elsewhere (Kubernetes) survives a re-registration that has none.
        let zone = match self.index.get(&id) {
            Some(&idx) if reg.zone.is_empty() => self.nodes[idx as usize].zone.clone(),
            _ => reg.zone.clone(),
        };
        let node = Node {
            id,
            address: reg.address.clone(),
            zone,
            version: reg.version.clone(),
            pod_name: reg.pod_name.clone(),
            load: reg.load,
            state: NodeState::Live,
            last_heartbeat: now,
            registered_at: now,
            allocated: 0,
            commands: VecDeque::new(),
            heartbeated: false,
            vacant: false,
            maintenance_until: None,
        };
        Ok(match self.index.get(&id) {
            Some(&idx) => {
                self.nodes[idx as usize] = node;
                idx
            }
            None => {
                if let Some(e) = self.full_for(&id) {
                    return Err(e);
                }
                let idx = match self.free.pop() {
                    Some(idx) => {
                        self.nodes[idx as usize] = node;
                        idx
                    }
                    None if self.nodes.len() < MAX_DATANODES => {
                        self.nodes.push(node);
                        (self.nodes.len() - 1) as NodeIdx
                    }
                    None => {
                        return Err(Error::ResourceExhausted(format!(
                            "{MAX_DATANODES} datanodes are registered and none can be forgotten"
                        )));
                    }
                };
                self.index.insert(id, idx);
                idx
            }
        })
    }

    /// Records a heartbeat.
    pub fn heartbeat(&mut self, id: &DatanodeId, load: Load, now: Instant) -> Beat {
        let Some(&idx) = self.index.get(id) else {
            return Beat::Reregister;
        };
        let n = &mut self.nodes[idx as usize];
        if n.state == NodeState::Dead {
            return Beat::Reregister;
        }
        n.load = load;
        n.allocated = 0;
        n.last_heartbeat = now;
        n.heartbeated = true;
        // Leaving nodes stay so until they register again (a restarted process): a
        // node in maintenance still heartbeats between its SIGTERM and its exit.
        if !matches!(n.state, NodeState::Decommissioning | NodeState::Maintenance) {
            n.state = NodeState::Live;
        }
        Beat::Known(idx)
    }

    /// The index of a known, not dead node.
    pub fn live_index(&self, id: &DatanodeId) -> Option<NodeIdx> {
        let idx = *self.index.get(id)?;
        (self.nodes[idx as usize].state != NodeState::Dead).then_some(idx)
    }

    pub fn index_of(&self, id: &DatanodeId) -> Option<NodeIdx> {
        self.index.get(id).copied()
    }

    pub fn node(&self, idx: NodeIdx) -> Option<&Node> {
        self.nodes.get(idx as usize)
    }

    pub fn node_mut(&mut self, idx: NodeIdx) -> Option<&mut Node> {
        self.nodes.get_mut(idx as usize)
    }

    /// Every known node (vacant slots skipped) with its index.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeIdx, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.vacant)
            .map(|(i, n)| (i as NodeIdx, n))
    }

    /// Slots in use or free: node indices stay below it.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Moves nodes along live → stale → dead, and nodes in maintenance to dead at their
    /// deadline (whatever their silence). Returns the nodes that just died.
    #[tracing::instrument(
        name = "cluster_tick",
        skip_all,
        fields(nodes = self.nodes.len())
    )]
    pub fn tick(
        &mut self,
        now: Instant,
        stale_after: Duration,
        dead_after: Duration,
    ) -> Vec<NodeIdx> {
        let mut died = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if n.state == NodeState::Dead {
                continue;
            }
            let silent = now.saturating_duration_since(n.last_heartbeat);
            let dies = match (n.state, n.maintenance_until) {
                (NodeState::Maintenance, Some(until)) => now >= until,
                _ => silent >= dead_after,
            };
            if dies {
                n.state = NodeState::Dead;
                n.commands.clear();
                self.verify.remove(&(i as NodeIdx));
                died.push(i as NodeIdx);
            } else if silent >= stale_after && n.state == NodeState::Live {
                n.state = NodeState::Stale;
            }
        }
        died
    }

    /// Declares a node dead now (e.g. its pod was deleted). Returns false if it was
    /// already dead.
    pub fn declare_dead(&mut self, idx: NodeIdx) -> bool {
        match self.nodes.get_mut(idx as usize) {
            Some(n) if n.state != NodeState::Dead => {
                n.state = NodeState::Dead;
                n.commands.clear();
                self.verify.remove(&idx);
                true
            }
            _ => false,
        }
    }

    /// Starts decommissioning a node (live, stale or in maintenance). Returns false if
    /// unknown, dead or already decommissioning.
    pub fn decommission(&mut self, idx: NodeIdx) -> bool {
        match self.nodes.get_mut(idx as usize) {
            Some(n)
                if matches!(
                    n.state,
                    NodeState::Live | NodeState::Stale | NodeState::Maintenance
                ) =>
            {
                n.state = NodeState::Decommissioning;
                n.maintenance_until = None;
                true
            }
            _ => false,
        }
    }

    /// Puts a live or stale node in maintenance until `until`. Returns false if
    /// unknown, dead, decommissioning (leaving for good wins) or already in
    /// maintenance.
    pub fn enter_maintenance(&mut self, idx: NodeIdx, until: Instant) -> bool {
        match self.nodes.get_mut(idx as usize) {
            Some(n) if matches!(n.state, NodeState::Live | NodeState::Stale) => {
                n.state = NodeState::Maintenance;
                n.maintenance_until = Some(until);
                true
            }
            _ => false,
        }
    }

    /// Cancels a decommission: the node is live again (stale if silent, which the next
    /// tick decides). Returns false unless it was decommissioning.
    pub fn recommission(&mut self, idx: NodeIdx) -> bool {
        match self.nodes.get_mut(idx as usize) {
            Some(n) if n.state == NodeState::Decommissioning => {
                n.state = NodeState::Live;
                true
            }
            _ => false,
        }
    }

    /// Nodes in maintenance: their replicas count unless a block falls below
    /// `min_replicas` copies elsewhere.
    pub fn in_maintenance(&self) -> HashSet<NodeIdx> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.state == NodeState::Maintenance)
            .map(|(i, _)| i as NodeIdx)
            .collect()
    }

    /// Nodes being decommissioned: their replicas do not count towards the target.
    pub fn retiring(&self) -> HashSet<NodeIdx> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.state == NodeState::Decommissioning)
            .map(|(i, _)| i as NodeIdx)
            .collect()
    }

    /// Placement's view of every node, its free space counting the replicas `usage`
    /// learnt of since its last heartbeat (back-to-back uploads see less room).
    pub fn candidates(&self, usage: &Usage) -> Vec<Candidate> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Candidate {
                node: i as NodeIdx,
                zone: n.zone.clone(),
                writable: n.writable(),
                available: usage.estimate(i as NodeIdx, n.load).available,
                load: n.load.in_flight + n.allocated,
            })
            .collect()
    }

    /// Counts of live (including stale) and dead nodes.
    pub fn counts(&self) -> (usize, usize) {
        let c = self.state_counts();
        (
            c.live + c.pending + c.stale + c.decommissioning + c.maintenance,
            c.dead,
        )
    }

    /// How many known nodes are in each state.
    pub fn state_counts(&self) -> Counts {
        let mut c = Counts::default();
        for (_, n) in self.nodes() {
            match n.state {
                NodeState::Live if !n.heartbeated => c.pending += 1,
                NodeState::Live => c.live += 1,
                NodeState::Stale => c.stale += 1,
                NodeState::Dead => c.dead += 1,
                NodeState::Decommissioning => c.decommissioning += 1,
                NodeState::Maintenance => c.maintenance += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(cluster: &str) -> Registration {
        Registration {
            cluster_id: cluster.into(),
            address: "127.0.0.1:1".into(),
            ..Registration::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_moves_live_stale_dead_and_back() {
        let mut c = Cluster::new("c1".into());
        let id = DatanodeId::random();
        let idx = c.register(&reg(""), id, Instant::now()).unwrap();
        let (stale, dead) = (Duration::from_secs(9), Duration::from_secs(30));
        let state = |c: &Cluster| c.node(idx).unwrap().state;

        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(c.tick(Instant::now(), stale, dead).is_empty());
        assert_eq!(state(&c), NodeState::Live);

        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(c.tick(Instant::now(), stale, dead).is_empty());
        assert_eq!(state(&c), NodeState::Stale);
        assert!(
            !c.candidates(&Usage::new())[0].writable,
            "stale nodes get no writes"
        );

        // A heartbeat brings a stale node back.
        assert_eq!(
            c.heartbeat(&id, Load::default(), Instant::now()),
            Beat::Known(idx)
        );
        assert_eq!(state(&c), NodeState::Live);

        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(c.tick(Instant::now(), stale, dead), vec![idx]);
        assert_eq!(state(&c), NodeState::Dead);
        // Dead stays dead until it registers again; the index is kept.
        assert!(c.tick(Instant::now(), stale, dead).is_empty());
        assert_eq!(
            c.heartbeat(&id, Load::default(), Instant::now()),
            Beat::Reregister
        );
        assert_eq!(c.register(&reg("c1"), id, Instant::now()).unwrap(), idx);
        assert_eq!(state(&c), NodeState::Live);

        assert_eq!(
            c.heartbeat(&DatanodeId::random(), Load::default(), Instant::now()),
            Beat::Reregister
        );
    }

    #[test]
    fn foreign_cluster_is_refused_with_a_clear_message() {
        let mut c = Cluster::new("c1".into());
        let e = c
            .register(&reg("other"), DatanodeId::random(), Instant::now())
            .unwrap_err();
        assert!(
            matches!(&e, Error::FailedPrecondition(m) if m.contains("other") && m.contains("c1"))
        );
    }

    /// A cluster with one node registered at `t0`, put in `state`.
    fn one_node(state: NodeState, t0: Instant) -> (Cluster, DatanodeId, NodeIdx) {
        let mut c = Cluster::new("c1".into());
        let id = DatanodeId::random();
        let idx = c.register(&reg(""), id, t0).unwrap();
        let n = c.node_mut(idx).unwrap();
        n.state = state;
        if state == NodeState::Maintenance {
            n.maintenance_until = Some(t0 + Duration::from_secs(600));
        }
        (c, id, idx)
    }

    #[test]
    fn liveness_transition_table() {
        use NodeState::*;
        let (stale, dead) = (Duration::from_secs(9), Duration::from_secs(30));
        let ms = Duration::from_millis;
        let check = |from: NodeState, silent: Duration, to: NodeState, died: bool| {
            let t0 = Instant::now();
            let (mut c, _, idx) = one_node(from, t0);
            let out = c.tick(t0 + silent, stale, dead);
            let got = (c.node(idx).unwrap().state, !out.is_empty());
            assert_eq!(got, (to, died), "{from:?} silent {silent:?}");
        };
        check(Live, ms(0), Live, false);
        check(Live, stale - ms(1), Live, false);
        check(Live, stale, Stale, false);
        check(Live, dead - ms(1), Stale, false);
        check(Live, dead, Dead, true);
        check(Stale, stale, Stale, false);
        check(Stale, dead, Dead, true);
        // Leaving nodes are not marked stale, but do die of silence.
        check(Decommissioning, stale, Decommissioning, false);
        check(Decommissioning, dead, Dead, true);
        // Maintenance ignores silence: only its deadline (10 min here) kills it.
        check(Maintenance, dead, Maintenance, false);
        check(Maintenance, ms(600_000) - ms(1), Maintenance, false);
        check(Maintenance, ms(600_000), Dead, true);
        // The dead die once.
        check(Dead, dead * 2, Dead, false);
    }

    #[test]
    fn heartbeat_decommission_and_declare_dead_by_state() {
        use NodeState::*;
        // (state, heartbeat answer is Known, state after the heartbeat,
        //  decommission accepted, declare_dead accepted, maintenance accepted,
        //  recommission accepted)
        for (from, known, after_beat, decommissions, dies, maint, recomm) in [
            (Live, true, Live, true, true, true, false),
            (Stale, true, Live, true, true, true, false),
            (
                Decommissioning,
                true,
                Decommissioning,
                false,
                true,
                false,
                true,
            ),
            (Maintenance, true, Maintenance, true, true, false, false),
            (Dead, false, Dead, false, false, false, false),
        ] {
            let t0 = Instant::now();
            let (mut c, id, idx) = one_node(from, t0);
            let beat = c.heartbeat(&id, Load::default(), t0);
            assert_eq!(beat == Beat::Known(idx), known, "{from:?}");
            assert_eq!(c.node(idx).unwrap().state, after_beat, "{from:?}");
            let (mut c, _, idx) = one_node(from, t0);
            assert_eq!(c.decommission(idx), decommissions, "{from:?}");
            let (mut c, _, idx) = one_node(from, t0);
            assert_eq!(c.declare_dead(idx), dies, "{from:?}");
            let (mut c, _, idx) = one_node(from, t0);
            assert_eq!(c.enter_maintenance(idx, t0), maint, "{from:?}");
            let (mut c, _, idx) = one_node(from, t0);
            assert_eq!(c.recommission(idx), recomm, "{from:?}");
            // Registering again always makes it live.
            let (mut c, id, idx) = one_node(from, t0);
            assert_eq!(c.register(&reg("c1"), id, t0).unwrap(), idx);
            assert_eq!(c.node(idx).unwrap().state, Live, "{from:?}");
        }
    }

    #[test]
    fn a_zone_learnt_elsewhere_survives_a_registration_without_one() {
        let mut c = Cluster::new("c1".into());
        let id = DatanodeId::random();
        let idx = c.register(&reg("c1"), id, Instant::now()).unwrap();
        c.node_mut(idx).unwrap().zone = "zone-a".into();
        c.register(&reg("c1"), id, Instant::now()).unwrap();
        assert_eq!(c.node(idx).unwrap().zone, "zone-a");
        let with_zone = Registration {
            zone: "zone-b".into(),
            ..reg("c1")
        };
        c.register(&with_zone, id, Instant::now()).unwrap();
        assert_eq!(c.node(idx).unwrap().zone, "zone-b");
        assert_eq!(c.counts(), (1, 0));
        assert!(c.retiring().is_empty());
        c.decommission(idx);
        assert_eq!(c.retiring(), HashSet::from([idx]));
    }
}

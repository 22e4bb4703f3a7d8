//! Applying a [`ClusterEvent`] to the namesystem through its hooks: `Zone` →
//! [`NameSystem::set_zone`]; `Terminating` → [`NameSystem::enter_maintenance`];
//! `ScaledAway` → [`NameSystem::decommission`]; `Deleted` →
//! [`NameSystem::declare_dead`] when scaled away (or already decommissioning),
//! otherwise maintenance (the StatefulSet brings the pod back).

use std::time::Duration;

use super::pod_events::ClusterEvent;
use crate::NameSystem;
use crate::cluster::NodeState;

/// Allowed clock difference between the API server and the namenode when deciding
/// whether a datanode registered after its pod's deletion began.
pub const CLOCK_SKEW: Duration = Duration::from_secs(2);

/// Applies one event through the namesystem's hooks. Returns whether a datanode died
/// (the caller kicks the replication worker).
#[tracing::instrument(
    name = "kubernetes_event",
    skip_all,
    fields(pod = event.pod(), kind = event.kind())
)]
pub fn apply(ns: &NameSystem, event: &ClusterEvent) -> bool {
    let mut died = false;
    for dn in ns.datanodes_of_pod(event.pod()) {
        let (id, zone, state) = (dn.id, dn.zone, dn.state);
        if is_newer_incarnation(event, dn.registered_ms) {
            tracing::debug!(node = %id, "registered after its pod began to leave: a newer incarnation, left alone");
            continue;
        }
        let changed = match event {
            ClusterEvent::Zone { zone: new, .. } => *new != zone && ns.set_zone(&id, new),
            ClusterEvent::Terminating { .. } => ns.enter_maintenance(&id),
            ClusterEvent::ScaledAway { .. } => ns.decommission(&id),
            ClusterEvent::Deleted { scaled_away, .. }
                if *scaled_away || state == NodeState::Decommissioning =>
            {
                let dead = ns.declare_dead(&id, "its pod was deleted for good");
                died |= dead;
                dead
            }
            ClusterEvent::Deleted { .. } => ns.enter_maintenance(&id),
        };
        if changed {
            metrics::counter!("kdfs_namenode_kubernetes_events_total", "kind" => event.kind())
                .increment(1);
            tracing::info!(node = %id, event = ?event, "applied Kubernetes event");
        }
    }
    died
}

/// Whether a datanode that registered at `registered_ms` is newer than the pod
/// `event` is about. News of a pod's termination or deletion that arrives late (the
/// worker lagged behind the watch) must not touch a datanode that registered after
/// that deletion began: that is the pod's next incarnation (same name, same volume),
/// not the one that left.
fn is_newer_incarnation(event: &ClusterEvent, registered_ms: u64) -> bool {
    let leaving_since = match event {
        ClusterEvent::Terminating { since_ms, .. }
        | ClusterEvent::ScaledAway { since_ms, .. }
        | ClusterEvent::Deleted { since_ms, .. } => *since_ms,
        ClusterEvent::Zone { .. } => None,
    };
    leaving_since.is_some_and(|since| registered_ms > since + CLOCK_SKEW.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_news_leaves_a_newer_incarnation_alone() {
        let skew = CLOCK_SKEW.as_millis() as u64;
        let pod = || "datanode-1".to_owned();
        let deleted = |since_ms| ClusterEvent::Deleted {
            pod: pod(),
            since_ms,
            scaled_away: false,
        };
        let terminating = |since_ms| ClusterEvent::Terminating {
            pod: pod(),
            since_ms,
        };
        for (what, event, registered_ms, expected) in [
            (
                "registered before the deletion",
                deleted(Some(10_000)),
                5_000,
                false,
            ),
            (
                "within the clock skew",
                deleted(Some(10_000)),
                10_000 + skew,
                false,
            ),
            (
                "after the deletion began",
                deleted(Some(10_000)),
                10_001 + skew,
                true,
            ),
            (
                "terminating, after",
                terminating(Some(10_000)),
                20_000,
                true,
            ),
            ("deletion time unknown", deleted(None), 20_000, false),
            (
                "scaled away, after",
                ClusterEvent::ScaledAway {
                    pod: pod(),
                    since_ms: Some(10_000),
                },
                20_000,
                true,
            ),
            (
                "zones apply to every incarnation",
                ClusterEvent::Zone {
                    pod: pod(),
                    zone: "a".into(),
                },
                20_000,
                false,
            ),
        ] {
            assert_eq!(
                is_newer_incarnation(&event, registered_ms),
                expected,
                "{what}"
            );
        }
    }
}

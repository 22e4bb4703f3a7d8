//! The pure core of Kubernetes awareness: what a watched datanode pod (with the node it
//! runs on and its StatefulSet's replica count) means for the namenode, as
//! [`ClusterEvent`]s. Table-tested with recorded API objects.
//!
//! A pod leaves for good (is *scaled away*) only when it is terminating or deleted and
//! its ordinal is at or beyond its StatefulSet's replica count, read fresh at that
//! moment: a pod that merely runs beyond a stale count is a scale-up, and a pod that
//! terminates while its ordinal is still wanted (rollout, eviction, drain, deletion by
//! hand) is restarting, not leaving (maintenance, DESIGN.md §5).

use k8s_openapi::api::core::v1::{Node, Pod};

/// The well-known node label that names a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What the watch said about a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// Added or modified (or listed).
    Applied,
    /// Gone from the API.
    Deleted,
}

/// What the namenode should do about a datanode pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The pod runs in this zone (its node's zone label, else the node's name).
    Zone { pod: String, zone: String },
    /// The pod is terminating (since `since_ms`, Unix ms, if known) and its ordinal is
    /// still wanted (or the replica count is unknown): it restarts, so its datanode
    /// enters maintenance (no new writes, nothing copied while enough copies remain).
    Terminating { pod: String, since_ms: Option<u64> },
    /// The pod is terminating and its ordinal is at or beyond its StatefulSet's
    /// current replica count: it is scaled away and will not come back, so its
    /// datanode is decommissioned (its blocks copied away while it drains).
    ScaledAway { pod: String, since_ms: Option<u64> },
    /// The pod is gone (its deletion began at `since_ms`, if known). Scaled away: its
    /// datanode is dead now, its blocks re-replicated. Otherwise the StatefulSet brings
    /// it back: maintenance (unless it was decommissioning: then dead).
    Deleted {
        pod: String,
        since_ms: Option<u64>,
        scaled_away: bool,
    },
}

impl ClusterEvent {
    /// The pod the event is about.
    pub fn pod(&self) -> &str {
        match self {
            ClusterEvent::Zone { pod, .. }
            | ClusterEvent::Terminating { pod, .. }
            | ClusterEvent::ScaledAway { pod, .. }
            | ClusterEvent::Deleted { pod, .. } => pod,
        }
    }

    /// A short name of the kind of event, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterEvent::Zone { .. } => "zone",
            ClusterEvent::Terminating { .. } => "terminating",
            ClusterEvent::ScaledAway { .. } => "scaled_away",
            ClusterEvent::Deleted { .. } => "deleted",
        }
    }
}

/// What is known around a pod besides the pod itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The node the pod is scheduled on, if it was looked up.
    pub node: Option<&'a Node>,
    /// The replica count of the pod's StatefulSet, read fresh, if known (only looked
    /// up for a pod that is terminating or deleted).
    pub replicas: Option<i32>,
}

/// The pure core: what a watched pod means for the namenode. A deleted pod yields only
/// `Deleted`; a live one its `Zone` (when its node is known) and then, when it is
/// terminating, `ScaledAway` or `Terminating`.
pub fn pod_events(pod: &Pod, watched: Watched, ctx: Context<'_>) -> Vec<ClusterEvent> {
    let Some(name) = pod.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
        return Vec::new();
    };
    let pod_name = name.to_owned();
    // `deletionTimestamp` is when the pod is due to be gone: the deletion began one
    // grace period earlier.
    let grace_ms = pod
        .metadata
        .deletion_grace_period_seconds
        .unwrap_or(0)
        .max(0)
        * 1000;
    let since_ms = pod
        .metadata
        .deletion_timestamp
        .as_ref()
        .and_then(|t| u64::try_from(t.0.as_millisecond().saturating_sub(grace_ms)).ok());
    let scaled_away = match (ordinal(name), ctx.replicas) {
        (Some(o), Some(r)) => i64::from(o) >= i64::from(r.max(0)),
        _ => false,
    };
    if watched == Watched::Deleted {
        return vec![ClusterEvent::Deleted {
            pod: pod_name,
            since_ms,
            scaled_away,
        }];
    }
    let mut out = Vec::new();
    let scheduled_on = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if let (Some(on), Some(node)) = (scheduled_on, ctx.node)
        && node.metadata.name.as_deref() == Some(on)
        && let Some(zone) = node_zone(node)
    {
        out.push(ClusterEvent::Zone {
            pod: pod_name.clone(),
            zone,
        });
    }
    if !terminating(pod) {
        return out;
    }
    out.push(if scaled_away {
        ClusterEvent::ScaledAway {
            pod: pod_name,
            since_ms,
        }
    } else {
        ClusterEvent::Terminating {
            pod: pod_name,
            since_ms,
        }
    });
    out
}

/// Whether a pod's deletion has begun.
pub fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// A node's zone: its `topology.kubernetes.io/zone` label, else its name (each node
/// its own failure domain).
pub fn node_zone(node: &Node) -> Option<String> {
    let label = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL))
        .filter(|z| !z.trim().is_empty());
    label
        .or(node.metadata.name.as_ref())
        .filter(|z| !z.is_empty())
        .cloned()
}

/// A StatefulSet pod's ordinal: the number after the last `-` (`datanode-2` → 2).
pub fn ordinal(pod_name: &str) -> Option<u32> {
    let (_, n) = pod_name.rsplit_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The name of the StatefulSet that owns a pod, if one does.
pub fn statefulset_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "StatefulSet" && o.api_version.starts_with("apps/"))
        .map(|o| o.name.as_str())
}

/// A datanode pod for tests: `name` scheduled on node `on`; a `terminating` one began
/// its deletion at 2026-11-22T02:00:00Z with a 30 s grace period.
#[cfg(test)]
pub(super) fn test_pod(name: &str, on: &str, terminating: bool) -> Pod {
    use serde_json::json;
    let mut meta = json!({ "name": name, "namespace": "kdfs" });
    if terminating {
        meta["deletionTimestamp"] = json!("2026-11-22T02:00:30Z");
        meta["deletionGracePeriodSeconds"] = json!(30);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": { "nodeName": on, "containers": [{ "name": "datanode" }] }
    }))
    .expect("a valid Pod")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::test_pod as pod;
    use super::*;

    const POD: &str = include_str!("../../tests/fixtures/datanode-pod.json");
    const NODE: &str = include_str!("../../tests/fixtures/node-zone-a.json");

    /// 2026-11-22T02:00:00Z in Unix milliseconds: when the test pods' deletion began
    /// (due 30 s later).
    const DELETION_MS: u64 = 1_795_312_800_000;

    fn recorded_pod() -> Pod {
        serde_json::from_str(POD).expect("fixture is a Pod")
    }

    fn recorded_node() -> Node {
        serde_json::from_str(NODE).expect("fixture is a Node")
    }

    fn node(name: &str, zone: Option<&str>) -> Node {
        let labels = match zone {
            Some(z) => json!({ ZONE_LABEL: z, "kubernetes.io/hostname": name }),
            None => json!({ "kubernetes.io/hostname": name }),
        };
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": name, "labels": labels }
        }))
        .unwrap()
    }

    fn zone(pod: &str, zone: &str) -> ClusterEvent {
        ClusterEvent::Zone {
            pod: pod.into(),
            zone: zone.into(),
        }
    }

    #[test]
    fn watched_pods_become_cluster_events() {
        use ClusterEvent::*;
        use Watched::Applied;
        let a = node("node-a", Some("zone-a"));
        let plain = node("node-c", None);
        let other = node("node-x", Some("zone-x"));
        let recorded = recorded_node();
        let cases: Vec<(&str, Pod, Watched, Context, Vec<ClusterEvent>)> = vec![
            (
                "recorded pod on a zoned node",
                recorded_pod(),
                Applied,
                Context {
                    node: Some(&recorded),
                    replicas: Some(3),
                },
                vec![zone("datanode-1", "zone-a")],
            ),
            (
                "node without a zone label: its name is the zone",
                pod("datanode-0", "node-c", false),
                Applied,
                Context {
                    node: Some(&plain),
                    replicas: None,
                },
                vec![zone("datanode-0", "node-c")],
            ),
            (
                "node not looked up yet: nothing",
                pod("datanode-0", "node-a", false),
                Applied,
                Context::default(),
                vec![],
            ),
            (
                "a node that is not the pod's is ignored",
                pod("datanode-0", "node-a", false),
                Applied,
                Context {
                    node: Some(&other),
                    replicas: None,
                },
                vec![],
            ),
            (
                "terminating",
                pod("datanode-1", "node-a", true),
                Applied,
                Context {
                    node: Some(&a),
                    replicas: Some(3),
                },
                vec![
                    zone("datanode-1", "zone-a"),
                    Terminating {
                        pod: "datanode-1".into(),
                        since_ms: Some(DELETION_MS),
                    },
                ],
            ),
            (
                "deleted, ordinal still wanted: only that (a restart)",
                pod("datanode-2", "node-a", true),
                Watched::Deleted,
                Context {
                    node: Some(&a),
                    replicas: Some(3),
                },
                vec![Deleted {
                    pod: "datanode-2".into(),
                    since_ms: Some(DELETION_MS),
                    scaled_away: false,
                }],
            ),
            (
                "deleted beyond the replica count: scaled away",
                pod("datanode-3", "node-a", true),
                Watched::Deleted,
                Context {
                    node: None,
                    replicas: Some(3),
                },
                vec![Deleted {
                    pod: "datanode-3".into(),
                    since_ms: Some(DELETION_MS),
                    scaled_away: true,
                }],
            ),
            (
                "deleted, replica count unknown: not scaled away",
                pod("datanode-3", "node-a", true),
                Watched::Deleted,
                Context::default(),
                vec![Deleted {
                    pod: "datanode-3".into(),
                    since_ms: Some(DELETION_MS),
                    scaled_away: false,
                }],
            ),
            (
                "running beyond a (stale) replica count: a scale-up, left alone",
                pod("datanode-3", "node-a", false),
                Applied,
                Context {
                    node: None,
                    replicas: Some(3),
                },
                vec![],
            ),
            (
                "terminating beyond the replica count: scaled away",
                pod("datanode-4", "node-a", true),
                Applied,
                Context {
                    node: None,
                    replicas: Some(3),
                },
                vec![ScaledAway {
                    pod: "datanode-4".into(),
                    since_ms: Some(DELETION_MS),
                }],
            ),
            (
                "terminating, replica count unknown: a restart",
                pod("datanode-4", "node-a", true),
                Applied,
                Context::default(),
                vec![Terminating {
                    pod: "datanode-4".into(),
                    since_ms: Some(DELETION_MS),
                }],
            ),
            (
                "below the replica count: staying",
                pod("datanode-2", "node-a", false),
                Applied,
                Context {
                    node: None,
                    replicas: Some(3),
                },
                vec![],
            ),
            (
                "scaled to zero",
                pod("datanode-0", "node-a", true),
                Applied,
                Context {
                    node: None,
                    replicas: Some(0),
                },
                vec![ScaledAway {
                    pod: "datanode-0".into(),
                    since_ms: Some(DELETION_MS),
                }],
            ),
        ];
        for (what, pod, watched, ctx, expected) in cases {
            assert_eq!(pod_events(&pod, watched, ctx), expected, "{what}");
        }
    }

    #[test]
    fn recorded_objects_parse_and_name_their_owner() {
        let p = recorded_pod();
        assert_eq!(statefulset_of(&p), Some("datanode"));
        assert_eq!(node_zone(&recorded_node()).as_deref(), Some("zone-a"));
        assert_eq!(statefulset_of(&pod("x-0", "n", false)), None);
    }

    #[test]
    fn ordinals() {
        for (name, want) in [
            ("datanode-0", Some(0)),
            ("datanode-12", Some(12)),
            ("my-data-node-3", Some(3)),
            ("datanode", None),
            ("datanode-", None),
            ("datanode-x1", None),
            ("datanode-+1", None),
        ] {
            assert_eq!(ordinal(name), want, "{name}");
        }
    }
}

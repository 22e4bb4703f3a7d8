//! Node and StatefulSet look-ups for the pod watch: what the pure layer
//! (`pod_events.rs`) needs to know around a pod. Nodes are cached (zones rarely
//! change); a StatefulSet's replica count is read fresh, and only for a pod that is
//! terminating or deleted, since it decides whether the pod leaves for good. A 403
//! (the RBAC does not allow the read) is remembered and said once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client};
use tokio::time::Instant;

use super::pod_events::{ClusterEvent, Context, Watched, pod_events, statefulset_of, terminating};

/// A node's labels are looked up again after this long (zones rarely change).
pub const NODE_TTL: Duration = Duration::from_secs(300);
/// Longest wait for one `get` of a node or StatefulSet.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Node and StatefulSet look-ups. A failed look-up leaves the fact unknown (the pure
/// layer then emits less, and a terminating pod counts as restarting) and is retried
/// on the next reconcile.
pub(super) struct Lookups {
    nodes: Api<Node>,
    sets: Api<StatefulSet>,
    node_cache: HashMap<String, (Node, Instant)>,
    /// Nodes whose look-up failed and was logged: logged again only once it worked.
    nodes_failing: HashSet<String>,
    /// The RBAC does not allow reading nodes: stop asking (said once).
    nodes_forbidden: bool,
    /// The RBAC does not allow reading StatefulSets: stop asking (said once).
    sets_forbidden: bool,
}

impl Lookups {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            nodes: Api::all(client.clone()),
            sets: Api::namespaced(client, namespace),
            node_cache: HashMap::new(),
            nodes_failing: HashSet::new(),
            nodes_forbidden: false,
            sets_forbidden: false,
        }
    }

    async fn node(&mut self, name: &str) -> Option<&Node> {
        let fresh = self
            .node_cache
            .get(name)
            .is_some_and(|(_, at)| at.elapsed() < NODE_TTL);
        if !fresh && !self.nodes_forbidden {
            let failure = match tokio::time::timeout(LOOKUP_TIMEOUT, self.nodes.get(name)).await {
                Ok(Ok(node)) => {
                    self.node_cache
                        .insert(name.to_owned(), (node, Instant::now()));
                    self.nodes_failing.remove(name);
                    None
                }
                Ok(Err(kube::Error::Api(s))) if s.code == 403 => {
                    tracing::warn!(
                        reason = %s.message,
                        "zones unavailable: the namenode's ServiceAccount may not get nodes \
                         (RBAC: grant `get` on `nodes` in a ClusterRole); placement spreads \
                         replicas over datanodes without zones"
                    );
                    self.nodes_forbidden = true;
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("timed out".to_owned()),
            };
            if let Some(error) = failure {
                if self.nodes_failing.insert(name.to_owned()) {
                    tracing::warn!(node = name, %error, "cannot read node; zone unknown for now");
                } else {
                    tracing::debug!(node = name, %error, "node look-up still failing");
                }
            }
        }
        self.node_cache.get(name).map(|(n, _)| n)
    }

    /// The StatefulSet's replica count, read now (never cached: a count even seconds
    /// old would take a scale-up's new pod for one scaled away).
    async fn replicas(&mut self, set: &str) -> Option<i32> {
        if self.sets_forbidden {
            return None;
        }
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.sets.get(set)).await {
            Ok(Ok(s)) => s.spec.replicas.or(Some(1)),
            Ok(Err(kube::Error::Api(s))) if s.code == 403 => {
                tracing::warn!(
                    statefulset = set,
                    "not allowed to read StatefulSets (RBAC): every terminating datanode \
                     counts as restarting (maintenance), so a scale-down is healed only \
                     after --maintenance-timeout"
                );
                self.sets_forbidden = true;
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(statefulset = set, error = %e, "cannot read StatefulSet");
                None
            }
            Err(_) => {
                tracing::warn!(statefulset = set, "StatefulSet look-up timed out");
                None
            }
        }
    }

    /// The events for one pod, with its facts looked up.
    #[tracing::instrument(
        name = "kubernetes_pod",
        skip_all,
        fields(pod = pod.metadata.name.as_deref().unwrap_or_default(), watched = ?watched)
    )]
    pub async fn events(&mut self, pod: &Pod, watched: Watched) -> Vec<ClusterEvent> {
        let mut replicas = None;
        if (watched == Watched::Deleted || terminating(pod))
            && let Some(set) = statefulset_of(pod)
        {
            replicas = self.replicas(set).await;
        }
        let on = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let node = match (watched, on) {
            (Watched::Applied, Some(on)) => self.node(&on).await,
            _ => None,
        };
        pod_events(pod, watched, Context { node, replicas })
    }
}

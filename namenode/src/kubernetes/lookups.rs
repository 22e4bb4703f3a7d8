//! Node and StatefulSet look-ups for the pod watch, with small caches: what the pure
//! layer (`pod_events.rs`) needs to know around a pod.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{Api, Client};
use tokio::time::Instant;

use super::pod_events::{ClusterEvent, Context, Watched, pod_events, statefulset_of};

/// A node's labels are looked up again after this long (zones rarely change).
pub const NODE_TTL: Duration = Duration::from_secs(300);
/// A StatefulSet's replica count is looked up again after this long.
pub const STATEFULSET_TTL: Duration = Duration::from_secs(10);
/// Longest wait for one `get` of a node or StatefulSet.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Node and StatefulSet look-ups with small caches. A failed look-up leaves the fact
/// unknown (the pure layer then emits less) and is retried on the next reconcile.
pub(super) struct Lookups {
    nodes: Api<Node>,
    sets: Api<StatefulSet>,
    node_cache: HashMap<String, (Node, Instant)>,
    set_cache: HashMap<String, (Option<i32>, Instant)>,
    /// The RBAC does not allow reading StatefulSets: stop asking (logged once).
    sets_forbidden: bool,
}

impl Lookups {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            nodes: Api::all(client.clone()),
            sets: Api::namespaced(client, namespace),
            node_cache: HashMap::new(),
            set_cache: HashMap::new(),
            sets_forbidden: false,
        }
    }

    async fn node(&mut self, name: &str) -> Option<&Node> {
        let fresh = self
            .node_cache
            .get(name)
            .is_some_and(|(_, at)| at.elapsed() < NODE_TTL);
        if !fresh {
            match tokio::time::timeout(LOOKUP_TIMEOUT, self.nodes.get(name)).await {
                Ok(Ok(node)) => {
                    self.node_cache
                        .insert(name.to_owned(), (node, Instant::now()));
                }
                Ok(Err(e)) => {
                    tracing::warn!(node = name, error = %e, "cannot read node; zone unknown for now")
                }
                Err(_) => tracing::warn!(node = name, "node look-up timed out"),
            }
        }
        self.node_cache.get(name).map(|(n, _)| n)
    }

    async fn replicas(&mut self, set: &str) -> Option<i32> {
        if self.sets_forbidden {
            return None;
        }
        if let Some((r, at)) = self.set_cache.get(set)
            && at.elapsed() < STATEFULSET_TTL
        {
            return *r;
        }
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.sets.get(set)).await {
            Ok(Ok(s)) => {
                let r = s.spec.replicas.or(Some(1));
                self.set_cache.insert(set.to_owned(), (r, Instant::now()));
                r
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 403 => {
                tracing::info!(
                    statefulset = set,
                    "not allowed to read StatefulSets: scale-down is noticed when pods terminate"
                );
                self.sets_forbidden = true;
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(statefulset = set, error = %e, "cannot read StatefulSet");
                self.set_cache.get(set).and_then(|(r, _)| *r)
            }
            Err(_) => {
                tracing::warn!(statefulset = set, "StatefulSet look-up timed out");
                self.set_cache.get(set).and_then(|(r, _)| *r)
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
        if watched == Watched::Applied
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

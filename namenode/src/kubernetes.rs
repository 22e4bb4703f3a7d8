//! Kubernetes awareness (DESIGN.md §9): when the namenode runs in a cluster it watches
//! the datanode pods so that it learns each datanode's zone (from its node's
//! `topology.kubernetes.io/zone` label) and hears at once when a pod is terminating,
//! scaled away or deleted, rather than after `--dead-after` of silence.
//!
//! Three layers, so that almost all of it is tested without a cluster:
//! - [`pod_events`]: a pure function from a watched pod (and the node it runs on, and
//!   its StatefulSet's replica count) to [`ClusterEvent`]s. Table-tested with recorded
//!   API objects.
//! - [`PodTracker`]: turns the watcher's stream (including relists after a broken
//!   watch) into "this pod was applied / deleted", inferring deletions that happened
//!   while the watch was down. Pure and synchronous.
//! - [`worker`]: the named background worker `kubernetes`: the watch, the node and
//!   StatefulSet look-ups (cached), and [`apply`] through the [`NameSystem`] hooks.
//!   API errors are logged and retried with backoff; it never stops the namenode.
//!   Tested against a mock API service (`tests/kubernetes.rs`).
//!
//! A pod is matched to datanodes by the `pod_name` it registered with, or by an
//! advertise address starting with `<pod>.` (the headless-service DNS name). News of a
//! pod leaving never touches a datanode that registered after that pod's deletion
//! began (the StatefulSet's next pod of the same name, on the same volume).
//!
//! Events and what they do: `Zone` → [`NameSystem::set_zone`]; `Terminating` and
//! `ScaledAway` → [`NameSystem::decommission`]; `Deleted` →
//! [`NameSystem::declare_dead`] and a kick of the replication worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::NameSystem;

/// Label selector of the datanode pods (the StatefulSet's pod template label).
pub const DATANODE_SELECTOR: &str = "app.kubernetes.io/name=datanode";
/// The well-known node label that names a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// How often the known pods are applied again, so that a datanode registering after
/// its pod was seen still gets its zone, and a look-up that failed is retried.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);
/// A node's labels are looked up again after this long (zones rarely change).
pub const NODE_TTL: Duration = Duration::from_secs(300);
/// A StatefulSet's replica count is looked up again after this long.
pub const STATEFULSET_TTL: Duration = Duration::from_secs(10);
/// Longest wait for one `get` of a node or StatefulSet.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// `--kubernetes`: whether the namenode uses the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// On when running in a pod (`KUBERNETES_SERVICE_HOST` is set), off otherwise.
    #[default]
    Auto,
    /// On (uses the in-cluster config or a kubeconfig).
    On,
    /// Off: liveness from heartbeats only, zones from the datanodes' `--zone`.
    Off,
}

/// Whether Kubernetes awareness starts, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Enabled,
    Disabled(&'static str),
}

/// Decides from `--kubernetes` and the value of `KUBERNETES_SERVICE_HOST`.
pub fn decide(mode: Mode, service_host: Option<&str>) -> Decision {
    match mode {
        Mode::Off => Decision::Disabled("--kubernetes off"),
        Mode::On => Decision::Enabled,
        Mode::Auto => match service_host {
            Some(h) if !h.trim().is_empty() => Decision::Enabled,
            _ => Decision::Disabled("not in a cluster (KUBERNETES_SERVICE_HOST is not set)"),
        },
    }
}

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
    /// The pod is terminating (since `since_ms`, Unix ms, if known): decommission its
    /// datanode at once (no new writes, its replicas copied elsewhere while it still
    /// serves reads).
    Terminating { pod: String, since_ms: Option<u64> },
    /// The pod's ordinal is at or beyond its StatefulSet's replica count: it is being
    /// scaled away and will not come back. Decommissioned like a terminating pod.
    ScaledAway { pod: String },
    /// The pod is gone (its deletion began at `since_ms`, if known): its datanode is
    /// dead now, its blocks re-replicated.
    Deleted { pod: String, since_ms: Option<u64> },
}

impl ClusterEvent {
    pub fn pod(&self) -> &str {
        match self {
            ClusterEvent::Zone { pod, .. }
            | ClusterEvent::Terminating { pod, .. }
            | ClusterEvent::ScaledAway { pod }
            | ClusterEvent::Deleted { pod, .. } => pod,
        }
    }

    fn kind(&self) -> &'static str {
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
    /// The replica count of the pod's StatefulSet, if known.
    pub replicas: Option<i32>,
}

/// The pure core: what a watched pod means for the namenode. A deleted pod yields only
/// `Deleted`; a live one its `Zone` (when its node is known) and then `ScaledAway` or
/// `Terminating` when it is leaving.
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
    if watched == Watched::Deleted {
        return vec![ClusterEvent::Deleted {
            pod: pod_name,
            since_ms,
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
    let scaled_away = match (ordinal(name), ctx.replicas) {
        (Some(o), Some(r)) => i64::from(o) >= i64::from(r.max(0)),
        _ => false,
    };
    if scaled_away {
        out.push(ClusterEvent::ScaledAway { pod: pod_name });
    } else if pod.metadata.deletion_timestamp.is_some() {
        out.push(ClusterEvent::Terminating {
            pod: pod_name,
            since_ms,
        });
    }
    out
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

/// Turns the watcher's events into applied/deleted pods, and remembers the pods it saw
/// so that a relist (after the watch broke) reports the pods that vanished meanwhile.
#[derive(Debug, Default)]
pub struct PodTracker {
    known: HashMap<String, Pod>,
    relist: Option<HashMap<String, Pod>>,
}

impl PodTracker {
    pub fn observe(&mut self, event: watcher::Event<Pod>) -> Vec<(Pod, Watched)> {
        match event {
            watcher::Event::Apply(pod) => {
                if let Some(name) = pod.metadata.name.clone() {
                    self.known.insert(name, pod.clone());
                }
                vec![(pod, Watched::Applied)]
            }
            watcher::Event::Delete(pod) => {
                if let Some(name) = &pod.metadata.name {
                    self.known.remove(name);
                }
                vec![(pod, Watched::Deleted)]
            }
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(pod) => {
                if let Some(name) = pod.metadata.name.clone() {
                    self.relist
                        .get_or_insert_with(HashMap::new)
                        .insert(name, pod.clone());
                }
                vec![(pod, Watched::Applied)]
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut self.known, fresh);
                old.into_iter()
                    .filter(|(name, _)| !self.known.contains_key(name))
                    .map(|(_, pod)| (pod, Watched::Deleted))
                    .collect()
            }
        }
    }

    /// Forgets a relist cut short by an error: the watcher starts the next one afresh.
    pub fn abort_relist(&mut self) {
        self.relist = None;
    }

    /// The pods currently known to exist.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.known.values()
    }
}

/// Allowed clock difference between the API server and the namenode when deciding
/// whether a datanode registered after its pod's deletion began.
pub const CLOCK_SKEW: Duration = Duration::from_secs(2);

/// Applies one event through the namesystem's hooks. Returns whether a datanode died
/// (the caller kicks the replication worker).
///
/// News of a pod's termination or deletion that arrives late (the worker lagged
/// behind the watch) must not touch a datanode that registered after that deletion
/// began: that is the pod's next incarnation (same name, same volume), not the one
/// that left.
pub fn apply(ns: &NameSystem, event: &ClusterEvent) -> bool {
    let mut died = false;
    for dn in ns.datanodes_of_pod(event.pod()) {
        let (id, zone) = (dn.id, dn.zone);
        let leaving_since = match event {
            ClusterEvent::Terminating { since_ms, .. } | ClusterEvent::Deleted { since_ms, .. } => {
                *since_ms
            }
            _ => None,
        };
        if let Some(since) = leaving_since
            && dn.registered_ms > since + CLOCK_SKEW.as_millis() as u64
        {
            tracing::debug!(node = %id, pod = event.pod(), "registered after its pod began to leave: a newer incarnation, left alone");
            continue;
        }
        let changed = match event {
            ClusterEvent::Zone { zone: new, .. } => *new != zone && ns.set_zone(&id, new),
            ClusterEvent::Terminating { .. } | ClusterEvent::ScaledAway { .. } => {
                ns.decommission(&id)
            }
            ClusterEvent::Deleted { .. } => {
                let dead = ns.declare_dead(&id, "its pod was deleted");
                died |= dead;
                dead
            }
        };
        if changed {
            metrics::counter!("kdfs_namenode_kubernetes_events_total", "kind" => event.kind())
                .increment(1);
            tracing::info!(node = %id, pod = event.pod(), event = ?event, "applied Kubernetes event");
        }
    }
    died
}

/// What the worker watches, and through which client.
#[derive(Clone)]
pub struct Watch {
    pub client: Client,
    /// The datanodes' namespace.
    pub namespace: String,
    /// Label selector of the datanode pods.
    pub selector: String,
}

impl Watch {
    /// Watches `selector` in the client's default namespace.
    pub fn new(client: Client, selector: &str) -> Self {
        let namespace = client.default_namespace().to_owned();
        Self {
            client,
            namespace,
            selector: selector.to_owned(),
        }
    }
}

/// Builds a client if Kubernetes awareness is wanted (`config.kubernetes`), and logs
/// the one line that says whether it is on (and in which namespace) or off (and why).
/// Never fails: without a usable configuration the namenode runs without Kubernetes.
pub async fn connect(config: &crate::Config) -> Option<Watch> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
    match decide(config.kubernetes, host.as_deref()) {
        Decision::Disabled(reason) => {
            tracing::info!(reason, "Kubernetes awareness off");
            None
        }
        Decision::Enabled => match Client::try_default().await {
            Ok(client) => {
                let namespace = config
                    .kubernetes_namespace
                    .clone()
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| namespace(&client));
                tracing::info!(
                    namespace = %namespace,
                    selector = %config.kubernetes_selector,
                    "Kubernetes awareness on: watching datanode pods"
                );
                Some(Watch {
                    client,
                    namespace,
                    selector: config.kubernetes_selector.clone(),
                })
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "Kubernetes awareness off: no usable Kubernetes client configuration"
                );
                None
            }
        },
    }
}

/// `POD_NAMESPACE` (downward API), else the client's default namespace.
pub fn namespace(client: &Client) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| client.default_namespace().to_owned())
}

/// Node and StatefulSet look-ups with small caches. A failed look-up leaves the fact
/// unknown (the pure layer then emits less) and is retried on the next reconcile.
struct Lookups {
    nodes: Api<Node>,
    sets: Api<StatefulSet>,
    node_cache: HashMap<String, (Node, Instant)>,
    set_cache: HashMap<String, (Option<i32>, Instant)>,
    /// The RBAC does not allow reading StatefulSets: stop asking (logged once).
    sets_forbidden: bool,
}

impl Lookups {
    fn new(client: Client, namespace: &str) -> Self {
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
    async fn events(&mut self, pod: &Pod, watched: Watched) -> Vec<ClusterEvent> {
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

/// The `kubernetes` worker: watches the datanode pods until `token` is cancelled,
/// applying what it learns to `ns` and kicking `kick` (the replication worker) when a
/// datanode dies. Errors are logged and retried with backoff.
pub async fn worker(
    Watch {
        client,
        namespace,
        selector,
    }: Watch,
    ns: Arc<NameSystem>,
    kick: Arc<Notify>,
    token: CancellationToken,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut lookups = Lookups::new(client, &namespace);
    let mut tracker = PodTracker::default();
    // `Init` only marks the start of a (re)list. It is dropped before the backoff,
    // which resets on every `Ok` item: otherwise a failing list would be retried at
    // the initial delay forever instead of backing off. The tracker starts a relist at
    // its first `InitApply` (or an empty one at `InitDone`) instead.
    let watch = watcher(pods, watcher::Config::default().labels(&selector))
        .filter(|e| std::future::ready(!matches!(e, Ok(watcher::Event::Init))))
        .default_backoff();
    let mut watch = std::pin::pin!(watch);
    let mut reconcile = tokio::time::interval(RECONCILE_INTERVAL);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let pods: Vec<(Pod, Watched)> = tokio::select! {
            _ = token.cancelled() => return,
            item = watch.next() => match item {
                Some(Ok(event)) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("pod watch recovered");
                    }
                    tracker.observe(event)
                }
                Some(Err(e)) => {
                    tracker.abort_relist();
                    // Logged once per outage; the stream backs off before retrying.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "pod watch failed; retrying with backoff");
                    } else {
                        tracing::debug!(error = %e, "pod watch still failing");
                    }
                    metrics::gauge!("kdfs_namenode_kubernetes_watch_up").set(0.0);
                    continue;
                }
                None => {
                    tracing::warn!("pod watch ended");
                    return;
                }
            },
            _ = reconcile.tick() => tracker
                .pods()
                .map(|p| (p.clone(), Watched::Applied))
                .collect(),
        };
        let mut events = Vec::new();
        for (pod, watched) in pods {
            events.extend(lookups.events(&pod, watched).await);
        }
        let ns2 = ns.clone();
        // The hooks take the namesystem's locks: keep them off the async threads.
        let died = !events.is_empty()
            && tokio::task::spawn_blocking(move || {
                events.iter().fold(false, |d, e| apply(&ns2, e) | d)
            })
            .await
            .unwrap_or(false);
        if died {
            kick.notify_one();
        }
        // The worker's state, for /metrics: whether the watch works, and what it sees.
        metrics::gauge!("kdfs_namenode_kubernetes_watch_up").set(if failing { 0.0 } else { 1.0 });
        metrics::gauge!("kdfs_namenode_kubernetes_datanode_pods")
            .set(tracker.pods().count() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    const POD: &str = include_str!("../tests/fixtures/datanode-pod.json");
    const NODE: &str = include_str!("../tests/fixtures/node-zone-a.json");

    /// 2026-11-22T02:00:00Z in Unix milliseconds: when the test pods' deletion began
    /// (due 30 s later).
    const DELETION_MS: u64 = 1_795_312_800_000;

    fn recorded_pod() -> Pod {
        serde_json::from_str(POD).expect("fixture is a Pod")
    }

    fn recorded_node() -> Node {
        serde_json::from_str(NODE).expect("fixture is a Node")
    }

    fn pod(name: &str, on: &str, terminating: bool) -> Pod {
        let mut meta = json!({ "name": name, "namespace": "kdfs" });
        if terminating {
            meta["deletionTimestamp"] = json!("2026-11-22T02:00:30Z");
            meta["deletionGracePeriodSeconds"] = json!(30);
        }
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": { "nodeName": on, "containers": [{ "name": "datanode" }] }
        }))
        .unwrap()
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
                "deleted: only that",
                pod("datanode-2", "node-a", true),
                Watched::Deleted,
                Context {
                    node: Some(&a),
                    replicas: Some(3),
                },
                vec![Deleted {
                    pod: "datanode-2".into(),
                    since_ms: Some(DELETION_MS),
                }],
            ),
            (
                "ordinal at the replica count: scaled away",
                pod("datanode-3", "node-a", false),
                Applied,
                Context {
                    node: None,
                    replicas: Some(3),
                },
                vec![ScaledAway {
                    pod: "datanode-3".into(),
                }],
            ),
            (
                "scaled away and terminating: scaled away",
                pod("datanode-4", "node-a", true),
                Applied,
                Context {
                    node: None,
                    replicas: Some(3),
                },
                vec![ScaledAway {
                    pod: "datanode-4".into(),
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
                pod("datanode-0", "node-a", false),
                Applied,
                Context {
                    node: None,
                    replicas: Some(0),
                },
                vec![ScaledAway {
                    pod: "datanode-0".into(),
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

    #[tokio::test]
    async fn off_means_no_client() {
        let config = crate::Config::parse_from(["kdfs-namenode", "--kubernetes", "off"]);
        assert!(connect(&config).await.is_none());
    }

    #[test]
    fn awareness_is_on_in_a_cluster_or_when_asked() {
        for (mode, host, want) in [
            (Mode::Auto, None, false),
            (Mode::Auto, Some(""), false),
            (Mode::Auto, Some("10.43.0.1"), true),
            (Mode::On, None, true),
            (Mode::Off, Some("10.43.0.1"), false),
        ] {
            let got = decide(mode, host) == Decision::Enabled;
            assert_eq!(got, want, "{mode:?} {host:?}");
        }
    }

    #[test]
    fn a_relist_reports_pods_that_vanished_while_the_watch_was_down() {
        let mut t = PodTracker::default();
        let names = |v: Vec<(Pod, Watched)>| -> Vec<(String, Watched)> {
            let mut v: Vec<_> = v
                .into_iter()
                .map(|(p, w)| (p.metadata.name.unwrap(), w))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert!(t.observe(watcher::Event::Init).is_empty());
        for n in ["datanode-0", "datanode-1", "datanode-2"] {
            t.observe(watcher::Event::InitApply(pod(n, "a", false)));
        }
        assert!(t.observe(watcher::Event::InitDone).is_empty());
        assert_eq!(
            names(t.observe(watcher::Event::Delete(pod("datanode-2", "a", false)))),
            vec![("datanode-2".into(), Watched::Deleted)]
        );
        assert_eq!(t.pods().count(), 2);
        // The watch broke; datanode-1 went away meanwhile, datanode-3 appeared.
        t.observe(watcher::Event::Init);
        t.observe(watcher::Event::InitApply(pod("datanode-0", "a", false)));
        t.observe(watcher::Event::InitApply(pod("datanode-3", "a", false)));
        assert_eq!(
            names(t.observe(watcher::Event::InitDone)),
            vec![("datanode-1".into(), Watched::Deleted)]
        );
        assert_eq!(t.pods().count(), 2);

        // As the worker sees it (no `Init`): a relist cut short by an error is
        // forgotten, and an empty list means every known pod is gone.
        t.observe(watcher::Event::InitApply(pod("datanode-0", "a", false)));
        t.abort_relist();
        assert_eq!(
            names(t.observe(watcher::Event::InitDone)),
            vec![
                ("datanode-0".into(), Watched::Deleted),
                ("datanode-3".into(), Watched::Deleted)
            ]
        );
        assert_eq!(t.pods().count(), 0);
    }
}

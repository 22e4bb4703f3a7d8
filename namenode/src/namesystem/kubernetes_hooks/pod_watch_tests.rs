//! The hooks as the real `kubernetes` worker drives them, against a mock Kubernetes
//! API (the kube-rs way: a `tower_test` mock service behind a real `kube::Client`),
//! serving recorded list, watch, node and StatefulSet responses. No cluster needed.
//! Covers the life events of DESIGN.md §5: a rollout, an eviction or a deletion by
//! hand is maintenance, a scale-down decommissions (with the replica count read
//! fresh), a scale-up leaves the new pod alone, and a 403 is asked once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kdfs_core::DatanodeId;
use kube::client::Body;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower_test::mock;

use crate::cluster::{NodeState, Registration};
use crate::config::DATANODE_SELECTOR;
use crate::kubernetes;
use crate::namesystem::NameSystem;
use crate::namesystem::membership::Outgoing;
use crate::namesystem::test_fixtures::Sim;
use crate::namesystem::uploads::CommittedBlock;
use kdfs_testkit::wait::wait_until;

const NAMESPACE: &str = "kdfs";
/// The recorded node (`kubectl get node -o json` on k3d): zone-a.
const ZONED_NODE: &str = include_str!("../../../tests/fixtures/node-zone-a.json");
const ZONED_NODE_NAME: &str = "k3d-kdfs-agent-0";

/// A datanode pod of StatefulSet `datanode`, scheduled on `node`.
fn pod(name: &str, node: &str, terminating: bool) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": format!("uid-{name}"),
            "resourceVersion": "90",
            "labels": { "app.kubernetes.io/name": "datanode" },
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "datanode",
                "uid": "set-uid", "controller": true
            }]
        },
        "spec": { "nodeName": node, "containers": [{ "name": "datanode", "image": "kdfs" }] },
        "status": { "phase": "Running" }
    });
    if terminating {
        leaving_since(&mut pod, "2099-01-01T00:01:00Z");
    }
    pod
}

/// Marks a pod terminating: due to be gone at `due`, its deletion began 60 s before.
/// The default far-future date means "after the test's datanodes registered".
fn leaving_since(pod: &mut Value, due: &str) {
    pod["metadata"]["deletionTimestamp"] = json!(due);
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(60);
}

fn node(name: &str, zone: Option<&str>) -> Value {
    let mut labels = json!({ "kubernetes.io/hostname": name });
    if let Some(z) = zone {
        labels["topology.kubernetes.io/zone"] = json!(z);
    }
    json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name, "labels": labels } })
}

fn status(code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("mock says {reason}"), "reason": reason, "code": code
    })
}

/// Watch events the test releases one batch at a time, each answering one watch.
type Batches = Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Vec<Value>>>>;

/// What the mock API server answers.
#[derive(Clone, Default)]
struct MockApi {
    pods: Vec<Value>,
    /// Watch events (`{"type": ..., "object": ...}`) sent on the first watch.
    watch: Vec<Value>,
    nodes: Vec<Value>,
    /// The StatefulSet's replicas (the test may change it); `None`: reading
    /// StatefulSets is forbidden (403).
    replicas: Arc<Mutex<Option<i32>>>,
    /// Reading nodes is forbidden (403).
    nodes_forbidden: bool,
    /// This many pod lists fail with 500 before one succeeds.
    failing_lists: usize,
    /// Later watches wait for a batch from here (held open without one).
    later: Option<Batches>,
}

fn watch_body(events: &[Value]) -> Body {
    let mut body = Vec::new();
    for e in events {
        body.extend(serde_json::to_vec(e).unwrap());
        body.push(b'\n');
    }
    Body::from(body)
}

fn replicas(r: Option<i32>) -> Arc<Mutex<Option<i32>>> {
    Arc::new(Mutex::new(r))
}

fn reply(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

impl MockApi {
    /// Serves requests until the client goes away; records every request line.
    fn serve(
        mut self,
        handle: mock::Handle<Request<Body>, Response<Body>>,
    ) -> Arc<Mutex<Vec<String>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut handle = std::pin::pin!(handle);
            let mut watches = 0;
            // Later watches are held open (kept here), as an idle API server does.
            let mut parked = Vec::new();
            while let Some((req, send)) = handle.next_request().await {
                let path = req.uri().path().to_owned();
                let query = req.uri().query().unwrap_or("").to_owned();
                log.lock()
                    .unwrap()
                    .push(format!("{} {}", req.method(), req.uri()));
                let pods_path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
                if path == pods_path && query.contains("watch=true") {
                    watches += 1;
                    if watches == 1 {
                        send.send_response(Response::new(watch_body(&self.watch)));
                    } else if let Some(later) = self.later.clone() {
                        tokio::spawn(async move {
                            let batch = later.lock().await.recv().await;
                            match batch {
                                Some(events) => {
                                    send.send_response(Response::new(watch_body(&events)))
                                }
                                // No more: held open until the client goes.
                                None => std::future::pending().await,
                            }
                        });
                    } else {
                        parked.push(send);
                    }
                } else if path == pods_path {
                    if self.failing_lists > 0 {
                        self.failing_lists -= 1;
                        let s = status(500, "InternalError");
                        send.send_response(reply(StatusCode::INTERNAL_SERVER_ERROR, &s));
                    } else {
                        let list = json!({
                            "apiVersion": "v1", "kind": "PodList",
                            "metadata": { "resourceVersion": "100" },
                            "items": self.pods,
                        });
                        send.send_response(reply(StatusCode::OK, &list));
                    }
                } else if path.starts_with("/api/v1/nodes/") && self.nodes_forbidden {
                    send.send_response(reply(StatusCode::FORBIDDEN, &status(403, "Forbidden")));
                } else if let Some(name) = path.strip_prefix("/api/v1/nodes/") {
                    match self.nodes.iter().find(|n| n["metadata"]["name"] == name) {
                        Some(n) => send.send_response(reply(StatusCode::OK, n)),
                        None => send
                            .send_response(reply(StatusCode::NOT_FOUND, &status(404, "NotFound"))),
                    }
                } else if path
                    == format!("/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/datanode")
                {
                    let replicas = *self.replicas.lock().unwrap();
                    match replicas {
                        Some(r) => send.send_response(reply(
                            StatusCode::OK,
                            &json!({
                                "apiVersion": "apps/v1", "kind": "StatefulSet",
                                "metadata": { "name": "datanode", "namespace": NAMESPACE },
                                "spec": {
                                    "replicas": r, "serviceName": "datanode",
                                    "selector": { "matchLabels": { "app.kubernetes.io/name": "datanode" } },
                                    "template": { "metadata": {}, "spec": { "containers": [] } }
                                }
                            }),
                        )),
                        None => send.send_response(reply(
                            StatusCode::FORBIDDEN,
                            &status(403, "Forbidden"),
                        )),
                    }
                } else {
                    send.send_response(reply(StatusCode::NOT_FOUND, &status(404, "NotFound")));
                }
            }
            drop(parked);
        });
        seen
    }
}

/// A namesystem with datanodes registered as pods, before the worker starts.
struct Unwatched {
    ns: Arc<NameSystem>,
    ids: Vec<DatanodeId>,
    sim: Sim,
}

impl Unwatched {
    /// Starts the `kubernetes` worker against `api`.
    fn watching(self, api: MockApi) -> Harness {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let seen = api.serve(handle);
        let client = kube::Client::new(service, NAMESPACE);
        let kick = Arc::new(Notify::new());
        let token = CancellationToken::new();
        let watch = kubernetes::Watch::new(client, DATANODE_SELECTOR);
        let worker = tokio::spawn(kubernetes::worker(
            watch,
            self.ns.clone(),
            kick.clone(),
            token.clone(),
        ));
        Harness {
            ns: self.ns,
            ids: self.ids,
            kick,
            token,
            worker,
            seen,
            _sim: self.sim,
        }
    }
}

/// A namesystem with datanodes registered as pods, and a running `kubernetes` worker.
struct Harness {
    ns: Arc<NameSystem>,
    ids: Vec<DatanodeId>,
    kick: Arc<Notify>,
    token: CancellationToken,
    worker: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Vec<String>>>,
    _sim: Sim,
}

impl Harness {
    /// `datanodes`: (pod name it registers with, advertise address).
    fn start(api: MockApi, datanodes: &[(&str, &str)]) -> Self {
        Self::registered(datanodes).watching(api)
    }

    /// A namesystem (replication 2) with these datanodes registered; no watch yet.
    fn registered(datanodes: &[(&str, &str)]) -> Unwatched {
        // --dead-after 1h: anything declared dead here was declared by the watch.
        let mut sim = Sim::new(&["--dead-after", "1h", "--kubernetes", "off"]);
        let ids = datanodes
            .iter()
            .map(|(pod, address)| {
                sim.register_as(Registration {
                    address: address.to_string(),
                    pod_name: pod.to_string(),
                    load: Sim::load(),
                    ..Registration::default()
                })
            })
            .collect();
        Unwatched {
            ns: sim.ns.clone(),
            ids,
            sim,
        }
    }
    fn state(&self, i: usize) -> (NodeState, String) {
        let st = self.ns.status();
        let n = st
            .nodes
            .iter()
            .find(|n| n.node.id == self.ids[i])
            .expect("registered");
        (n.node.state, n.node.zone.clone())
    }

    async fn wait_for(&self, i: usize, what: &str, want: impl Fn(NodeState, &str) -> bool) {
        wait_until(what, Duration::from_secs(20), || {
            let (s, z) = self.state(i);
            let ok = want(s, &z);
            async move { ok }
        })
        .await;
    }

    /// Cancels the worker and checks that it stops promptly.
    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.worker)
            .await
            .expect("worker stops when cancelled")
            .expect("worker did not panic");
    }
}

/// The DNS name a datanode pod advertises.
fn dns(pod: &str) -> String {
    format!("{pod}.datanode.kdfs.svc.cluster.local:9866")
}

impl Harness {
    /// Requests seen so far whose line contains `part`.
    fn requests(&self, part: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains(part))
            .count()
    }

    /// Datanode `i` registers again (its pod's next incarnation, same volume).
    fn reregister(&self, i: usize, pod: &str) {
        let reg = Registration {
            address: dns(pod),
            pod_name: pod.to_owned(),
            load: Sim::load(),
            ..Registration::default()
        };
        self.ns.register(self.ids[i], &reg).unwrap();
        self.ns.heartbeat(&self.ids[i], Sim::load()).unwrap();
    }
}

const SET_PATH: &str = "/statefulsets/datanode";

#[tokio::test]
async fn the_pod_watch_sets_zones_and_tells_restarts_from_departures() {
    let mut older_incarnation = pod("datanode-4", "node-c", false);
    leaving_since(&mut older_incarnation, "2000-01-01T00:01:00Z");
    let mut zoned: Value = serde_json::from_str(ZONED_NODE).unwrap();
    zoned["metadata"]["resourceVersion"] = json!("1710");
    let api = MockApi {
        pods: vec![
            pod("datanode-0", ZONED_NODE_NAME, false),
            pod("datanode-1", "node-b", true),
            pod("datanode-2", "node-c", false),
            pod("datanode-3", ZONED_NODE_NAME, false),
            pod("datanode-5", "node-c", false),
        ],
        watch: vec![
            // Late news of an older incarnation of datanode-4, whose deletion began
            // before the datanode-4 we know registered: left alone.
            json!({ "type": "DELETED", "object": older_incarnation }),
            // Deleted by hand while its ordinal is wanted: it comes back.
            json!({ "type": "DELETED", "object": pod("datanode-2", "node-c", true) }),
            // Deleted beyond the replica count: gone for good.
            json!({ "type": "DELETED", "object": pod("datanode-5", "node-c", true) }),
        ],
        nodes: vec![zoned, node("node-b", Some("zone-b")), node("node-c", None)],
        replicas: replicas(Some(3)),
        ..MockApi::default()
    };
    let h = Harness::start(
        api,
        &[
            ("datanode-0", &dns("datanode-0")),
            ("datanode-1", &dns("datanode-1")),
            ("datanode-2", &dns("datanode-2")),
            // Registered without a pod name: matched by its advertise address.
            ("", &dns("datanode-3")),
            ("datanode-4", &dns("datanode-4")),
            ("datanode-5", &dns("datanode-5")),
        ],
    );

    h.wait_for(0, "datanode-0 in zone-a", |s, z| {
        s == NodeState::Live && z == "zone-a"
    })
    .await;
    h.wait_for(
        1,
        "terminating datanode-1 (ordinal wanted) in maintenance",
        |s, z| s == NodeState::Maintenance && z == "zone-b",
    )
    .await;
    h.wait_for(2, "datanode-2, deleted by hand, in maintenance", |s, _| {
        s == NodeState::Maintenance
    })
    .await;
    h.wait_for(5, "datanode-5, deleted beyond the count, dead", |s, _| {
        s == NodeState::Dead
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), h.kick.notified())
        .await
        .expect("a death kicks the replication worker");
    // Ordinal 3 of 3 replicas but running: a scale-up's new pod, never scaled away.
    h.wait_for(3, "datanode-3 in zone-a", |_, z| z == "zone-a")
        .await;
    assert_eq!(h.state(3).0, NodeState::Live);
    // Its DELETED came before datanode-2's, so it has been handled by now.
    assert_eq!(
        h.state(4).0,
        NodeState::Live,
        "a newer incarnation is not killed by old news"
    );

    let seen = h.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/kdfs/pods?")
                && r.contains("labelSelector=app.kubernetes.io%2Fname%3Ddatanode")),
        "pods are listed by the datanode label: {seen:?}"
    );
    let node_gets = h.requests(&format!("/api/v1/nodes/{ZONED_NODE_NAME}"));
    assert_eq!(node_gets, 1, "node look-ups are cached: {seen:?}");
    h.stop().await;
}

#[tokio::test]
async fn rollout_eviction_scale_up_and_scale_down_as_they_happen() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let count = replicas(Some(3));
    let api = MockApi {
        pods: (0..3)
            .map(|i| pod(&format!("datanode-{i}"), "node-a", false))
            .collect(),
        nodes: vec![node("node-a", Some("zone-a"))],
        replicas: count.clone(),
        later: Some(Arc::new(tokio::sync::Mutex::new(rx))),
        ..MockApi::default()
    };
    let h = Harness::start(
        api,
        &[
            ("datanode-0", &dns("datanode-0")),
            ("datanode-1", &dns("datanode-1")),
            ("datanode-2", &dns("datanode-2")),
            ("datanode-3", &dns("datanode-3")),
        ],
    );
    for i in 0..3 {
        h.wait_for(i, "zone", |_, z| z == "zone-a").await;
    }
    assert_eq!(
        h.requests(SET_PATH),
        0,
        "running pods need no replica count"
    );

    // A rollout: datanode-2 terminates, is deleted, and its next incarnation registers.
    let rolled = pod("datanode-2", "node-a", true);
    tx.send(vec![
        json!({ "type": "MODIFIED", "object": rolled.clone() }),
    ])
    .unwrap();
    h.wait_for(2, "rolled datanode-2 in maintenance", |s, _| {
        s == NodeState::Maintenance
    })
    .await;
    tx.send(vec![json!({ "type": "DELETED", "object": rolled })])
        .unwrap();
    wait_until(
        "the deletion read the replica count",
        Duration::from_secs(20),
        || {
            let n = h.requests(SET_PATH);
            async move { n >= 2 }
        },
    )
    .await;
    assert_eq!(
        h.state(2).0,
        NodeState::Maintenance,
        "not dead: it comes back"
    );
    h.reregister(2, "datanode-2");
    assert_eq!(h.state(2).0, NodeState::Live, "back: maintenance is over");

    // An eviction (a node drain): the pod terminates with a DisruptionTarget condition.
    let mut evicted = pod("datanode-1", "node-a", true);
    evicted["status"]["conditions"] = json!([{
        "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting"
    }]);
    tx.send(vec![json!({ "type": "MODIFIED", "object": evicted })])
        .unwrap();
    h.wait_for(1, "evicted datanode-1 in maintenance", |s, _| {
        s == NodeState::Maintenance
    })
    .await;

    // A scale-up: datanode-3 appears while the count read before said 3.
    *count.lock().unwrap() = Some(4);
    tx.send(vec![
        json!({ "type": "ADDED", "object": pod("datanode-3", "node-a", false) }),
    ])
    .unwrap();
    h.wait_for(3, "the new datanode-3 gets its zone", |_, z| z == "zone-a")
        .await;
    assert_eq!(
        h.state(3).0,
        NodeState::Live,
        "a scale-up never decommissions"
    );

    // A scale-down back to 3: datanode-3 terminates beyond the count read now.
    *count.lock().unwrap() = Some(3);
    tx.send(vec![
        json!({ "type": "MODIFIED", "object": pod("datanode-3", "node-a", true) }),
    ])
    .unwrap();
    h.wait_for(3, "scaled-away datanode-3 decommissioning", |s, _| {
        s == NodeState::Decommissioning
    })
    .await;
    tx.send(vec![
        json!({ "type": "DELETED", "object": pod("datanode-3", "node-a", true) }),
    ])
    .unwrap();
    h.wait_for(3, "scaled-away datanode-3 dead once deleted", |s, _| {
        s == NodeState::Dead
    })
    .await;
    assert_eq!(h.state(0).0, NodeState::Live);
    h.stop().await;
}

#[tokio::test]
async fn api_errors_are_retried_and_forbidden_reads_are_asked_once() {
    let api = MockApi {
        pods: vec![
            pod("datanode-0", "node-a", false),
            pod("datanode-3", "node-a", true),
            // Its node does not exist (404): asked again on every reconcile.
            pod("datanode-4", "node-gone", false),
        ],
        nodes: vec![node("node-a", Some("zone-a"))],
        replicas: replicas(None),
        failing_lists: 2,
        ..MockApi::default()
    };
    let h = Harness::start(
        api,
        &[
            ("datanode-0", "a:1"),
            ("datanode-3", "b:1"),
            ("datanode-4", "c:1"),
        ],
    );
    h.wait_for(0, "zone after two failed lists", |s, z| {
        s == NodeState::Live && z == "zone-a"
    })
    .await;
    // Without the StatefulSet's replica count a terminating pod is restarting.
    h.wait_for(1, "terminating datanode-3 in maintenance", |s, z| {
        s == NodeState::Maintenance && z == "zone-a"
    })
    .await;
    wait_until("two reconciles", Duration::from_secs(20), || {
        let n = h.requests("/api/v1/nodes/node-gone");
        async move { n >= 3 }
    })
    .await;
    assert_eq!(h.requests(SET_PATH), 1, "a 403 is not asked again");
    h.stop().await;
}

#[tokio::test]
async fn a_forbidden_node_read_is_asked_once_and_zones_stay_unknown() {
    let api = MockApi {
        pods: vec![
            pod("datanode-0", "node-a", false),
            pod("datanode-1", "node-b", false),
            // Terminating: its StatefulSet is read on every reconcile.
            pod("datanode-2", "node-a", true),
        ],
        nodes: vec![node("node-a", Some("zone-a"))],
        replicas: replicas(Some(3)),
        nodes_forbidden: true,
        ..MockApi::default()
    };
    let h = Harness::start(
        api,
        &[
            ("datanode-0", &dns("datanode-0")),
            ("datanode-1", &dns("datanode-1")),
            ("datanode-2", &dns("datanode-2")),
        ],
    );
    h.wait_for(2, "datanode-2 in maintenance", |s, _| {
        s == NodeState::Maintenance
    })
    .await;
    wait_until("two reconciles", Duration::from_secs(20), || {
        let n = h.requests(SET_PATH);
        async move { n >= 3 }
    })
    .await;
    assert_eq!(
        h.requests("/api/v1/nodes/"),
        1,
        "a 403 on nodes is asked once"
    );
    assert_eq!(h.state(0).1, "", "no zone");
    h.stop().await;
}

#[tokio::test]
async fn a_scaled_away_pods_blocks_are_copied_without_waiting_for_dead_after() {
    let dns = Harness::registered(&[
        ("datanode-0", "datanode-0.datanode:9866"),
        ("datanode-1", "datanode-1.datanode:9866"),
        ("datanode-2", "datanode-2.datanode:9866"),
    ]);
    // One block on datanode-1 and datanode-2 (replication 2).
    let content = b"held by datanode-1 and datanode-2";
    let id = kdfs_core::BlockId::from_slice(&sha2::Sha256::digest(content)).unwrap();
    let lease = dns.ns.begin_upload("f", "", 0).await.unwrap();
    dns.ns
        .commit(
            &lease.id,
            kdfs_core::FileId::from_slice(&sha2::Sha256::digest(content)).unwrap(),
            content.len() as u64,
            vec![CommittedBlock {
                id,
                length: content.len() as u64,
                replicas: vec![dns.ids[1], dns.ids[2]],
            }],
        )
        .await
        .unwrap();
    let pods: Vec<Value> = (0..3)
        .map(|i| pod(&format!("datanode-{i}"), "node-a", false))
        .collect();
    let h = dns.watching(MockApi {
        pods,
        watch: vec![json!({ "type": "DELETED", "object": pod("datanode-2", "node-a", true) })],
        nodes: vec![node("node-a", Some("zone-a"))],
        // Scaled down to two: datanode-2 is not coming back.
        replicas: replicas(Some(2)),
        ..MockApi::default()
    });
    h.wait_for(2, "datanode-2 dead", |s, _| s == NodeState::Dead)
        .await;
    tokio::time::timeout(Duration::from_secs(5), h.kick.notified())
        .await
        .expect("the replication worker is kicked");
    // What that worker does next: datanode-1 is told to copy the block to datanode-0.
    h.ns.replication_tick();
    let cmds =
        h.ns.heartbeat(&h.ids[1], Sim::load())
            .expect("datanode-1 is known");
    let copies: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            Outgoing::Replicate { block, targets, .. } => {
                Some((*block, targets.iter().map(|t| t.id).collect::<Vec<_>>()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(copies, vec![(id, vec![h.ids[0]])]);
    h.stop().await;
}

#[tokio::test]
async fn pods_are_matched_by_pod_name_or_exact_dns_label() {
    let h = Harness::registered(&[
        ("", "datanode-1.datanode.kdfs.svc:9866"),
        ("", "datanode-10.datanode.kdfs.svc:9866"),
        ("datanode-1", "10.42.0.7:9866"),
        ("datanode-10", "datanode-1.datanode.kdfs.svc:9866"),
        ("", "datanode-1:9866"),
    ]);
    let mut found: Vec<DatanodeId> =
        h.ns.datanodes_of_pod("datanode-1")
            .into_iter()
            .map(|d| d.id)
            .collect();
    let mut want = vec![h.ids[0], h.ids[2]];
    found.sort_by_key(|id| id.to_string());
    want.sort_by_key(|id| id.to_string());
    assert_eq!(found, want, "a registered pod name wins over the address");
    assert!(h.ns.datanodes_of_pod("").is_empty());
    assert!(h.ns.datanodes_of_pod("datanode-2").is_empty());
}

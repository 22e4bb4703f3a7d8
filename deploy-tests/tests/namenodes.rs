//! The namenodes of `k8s/` held to what high availability needs (README.md, "Namenode
//! high availability"): an odd number of at least three, all started together, a
//! budget that never lets a drain take a majority, one per node whenever the cluster
//! has the nodes (yet still scheduled on a small one), a headless Service whose names
//! resolve before any pod is ready, each pod's `--id` its index, one `--peers` list
//! naming every pod by that Service at the port it serves, and the datanodes' and
//! gateways' `--namenode` lists naming exactly the same namenodes.
//!
//! `deploy_dry_run.rs` checks the rest: the namenode's certificate names every host
//! these lists dial, `KDFS_NAMENODES=1` gives the single form, and deploy.sh waits for a
//! leader and moves a cluster from one namenode to three.

mod common;

use common::*;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The env var in `c` whose value names the namenodes, whichever form it takes (a flag
/// or its variable).
fn setting<'a>(c: &'a Container, flag_name: &str, var: &str) -> Option<&'a str> {
    env_value(c, var).or_else(|| flag(c, flag_name))
}

/// Index of `var` in `c`'s env list.
fn env_index(c: &Container, var: &str) -> Option<usize> {
    c.env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .position(|e| e.name == var)
}

/// `$(VAR)` references in a value are expanded by Kubernetes only from variables
/// defined earlier in the same env list.
fn assert_references_defined_earlier(c: &Container, var: &str, who: &str) {
    let value = env_value(c, var).unwrap_or_default();
    let at = env_index(c, var).expect("the variable is set");
    for part in value.split("$(").skip(1) {
        let name = part.split(')').next().unwrap_or_default();
        let defined = env_index(c, name).unwrap_or_else(|| {
            panic!("{who}: {var} uses $({name}), which its env does not define")
        });
        assert!(
            defined < at,
            "{who}: {var} uses $({name}), defined after it (Kubernetes leaves it unexpanded)"
        );
    }
}

/// The namenodes' StatefulSet facts every test here needs.
struct Namenodes {
    replicas: i32,
    service: String,
    grpc: i32,
}

fn namenodes(m: &Manifests) -> Namenodes {
    let nn = m.stateful_set("namenode");
    let c = only_container(&nn.spec.template, "namenode");
    Namenodes {
        replicas: nn.spec.replicas.expect("replicas is set"),
        service: nn.spec.service_name.clone().expect("serviceName is set"),
        grpc: container_port(c, "grpc").expect("the namenode has a grpc port"),
    }
}

/// The host every namenode pod is dialled by: `namenode-<id>.<service>.<namespace>.svc…`.
fn pod_host(nn: &Namenodes, id: i32) -> String {
    format!(
        "namenode-{id}.{}.$(POD_NAMESPACE).svc.cluster.local:{}",
        nn.service, nn.grpc
    )
}

#[test]
fn three_namenodes_start_together_one_per_node_with_a_budget_of_one() {
    let m = load();
    let set = m.stateful_set("namenode");
    let nn = namenodes(&m);
    assert_eq!(
        nn.replicas, 3,
        "three namenodes: one may fail, two are a majority"
    );

    // None is ready alone (readiness needs an elected leader): they must start together.
    assert_eq!(
        set.spec.pod_management_policy.as_deref(),
        Some("Parallel"),
        "OrderedReady would wait for namenode-0 to be ready before making namenode-1"
    );

    // A voluntary disruption takes at most what leaves a majority.
    let own = labels(&set.spec.template);
    let b = m.budget_for(&own).spec.as_ref().expect("spec");
    let max_unavailable = match b.max_unavailable {
        Some(IntOrString::Int(n)) => n,
        ref other => panic!("the namenode budget is maxUnavailable: N, not {other:?}"),
    };
    assert!(b.min_available.is_none());
    assert_eq!(max_unavailable, 1);
    assert!(
        nn.replicas - max_unavailable > nn.replicas / 2,
        "a drain may leave fewer namenodes than a majority"
    );

    // One per node when the cluster has the nodes, and still scheduled when it has
    // fewer: a hard hostname spread of skew 1 over schedulable nodes (a pod may join an
    // occupied node only while no schedulable node is empty), no required anti-affinity.
    let spec = pod(&set.spec.template);
    let spread = spec
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default();
    let by_node = spread
        .iter()
        .find(|t| t.topology_key == "kubernetes.io/hostname")
        .expect("a topology spread over kubernetes.io/hostname");
    assert_eq!(by_node.max_skew, 1);
    assert_eq!(
        by_node.when_unsatisfiable, "DoNotSchedule",
        "two namenodes on one node while another node is free: a node loss takes a majority"
    );
    assert_eq!(
        by_node.node_taints_policy.as_deref(),
        Some("Honor"),
        "cordoned and tainted nodes count as empty domains without Honor, and would \
         block the third namenode on a cluster with a tainted control plane"
    );
    assert!(selects(
        &match_labels(by_node.label_selector.as_ref()),
        &own
    ));
    let by_zone = spread
        .iter()
        .find(|t| t.topology_key == "topology.kubernetes.io/zone")
        .expect("a topology spread over zones");
    assert_eq!(
        by_zone.when_unsatisfiable, "ScheduleAnyway",
        "a required zone spread leaves nodes without a zone label unused"
    );
    assert!(selects(
        &match_labels(by_zone.label_selector.as_ref()),
        &own
    ));
    let anti = spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref());
    assert!(
        anti.and_then(|a| a
            .required_during_scheduling_ignored_during_execution
            .as_ref())
            .is_none(),
        "required anti-affinity would leave a namenode pending on a cluster of fewer nodes"
    );

    // Each pod by name, also before it is ready: a headless Service publishing
    // not-ready addresses, the StatefulSet's own.
    let svc = m.service(&nn.service).spec.as_ref().expect("spec");
    assert_eq!(svc.cluster_ip.as_deref(), Some("None"), "headless");
    assert_eq!(
        svc.publish_not_ready_addresses,
        Some(true),
        "peers must resolve each other before a leader (and so readiness) exists"
    );
    assert!(selects(svc.selector.as_ref().expect("selector"), &own));
    assert!(
        svc.ports.iter().flatten().any(|p| p.port == nn.grpc),
        "the Service serves the namenode's gRPC port {}",
        nn.grpc
    );

    // Ready means a caught-up member (the namenode's /readyz).
    let c = only_container(&set.spec.template, "namenode");
    let ready = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
    assert_eq!(ready.and_then(|g| g.path.as_deref()), Some("/readyz"));
}

#[test]
fn each_namenode_takes_its_index_as_id_and_names_every_peer() {
    let m = load();
    let nn = namenodes(&m);
    let c = only_container(&m.stateful_set("namenode").spec.template, "namenode");
    assert_eq!(
        env_from_field(c, "KDFS_ID"),
        Some("metadata.labels['apps.kubernetes.io/pod-index']"),
        "--id is the pod's index (the StatefulSet controller's label)"
    );
    assert!(flag(c, "id").is_none(), "--id comes from KDFS_ID alone");
    assert_eq!(
        env_from_field(c, "POD_NAMESPACE"),
        Some("metadata.namespace")
    );
    let peers = env_value(c, "KDFS_PEERS").expect("KDFS_PEERS (--peers)");
    assert!(
        flag(c, "peers").is_none(),
        "--peers comes from KDFS_PEERS alone"
    );
    assert_references_defined_earlier(c, "KDFS_PEERS", "namenode");

    let mut ids = BTreeSet::new();
    for entry in peers.split(',') {
        let (id, address) = entry
            .split_once('=')
            .unwrap_or_else(|| panic!("--peers entry {entry:?} is not ID=HOST:PORT"));
        let id: i32 = id.parse().unwrap_or_else(|_| panic!("peer id {id:?}"));
        assert_eq!(
            address,
            pod_host(&nn, id),
            "peer {id} is pod namenode-{id} under the headless Service, at the gRPC port"
        );
        assert!(ids.insert(id), "peer {id} listed twice");
    }
    assert_eq!(
        ids,
        (0..nn.replicas).collect::<BTreeSet<_>>(),
        "--peers lists exactly the pod indexes 0..{}",
        nn.replicas
    );
    let listen = flag(c, "listen").expect("--listen");
    assert!(
        listen.ends_with(&format!(":{}", nn.grpc)),
        "the namenode listens ({listen}) where its peers dial it (:{})",
        nn.grpc
    );
}

#[test]
fn datanodes_and_gateways_name_every_namenode() {
    let m = load();
    let nn = namenodes(&m);
    let want: BTreeSet<String> = (0..nn.replicas)
        .map(|id| format!("http://{}", pod_host(&nn, id)))
        .collect();
    let mut checked = 0;
    for (name, t) in m.templates() {
        for c in &pod(t).containers {
            if !matches!(binary(c), "kdfs-datanode" | "kdfs-gateway") {
                continue;
            }
            let who = format!("{name}/{}", c.name);
            let list = setting(c, "namenode", "KDFS_NAMENODE")
                .unwrap_or_else(|| panic!("{who} names no namenode"));
            let got: BTreeSet<String> = list.split(',').map(str::to_owned).collect();
            assert_eq!(got, want, "{who}: --namenode lists every namenode pod");
            assert_eq!(
                list.split(',').count(),
                want.len(),
                "{who}: no namenode twice"
            );
            if env_value(c, "KDFS_NAMENODE").is_some() {
                assert_references_defined_earlier(c, "KDFS_NAMENODE", &who);
                assert!(
                    flag(c, "namenode").is_none(),
                    "{who}: both --namenode and KDFS_NAMENODE"
                );
            }
            assert_eq!(
                env_from_field(c, "POD_NAMESPACE"),
                Some("metadata.namespace")
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "the datanode and the gateway");
}

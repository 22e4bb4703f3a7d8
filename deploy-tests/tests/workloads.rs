//! Static checks of the workloads in `k8s/` (see ARCHITECTURE.md): every document parses
//! into its k8s-openapi type (an unknown kind fails) and kustomize lists every file; the
//! namenode a StatefulSet of one with a volume claim and the least RBAC; the datanodes
//! a spread StatefulSet of three with claims (never emptyDir), a headless Service,
//! downward-API identity, a PodDisruptionBudget and a grace period longer than their
//! drain; the gateway two replicas behind port 80; every Service selecting one
//! workload and naming its ports.
//!
//! Schema-level checks (misspelled fields) are `scripts/lint-deploy.sh`'s job
//! (`kubernetes-validate --strict`); k8s-openapi ignores unknown fields.

mod common;

use common::clap_flags::*;
use common::*;

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

#[test]
fn every_document_parses_into_its_type_and_kustomize_lists_every_file() {
    let m = load();
    let k = m
        .kustomization
        .as_ref()
        .expect("k8s/kustomization.yaml exists");
    assert_eq!(k.namespace, "kdfs");
    let listed: BTreeSet<String> = k.resources.iter().cloned().collect();
    assert_eq!(
        listed, m.files,
        "kustomization.yaml resources must be exactly the manifest files"
    );
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(name_of(&m.namespaces[0].metadata), "kdfs");
    assert_eq!(m.stateful_sets.len(), 2, "namenode and datanode");
    assert_eq!(m.deployments.len(), 1, "gateway");
}

#[test]
fn namenode_is_a_stateful_set_of_one_with_a_claim_and_least_rbac() {
    let m = load();
    let nn = m.stateful_set("namenode");
    assert_eq!(nn.spec.replicas, Some(1), "exactly one namenode");
    let c = only_container(&nn.spec.template, "namenode");
    data_dir_claim(nn, c, "namenode");
    for v in pod(&nn.spec.template).volumes.iter().flatten() {
        assert!(
            v.secret.is_some(),
            "the namenode keeps nothing outside its claim (volume {} is not a Secret)",
            v.name
        );
    }
    let svc = m.service("namenode");
    let ports: BTreeSet<i32> = svc
        .spec
        .as_ref()
        .expect("spec")
        .ports
        .iter()
        .flatten()
        .map(|p| p.port)
        .collect();
    assert!(
        ports.contains(&8020),
        "the namenode Service serves gRPC on 8020"
    );

    // RBAC: exactly what the Kubernetes awareness needs, bound to its ServiceAccount.
    let spec = pod(&nn.spec.template);
    let sa = spec
        .service_account_name
        .as_deref()
        .expect("namenode has a ServiceAccount");
    assert!(
        m.service_accounts
            .iter()
            .any(|s| name_of(&s.metadata) == sa)
    );
    assert_eq!(m.roles.len(), 1);
    let role_rules: Vec<_> = m.roles[0].rules.iter().flatten().map(rule).collect();
    assert_eq!(
        role_rules,
        vec![
            (vec![""], vec!["pods"], vec!["get", "list", "watch"]),
            (vec!["apps"], vec!["statefulsets"], vec!["get"]),
        ],
        "the Role may only read pods and get StatefulSets (their replica count tells a scaled-away datanode)"
    );
    assert_eq!(m.cluster_roles.len(), 1);
    let cluster_rules: Vec<_> = m.cluster_roles[0]
        .rules
        .iter()
        .flatten()
        .map(rule)
        .collect();
    assert_eq!(
        cluster_rules,
        vec![(vec![""], vec!["nodes"], vec!["get"])],
        "the ClusterRole may only get nodes"
    );
    let bound_to_sa = |subjects: Option<&Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        let subjects = subjects.map(Vec::as_slice).unwrap_or_default();
        subjects.len() == 1 && subjects[0].kind == "ServiceAccount" && subjects[0].name == sa
    };
    assert_eq!(m.role_bindings.len(), 1);
    let rb = &m.role_bindings[0];
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("Role", name_of(&m.roles[0].metadata))
    );
    assert!(
        bound_to_sa(rb.subjects.as_ref()),
        "RoleBinding binds only {sa}"
    );
    assert_eq!(m.cluster_role_bindings.len(), 1);
    let crb = &m.cluster_role_bindings[0];
    assert_eq!(
        (crb.role_ref.kind.as_str(), crb.role_ref.name.as_str()),
        ("ClusterRole", name_of(&m.cluster_roles[0].metadata))
    );
    assert!(
        bound_to_sa(crb.subjects.as_ref()),
        "ClusterRoleBinding binds only {sa}"
    );
    assert_eq!(
        crb.subjects
            .as_ref()
            .and_then(|s| s[0].namespace.as_deref()),
        Some("kdfs"),
        "a ClusterRoleBinding subject needs its namespace"
    );
    // The namenode finds its namespace through the downward API.
    assert_eq!(
        env_from_field(c, "POD_NAMESPACE"),
        Some("metadata.namespace")
    );

    // No other pod gets an API token.
    for (name, t) in m.templates() {
        if name != "namenode" {
            let spec = pod(t);
            assert!(
                spec.service_account_name.is_none(),
                "{name} needs no ServiceAccount"
            );
            assert_eq!(
                spec.automount_service_account_token,
                Some(false),
                "{name} must not mount an API token"
            );
        }
    }
}

#[test]
fn datanodes_are_a_spread_stateful_set_with_claims_identity_and_a_budget() {
    let m = load();
    let dn = m.stateful_set("datanode");
    assert_eq!(dn.spec.replicas, Some(3), "three datanodes");
    let template = &dn.spec.template;
    let spec = pod(template);
    let c = only_container(template, "datanode");

    // Data on a claim per pod, never on emptyDir (a rescheduled pod keeps its blocks).
    let claim = data_dir_claim(dn, c, "datanode");
    for v in spec.volumes.iter().flatten() {
        assert!(
            v.empty_dir.is_none(),
            "datanode volume {} is an emptyDir",
            v.name
        );
        assert_ne!(v.name, claim, "a pod volume shadows the claim {claim}");
    }

    // A headless Service gives each pod a stable name; --advertise uses it.
    let svc_name = dn.spec.service_name.as_deref().expect("serviceName is set");
    let svc = m.service(svc_name).spec.as_ref().expect("spec");
    assert_eq!(
        svc.cluster_ip.as_deref(),
        Some("None"),
        "the datanode Service is headless"
    );
    assert!(selects(
        svc.selector.as_ref().expect("selector"),
        &labels(template)
    ));
    assert_eq!(env_from_field(c, "POD_NAME"), Some("metadata.name"));
    assert_eq!(env_from_field(c, "NODE_NAME"), Some("spec.nodeName"));
    let advertise = flag(c, "advertise").expect("datanode passes --advertise");
    let grpc = container_port(c, "grpc").expect("a port named grpc");
    assert!(
        advertise.starts_with(&format!("$(POD_NAME).{svc_name}."))
            && advertise.ends_with(&format!(":{grpc}")),
        "--advertise={advertise} must be $(POD_NAME).{svc_name}.…:{grpc}"
    );
    assert!(
        !advertise.contains("$(POD_NAMESPACE)") || env_from_field(c, "POD_NAMESPACE").is_some(),
        "--advertise uses $(POD_NAMESPACE) but it is not set"
    );
    let listen = flag(c, "listen").expect("--listen");
    assert!(
        listen.ends_with(&format!(":{grpc}")),
        "--listen {listen} is the grpc port"
    );

    // Spread: preferred anti-affinity by node, topology spread by zone and node.
    let own = labels(template);
    let anti = spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .expect("pod anti-affinity");
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none(),
        "anti-affinity must be preferred, not required (a 1-node cluster must still run)"
    );
    let preferred = anti
        .preferred_during_scheduling_ignored_during_execution
        .as_deref()
        .unwrap_or_default();
    assert!(
        preferred.iter().any(
            |w| w.pod_affinity_term.topology_key == "kubernetes.io/hostname"
                && selects(
                    &match_labels(w.pod_affinity_term.label_selector.as_ref()),
                    &own
                )
        ),
        "preferred anti-affinity by hostname against the datanodes themselves"
    );
    let spread = spec
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default();
    for key in ["topology.kubernetes.io/zone", "kubernetes.io/hostname"] {
        assert!(
            spread.iter().any(|t| t.topology_key == key
                && t.when_unsatisfiable == "ScheduleAnyway"
                && selects(&match_labels(t.label_selector.as_ref()), &own)),
            "a soft topology spread constraint over {key}"
        );
    }

    // At most one datanode down by a voluntary disruption.
    let budgets: Vec<_> = m
        .budgets
        .iter()
        .filter(|b| {
            b.spec
                .as_ref()
                .is_some_and(|s| selects(&match_labels(s.selector.as_ref()), &own))
        })
        .collect();
    assert_eq!(
        budgets.len(),
        1,
        "one PodDisruptionBudget selects the datanodes"
    );
    let b = budgets[0].spec.as_ref().expect("spec");
    assert_eq!(b.max_unavailable, Some(IntOrString::Int(1)));
    assert!(b.min_available.is_none());

    // SIGTERM: time for the datanode's own drain (--shutdown-grace) and then some.
    let flags = flags_of_binary(binary(c));
    let drain = flag(c, "shutdown-grace")
        .map(str::to_owned)
        .or_else(|| flags.defaults.get("DEFAULT_SHUTDOWN_GRACE").cloned())
        .expect("the datanode's shutdown grace");
    let grace = spec
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds");
    assert!(grace >= 30, "datanode grace {grace}s < 30s");
    assert!(
        grace >= seconds(&drain) + 10,
        "datanode grace {grace}s leaves no margin over its {drain} drain"
    );
}

#[test]
fn gateway_is_two_replicas_behind_a_port_80_service() {
    let m = load();
    let gw = m.deployment("gateway");
    assert_eq!(gw.spec.replicas, Some(2));
    let c = only_container(&gw.spec.template, "gateway");
    let svc = m.service("gateway").spec.as_ref().expect("spec");
    assert!(
        svc.cluster_ip.is_none(),
        "the gateway Service load-balances (not headless)"
    );
    assert!(selects(
        svc.selector.as_ref().expect("selector"),
        &labels(&gw.spec.template)
    ));
    let port = svc
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == 80)
        .expect("Service port 80 (kubectl port-forward service/gateway 8080:80)");
    let target = match port.target_port.as_ref().expect("targetPort") {
        IntOrString::String(name) => container_port(c, name).expect("named target port"),
        IntOrString::Int(n) => *n,
    };
    let listen = flag(c, "listen").expect("--listen");
    assert!(
        listen.ends_with(&format!(":{target}")),
        "gateway listens on {listen}, Service targets {target}"
    );
}

#[test]
fn services_select_one_workload_and_name_its_ports() {
    let m = load();
    for s in &m.services {
        let name = name_of(&s.metadata);
        let spec = s.spec.as_ref().expect("spec");
        let selector = spec.selector.clone().unwrap_or_default();
        let targets: Vec<_> = m
            .templates()
            .into_iter()
            .filter(|(_, t)| selects(&selector, &labels(t)))
            .collect();
        assert_eq!(
            targets.len(),
            1,
            "Service {name} selects exactly one workload"
        );
        let (_, t) = targets[0];
        for p in spec.ports.iter().flatten() {
            if let Some(IntOrString::String(port)) = &p.target_port {
                let found = pod(t)
                    .containers
                    .iter()
                    .any(|c| container_port(c, port).is_some());
                assert!(
                    found,
                    "Service {name} targets port {port} that no container names"
                );
            }
        }
    }
    // Clients reach the namenode by its Service name and port.
    let nn_ports: BTreeSet<i32> = m
        .service("namenode")
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| p.port)
        .collect();
    for (name, t) in m.templates() {
        for c in &pod(t).containers {
            if let Some(nn) = flag(c, "namenode") {
                let port: i32 = nn
                    .strip_prefix("http://namenode:")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| {
                        panic!("{name}: --namenode={nn} is not http://namenode:PORT")
                    });
                assert!(
                    nn_ports.contains(&port),
                    "{name}: --namenode port {port} is not served"
                );
            }
        }
    }
}

/// The one volume claim template of `workload`'s StatefulSet `set`, which its container
/// `c` mounts at its `--data-dir`; returns the claim's name.
fn data_dir_claim<'a>(set: &'a StatefulSet, c: &Container, workload: &str) -> &'a str {
    let claims = set
        .spec
        .volume_claim_templates
        .as_deref()
        .unwrap_or_default();
    assert_eq!(claims.len(), 1, "one claim per {workload}");
    let claim = name_of(&claims[0].metadata);
    let data_dir = flag(c, "data-dir").unwrap_or_else(|| panic!("{workload} passes --data-dir"));
    let mounted = c
        .volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|v| v.name == claim && v.mount_path == data_dir);
    assert!(
        mounted,
        "--data-dir {data_dir} must be the claim {claim}'s mount"
    );
    claim
}

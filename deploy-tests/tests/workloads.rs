//! Static checks of the workloads in `k8s/` (see ARCHITECTURE.md): every document parses
//! into its k8s-openapi type (an unknown kind fails) and kustomize lists every file; the
//! namenodes a StatefulSet with a volume claim each and the least RBAC (their HA
//! invariants are `namenodes.rs`'s); the datanodes
//! a spread StatefulSet of three with claims (never emptyDir), a headless Service,
//! downward-API identity, a PodDisruptionBudget, a grace period longer than their
//! drain and a capacity equal to their claim; the gateway two spread replicas behind
//! port 80 and an Ingress, with a budget, a surge-first rollout, a preStop pause and a
//! readiness timeout longer than its handler's wait; the namenode's RBAC exactly the
//! Kubernetes API calls its code makes; every Service selecting one workload and naming
//! its ports.
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
fn namenodes_are_a_stateful_set_with_a_claim_each_and_least_rbac() {
    let m = load();
    let nn = m.stateful_set("namenode");
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
    let (namespaced, cluster) = kube_api_calls();
    assert_eq!(m.roles.len(), 1);
    let role_rules: BTreeSet<_> = m.roles[0].rules.iter().flatten().map(owned_rule).collect();
    assert_eq!(
        role_rules, namespaced,
        "the Role grants exactly the namespaced calls of namenode/src/kubernetes/"
    );
    assert_eq!(m.cluster_roles.len(), 1);
    let cluster_rules: BTreeSet<_> = m.cluster_roles[0]
        .rules
        .iter()
        .flatten()
        .map(owned_rule)
        .collect();
    assert_eq!(
        cluster_rules, cluster,
        "the ClusterRole grants exactly the cluster-wide calls of namenode/src/kubernetes/"
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
    let b = m.budget_for(&own).spec.as_ref().expect("spec");
    assert_eq!(b.max_unavailable, Some(IntOrString::Int(1)));
    assert!(b.min_available.is_none());

    // SIGTERM: time for a scaled-away datanode's drain (--drain-timeout), then its
    // in-flight transfers (--shutdown-grace), and then some.
    let flags = flags_of_binary(binary(c));
    let value = |name: &str, default: &str| {
        flag(c, name)
            .map(str::to_owned)
            .or_else(|| flags.defaults.get(default).cloned())
            .unwrap_or_else(|| panic!("the datanode's --{name}"))
    };
    let drain = value("shutdown-grace", "DEFAULT_SHUTDOWN_GRACE");
    let decommission = value("drain-timeout", "DEFAULT_DRAIN_TIMEOUT");
    let grace = spec
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds");
    assert!(grace >= 30, "datanode grace {grace}s < 30s");
    assert!(
        grace >= seconds(&decommission) + seconds(&drain) + 10,
        "datanode grace {grace}s leaves no margin over its {decommission} decommission \
         drain and {drain} shutdown grace"
    );
    // Scale-down one pod at a time, each drained before the next terminates.
    assert_eq!(
        dn.spec.pod_management_policy.as_deref(),
        Some("OrderedReady"),
        "datanodes scale down one at a time"
    );
}

/// On a shared disk (k3d) a datanode reports its claim's size as its capacity: the
/// `KDFS_CAPACITY` it is given is the storage its volume claim template requests.
#[test]
fn datanode_capacity_is_its_claims_size() {
    let m = load();
    let dn = m.stateful_set("datanode");
    let c = only_container(&dn.spec.template, "datanode");
    let capacity = env_value(c, "KDFS_CAPACITY")
        .or_else(|| flag(c, "capacity"))
        .expect("the datanode is given --capacity (KDFS_CAPACITY)");
    let claim = &dn
        .spec
        .volume_claim_templates
        .as_deref()
        .unwrap_or_default()[0];
    let storage = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .expect("the claim requests storage");
    assert_eq!(
        capacity, storage.0,
        "KDFS_CAPACITY must equal the claim's storage request"
    );
    assert!(
        flags_of_binary(binary(c)).long.contains("capacity"),
        "kdfs-datanode has --capacity"
    );
}

/// The gateway's source: `/readyz`'s own wait for the namenode, in seconds.
fn gateway_ready_timeout() -> i64 {
    let src = std::fs::read_to_string(root().join("client-gateway/src/gateway/routes/health.rs"))
        .expect("health.rs");
    let line = src
        .lines()
        .find(|l| l.contains("const READY_TIMEOUT: Duration = Duration::from_secs("))
        .expect("READY_TIMEOUT in routes/health.rs");
    line.split("from_secs(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .expect("READY_TIMEOUT in whole seconds")
}

/// The gateway through ordinary Kubernetes life: two replicas spread over nodes, a
/// budget of one down, a rollout that adds before it removes, a `preStop` pause (with
/// a `sleep` the image has) so endpoints forget a stopping pod before it stops
/// accepting, a grace period covering the pause and the gateway's drain, a readiness
/// probe that outwaits `/readyz`'s own wait, and the pod network as its trusted
/// proxies (the ingress controller's `X-Forwarded-For`).
#[test]
fn gateway_survives_rollouts_and_drains() {
    let m = load();
    let gw = m.deployment("gateway");
    let template = &gw.spec.template;
    let spec = pod(template);
    let c = only_container(template, "gateway");
    let own = labels(template);

    let b = m.budget_for(&own).spec.as_ref().expect("spec");
    assert_eq!(b.max_unavailable, Some(IntOrString::Int(1)));
    let rolling = gw
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .expect("a rolling update strategy");
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));

    let spread = spec
        .topology_spread_constraints
        .as_deref()
        .unwrap_or_default();
    assert!(
        spread
            .iter()
            .any(|t| t.topology_key == "kubernetes.io/hostname"
                && t.when_unsatisfiable == "ScheduleAnyway"
                && selects(&match_labels(t.label_selector.as_ref()), &own)),
        "the gateways spread over nodes"
    );

    let pre_stop = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .expect("a preStop hook");
    let pause = match (&pre_stop.exec, &pre_stop.sleep) {
        (Some(exec), None) => {
            let cmd = exec.command.as_deref().unwrap_or_default();
            assert_eq!(cmd.len(), 2, "preStop is `sleep N`: {cmd:?}");
            assert_eq!(cmd[0], "sleep");
            let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
            assert!(
                dockerfile.contains("FROM debian:bookworm-slim"),
                "preStop runs `sleep`, which the runtime image must hold (debian-slim does)"
            );
            cmd[1].parse::<i64>().expect("sleep seconds")
        }
        (None, Some(sleep)) => sleep.seconds,
        other => panic!("preStop must be an exec sleep or a sleep action: {other:?}"),
    };
    assert!((3..=15).contains(&pause), "preStop pause {pause}s");
    let flags = flags_of_binary(binary(c));
    let drain = flag(c, "drain-timeout")
        .map(str::to_owned)
        .or_else(|| flags.defaults.get("DEFAULT_DRAIN_TIMEOUT").cloned())
        .expect("the gateway's drain timeout");
    let grace = spec
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace >= pause + seconds(&drain) + 5,
        "gateway grace {grace}s must cover the {pause}s pause and the {drain} drain"
    );

    let ready = c.readiness_probe.as_ref().expect("readiness probe");
    let probe_timeout = i64::from(ready.timeout_seconds.unwrap_or(1));
    assert!(
        probe_timeout > gateway_ready_timeout(),
        "readiness timeoutSeconds {probe_timeout} must exceed /readyz's own {}s wait",
        gateway_ready_timeout()
    );

    let trusted = flag(c, "trusted-proxies").expect("--trusted-proxies (the pod network)");
    assert!(
        trusted.split(',').all(|r| r.contains('/')),
        "--trusted-proxies={trusted}: CIDR blocks (the ingress controller's pods move)"
    );
}

/// The Ingress routes every path to the gateway Service's HTTP port.
#[test]
fn the_ingress_reaches_the_gateway() {
    let m = load();
    assert_eq!(m.ingresses.len(), 1);
    let spec = m.ingresses[0].spec.as_ref().expect("spec");
    let svc = m.service("gateway").spec.as_ref().expect("spec");
    let paths: Vec<_> = spec
        .rules
        .iter()
        .flatten()
        .flat_map(|r| r.http.iter().flat_map(|h| h.paths.iter()))
        .collect();
    assert_eq!(paths.len(), 1);
    let p = paths[0];
    assert_eq!(
        (p.path.as_deref(), p.path_type.as_str()),
        (Some("/"), "Prefix")
    );
    let backend = p.backend.service.as_ref().expect("a Service backend");
    assert_eq!(backend.name, "gateway");
    let port = backend.port.as_ref().expect("a port");
    let served = svc.ports.iter().flatten().any(|sp| {
        port.name
            .as_deref()
            .is_some_and(|n| sp.name.as_deref() == Some(n))
            || port.number == Some(sp.port)
    });
    assert!(served, "the Ingress targets a port the gateway Service has");
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
    // Clients reach the namenodes by their pod names and port: namenodes.rs.
}

/// A rule as owned sorted lists: (api groups, resources, verbs).
type Rule = (Vec<String>, Vec<String>, Vec<String>);

fn owned_rule(r: &k8s_openapi::api::rbac::v1::PolicyRule) -> Rule {
    let (g, res, v) = rule(r);
    let own = |v: Vec<&str>| v.into_iter().map(String::from).collect();
    (own(g), own(res), own(v))
}

/// The Kubernetes API calls of `namenode/src/kubernetes/`, read from its source, as the
/// RBAC rules they need: (namespaced, cluster-wide). An `Api<Kind>` bound to a name
/// (`name: Api<Kind>`) is namespaced or cluster-wide by the constructor assigned to
/// that name (`Api::namespaced` / `Api::all`); its verbs are the methods called on it
/// (`name.get(`, `.list(`, `.patch(`, …) and `watcher(name, …)` (list and watch).
fn kube_api_calls() -> (BTreeSet<Rule>, BTreeSet<Rule>) {
    const VERBS: [&str; 8] = [
        "get", "list", "watch", "create", "update", "patch", "delete", "replace",
    ];
    let dir = root().join("namenode/src/kubernetes");
    let mut src = String::new();
    for e in std::fs::read_dir(&dir).expect("namenode/src/kubernetes") {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            // Test modules talk to a mock API: only the code before them counts.
            let code = text
                .split("\n#[cfg(test)]\nmod ")
                .next()
                .unwrap_or_default();
            src.push_str(code);
            src.push('\n');
        }
    }
    // name -> kind, from `name: Api<Kind>`.
    let mut apis: Vec<(String, String)> = Vec::new();
    for (i, _) in src.match_indices(": Api<") {
        let name: String = src[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect::<String>()
            .chars()
            .rev()
            .collect();
        let kind: String = src[i + ": Api<".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect();
        if !apis.contains(&(name.clone(), kind.clone())) {
            apis.push((name, kind));
        }
    }
    assert!(
        !apis.is_empty(),
        "no `name: Api<Kind>` found in {}",
        dir.display()
    );
    let (mut namespaced, mut cluster) = (BTreeSet::new(), BTreeSet::new());
    for (name, kind) in &apis {
        let (group, resource) = match kind.as_str() {
            "Pod" => ("", "pods"),
            "Node" => ("", "nodes"),
            "StatefulSet" => ("apps", "statefulsets"),
            other => panic!("Api<{other}>: add its group and resource to this test"),
        };
        let all = src.contains(&format!("{name}: Api::all("))
            || src.contains(&format!("{name}: Api<{kind}> = Api::all("));
        let ns = src.contains(&format!("{name}: Api::namespaced("))
            || src.contains(&format!("{name}: Api<{kind}> = Api::namespaced("));
        assert!(
            all != ns,
            "Api `{name}`: neither or both of Api::all and Api::namespaced"
        );
        let mut verbs: BTreeSet<String> = BTreeSet::new();
        for v in VERBS {
            if src.contains(&format!("{name}.{v}(")) {
                verbs.insert(v.to_owned());
            }
        }
        if src.contains(&format!("watcher({name},")) || src.contains(&format!("watcher({name})")) {
            verbs.insert("list".into());
            verbs.insert("watch".into());
        }
        assert!(!verbs.is_empty(), "Api `{name}` ({kind}) is never called");
        let rule = (
            vec![group.to_owned()],
            vec![resource.to_owned()],
            verbs.into_iter().collect(),
        );
        if all {
            cluster.insert(rule);
        } else {
            namespaced.insert(rule);
        }
    }
    (namespaced, cluster)
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

//! Static checks of the Kubernetes manifests under `k8s/` (DESIGN.md §9, issue 6).
//!
//! Every document of every manifest is parsed with serde-saphyr into its k8s-openapi
//! type (an unknown kind fails), then held to the deployment's invariants: the namenode
//! a StatefulSet of one with a volume claim and the least RBAC; the datanodes a spread
//! StatefulSet of three with claims (never emptyDir), a headless Service, downward-API
//! identity, a PodDisruptionBudget and a grace period longer than their drain; the
//! gateway two replicas behind port 80; every container probed, non-root, read-only,
//! unprivileged and with resource requests and limits. Every `--flag` and `KDFS_*`
//! variable the manifests pass must exist in the binary's clap `Config`
//! (`*/src/config.rs`, following `#[command(flatten)]`), so a renamed flag fails here
//! rather than in a crash-looping pod. mTLS (issue 9): every container mounts its own
//! `kdfs-tls-<role>` Secret read-only as a whole directory (no subPath, so a rotated
//! Secret reaches the files) and points `KDFS_TLS_CERT/KEY/CA` at its keys; the gateway
//! mounts `kdfs-gateway-auth` the same way for `KDFS_AUTH_TOKEN_FILE`; every mounted
//! Secret is one `deploy.sh` creates (its `TLS_SECRETS` and `AUTH_SECRET` lines); probes
//! stay plain HTTP.
//!
//! Schema-level checks (misspelled fields) are `scripts/lint-deploy.sh`'s job
//! (`kubernetes-validate --strict`); k8s-openapi ignores unknown fields.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, Namespace, PodSpec, PodTemplateSpec, Probe, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

/// The repository root (this crate lives in `deploy-tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy-tests has a parent directory")
        .to_path_buf()
}

/// Just enough of any document to know which type to parse it into.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    api_version: String,
    kind: String,
}

/// The parts of `kustomization.yaml` checked here.
#[derive(Debug, Deserialize)]
struct Kustomization {
    namespace: String,
    resources: Vec<String>,
}

/// Every object of `k8s/`, by type.
#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    services: Vec<Service>,
    stateful_sets: Vec<StatefulSet>,
    deployments: Vec<Deployment>,
    budgets: Vec<PodDisruptionBudget>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// Resource files (not kustomization.yaml), by file name.
    files: BTreeSet<String>,
    kustomization: Option<Kustomization>,
}

fn parse<T: for<'de> Deserialize<'de>>(file: &str, index: usize, doc: &str) -> T {
    serde_saphyr::from_str(doc).unwrap_or_else(|e| {
        panic!(
            "{file} document {index}: does not parse as {}: {e}",
            std::any::type_name::<T>()
        )
    })
}

/// The documents of a multi-document YAML file: split at `---` lines, dropping those
/// with nothing but comments. Cross-checked against serde-saphyr's own document count.
fn documents(file: &str, text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let last = docs.last_mut().expect("never empty");
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.retain(|d| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    let heads: Vec<Head> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("{file}: not multi-document YAML of objects: {e}"));
    assert_eq!(
        heads.len(),
        docs.len(),
        "{file}: serde-saphyr sees {} documents, the `---` split {}",
        heads.len(),
        docs.len()
    );
    docs
}

fn load() -> Manifests {
    let dir = root().join("k8s");
    let mut m = Manifests::default();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no manifests in {}", dir.display());
    for path in paths {
        let file = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("manifest is readable UTF-8");
        if file == "kustomization.yaml" {
            m.kustomization = Some(parse(&file, 0, &text));
            continue;
        }
        for (i, doc) in documents(&file, &text).iter().enumerate() {
            let head: Head = parse(&file, i, doc);
            match (head.api_version.as_str(), head.kind.as_str()) {
                ("v1", "Namespace") => m.namespaces.push(parse(&file, i, doc)),
                ("v1", "ServiceAccount") => m.service_accounts.push(parse(&file, i, doc)),
                ("v1", "Service") => m.services.push(parse(&file, i, doc)),
                ("apps/v1", "StatefulSet") => m.stateful_sets.push(parse(&file, i, doc)),
                ("apps/v1", "Deployment") => m.deployments.push(parse(&file, i, doc)),
                ("policy/v1", "PodDisruptionBudget") => m.budgets.push(parse(&file, i, doc)),
                ("rbac.authorization.k8s.io/v1", "Role") => m.roles.push(parse(&file, i, doc)),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    m.role_bindings.push(parse(&file, i, doc))
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    m.cluster_roles.push(parse(&file, i, doc))
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    m.cluster_role_bindings.push(parse(&file, i, doc))
                }
                (api, kind) => panic!(
                    "{file} document {i}: {api} {kind} is not a kind these checks know; \
                     add it to deploy-tests/tests/manifests.rs with its invariants"
                ),
            }
        }
        m.files.insert(file);
    }
    m
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

impl Manifests {
    fn stateful_set(&self, name: &str) -> &StatefulSet {
        self.stateful_sets
            .iter()
            .find(|s| name_of(&s.metadata) == name)
            .unwrap_or_else(|| panic!("no StatefulSet {name}"))
    }
    fn deployment(&self, name: &str) -> &Deployment {
        self.deployments
            .iter()
            .find(|d| name_of(&d.metadata) == name)
            .unwrap_or_else(|| panic!("no Deployment {name}"))
    }
    fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| name_of(&s.metadata) == name)
            .unwrap_or_else(|| panic!("no Service {name}"))
    }
    /// Every pod template, with the name of the workload that owns it.
    fn templates(&self) -> Vec<(&str, &PodTemplateSpec)> {
        let sets = self
            .stateful_sets
            .iter()
            .map(|s| (name_of(&s.metadata), &s.spec.template));
        let deps = self
            .deployments
            .iter()
            .map(|d| (name_of(&d.metadata), &d.spec.template));
        sets.chain(deps).collect()
    }
}

fn pod(t: &PodTemplateSpec) -> &PodSpec {
    t.spec.as_ref().expect("pod template has a spec")
}

fn labels(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    t.metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// Whether `selector` (matchLabels only; expressions are not used here) selects `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn match_labels(s: Option<&LabelSelector>) -> BTreeMap<String, String> {
    assert!(
        s.and_then(|s| s.match_expressions.as_ref()).is_none(),
        "matchExpressions are not checked by these tests: use matchLabels"
    );
    s.and_then(|s| s.match_labels.clone()).unwrap_or_default()
}

fn only_container<'a>(t: &'a PodTemplateSpec, workload: &str) -> &'a Container {
    let spec = pod(t);
    assert_eq!(
        spec.containers.len(),
        1,
        "{workload}: one container expected"
    );
    &spec.containers[0]
}

fn args(c: &Container) -> &[String] {
    c.args.as_deref().unwrap_or_default()
}

/// The value of `--name=value` or `--name value` in a container's args.
fn flag<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    let args = args(c);
    let long = format!("--{name}");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix(&long).and_then(|r| r.strip_prefix('=')) {
            Some(v)
        } else if *a == long {
            args.get(i + 1).map(String::as_str)
        } else {
            None
        }
    })
}

fn container_port(c: &Container, name: &str) -> Option<i32> {
    c.ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

fn env_from_field<'a>(c: &'a Container, var: &str) -> Option<&'a str> {
    c.env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.name == var)
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str())
}

fn sorted(v: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = v.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

/// One rule, its api groups, resources and verbs, each sorted.
fn rule(r: &PolicyRule) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    assert!(
        r.resource_names.is_none() && r.non_resource_urls.is_none(),
        "unexpected rule shape: {r:?}"
    );
    (
        sorted(r.api_groups.as_deref().unwrap_or_default()),
        sorted(r.resources.as_deref().unwrap_or_default()),
        sorted(&r.verbs),
    )
}

/// Seconds of a duration such as `20s`, `2m`, `500ms` (rounded up).
fn seconds(d: &str) -> i64 {
    let d = d.trim();
    let split = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
    let (n, unit) = d.split_at(split);
    let n: i64 = n.parse().unwrap_or_else(|_| panic!("not a duration: {d}"));
    match unit {
        "ms" => (n + 999) / 1000,
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => panic!("unknown duration unit in {d}"),
    }
}

// ----- the binaries' flags, read from their clap configs --------------------------------

/// Long flags (`--kebab-case`) and `KDFS_*` variables of one clap `Config`.
#[derive(Debug, Default)]
struct Flags {
    long: BTreeSet<String>,
    env: BTreeSet<String>,
    /// `pub const DEFAULT_X: &str = "…";` values, by constant name.
    defaults: BTreeMap<String, String>,
}

/// Reads a `config.rs`: every field under an `#[arg(...)]` with `long` (or
/// `long = "name"`) is a flag; `env = "KDFS_X"` its variable. Attributes may span lines.
/// A field under `#[command(flatten)]` brings in the flags of its type's struct, found
/// by name in the workspace's sources (e.g. `kdfs_proto::tls::TlsArgs`).
fn clap_flags(path: &Path) -> Flags {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut flags = Flags {
        long: ["help", "version"].map(String::from).into(),
        ..Flags::default()
    };
    read_clap_flags(&text, &mut flags);
    flags
}

/// The source of `pub struct <name>` (to its closing brace) in one of the crates the
/// binaries are built from.
fn struct_source(name: &str) -> String {
    let opening = format!("pub struct {name} {{");
    for krate in ["core", "proto", "namenode", "datanode", "client-gateway"] {
        let dir = root().join(krate).join("src");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source is readable UTF-8");
            if let Some(start) = text.find(&opening) {
                let body = &text[start..];
                let end = body.find("\n}").map_or(body.len(), |e| e + 2);
                return body[..end].to_owned();
            }
        }
    }
    panic!("a config flattens {name}, but no crate defines `pub struct {name}`")
}

fn read_clap_flags(text: &str, flags: &mut Flags) {
    let mut attr = String::new();
    let mut in_attr = false;
    let mut pending: Vec<String> = Vec::new();
    let mut flatten = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("#[command(flatten") || t.starts_with("#[clap(flatten") {
            flatten = true;
            continue;
        }
        if flatten
            && let Some(rest) = t.strip_prefix("pub ")
            && let Some((_, ty)) = rest.split_once(':')
        {
            let ty = ty.trim().trim_end_matches(',');
            let ty = ty.rsplit("::").next().unwrap_or(ty);
            read_clap_flags(&struct_source(ty), flags);
            flatten = false;
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub const ")
            && let Some((name, value)) = rest.split_once(": &str = ")
        {
            let value = value.trim_end_matches(';').trim_matches('"');
            flags.defaults.insert(name.to_owned(), value.to_owned());
        }
        if t.starts_with("#[arg(") {
            in_attr = true;
            attr.clear();
        }
        if in_attr {
            attr.push_str(t);
            attr.push(' ');
            if t.ends_with(")]") {
                in_attr = false;
                pending.push(std::mem::take(&mut attr));
            }
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub ")
            && let Some((field, _)) = rest.split_once(':')
            && !pending.is_empty()
            && field
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            for a in pending.drain(..) {
                let inner = a
                    .trim()
                    .trim_start_matches("#[arg(")
                    .trim_end()
                    .trim_end_matches(")]");
                for part in inner.split(',').map(str::trim) {
                    if part == "long" {
                        flags.long.insert(field.replace('_', "-"));
                    } else if let Some(v) = part.strip_prefix("long =") {
                        flags.long.insert(v.trim().trim_matches('"').to_owned());
                    } else if let Some(v) = part.strip_prefix("env =") {
                        flags.env.insert(v.trim().trim_matches('"').to_owned());
                    }
                }
            }
        }
        if !t.starts_with("#[") && !t.starts_with("///") && !t.is_empty() {
            pending.clear();
        }
    }
}

/// The clap config of the binary a container runs.
fn flags_of_binary(binary: &str) -> Flags {
    let crate_dir = match binary {
        "kdfs-namenode" => "namenode",
        "kdfs-datanode" => "datanode",
        "kdfs-gateway" => "client-gateway",
        other => panic!("a container runs {other}, not a known kdfs server binary"),
    };
    clap_flags(&root().join(crate_dir).join("src/config.rs"))
}

fn binary(c: &Container) -> &str {
    c.command
        .as_deref()
        .and_then(|c| c.first())
        .map(String::as_str)
        .unwrap_or_else(|| panic!("container {} names no command", c.name))
}

// ----- the tests -------------------------------------------------------------------------

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
    let claims = nn
        .spec
        .volume_claim_templates
        .as_deref()
        .unwrap_or_default();
    assert_eq!(claims.len(), 1, "one claim for the metadata");
    let claim = name_of(&claims[0].metadata);
    let c = only_container(&nn.spec.template, "namenode");
    let data_dir = flag(c, "data-dir").expect("namenode passes --data-dir");
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
    let claims = dn
        .spec
        .volume_claim_templates
        .as_deref()
        .unwrap_or_default();
    assert_eq!(claims.len(), 1, "one claim per datanode");
    let claim = name_of(&claims[0].metadata);
    let data_dir = flag(c, "data-dir").expect("datanode passes --data-dir");
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

fn http_probe<'a>(p: Option<&'a Probe>, what: &str, workload: &str) -> (&'a str, &'a IntOrString) {
    let get = p
        .and_then(|p| p.http_get.as_ref())
        .unwrap_or_else(|| panic!("{workload}: no HTTP {what} probe"));
    (get.path.as_deref().unwrap_or_default(), &get.port)
}

#[test]
fn every_container_is_probed_unprivileged_read_only_and_bounded() {
    let m = load();
    for (name, t) in m.templates() {
        let spec = pod(t);
        let pod_sc = spec.security_context.as_ref();
        for flag in [spec.host_network, spec.host_pid, spec.host_ipc] {
            assert_ne!(flag, Some(true), "{name}: no host namespaces");
        }
        assert!(
            spec.init_containers.is_none(),
            "{name}: init containers are not checked here"
        );
        for c in &spec.containers {
            let who = format!("{name}/{}", c.name);
            // Probes: ready on /readyz, alive on /healthz, on a port the container has.
            for (probe, what, path) in [
                (c.readiness_probe.as_ref(), "readiness", "/readyz"),
                (c.liveness_probe.as_ref(), "liveness", "/healthz"),
            ] {
                let (p, port) = http_probe(probe, what, &who);
                assert_eq!(p, path, "{who}: {what} probe path");
                if let IntOrString::String(port) = port {
                    assert!(
                        container_port(c, port).is_some(),
                        "{who}: probe port {port} not declared"
                    );
                }
            }
            // Non-root, by the pod or the container.
            let sc = c
                .security_context
                .as_ref()
                .unwrap_or_else(|| panic!("{who}: no securityContext"));
            let non_root = sc
                .run_as_non_root
                .or(pod_sc.and_then(|p| p.run_as_non_root));
            assert_eq!(non_root, Some(true), "{who}: runAsNonRoot");
            let uid = sc.run_as_user.or(pod_sc.and_then(|p| p.run_as_user));
            assert_ne!(uid, Some(0), "{who}: runs as uid 0");
            assert_eq!(
                sc.read_only_root_filesystem,
                Some(true),
                "{who}: readOnlyRootFilesystem"
            );
            assert_eq!(
                sc.allow_privilege_escalation,
                Some(false),
                "{who}: allowPrivilegeEscalation"
            );
            assert_ne!(sc.privileged, Some(true), "{who}: privileged");
            let caps = sc
                .capabilities
                .as_ref()
                .unwrap_or_else(|| panic!("{who}: capabilities"));
            assert!(
                caps.drop.iter().flatten().any(|d| d == "ALL"),
                "{who}: capabilities drop ALL"
            );
            assert!(
                caps.add.as_deref().unwrap_or_default().is_empty(),
                "{who}: adds capabilities"
            );
            // Requests and limits of CPU and memory.
            let r = c
                .resources
                .as_ref()
                .unwrap_or_else(|| panic!("{who}: no resources"));
            for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
                let map = map
                    .as_ref()
                    .unwrap_or_else(|| panic!("{who}: no resource {kind}"));
                for res in ["cpu", "memory"] {
                    assert!(map.contains_key(res), "{who}: no {res} in resource {kind}");
                }
            }
            // The root filesystem is read-only: every directory flag is a writable mount.
            for dir_flag in ["data-dir", "spool-dir"] {
                if let Some(dir) = flag(c, dir_flag) {
                    let writable = c
                        .volume_mounts
                        .iter()
                        .flatten()
                        .any(|v| v.mount_path == dir && v.read_only != Some(true));
                    assert!(
                        writable,
                        "{who}: --{dir_flag}={dir} is not a writable volume mount"
                    );
                }
            }
            // The image is the one kustomize rewrites, pulled only if missing.
            assert_eq!(
                c.image.as_deref(),
                Some("kdfs"),
                "{who}: image (kustomize sets the tag)"
            );
            assert_eq!(
                c.image_pull_policy.as_deref(),
                Some("IfNotPresent"),
                "{who}: imagePullPolicy"
            );
        }
    }
}

/// The Secrets `deploy.sh` creates, read from its `TLS_SECRETS=(…)` and `AUTH_SECRET=…`
/// lines, so a manifest cannot mount a Secret nobody makes.
fn deploy_sh_secrets() -> (BTreeSet<String>, String) {
    let text = std::fs::read_to_string(root().join("deploy.sh")).expect("deploy.sh");
    let line = |var: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{var}=")))
            .unwrap_or_else(|| panic!("deploy.sh sets no {var}"))
            .to_owned()
    };
    let tls = line("TLS_SECRETS");
    let tls = tls
        .strip_prefix('(')
        .and_then(|l| l.split(')').next())
        .unwrap_or_else(|| panic!("deploy.sh: TLS_SECRETS=({tls} is not a one-line array"));
    let tls: BTreeSet<String> = tls.split_whitespace().map(String::from).collect();
    let auth = line("AUTH_SECRET");
    let auth = auth
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    (tls, auth)
}

fn env_value<'a>(c: &'a Container, var: &str) -> Option<&'a str> {
    c.env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.name == var)
        .and_then(|e| e.value.as_deref())
}

/// For the files a container reads from `vars` (all in one directory): the Secret
/// mounted as that whole directory, after checking the mount (read-only, no subPath,
/// every key projected) and the file names (`vars` paired with the Secret's keys).
fn secret_dir<'a>(spec: &'a PodSpec, c: &Container, vars: &[(&str, &str)], who: &str) -> &'a str {
    let mut dirs = BTreeSet::new();
    for (var, key) in vars {
        let path = env_value(c, var).unwrap_or_else(|| panic!("{who}: {var} is not set"));
        let (dir, file) = path
            .rsplit_once('/')
            .unwrap_or_else(|| panic!("{who}: {var}={path} is not an absolute path"));
        assert_eq!(
            file, *key,
            "{who}: {var}={path} must name the Secret key {key}"
        );
        dirs.insert(dir.to_owned());
    }
    assert_eq!(
        dirs.len(),
        1,
        "{who}: {vars:?} must share one directory: {dirs:?}"
    );
    let dir = dirs.pop_first().expect("one directory");
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == dir)
        .unwrap_or_else(|| panic!("{who}: nothing is mounted at {dir}"));
    assert!(
        mount.sub_path.is_none() && mount.sub_path_expr.is_none(),
        "{who}: {dir} is mounted with subPath, so a rotated Secret would never reach it"
    );
    assert_eq!(
        mount.read_only,
        Some(true),
        "{who}: {dir} must be read-only"
    );
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("{who}: no volume {}", mount.name));
    let secret = volume
        .secret
        .as_ref()
        .unwrap_or_else(|| panic!("{who}: volume {} at {dir} is not a Secret", volume.name));
    assert!(
        secret.items.is_none(),
        "{who}: Secret volume {} picks items; mount every key under its own name",
        volume.name
    );
    assert_ne!(secret.optional, Some(true), "{who}: the Secret is optional");
    secret
        .secret_name
        .as_deref()
        .unwrap_or_else(|| panic!("{who}: volume {} names no Secret", volume.name))
}

#[test]
fn every_container_mounts_its_tls_secret_as_a_directory_and_the_gateway_its_token() {
    let m = load();
    let (tls_secrets, auth_secret) = deploy_sh_secrets();
    let deploy = std::fs::read_to_string(root().join("deploy.sh")).expect("deploy.sh");
    for key in [
        "tls.crt=",
        "tls.key=",
        "ca.crt=",
        "token=",
        "kubernetes.io/tls",
    ] {
        assert!(
            deploy.contains(key),
            "deploy.sh does not create Secrets with {key}"
        );
    }
    let mut checked = 0;
    for (name, t) in m.templates() {
        let spec = pod(t);
        for c in &spec.containers {
            let who = format!("{name}/{}", c.name);
            let secret = secret_dir(
                spec,
                c,
                &[
                    ("KDFS_TLS_CERT", "tls.crt"),
                    ("KDFS_TLS_KEY", "tls.key"),
                    ("KDFS_TLS_CA", "ca.crt"),
                ],
                &who,
            );
            assert_eq!(
                secret,
                format!("kdfs-tls-{name}"),
                "{who}: mounts another role's certificate"
            );
            assert!(
                tls_secrets.contains(secret),
                "{who}: Secret {secret} is not in deploy.sh's TLS_SECRETS {tls_secrets:?}"
            );
            // The probes stay on the plain HTTP port (gRPC is what TLS guards).
            for p in [&c.readiness_probe, &c.liveness_probe]
                .into_iter()
                .flatten()
            {
                let scheme = p.http_get.as_ref().and_then(|g| g.scheme.as_deref());
                assert_ne!(scheme, Some("HTTPS"), "{who}: probes speak plain HTTP");
            }
            if binary(c) == "kdfs-gateway" {
                let auth = secret_dir(spec, c, &[("KDFS_AUTH_TOKEN_FILE", "token")], &who);
                assert_eq!(
                    auth, auth_secret,
                    "{who}: the token Secret is deploy.sh's AUTH_SECRET"
                );
                checked += 1;
            }
            checked += 1;
        }
        // Every Secret a pod mounts is one deploy.sh makes.
        for v in spec.volumes.iter().flatten() {
            if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
                assert!(
                    tls_secrets.contains(s) || s == auth_secret,
                    "{name}: mounts Secret {s}, which deploy.sh does not create"
                );
            }
        }
    }
    assert_eq!(checked, 4, "namenode, datanode and gateway (TLS and token)");
}

#[test]
fn flag_reader_finds_the_known_flags() {
    // The reader itself, so a parsing slip cannot make the next test vacuous.
    let nn = flags_of_binary("kdfs-namenode");
    for f in [
        "listen",
        "http",
        "data-dir",
        "heartbeat-interval",
        "dead-after",
        "kubernetes",
        "log-format",
    ] {
        assert!(
            nn.long.contains(f),
            "namenode --{f} not found: {:?}",
            nn.long
        );
    }
    assert!(nn.env.contains("KDFS_DEAD_AFTER"));
    let dn = flags_of_binary("kdfs-datanode");
    for f in [
        "listen",
        "advertise",
        "namenode",
        "data-dir",
        "reserved",
        "shutdown-grace",
        "pod-name",
    ] {
        assert!(
            dn.long.contains(f),
            "datanode --{f} not found: {:?}",
            dn.long
        );
    }
    assert_eq!(
        dn.defaults
            .get("DEFAULT_SHUTDOWN_GRACE")
            .map(String::as_str),
        Some("20s")
    );
    let gw = flags_of_binary("kdfs-gateway");
    for f in ["listen", "namenode", "max-upload", "auth-token"] {
        assert!(
            gw.long.contains(f),
            "gateway --{f} not found: {:?}",
            gw.long
        );
    }
    assert!(
        !gw.long.contains("data-dir"),
        "the gateway has no --data-dir"
    );
    // A flattened struct (the mTLS flags every binary shares) is followed.
    let mut tls = Flags::default();
    read_clap_flags(&struct_source("TlsArgs"), &mut tls);
    for var in ["KDFS_TLS_CERT", "KDFS_TLS_KEY", "KDFS_TLS_CA"] {
        assert!(tls.env.contains(var), "TlsArgs: no {var}: {:?}", tls.env);
    }
    assert!(tls.long.contains("tls-reload-interval"));
    assert_eq!(seconds("20s"), 20);
    assert_eq!(seconds("2m"), 120);
    assert_eq!(seconds("500ms"), 1);
}

#[test]
fn every_flag_and_kdfs_variable_in_the_manifests_exists_in_its_binary() {
    let m = load();
    let mut checked = 0;
    for (name, t) in m.templates() {
        for c in &pod(t).containers {
            let bin = binary(c);
            let flags = flags_of_binary(bin);
            for a in args(c) {
                if let Some(f) = a.strip_prefix("--") {
                    let f = f.split_once('=').map_or(f, |(f, _)| f);
                    assert!(
                        flags.long.contains(f),
                        "{name}: {bin} has no --{f} (known: {:?})",
                        flags.long
                    );
                    checked += 1;
                }
            }
            for e in c.env.iter().flatten() {
                if e.name.starts_with("KDFS_") {
                    assert!(
                        flags.env.contains(&e.name),
                        "{name}: {bin} reads no {}",
                        e.name
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} flags checked: the manifests pass fewer than expected"
    );
}

#[test]
fn the_image_runs_as_the_manifests_user_and_holds_every_binary_they_run() {
    let m = load();
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    // The last USER line is the runtime stage's.
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("the Dockerfile sets a USER");
    let (uid, gid) = user
        .trim()
        .split_once(':')
        .unwrap_or((user.trim(), user.trim()));
    let uid: i64 = uid
        .parse()
        .expect("USER is a numeric uid (runAsNonRoot needs one)");
    let gid: i64 = gid.parse().expect("USER group is numeric");
    assert_ne!(uid, 0, "the image runs as root");
    for (name, t) in m.templates() {
        let spec = pod(t);
        let sc = spec.security_context.as_ref().expect("pod securityContext");
        assert_eq!(
            sc.run_as_user,
            Some(uid),
            "{name}: runAsUser is not the image's uid"
        );
        assert_eq!(
            sc.run_as_group,
            Some(gid),
            "{name}: runAsGroup is not the image's gid"
        );
        let has_volume = pod(t)
            .containers
            .iter()
            .any(|c| c.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()));
        if has_volume {
            assert_eq!(
                sc.fs_group,
                Some(gid),
                "{name}: fsGroup must make its volume writable"
            );
        }
        for c in &spec.containers {
            let bin = binary(c);
            assert!(
                dockerfile.contains(&format!("target/release/{bin}")),
                "{name}: runs {bin}, which the Dockerfile does not copy into the image"
            );
        }
    }
}

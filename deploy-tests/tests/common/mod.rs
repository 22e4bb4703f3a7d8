//! Shared by the deploy test files: every manifest of `k8s/` parsed into its
//! k8s-openapi type ([`load`]), and small readers of what a pod or container says
//! (its labels, flags, ports, variables, the binary it runs).
//!
//! Each test file is its own crate and uses only part of this module, hence the
//! `dead_code` allowance.

#![allow(dead_code)]

pub mod clap_flags;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, Namespace, PodSpec, PodTemplateSpec, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

/// The repository root (this crate lives in `deploy-tests/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy-tests has a parent directory")
        .to_path_buf()
}

/// Just enough of any document to know which type to parse it into.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    pub api_version: String,
    pub kind: String,
}

/// The parts of `kustomization.yaml` checked here.
#[derive(Debug, Deserialize)]
pub struct Kustomization {
    pub namespace: String,
    pub resources: Vec<String>,
}

/// Every object of `k8s/`, by type.
#[derive(Default)]
pub struct Manifests {
    pub namespaces: Vec<Namespace>,
    pub service_accounts: Vec<ServiceAccount>,
    pub services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Vec<Deployment>,
    pub budgets: Vec<PodDisruptionBudget>,
    pub ingresses: Vec<Ingress>,
    pub network_policies: Vec<NetworkPolicy>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// Resource files (not kustomization.yaml), by file name.
    pub files: BTreeSet<String>,
    pub kustomization: Option<Kustomization>,
}

pub fn parse<T: for<'de> Deserialize<'de>>(file: &str, index: usize, doc: &str) -> T {
    serde_saphyr::from_str(doc).unwrap_or_else(|e| {
        panic!(
            "{file} document {index}: does not parse as {}: {e}",
            std::any::type_name::<T>()
        )
    })
}

/// The documents of a multi-document YAML file: split at `---` lines, dropping those
/// with nothing but comments. Cross-checked against serde-saphyr's own document count.
pub fn documents(file: &str, text: &str) -> Vec<String> {
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

pub fn load() -> Manifests {
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
                ("networking.k8s.io/v1", "Ingress") => m.ingresses.push(parse(&file, i, doc)),
                ("networking.k8s.io/v1", "NetworkPolicy") => {
                    m.network_policies.push(parse(&file, i, doc))
                }
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

pub fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

impl Manifests {
    pub fn stateful_set(&self, name: &str) -> &StatefulSet {
        self.stateful_sets
            .iter()
            .find(|s| name_of(&s.metadata) == name)
            .unwrap_or_else(|| panic!("no StatefulSet {name}"))
    }
    pub fn deployment(&self, name: &str) -> &Deployment {
        self.deployments
            .iter()
            .find(|d| name_of(&d.metadata) == name)
            .unwrap_or_else(|| panic!("no Deployment {name}"))
    }
    /// The one PodDisruptionBudget selecting `labels`.
    pub fn budget_for(&self, labels: &BTreeMap<String, String>) -> &PodDisruptionBudget {
        let budgets: Vec<_> = self
            .budgets
            .iter()
            .filter(|b| {
                b.spec
                    .as_ref()
                    .is_some_and(|s| selects(&match_labels(s.selector.as_ref()), labels))
            })
            .collect();
        assert_eq!(
            budgets.len(),
            1,
            "one PodDisruptionBudget selects {labels:?}"
        );
        budgets[0]
    }
    pub fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| name_of(&s.metadata) == name)
            .unwrap_or_else(|| panic!("no Service {name}"))
    }
    /// Every pod template, with the name of the workload that owns it.
    pub fn templates(&self) -> Vec<(&str, &PodTemplateSpec)> {
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

pub fn pod(t: &PodTemplateSpec) -> &PodSpec {
    t.spec.as_ref().expect("pod template has a spec")
}

pub fn labels(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    t.metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// Whether `selector` (matchLabels only; expressions are not used here) selects `labels`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn match_labels(s: Option<&LabelSelector>) -> BTreeMap<String, String> {
    assert!(
        s.and_then(|s| s.match_expressions.as_ref()).is_none(),
        "matchExpressions are not checked by these tests: use matchLabels"
    );
    s.and_then(|s| s.match_labels.clone()).unwrap_or_default()
}

pub fn only_container<'a>(t: &'a PodTemplateSpec, workload: &str) -> &'a Container {
    let spec = pod(t);
    assert_eq!(
        spec.containers.len(),
        1,
        "{workload}: one container expected"
    );
    &spec.containers[0]
}

pub fn args(c: &Container) -> &[String] {
    c.args.as_deref().unwrap_or_default()
}

/// The value of `--name=value` or `--name value` in a container's args.
pub fn flag<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
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

pub fn container_port(c: &Container, name: &str) -> Option<i32> {
    c.ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

pub fn env_from_field<'a>(c: &'a Container, var: &str) -> Option<&'a str> {
    c.env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.name == var)
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str())
}

pub fn sorted(v: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = v.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

/// One rule, its api groups, resources and verbs, each sorted.
pub fn rule(r: &PolicyRule) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
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
pub fn seconds(d: &str) -> i64 {
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

pub fn binary(c: &Container) -> &str {
    c.command
        .as_deref()
        .and_then(|c| c.first())
        .map(String::as_str)
        .unwrap_or_else(|| panic!("container {} names no command", c.name))
}

pub fn env_value<'a>(c: &'a Container, var: &str) -> Option<&'a str> {
    c.env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.name == var)
        .and_then(|e| e.value.as_deref())
}

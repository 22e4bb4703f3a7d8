//! Static checks of every container in `k8s/`: probed (plain HTTP), non-root,
//! read-only, unprivileged and with resource requests and limits; and mTLS: every
//! container mounts its own `kdfs-tls-<role>` Secret read-only as a whole directory (no
//! subPath, so a rotated Secret reaches the files) and points `KDFS_TLS_CERT/KEY/CA` at
//! its keys; the gateway mounts `kdfs-gateway-auth` the same way for
//! `KDFS_AUTH_TOKEN_FILE` and `kdfs-s3-credentials` for `KDFS_S3_CREDENTIALS_FILE`;
//! every mounted Secret is one `deploy.sh` creates (its `TLS_SECRETS`, `AUTH_SECRET`
//! and `S3_SECRET` lines).

mod common;

use common::*;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

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

/// The Secrets `deploy.sh` creates, read from its `TLS_SECRETS=(…)`, `AUTH_SECRET=…` and
/// `S3_SECRET=…` lines, so a manifest cannot mount a Secret nobody makes.
fn deploy_sh_secrets() -> (BTreeSet<String>, String, String) {
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
    let word = |var: &str| {
        line(var)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    (tls, word("AUTH_SECRET"), word("S3_SECRET"))
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
    let (tls_secrets, auth_secret, s3_secret) = deploy_sh_secrets();
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
                let s3 = secret_dir(
                    spec,
                    c,
                    &[("KDFS_S3_CREDENTIALS_FILE", "credentials")],
                    &who,
                );
                assert_eq!(
                    s3, s3_secret,
                    "{who}: the S3 key pairs are deploy.sh's S3_SECRET"
                );
                checked += 1;
            }
            checked += 1;
        }
        // Every Secret a pod mounts is one deploy.sh makes.
        for v in spec.volumes.iter().flatten() {
            if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
                assert!(
                    tls_secrets.contains(s) || s == auth_secret || s == s3_secret,
                    "{name}: mounts Secret {s}, which deploy.sh does not create"
                );
            }
        }
    }
    assert_eq!(
        checked, 4,
        "namenode, datanode and gateway (TLS, token and S3 keys)"
    );
}

/// The namespace enforces Pod Security's `restricted` profile, and every pod meets it
/// (so the API server admits them): non-root, no privilege escalation, every
/// capability dropped (none added but NET_BIND_SERVICE), the runtime's seccomp
/// profile, only the volume types the profile allows, no host namespaces or ports; and
/// volumes are chowned only when their root does not already belong to the pod's group.
#[test]
fn every_pod_meets_the_restricted_pod_security_profile_the_namespace_enforces() {
    let m = load();
    let labels = m.namespaces[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted"),
        "namespace kdfs enforces the restricted profile"
    );
    const ALLOWED_VOLUMES: &str =
        "configMap csi downwardAPI emptyDir ephemeral persistentVolumeClaim projected secret";
    for (name, t) in m.templates() {
        let spec = pod(t);
        let pod_sc = spec
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no pod securityContext"));
        assert_eq!(
            pod_sc.fs_group_change_policy.as_deref(),
            Some("OnRootMismatch"),
            "{name}: fsGroupChangePolicy"
        );
        assert!(pod_sc.sysctls.is_none(), "{name}: sysctls");
        for v in spec.volumes.iter().flatten() {
            let json = serde_json::to_value(v).unwrap();
            for key in json.as_object().unwrap().keys().filter(|k| *k != "name") {
                assert!(
                    ALLOWED_VOLUMES.split(' ').any(|a| a == key),
                    "{name}: volume {} is a {key}, which the restricted profile refuses",
                    v.name
                );
            }
        }
        for c in &spec.containers {
            let who = format!("{name}/{}", c.name);
            let sc = c.security_context.as_ref().expect("checked above");
            let seccomp = sc
                .seccomp_profile
                .as_ref()
                .or(pod_sc.seccomp_profile.as_ref())
                .map(|p| p.type_.as_str());
            assert!(
                matches!(seccomp, Some("RuntimeDefault" | "Localhost")),
                "{who}: seccompProfile {seccomp:?}"
            );
            assert_ne!(
                sc.run_as_non_root.or(pod_sc.run_as_non_root),
                Some(false),
                "{who}: runAsNonRoot"
            );
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{who}");
            let caps = sc.capabilities.as_ref().expect("checked above");
            assert!(
                caps.add.iter().flatten().all(|c| c == "NET_BIND_SERVICE"),
                "{who}: adds capabilities"
            );
            assert!(sc.proc_mount.as_deref().is_none_or(|p| p == "Default"));
            for p in c.ports.iter().flatten() {
                assert!(p.host_port.is_none(), "{who}: hostPort");
            }
        }
    }
}

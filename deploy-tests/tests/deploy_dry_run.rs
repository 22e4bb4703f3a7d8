//! The deploy dry run: `./deploy.sh` with every command README.md shows (up, up again,
//! the offline build, redeploy, status, rotate-certs, down) against fake `docker`, `k3d`
//! and `kubectl` (`deploy-tests/fakes/`, first on PATH) that record their calls, with
//! `kubectl kustomize` passed to the real kubectl when there is one. It checks that
//! deploy.sh exits 0, calls the tools in a sensible order, applies the image it built,
//! and prints at its end exactly the commands of the README's and docs' Kubernetes
//! examples (the blocks marked `<!-- example: kubernetes -->`, which the README test
//! leaves to this one). Then what is not on the happy path: `down` asks before deleting
//! (and refuses without a terminal unless `--yes`), a rollout that does not become
//! ready shows its pods' events and logs, and every possibly empty array is expanded
//! the way macOS's bash 3.2 accepts under `set -u`. And the namenodes: deploy.sh waits
//! for a leader (and fails showing the namenode pods when none comes), moves a cluster
//! of one namenode to three, applies one with `KDFS_NAMENODES=1`, and issues a namenode
//! certificate (with the real `kdfs certs`) naming every host the namenodes are dialled
//! by, and no other role's certificate naming them.

#[path = "common/certs.rs"]
mod certs;
#[path = "../../cli/tests/readme_examples/markdown.rs"]
mod markdown;

use certs::{covers, dns_names, kdfs_bin_dir, namenode_hosts_dialled};

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The tag deploy.sh derives from the fake docker's image id.
const TAGGED: &str = "kdfs:dev-0123456789ab";
const WORKLOADS: [&str; 3] = [
    "statefulset/namenode",
    "statefulset/datanode",
    "deployment/gateway",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// deploy.sh run with the fakes, their state (cluster, image, Secrets, applied
/// manifests) kept in a temp directory across runs.
struct DryRun {
    state: tempfile::TempDir,
    real_kubectl: Option<PathBuf>,
    /// A directory holding the real `kdfs`, which the fake docker then runs.
    kdfs_bin: Option<PathBuf>,
}

/// One deploy.sh run: its output and the tool calls it made.
struct Run {
    command: String,
    out: Output,
    calls: Vec<String>,
}

impl DryRun {
    fn new() -> DryRun {
        let real_kubectl = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("kubectl"))
            .find(|p| p.is_file());
        if real_kubectl.is_none() {
            eprintln!(
                "no kubectl on PATH: the kustomize sub-check is skipped (the fake lists \
                 k8s/*.yaml as they are, as scripts/lint-deploy.sh does without kubectl)"
            );
        }
        DryRun {
            state: tempfile::tempdir().unwrap(),
            real_kubectl,
            kdfs_bin: None,
        }
    }

    /// `command` (a README line such as `./deploy.sh status`) in the repository root;
    /// it must succeed.
    fn run(&self, command: &str) -> Run {
        let run = self.try_run(command);
        assert!(
            run.out.status.success(),
            "`{command}` failed: {}",
            run.report()
        );
        run
    }

    /// `command` in the repository root, whatever its exit status.
    fn try_run(&self, command: &str) -> Run {
        let log = self.state.path().join("calls.log");
        std::fs::write(&log, "").unwrap();
        let mut path = OsString::from(root().join("deploy-tests/fakes"));
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let mut c = Command::new("bash");
        c.args(["-e", "-c", command])
            .current_dir(root())
            .env("PATH", path)
            .env("FAKE_STATE", self.state.path())
            .env(
                "REAL_KUBECTL",
                self.real_kubectl.as_deref().unwrap_or(Path::new("")),
            )
            .env(
                "FAKE_KDFS_BIN",
                self.kdfs_bin.as_deref().unwrap_or(Path::new("")),
            );
        for v in [
            "KDFS_CLUSTER",
            "KDFS_IMAGE",
            "KDFS_AGENTS",
            "KDFS_TIMEOUT",
            "KDFS_HTTP_PORT",
            "KDFS_NAMENODES",
            "KDFS_LEADER_TIMEOUT",
            "DOCKER_BUILD_FLAGS",
        ] {
            c.env_remove(v);
        }
        let out = c.output().expect("bash runs");
        let calls = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let run = Run {
            command: command.to_owned(),
            out,
            calls,
        };
        assert!(
            !run.calls.iter().any(|c| c.starts_with("UNEXPECTED")),
            "`{command}` made a call the fakes do not know: {}",
            run.report()
        );
        run
    }

    /// The manifests the last `kubectl apply` got.
    fn last_applied(&self) -> String {
        let n = std::fs::read_dir(self.state.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .strip_prefix("apply-")
                    .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count();
        std::fs::read_to_string(self.state.path().join(format!("apply-{}.yaml", n - 1))).unwrap()
    }
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    fn report(&self) -> String {
        format!(
            "{}\nstdout:\n{}\nstderr:\n{}\ncalls:\n{}",
            self.out.status,
            self.stdout(),
            String::from_utf8_lossy(&self.out.stderr),
            self.calls.join("\n")
        )
    }

    fn called(&self, part: &str) -> bool {
        self.calls.iter().any(|c| c.contains(part))
    }

    /// Asserts some calls contain `parts`, one each, in this order.
    fn in_order(&self, parts: &[&str]) {
        let mut from = 0;
        for part in parts {
            match self.calls[from..].iter().position(|c| c.contains(part)) {
                Some(i) => from += i + 1,
                None => panic!(
                    "`{}`: no call containing `{part}` after call {from} (expected in order: {parts:?}): {}",
                    self.command,
                    self.report()
                ),
            }
        }
    }
}

fn first_up_order() -> Vec<String> {
    let mut order: Vec<String> = [
        "docker info",
        "k3d version",
        "k3d cluster get kdfs",
        "k3d cluster create kdfs --servers 1 --agents 3 -p 8080:80@loadbalancer \
         --k3s-node-label topology.kubernetes.io/zone=zone-a@agent:0 \
         --k3s-node-label topology.kubernetes.io/zone=zone-b@agent:1 \
         --k3s-node-label topology.kubernetes.io/zone=zone-c@agent:2 --wait",
        "kubectl --context k3d-kdfs wait --for=condition=Ready nodes --all",
        "docker build",
        "docker tag kdfs:dev kdfs:dev-0123456789ab",
        "k3d image import kdfs:dev-0123456789ab kdfs:dev -c kdfs",
        "kubectl --context k3d-kdfs create namespace kdfs",
        "docker run -i --rm --network=none kdfs:dev-0123456789ab",
        "create secret generic kdfs-ca",
        "create secret generic kdfs-tls-namenode",
        "create secret generic kdfs-tls-datanode",
        "create secret generic kdfs-tls-gateway",
        "create secret generic kdfs-gateway-auth",
        "create secret generic kdfs-s3-credentials",
        "kubectl --context k3d-kdfs kustomize",
        "kubectl --context k3d-kdfs apply -f -",
        "kubectl --context k3d-kdfs apply -f ",
    ]
    .map(str::to_owned)
    .to_vec();
    order.extend(WORKLOADS.map(|w| format!("rollout status {w}")));
    order.push(LEADER_QUERY.to_owned());
    order
}

/// How deploy.sh asks the gateway's /info which namenode leads.
const LEADER_QUERY: &str = "get --raw /api/v1/namespaces/kdfs/services/gateway:http/proxy/info";

#[test]
fn deploy_sh_runs_every_readme_command_against_fake_tools() {
    let examples: Vec<markdown::Example> = markdown::workspace_examples(&root())
        .into_iter()
        .filter(|e| e.marker.as_deref() == Some("kubernetes"))
        .collect();
    let (deploys, printed): (Vec<_>, Vec<_>) = examples
        .iter()
        .filter(|e| e.command != "bash scripts/docker-local-images.sh")
        .partition(|e| e.program() == "./deploy.sh");
    assert!(!deploys.is_empty() && !printed.is_empty(), "{examples:?}");
    eprintln!(
        "not run: `bash scripts/docker-local-images.sh` (real images; scripts/image-test.sh \
         runs it in CI)"
    );

    let dry = DryRun::new();
    let mut up = None;
    for e in &deploys {
        let run = dry.run(&e.command);
        eprintln!("ran {}  {}", e.at(), e.command);
        if up.is_none() {
            // The first one creates the cluster.
            let order = first_up_order();
            run.in_order(&order.iter().map(String::as_str).collect::<Vec<_>>());
            up = Some(run);
        } else {
            // Again: the cluster and the Secrets are reused, the image rebuilt.
            run.in_order(&[
                "k3d cluster get kdfs",
                "k3d cluster start kdfs",
                "docker build",
            ]);
            assert!(!run.called("cluster create"), "{}", run.report());
            assert!(!run.called("docker run"), "{}", run.report());
            assert!(run.stdout().contains("keeping Secret kdfs-tls-namenode"));
            if e.command.starts_with("DOCKER_BUILD_FLAGS=--network=none") {
                assert!(
                    run.called("docker build --network=none -t kdfs:dev"),
                    "{}",
                    run.report()
                );
            }
        }
    }
    let up = up.unwrap();

    // The manifests applied run the image just built, in namespace kdfs (kustomize sets
    // both: without it there is nothing to check).
    if dry.real_kubectl.is_some() {
        let applied = dry.last_applied();
        assert_eq!(
            applied.matches(&format!("image: {TAGGED}\n")).count(),
            3,
            "{applied}"
        );
        assert!(!applied.contains("image: kdfs:dev\n"), "{applied}");
        assert!(applied.contains("namespace: kdfs"), "{applied}");
    }

    // What deploy.sh prints at its end is what the README's Kubernetes blocks show.
    let stdout = up.stdout();
    let said: Vec<&str> = stdout
        .lines()
        .map(|l| markdown::strip_comment(l).trim())
        .collect();
    for e in &printed {
        assert!(
            said.contains(&e.command.as_str()),
            "{}: `{}` is not among the lines ./deploy.sh prints at its end:\n{stdout}",
            e.at(),
            e.command
        );
    }

    // The other commands README.md names.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for c in ["redeploy", "status", "rotate-certs", "down"] {
        assert!(
            readme.contains(&format!("./deploy.sh\n{c}`"))
                || readme.contains(&format!("./deploy.sh {c}`")),
            "README names ./deploy.sh {c}"
        );
    }
    let run = dry.run("./deploy.sh redeploy");
    let restart = format!("rollout restart {}", WORKLOADS.join(" "));
    let mut order = vec![
        "docker build",
        "k3d image import",
        "kustomize",
        "apply -f -",
        &restart,
    ];
    let waits = WORKLOADS.map(|w| format!("rollout status {w}"));
    order.extend(waits.iter().map(String::as_str));
    order.push(LEADER_QUERY);
    run.in_order(&order);
    assert!(
        run.stdout()
            .contains("namenode namenode-1.namenode.kdfs.svc.cluster.local:8020: leader"),
        "{}",
        run.report()
    );

    assert!(
        !run.called("delete statefulset"),
        "the policy did not change: nothing recreated: {}",
        run.report()
    );

    // A cluster deployed when datanodes scaled in parallel: the immutable field changed,
    // so the StatefulSet is recreated (pods and claims orphaned, then adopted).
    std::fs::write(dry.state.path().join("policy-datanode"), "Parallel").unwrap();
    let run = dry.run("./deploy.sh redeploy");
    run.in_order(&[
        "get statefulset/datanode -o jsonpath={.spec.podManagementPolicy}",
        "delete statefulset/datanode --cascade=orphan",
        "apply -f -",
    ]);
    assert!(
        !run.called("delete statefulset/namenode"),
        "{}",
        run.report()
    );

    let run = dry.run("./deploy.sh status");
    run.in_order(&[
        "get nodes -L topology.kubernetes.io/zone",
        "get pods -o wide",
        "get pvc",
    ]);

    let run = dry.run("./deploy.sh rotate-certs");
    let mut order = vec![
        "get secret kdfs-ca -o jsonpath",
        "docker run -i --rm --network=none kdfs:dev-0123456789ab",
    ];
    // Each Secret made with --dry-run=client and piped into a replace (never apply).
    for role in ["namenode", "datanode", "gateway"] {
        order.push(match role {
            "namenode" => "create secret generic kdfs-tls-namenode --type=kubernetes.io/tls",
            "datanode" => "create secret generic kdfs-tls-datanode --type=kubernetes.io/tls",
            _ => "create secret generic kdfs-tls-gateway --type=kubernetes.io/tls",
        });
        order.push("kubectl --context k3d-kdfs replace -f -");
    }
    run.in_order(&order);
    assert!(!run.called("apply"), "{}", run.report());

    let run = dry.run("./deploy.sh down --yes");
    run.in_order(&["k3d cluster get kdfs", "k3d cluster delete kdfs"]);
    let run = dry.run("./deploy.sh down --yes");
    assert!(!run.called("cluster delete"), "{}", run.report());
    assert!(run.stdout().contains("nothing to do"), "{}", run.report());
}

/// The image kustomization.yaml names, as `name:tag`.
fn kustomization_image() -> String {
    let k = std::fs::read_to_string(root().join("k8s/kustomization.yaml")).unwrap();
    let field = |f: &str| {
        k.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{f}: ")))
            .unwrap_or_else(|| panic!("kustomization.yaml has no {f}"))
            .trim()
            .to_owned()
    };
    format!("{}:{}", field("newName"), field("newTag"))
}

/// `kubectl apply -k k8s/` by hand runs the image kustomization.yaml names: deploy.sh
/// imports the build under that name too (besides the tag with its id that rolls pods),
/// and a cluster it made maps the load balancer's host port, where Traefik's read
/// timeout is lifted.
#[test]
fn the_image_kustomize_names_is_imported_and_the_gateway_reachable_by_host_port() {
    let deploy = std::fs::read_to_string(root().join("deploy.sh")).unwrap();
    let image = kustomization_image();
    assert!(
        deploy.contains(&format!("\nMANIFEST_IMAGE={image}\n")),
        "deploy.sh's MANIFEST_IMAGE must be {image}, the image k8s/kustomization.yaml names"
    );
    let dry = DryRun::new();
    let run = dry.run("./deploy.sh");
    run.in_order(&[&format!("k3d image import {TAGGED} {image} -c kdfs")]);
    assert!(
        dry.state
            .path()
            .join("apply-file-traefik-config.yaml")
            .exists(),
        "{}",
        run.report()
    );
    assert!(
        run.stdout()
            .contains("The gateway is at http://localhost:8080/"),
        "{}",
        run.report()
    );
    // A cluster without the mapping (an older deploy.sh's) is told how to add one.
    std::fs::remove_file(dry.state.path().join("lb-kdfs-serverlb")).unwrap();
    let run = dry.run("./deploy.sh");
    let out = run.stdout();
    assert!(
        out.contains("k3d node edit k3d-kdfs-serverlb --port-add 8080:80"),
        "{out}"
    );
    assert!(!out.contains("The gateway is at"), "{out}");
    assert!(
        out.contains("kubectl -n kdfs port-forward service/gateway 8080:80"),
        "{out}"
    );
    // Another host port, chosen at creation.
    let dry = DryRun::new();
    let run = dry.run("KDFS_HTTP_PORT=9090 ./deploy.sh");
    run.in_order(&["k3d cluster create kdfs --servers 1 --agents 3 -p 9090:80@loadbalancer"]);
    assert!(
        run.stdout()
            .contains("The gateway is at http://localhost:9090/"),
        "{}",
        run.report()
    );
}

/// `down` never deletes without a yes: without a terminal it refuses and says how to
/// confirm; on a terminal (script(1) gives one) anything but `y` keeps the cluster.
#[test]
fn down_asks_before_deleting_unless_yes() {
    let dry = DryRun::new();
    dry.run("./deploy.sh");
    let run = dry.try_run("./deploy.sh down </dev/null");
    assert!(!run.out.status.success(), "{}", run.report());
    assert!(
        run.stderr().contains("./deploy.sh down --yes"),
        "{}",
        run.report()
    );
    assert!(!run.called("cluster delete"), "{}", run.report());
    assert!(dry.state.path().join("cluster-kdfs").exists());

    let on_a_terminal = |answer: &str| {
        // script(1) runs the command on a pseudo-terminal fed by its stdin.
        dry.try_run(&format!(
            "printf '{answer}\\n' | script -qec './deploy.sh down' /dev/null"
        ))
    };
    if Command::new("script").arg("--version").output().is_ok() {
        let run = on_a_terminal("n");
        assert!(!run.called("cluster delete"), "{}", run.report());
        assert!(run.stdout().contains("[y/N]"), "{}", run.report());
        assert!(dry.state.path().join("cluster-kdfs").exists());
        let run = on_a_terminal("y");
        assert!(run.called("k3d cluster delete kdfs"), "{}", run.report());
    } else {
        eprintln!("no script(1): the interactive answers are not checked");
    }
    let run = dry.try_run("./deploy.sh status --yes");
    assert!(!run.out.status.success(), "--yes belongs to down only");
}

/// A workload that does not become ready: deploy.sh fails naming it and shows each of
/// its pods that is not ready with its events and last log lines (and those of the
/// container before its last restart), not only a timeout.
#[test]
fn a_rollout_that_is_not_ready_shows_its_pods_events_and_logs() {
    let dry = DryRun::new();
    std::fs::write(dry.state.path().join("not-ready"), "statefulset/datanode\n").unwrap();
    let run = dry.try_run("./deploy.sh");
    assert!(!run.out.status.success(), "{}", run.report());
    let err = run.stderr();
    for want in [
        "statefulset/datanode did not become ready within 300s",
        "--- events of pod datanode-1",
        "Back-off restarting failed container",
        "--- last log lines of pod datanode-1",
        "fake log of datanode-1",
        "fake log of datanode-1's previous container",
        "statefulset/datanode is not ready",
    ] {
        assert!(
            err.contains(want),
            "stderr lacks {want:?}: {}",
            run.report()
        );
    }
    // The ready pod is left alone, and nothing after the failing workload is awaited.
    assert!(
        !err.contains("events of pod datanode-0"),
        "{}",
        run.report()
    );
    run.in_order(&[
        "rollout status statefulset/datanode",
        "get events --field-selector involvedObject.name=datanode-1",
        "logs datanode-1 --all-containers --tail=40",
        "logs datanode-1 --all-containers --previous --tail=40",
    ]);
    assert!(
        !run.called("rollout status deployment/gateway"),
        "{}",
        run.report()
    );
}

/// Every expansion of an array that may be empty works under `set -u` in bash 3.2
/// (macOS): it is written `${a[@]+"${a[@]}"}`, or follows a `${#a[@]} -gt 0` test in
/// the same function. (Newer bash accepts a plain "${a[@]}", so running deploy.sh here
/// cannot show it.)
#[test]
fn possibly_empty_arrays_expand_the_bash_3_2_way() {
    let text = std::fs::read_to_string(root().join("deploy.sh")).unwrap();
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    // Arrays ever assigned empty: `NAME=()` or `local NAME=()`.
    let mut empty: Vec<String> = Vec::new();
    for l in &code {
        for word in l.split_whitespace() {
            if let Some(name) = word.strip_suffix("=()") {
                empty.push(name.to_owned());
            }
        }
    }
    assert!(empty.contains(&"CLEANUP".to_owned()), "{empty:?}");
    let mut checked = 0;
    for name in &empty {
        let idiom = format!("${{{name}[@]+\"${{{name}[@]}}\"}}");
        let guard = format!("${{#{name}[@]}} -gt 0");
        let mut guarded = false;
        for (i, l) in code.iter().enumerate() {
            if l.ends_with("() {") {
                guarded = false;
            }
            if l.contains(&guard) {
                guarded = true;
            }
            let bare = l.replace(&idiom, "");
            for form in ["[@]}", "[*]}"] {
                if bare.contains(&format!("${{{name}{form}")) {
                    assert!(
                        guarded,
                        "deploy.sh code line {}: `{}` expands {name}, which may be empty, \
                         without ${{{name}[@]+\"${{{name}[@]}}\"}} or a length test",
                        i + 1,
                        l.trim()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0);
    // And the trap itself runs with nothing to clean under set -u, in POSIX mode too
    // (closer to an old bash's stricter parsing).
    let dry = DryRun::new();
    dry.run("bash --posix ./deploy.sh");
    let run = dry.run("bash --posix -u ./deploy.sh status");
    assert!(run.stderr().is_empty(), "{}", run.report());
}

/// No namenode leads (the gateway's /info names none): deploy.sh gives up after
/// KDFS_LEADER_TIMEOUT, saying what /info said and showing the namenode pods.
#[test]
fn without_a_namenode_leader_deploy_fails_showing_the_namenodes() {
    let dry = DryRun::new();
    std::fs::write(dry.state.path().join("no-leader"), "").unwrap();
    let run = dry.try_run("KDFS_LEADER_TIMEOUT=1 ./deploy.sh");
    assert!(!run.out.status.success(), "{}", run.report());
    let err = run.stderr();
    for want in [
        "no namenode leader within 1s",
        "follower namenode-0.namenode.kdfs.svc.cluster.local:8020",
        "--- events of pod namenode-1",
        "statefulset/namenode is not ready",
    ] {
        assert!(
            err.contains(want),
            "stderr lacks {want:?}: {}",
            run.report()
        );
    }
    run.in_order(&[
        "rollout status deployment/gateway",
        LEADER_QUERY,
        "get pods -l app.kubernetes.io/name=namenode",
    ]);
}

/// A cluster an earlier deploy.sh made runs one namenode: an OrderedReady StatefulSet
/// without --peers behind a Service with a cluster IP, its certificate naming no
/// namenode pod. The next deploy recreates the StatefulSet (pods and claims kept) and
/// the Service (headless now), replaces the namenode certificate, applies, and
/// restarts namenode-0 with --peers at once (the rollout would wait for namenode-2,
/// which cannot become ready while namenode-0 runs alone); the one after does none of
/// that.
#[test]
fn a_cluster_of_one_namenode_moves_to_three() {
    let dry = DryRun::new();
    dry.run("./deploy.sh");
    for (file, content) in [
        ("policy-namenode", "OrderedReady"),
        ("single-namenode", ""),
        ("clusterip-namenode", "10.43.12.7"),
    ] {
        std::fs::write(dry.state.path().join(file), content).unwrap();
    }
    let run = dry.run("./deploy.sh redeploy");
    run.in_order(&[
        "get statefulset/namenode -o jsonpath={.spec.podManagementPolicy} {.spec.serviceName}",
        "delete statefulset/namenode --cascade=orphan",
        "get service/namenode -o jsonpath={.spec.clusterIP}",
        "delete service/namenode",
        "get secret kdfs-ca -o jsonpath",
        "docker run -i --rm --network=none kdfs:dev-0123456789ab",
        "create secret generic kdfs-tls-namenode --type=kubernetes.io/tls",
        "kubectl --context k3d-kdfs replace -f -",
        "apply -f -",
        "delete pod namenode-0",
        "rollout status statefulset/namenode",
        LEADER_QUERY,
    ]);
    assert!(
        !run.called("delete statefulset/datanode"),
        "{}",
        run.report()
    );
    assert!(
        run.stdout()
            .contains("from one to three: restarting namenode-0"),
        "{}",
        run.report()
    );
    let run = dry.run("./deploy.sh redeploy");
    for call in [
        "delete statefulset",
        "delete service",
        "delete pod",
        "replace",
    ] {
        assert!(!run.called(call), "nothing left to move: {}", run.report());
    }
}

/// `KDFS_NAMENODES=1`: the k8s/single component applied, one namenode without
/// --peers, datanodes and gateways pointed at it alone, nothing left in the repository;
/// any other count is refused.
#[test]
fn one_namenode_on_request() {
    let dry = DryRun::new();
    if dry.real_kubectl.is_none() {
        eprintln!("no kubectl: the k8s/single component is not rendered");
        return;
    }
    let run = dry.run("KDFS_NAMENODES=1 ./deploy.sh");
    let applied = dry.last_applied();
    let namenode_set = applied
        .split("\n---\n")
        .find(|d| d.contains("kind: StatefulSet") && d.contains("\n  name: namenode\n"))
        .expect("the namenode StatefulSet was applied");
    assert!(namenode_set.contains("\n  replicas: 1\n"), "{namenode_set}");
    assert!(!applied.contains("KDFS_PEERS"), "{applied}");
    assert_eq!(
        applied.matches("value: http://namenode:8020\n").count(),
        2,
        "the datanodes and gateways name the one namenode: {applied}"
    );
    assert!(!run.called("delete pod"), "{}", run.report());
    let left: Vec<_> = std::fs::read_dir(root())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".kdfs-single."))
        .collect();
    assert!(left.is_empty(), "deploy.sh left {left:?}");
    let run = dry.try_run("KDFS_NAMENODES=2 ./deploy.sh");
    assert!(!run.out.status.success(), "{}", run.report());
    assert!(
        run.stderr().contains("KDFS_NAMENODES=2"),
        "{}",
        run.report()
    );
}

/// deploy.sh's certificates, made by the real `kdfs certs` as deploy.sh runs it in the
/// image: the namenode's names every host its peers, datanodes and gateways dial it by
/// (each namenode pod), and no other role's certificate names a namenode pod.
#[test]
fn the_namenode_certificate_names_every_namenode() {
    let mut dry = DryRun::new();
    if dry.real_kubectl.is_none() {
        eprintln!("no kubectl: the manifests naming the namenodes are not rendered");
        return;
    }
    dry.kdfs_bin = Some(kdfs_bin_dir());
    dry.run("./deploy.sh");
    let hosts = namenode_hosts_dialled(&dry.last_applied());
    assert_eq!(hosts.len(), 3, "three namenode pods are dialled: {hosts:?}");
    let secret = |name: &str| dry.state.path().join(format!("secret-{name}.d/tls.crt"));
    let names = dns_names(&secret("kdfs-tls-namenode"));
    for host in hosts.iter().chain([&"namenode".to_owned()]) {
        assert!(
            names.iter().any(|n| covers(n, host)),
            "the namenode certificate ({names:?}) does not name {host}"
        );
    }
    for role in ["kdfs-tls-datanode", "kdfs-tls-gateway"] {
        let names = dns_names(&secret(role));
        assert!(
            !hosts.iter().any(|h| names.iter().any(|n| covers(n, h))),
            "{role} ({names:?}) names a namenode pod"
        );
    }
    assert!(covers(
        "*.namenode.kdfs.svc",
        "namenode-0.namenode.kdfs.svc"
    ));
    assert!(!covers("*.namenode.kdfs.svc", "a.b.namenode.kdfs.svc"));
}

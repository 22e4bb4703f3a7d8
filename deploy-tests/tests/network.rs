//! The NetworkPolicies of `k8s/network-policy.yaml`, evaluated: every kdfs pod is
//! isolated both ways, and the flows the policies allow between kdfs pods, from outside
//! and to outside are exactly the ones kdfs uses (gRPC between its parts, HTTP from
//! anywhere to each part's HTTP port, the Kubernetes API from the namenode, DNS).

mod common;

use common::*;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Who is at the other end of a flow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    /// A kdfs pod, by workload name.
    Kdfs(String),
    /// Anything outside the namespace (other pods, nodes, the API server, the world).
    Outside,
}

fn policy_selects(p: &NetworkPolicy, pod: &BTreeMap<String, String>) -> bool {
    let selector = match_labels(p.spec.as_ref().expect("spec").pod_selector.as_ref());
    selector.is_empty() || selects(&selector, pod)
}

fn has_type(p: &NetworkPolicy, t: &str) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.policy_types.as_ref())
        .is_some_and(|ts| ts.iter().any(|x| x == t))
}

/// Whether a rule's peer list admits `peer` (no list: everyone).
fn peers_admit(
    peers: Option<&Vec<NetworkPolicyPeer>>,
    peer: &Peer,
    pods: &BTreeMap<String, BTreeMap<String, String>>,
) -> bool {
    let Some(peers) = peers.filter(|p| !p.is_empty()) else {
        return true;
    };
    peers.iter().any(|p| match peer {
        Peer::Kdfs(w) => {
            assert!(
                p.namespace_selector.is_none(),
                "namespaceSelector peers are not modelled here"
            );
            match &p.pod_selector {
                Some(sel) => {
                    let sel = match_labels(Some(sel));
                    sel.is_empty() || selects(&sel, &pods[w])
                }
                None => false,
            }
        }
        Peer::Outside => p
            .ip_block
            .as_ref()
            .is_some_and(|b| b.cidr == "0.0.0.0/0" && b.except.is_none()),
    })
}

fn ports_admit(ports: Option<&Vec<NetworkPolicyPort>>, port: i32, protocol: &str) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        assert!(p.end_port.is_none(), "port ranges are not modelled here");
        p.protocol.as_deref().unwrap_or("TCP") == protocol
            && match &p.port {
                None => true,
                Some(IntOrString::Int(n)) => *n == port,
                Some(IntOrString::String(name)) => panic!("use port numbers, not {name}"),
            }
    })
}

#[test]
fn network_policies_allow_exactly_the_flows_kdfs_uses() {
    let m = load();
    let policies = &m.network_policies;
    assert!(!policies.is_empty(), "k8s/ has NetworkPolicies");
    let pods: BTreeMap<String, BTreeMap<String, String>> = m
        .templates()
        .into_iter()
        .map(|(name, t)| (name.to_owned(), labels(t)))
        .collect();
    // Every kdfs pod is isolated both ways (a deny-all default applies to it).
    for (w, l) in &pods {
        for t in ["Ingress", "Egress"] {
            assert!(
                policies
                    .iter()
                    .any(|p| policy_selects(p, l) && has_type(p, t)),
                "{w} is not isolated for {t}"
            );
        }
    }
    let allowed_in = |dst: &str, from: &Peer, port: i32| {
        policies
            .iter()
            .filter(|p| policy_selects(p, &pods[dst]) && has_type(p, "Ingress"))
            .flat_map(|p| p.spec.as_ref().unwrap().ingress.iter().flatten())
            .any(|r| {
                peers_admit(r.from.as_ref(), from, &pods)
                    && ports_admit(r.ports.as_ref(), port, "TCP")
            })
    };
    let allowed_out = |src: &str, to: &Peer, port: i32, protocol: &str| {
        policies
            .iter()
            .filter(|p| policy_selects(p, &pods[src]) && has_type(p, "Egress"))
            .flat_map(|p| p.spec.as_ref().unwrap().egress.iter().flatten())
            .any(|r| {
                peers_admit(r.to.as_ref(), to, &pods)
                    && ports_admit(r.ports.as_ref(), port, protocol)
            })
    };

    // Every port of every kdfs container, by workload.
    let mut ports: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for (name, t) in m.templates() {
        for c in &pod(t).containers {
            for p in c.ports.iter().flatten() {
                ports
                    .entry(name.to_owned())
                    .or_default()
                    .insert(p.container_port);
            }
        }
    }
    let grpc = |w: &str| {
        let c = only_container(
            m.templates().into_iter().find(|(n, _)| *n == w).unwrap().1,
            w,
        );
        container_port(c, "grpc").unwrap_or_else(|| panic!("{w} has a grpc port"))
    };
    // The ports clients may reach from anywhere: each part's HTTP port, and the
    // gateway's S3 port once it has one (a container port named `s3`).
    let public = |w: &str| {
        let c = only_container(
            m.templates().into_iter().find(|(n, _)| *n == w).unwrap().1,
            w,
        );
        let http = container_port(c, "http").unwrap_or_else(|| panic!("{w} has an http port"));
        [Some(http), container_port(c, "s3")]
            .into_iter()
            .flatten()
            .collect::<BTreeSet<i32>>()
    };

    // Between kdfs pods: exactly these (source, destination, port).
    let want: BTreeSet<(String, String, i32)> = [
        ("gateway", "namenode", grpc("namenode")),
        ("gateway", "datanode", grpc("datanode")),
        ("datanode", "namenode", grpc("namenode")),
        ("datanode", "datanode", grpc("datanode")),
        ("namenode", "namenode", grpc("namenode")),
    ]
    .into_iter()
    .map(|(s, d, p)| (s.to_owned(), d.to_owned(), p))
    .collect();
    let mut got = BTreeSet::new();
    for src in pods.keys() {
        for (dst, dst_ports) in &ports {
            for &port in dst_ports {
                let from = Peer::Kdfs(src.clone());
                if allowed_out(src, &Peer::Kdfs(dst.clone()), port, "TCP")
                    && allowed_in(dst, &from, port)
                {
                    got.insert((src.clone(), dst.clone(), port));
                }
            }
        }
    }
    assert_eq!(got, want, "flows between kdfs pods");

    // From outside: each part's HTTP port (clients, ingress, probes, Prometheus) and
    // S3, no gRPC.
    for (dst, dst_ports) in &ports {
        for &port in dst_ports {
            assert_eq!(
                allowed_in(dst, &Peer::Outside, port),
                public(dst).contains(&port),
                "{dst}:{port} from outside"
            );
        }
    }

    // To outside: DNS for everyone, the Kubernetes API for the namenode only.
    for src in pods.keys() {
        for protocol in ["UDP", "TCP"] {
            assert!(
                allowed_out(src, &Peer::Outside, 53, protocol),
                "{src}: DNS over {protocol}"
            );
        }
        for port in [443, 6443] {
            assert_eq!(
                allowed_out(src, &Peer::Outside, port, "TCP"),
                src == "namenode",
                "{src} -> the Kubernetes API ({port})"
            );
        }
        for port in [80, 8080, 9000, 22] {
            assert!(
                !allowed_out(src, &Peer::Outside, port, "TCP"),
                "{src} -> outside:{port}"
            );
        }
    }
}

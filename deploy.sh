#!/usr/bin/env bash
# deploy.sh - put kdfs on a local k3d cluster, or take it down.
#
#   ./deploy.sh            create (or reuse) the k3d cluster, build and import the image,
#                          apply k8s/, wait for the rollout, print how to reach it
#   ./deploy.sh down       delete the kdfs namespace's objects and the k3d cluster
#   ./deploy.sh status     show the pods
#
# Environment: KDFS_CLUSTER (k3d cluster name, default kdfs), KDFS_IMAGE (default
# kdfs:dev), KDFS_AGENTS (k3d agent nodes, default 2), DOCKER_BUILD_FLAGS (extra flags
# for docker build, e.g. --network=none on an offline machine).
# Idempotent: running it again upgrades the image and re-applies the manifests.
set -euo pipefail

CLUSTER=${KDFS_CLUSTER:-kdfs}
IMAGE=${KDFS_IMAGE:-kdfs:dev}
AGENTS=${KDFS_AGENTS:-2}
NS=kdfs
HERE=$(cd "$(dirname "$0")" && pwd)

say() { printf '==> %s\n' "$*"; }
die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }

need_tools() {
  local missing=()
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  if [ ${#missing[@]} -gt 0 ]; then
    die "missing tools: ${missing[*]} (install docker, k3d (https://k3d.io) and kubectl, then run again)"
  fi
  docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (is dockerd running, and may this user use it?)"
}

cluster_exists() { k3d cluster list -o json 2>/dev/null | grep -q "\"name\":\"$CLUSTER\""; }

up() {
  need_tools docker k3d kubectl
  if cluster_exists; then
    say "reusing k3d cluster $CLUSTER"
    k3d cluster start "$CLUSTER" >/dev/null
  else
    say "creating k3d cluster $CLUSTER with $AGENTS agents"
    k3d cluster create "$CLUSTER" --agents "$AGENTS" --wait
  fi
  kubectl config use-context "k3d-$CLUSTER" >/dev/null

  say "building image $IMAGE"
  # shellcheck disable=SC2086
  DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build ${DOCKER_BUILD_FLAGS:-} -t "$IMAGE" "$HERE"
  say "importing $IMAGE into the cluster"
  k3d image import "$IMAGE" -c "$CLUSTER"

  say "applying k8s/"
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  cp -r "$HERE/k8s/." "$tmp/"
  (cd "$tmp" && kubectl kustomize . | sed "s#image: kdfs:dev#image: $IMAGE#") | kubectl apply -f -

  # The namenode first: datanodes and gateways only become ready once it serves.
  say "waiting for the rollout"
  kubectl -n "$NS" rollout status statefulset/namenode --timeout=180s
  kubectl -n "$NS" rollout status statefulset/datanode --timeout=300s
  kubectl -n "$NS" rollout status deployment/gateway --timeout=180s
  # A new image under the same tag: restart so pods pick it up.
  kubectl -n "$NS" rollout restart statefulset/namenode statefulset/datanode deployment/gateway >/dev/null
  kubectl -n "$NS" rollout status statefulset/namenode --timeout=180s
  kubectl -n "$NS" rollout status statefulset/datanode --timeout=300s
  kubectl -n "$NS" rollout status deployment/gateway --timeout=180s

  cat <<MSG

kdfs is running in k3d cluster "$CLUSTER", namespace $NS.

Reach the gateway (leave this running in another terminal):
  kubectl -n $NS port-forward service/gateway 8080:80

Then:
  open http://localhost:8080/                      # the browser page
  curl -F file=@some-file http://localhost:8080/upload
  curl 'http://localhost:8080/download?hash=HASH' -o some-file
  curl http://localhost:8080/info

Take it down:  ./deploy.sh down
MSG
}

down() {
  need_tools k3d kubectl
  if cluster_exists; then
    say "deleting k3d cluster $CLUSTER"
    k3d cluster delete "$CLUSTER"
  else
    say "no k3d cluster named $CLUSTER: nothing to do"
  fi
}

status() {
  need_tools kubectl
  kubectl -n "$NS" get pods -o wide
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) status ;;
  -h|--help|help) sed -n '2,14p' "$0" ;;
  *) die "unknown command ${1}: use up, down or status" ;;
esac

#!/usr/bin/env bash
# deploy.sh - put kdfs on a local k3d cluster, update it, or take it down.
#
#   ./deploy.sh [up]       create (or reuse) the k3d cluster (1 server + 3 agents, the
#                          agents labelled topology.kubernetes.io/zone=zone-a/b/c), build
#                          the image, import it, apply k8s/, wait for the rollout, print
#                          how to reach the gateway. Idempotent: run it again any time.
#   ./deploy.sh redeploy   rebuild + re-import the image, re-apply k8s/ and roll every
#                          kdfs workload onto it (restarted even if the image is
#                          unchanged; one datanode at a time), wait
#   ./deploy.sh status     nodes with their zones, pods, volume claims
#   ./deploy.sh down       delete the k3d cluster (and with it every kdfs volume)
#
# Needs docker, k3d (v5: https://k3d.io) and kubectl; says which are missing.
# Environment: KDFS_CLUSTER (k3d cluster name, default kdfs), KDFS_IMAGE (image name,
# default kdfs:dev), KDFS_AGENTS (agent nodes, default 3), DOCKER_BUILD_FLAGS (extra
# flags for docker build, e.g. --network=none on an offline machine), KDFS_TIMEOUT
# (rollout wait per workload, default 300s).
# Each build is also tagged with its image id (kdfs:dev-<id>) and the manifests are
# applied with that tag, so a changed image rolls the pods and an unchanged one does not.
set -euo pipefail

CLUSTER=${KDFS_CLUSTER:-kdfs}
IMAGE=${KDFS_IMAGE:-kdfs:dev}
AGENTS=${KDFS_AGENTS:-3}
TIMEOUT=${KDFS_TIMEOUT:-300s}
ZONES=(zone-a zone-b zone-c)
NS=kdfs
CONTEXT=k3d-$CLUSTER
HERE=$(cd "$(dirname "$0")" && pwd)
WORKLOADS=(statefulset/namenode statefulset/datanode deployment/gateway)

say() { printf '==> %s\n' "$*"; }
die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }
kc() { kubectl --context "$CONTEXT" "$@"; }

need_tools() {
  local missing=() t
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  if [ ${#missing[@]} -gt 0 ]; then
    local hints=()
    for t in "${missing[@]}"; do
      case $t in
        docker) hints+=("docker: https://docs.docker.com/engine/install/") ;;
        k3d) hints+=("k3d (v5): https://k3d.io/#installation") ;;
        kubectl) hints+=("kubectl: https://kubernetes.io/docs/tasks/tools/") ;;
      esac
    done
    printf 'deploy.sh: missing tools: %s\n' "${missing[*]}" >&2
    printf '  install %s\n' "${hints[@]}" >&2
    exit 1
  fi
  if [[ " $* " == *" docker "* ]] && ! docker info >/dev/null 2>&1; then
    die "the Docker engine is not reachable (is dockerd running, and may this user use it?)"
  fi
  if [[ " $* " == *" k3d "* ]]; then
    local v
    v=$(k3d version 2>/dev/null | sed -n 's/^k3d version v\([0-9]*\).*/\1/p')
    [ -z "$v" ] || [ "$v" -ge 5 ] || die "k3d v5 or newer is needed (node filters like @agent:0); found v$v"
  fi
}

cluster_exists() { k3d cluster get "$CLUSTER" >/dev/null 2>&1; }

# Create the cluster, or start and reuse it. Agents get zone labels, round robin.
ensure_cluster() {
  if cluster_exists; then
    say "reusing k3d cluster $CLUSTER"
    k3d cluster start "$CLUSTER" >/dev/null 2>&1 || true
    kc cluster-info >/dev/null 2>&1 ||
      k3d kubeconfig merge "$CLUSTER" --kubeconfig-merge-default >/dev/null
    local zoned
    zoned=$(kc get nodes -l topology.kubernetes.io/zone -o name | wc -l)
    if [ "$zoned" -eq 0 ]; then
      say "note: no node of $CLUSTER has a zone label (made by an older deploy.sh?);" \
        "'./deploy.sh down' then './deploy.sh' recreates it with zones"
    fi
  else
    local labels=() i
    for ((i = 0; i < AGENTS; i++)); do
      labels+=(--k3s-node-label "topology.kubernetes.io/zone=${ZONES[i % ${#ZONES[@]}]}@agent:$i")
    done
    say "creating k3d cluster $CLUSTER: 1 server, $AGENTS agents in zones ${ZONES[*]}"
    k3d cluster create "$CLUSTER" --servers 1 --agents "$AGENTS" "${labels[@]}" --wait
  fi
  kc wait --for=condition=Ready nodes --all --timeout="$TIMEOUT" >/dev/null
}

# Build the image, tag it with its id, import that tag; sets TAGGED.
build_and_import() {
  say "building image $IMAGE"
  # shellcheck disable=SC2086
  DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build ${DOCKER_BUILD_FLAGS:-} -t "$IMAGE" "$HERE"
  local id
  id=$(docker image inspect -f '{{.Id}}' "$IMAGE")
  id=${id#sha256:}
  local repo=$IMAGE tag=latest
  if [[ ${IMAGE##*/} == *:* ]]; then repo=${IMAGE%:*} tag=${IMAGE##*:}; fi
  TAGGED=$repo:$tag-${id:0:12}
  docker tag "$IMAGE" "$TAGGED"
  say "importing $TAGGED into the cluster"
  k3d image import "$TAGGED" -c "$CLUSTER"
}

# Apply k8s/ (kustomize) with the image set to $TAGGED.
apply_manifests() {
  say "applying k8s/ with image $TAGGED"
  kc kustomize "$HERE/k8s" |
    sed "s#image: kdfs:dev\$#image: $TAGGED#" |
    kc apply -f -
}

wait_rollout() {
  # The namenode first: datanodes and gateways only become ready once it serves.
  local w
  say "waiting for the rollout (at most $TIMEOUT each)"
  for w in "${WORKLOADS[@]}"; do
    kc -n "$NS" rollout status "$w" --timeout="$TIMEOUT"
  done
}

hello() {
  cat <<MSG

kdfs is running in k3d cluster "$CLUSTER", namespace $NS (image $TAGGED).

Reach the gateway (leave this running in another terminal):
  kubectl -n $NS port-forward service/gateway 8080:80

Then:
  open http://localhost:8080/                      # the browser page
  curl -F file=@some-file http://localhost:8080/upload
  curl -OJ 'http://localhost:8080/download?hash=HASH'
  curl http://localhost:8080/info

Status:        ./deploy.sh status
New code:      ./deploy.sh redeploy
Take it down:  ./deploy.sh down
MSG
}

up() {
  need_tools docker k3d kubectl
  ensure_cluster
  build_and_import
  apply_manifests
  wait_rollout
  hello
}

redeploy() {
  need_tools docker k3d kubectl
  cluster_exists || die "no k3d cluster $CLUSTER: run ./deploy.sh up first"
  build_and_import
  local running
  running=$(kc -n "$NS" get statefulset/datanode \
    -o jsonpath='{.spec.template.spec.containers[0].image}' 2>/dev/null || true)
  apply_manifests
  if [ "$running" = "$TAGGED" ]; then
    # Same image: applying changed nothing, so restart the pods explicitly.
    say "image unchanged: restarting ${WORKLOADS[*]}"
    kc -n "$NS" rollout restart "${WORKLOADS[@]}"
  else
    say "new image: the apply rolls ${WORKLOADS[*]}"
  fi
  wait_rollout
  hello
}

down() {
  need_tools k3d
  if cluster_exists; then
    say "deleting k3d cluster $CLUSTER (its volumes, and so every stored file, go with it)"
    k3d cluster delete "$CLUSTER"
  else
    say "no k3d cluster named $CLUSTER: nothing to do"
  fi
}

status() {
  need_tools k3d kubectl
  cluster_exists || die "no k3d cluster $CLUSTER (./deploy.sh up creates it)"
  kc get nodes -L topology.kubernetes.io/zone
  echo
  kc -n "$NS" get pods -o wide
  echo
  kc -n "$NS" get pvc
}

TAGGED=$IMAGE
case "${1:-up}" in
  up) up ;;
  redeploy) redeploy ;;
  down) down ;;
  status) status ;;
  -h | --help | help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command ${1}: use up, redeploy, status or down" ;;
esac

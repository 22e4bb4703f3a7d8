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
#   ./deploy.sh rotate-certs  issue new certificates under the cluster's CA and replace
#                          the kdfs-tls-* Secrets; the pods pick them up without a restart
#   ./deploy.sh down       delete the k3d cluster (and with it every kdfs volume)
#
# Security: every gRPC link uses mutual TLS. Before the first apply, deploy.sh makes a
# CA and one certificate per role with `kdfs certs` (run from the image) and stores
# them as Secrets in the namespace: kdfs-ca (the CA, kept to issue rotations),
# kdfs-tls-namenode, kdfs-tls-datanode, kdfs-tls-gateway (tls.crt, tls.key, ca.crt)
# and kdfs-gateway-auth (a random bearer token for uploads and deletes). Existing
# Secrets are never overwritten. Each certificate carries its role
# (spiffe://kdfs/role/<role>) and names only its own Service's hosts; servers authorize
# every rpc by role, so Secrets made by a deploy.sh from before roles are refused:
# `./deploy.sh rotate-certs` replaces them under the same CA.
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
# The Secrets the manifests mount (deploy-tests holds k8s/ to these two lines).
TLS_SECRETS=(kdfs-tls-namenode kdfs-tls-datanode kdfs-tls-gateway)
AUTH_SECRET=kdfs-gateway-auth
# The CA's certificate and key, kept so that missing or rotated certificates are issued
# under the CA every pod already trusts.
CA_SECRET=kdfs-ca
CLEANUP=()
trap 'rm -rf "${CLEANUP[@]}"' EXIT

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

secret_exists() { kc -n "$NS" get secret "$1" >/dev/null 2>&1; }

ensure_namespace() {
  kc create namespace "$NS" --dry-run=client -o yaml | kc apply -f - >/dev/null
}

# A private temporary directory, removed when the script exits; sets WORK.
make_work_dir() {
  WORK=$(mktemp -d)
  CLEANUP+=("$WORK")
}

# Copies the CA out of its Secret into $WORK (ca.crt, ca.key).
fetch_ca() {
  kc -n "$NS" get secret "$CA_SECRET" -o jsonpath='{.data.ca\.crt}' | base64 -d >"$WORK/ca.crt"
  (umask 077 && kc -n "$NS" get secret "$CA_SECRET" -o jsonpath='{.data.ca\.key}' |
    base64 -d >"$WORK/ca.key")
  if [ ! -s "$WORK/ca.crt" ] || [ ! -s "$WORK/ca.key" ]; then
    die "Secret $CA_SECRET lacks ca.crt or ca.key"
  fi
}

# Runs `kdfs certs` from image $1 on $WORK: a CA there is reused, the role certificates
# are (re)issued. The directory travels as a tar through stdin and stdout rather than a
# bind mount, so this works with any Docker engine, local or not.
run_certs() {
  say "issuing certificates with kdfs certs (image $1, namespace $NS)"
  tar -C "$WORK" -cf - . |
    docker run -i --rm --network=none "$1" sh -c '
      set -e
      mkdir -p /tmp/certs && cd /tmp/certs && tar -xf -
      kdfs certs --out /tmp/certs --namespace "$1" >&2
      tar -cf - .' sh "$NS" |
    tar -C "$WORK" -xf -
  [ -s "$WORK/namenode.crt" ] || die "kdfs certs made no certificates"
}

# The manifest of the TLS Secret for a role, from the files in $WORK.
tls_secret() {
  local name=$1 role=${1#kdfs-tls-}
  kc -n "$NS" create secret generic "$name" --type=kubernetes.io/tls \
    --from-file=tls.crt="$WORK/$role.crt" --from-file=tls.key="$WORK/$role.key" \
    --from-file=ca.crt="$WORK/ca.crt" "${@:2}"
}

# Creates whichever of the CA, TLS and token Secrets are missing; never overwrites one.
ensure_secrets() {
  ensure_namespace
  local missing=() s
  for s in "${TLS_SECRETS[@]}"; do
    if secret_exists "$s"; then say "keeping Secret $s"; else missing+=("$s"); fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    make_work_dir
    if secret_exists "$CA_SECRET"; then
      say "issuing ${missing[*]} under the CA in Secret $CA_SECRET"
      fetch_ca
    elif [ ${#missing[@]} -lt ${#TLS_SECRETS[@]} ]; then
      die "Secrets ${missing[*]} are missing and $CA_SECRET (the CA that signed the others) is gone;" \
        "delete the remaining kdfs-tls-* Secrets to start over with a new CA"
    fi
    run_certs "$TAGGED"
    if ! secret_exists "$CA_SECRET"; then
      kc -n "$NS" create secret generic "$CA_SECRET" \
        --from-file=ca.crt="$WORK/ca.crt" --from-file=ca.key="$WORK/ca.key" >/dev/null
      say "created Secret $CA_SECRET (the CA; keep it: rotations are issued under it)"
    fi
    for s in "${missing[@]}"; do
      tls_secret "$s" >/dev/null
      say "created Secret $s"
    done
  fi
  if secret_exists "$AUTH_SECRET"; then
    say "keeping Secret $AUTH_SECRET"
  else
    # 32 random bytes as hex, through stdin so the token never shows in a process list.
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' |
      kc -n "$NS" create secret generic "$AUTH_SECRET" \
        --from-file=token=/dev/stdin >/dev/null
    say "created Secret $AUTH_SECRET (a random bearer token for uploads and deletes)"
  fi
}

# New role certificates under the cluster's CA, applied over the kdfs-tls-* Secrets.
rotate_certs() {
  need_tools docker k3d kubectl
  cluster_exists || die "no k3d cluster $CLUSTER: run ./deploy.sh up first"
  secret_exists "$CA_SECRET" || die "no Secret $CA_SECRET in namespace $NS: run ./deploy.sh up first"
  local image
  image=$(kc -n "$NS" get statefulset/namenode \
    -o jsonpath='{.spec.template.spec.containers[0].image}' 2>/dev/null || true)
  docker image inspect "$image" >/dev/null 2>&1 || image=$IMAGE
  docker image inspect "$image" >/dev/null 2>&1 ||
    die "no image $image with kdfs in it: ./deploy.sh redeploy builds one"
  make_work_dir
  fetch_ca
  run_certs "$image"
  local s
  for s in "${TLS_SECRETS[@]}"; do
    # replace, not apply: apply would keep a copy of the key in an annotation.
    tls_secret "$s" --dry-run=client -o yaml | kc replace -f - >/dev/null
    say "replaced the certificate in Secret $s"
  done
  cat <<MSG

New certificates are in place, signed by the same CA. Kubernetes refreshes the mounted
files within about a minute and every kdfs process reloads them within its
--tls-reload-interval (10s): no restart, connections already open are not dropped.
MSG
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

Uploads and deletes need the bearer token in Secret $AUTH_SECRET:
  TOKEN=\$(kubectl -n $NS get secret $AUTH_SECRET -o jsonpath='{.data.token}' | base64 -d)

Then:
  open http://localhost:8080/                      # the browser page
  curl -H "Authorization: Bearer \$TOKEN" -F file=@some-file http://localhost:8080/upload
  curl -OJ 'http://localhost:8080/download?hash=HASH'
  curl http://localhost:8080/info
  KDFS_AUTH_TOKEN=\$TOKEN kdfs upload some-file     # the kdfs CLI

Inside the cluster every gRPC link uses mutual TLS (Secrets ${TLS_SECRETS[*]}).

Status:        ./deploy.sh status
New certs:     ./deploy.sh rotate-certs
New code:      ./deploy.sh redeploy
Take it down:  ./deploy.sh down
MSG
}

up() {
  need_tools docker k3d kubectl
  ensure_cluster
  build_and_import
  ensure_secrets
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
  ensure_secrets
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
  rotate-certs) rotate_certs ;;
  -h | --help | help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
  *) die "unknown command ${1}: use up, redeploy, status, rotate-certs or down" ;;
esac

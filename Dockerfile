# One image holding every kdfs binary: kdfs-namenode, kdfs-datanode, kdfs-gateway, kdfs.
#
#   DOCKER_BUILDKIT=0 docker build --network=none -t kdfs:dev .
#
# (Offline here after `bash scripts/docker-local-images.sh`, which makes the
# two base images locally; with internet access they are the official ones and
# `docker build -t kdfs:dev .` is enough.) Runs as uid/gid 65532; the Kubernetes
# manifests (k8s/) set the same ids.

FROM rust:1-bookworm AS build
WORKDIR /src
# CARGO_NET_OFFLINE is set by the local rust image; the official one fetches crates.

# 1. Dependencies only: the manifests and stub crate roots of every workspace member.
#    This layer is rebuilt only when a Cargo.toml or Cargo.lock changes, so a source
#    edit does not recompile the ~400 dependency crates.
COPY Cargo.toml Cargo.lock ./
COPY core/Cargo.toml core/
COPY proto/Cargo.toml proto/build.rs proto/
COPY proto/proto proto/proto
COPY namenode/Cargo.toml namenode/
COPY datanode/Cargo.toml datanode/
COPY client-gateway/Cargo.toml client-gateway/
COPY cli/Cargo.toml cli/
COPY fault-tests/Cargo.toml fault-tests/
COPY deploy-tests/Cargo.toml deploy-tests/
COPY testkit/Cargo.toml testkit/
COPY bench/Cargo.toml bench/
ARG PACKAGES="-p kdfs-namenode -p kdfs-datanode -p kdfs-client-gateway -p kdfs"
# hadolint ignore=SC2086
RUN for c in core proto namenode datanode client-gateway cli fault-tests deploy-tests testkit bench; do \
      mkdir -p "$c/src" && echo '' > "$c/src/lib.rs" && echo 'fn main() {}' > "$c/src/main.rs"; \
    done \
 && cargo build --release --locked $PACKAGES --bins \
 && rm -rf ./*/src

# 2. The sources. Touch them so cargo sees them newer than the stubs it just built.
#    strip --strip-debug drops the release profile's line tables (~4x smaller binaries)
#    and keeps the symbols, so backtraces still name functions.
COPY . .
# hadolint ignore=SC2086
RUN find core proto namenode datanode client-gateway cli bench testkit -name '*.rs' -exec touch {} + \
 && cargo build --release --locked $PACKAGES --bins \
 && mkdir /out \
 && cp target/release/kdfs-namenode target/release/kdfs-datanode \
       target/release/kdfs-gateway target/release/kdfs /out/ \
 && strip --strip-debug /out/*

FROM debian:bookworm-slim
COPY --from=build /out/ /usr/local/bin/
# /data belongs to the runtime user, so a fresh Docker volume mounted there is writable
# (Kubernetes uses fsGroup instead).
RUN mkdir /data && chown 65532:65532 /data
USER 65532:65532
WORKDIR /data
ENV KDFS_LOG_FORMAT=json
# namenode gRPC/HTTP 8020/9870, datanode gRPC/HTTP 9866/9864, gateway 8080.
EXPOSE 8020 9870 9866 9864 8080
CMD ["kdfs", "--help"]

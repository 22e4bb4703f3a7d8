# One image holding every kdfs binary: kdfs-namenode, kdfs-datanode, kdfs-gateway, kdfs.
#
#   DOCKER_BUILDKIT=0 docker build --network=none -t kdfs:dev .
#
# (Offline here after `bash ../shared/scripts/docker-local-images.sh`, which makes the
# two base images locally; with internet access they are the official ones.)

FROM rust:1-bookworm AS build
WORKDIR /src

# 1. Dependencies only: the manifests and empty crate roots. This layer is rebuilt only
#    when Cargo.toml/Cargo.lock change, so a source edit does not recompile every crate.
COPY Cargo.toml Cargo.lock ./
COPY core/Cargo.toml core/
COPY proto/Cargo.toml proto/build.rs proto/
COPY proto/proto proto/proto
COPY namenode/Cargo.toml namenode/
COPY datanode/Cargo.toml datanode/
COPY client-gateway/Cargo.toml client-gateway/
COPY cli/Cargo.toml cli/
RUN for c in core proto namenode datanode client-gateway cli; do \
      mkdir -p "$c/src" && echo '' > "$c/src/lib.rs" && echo 'fn main() {}' > "$c/src/main.rs"; \
    done \
 && cargo build --release --locked --bins \
 && rm -rf core/src proto/src namenode/src datanode/src client-gateway/src cli/src

# 2. The sources. Touch them so cargo sees them newer than the stub build.
COPY . .
RUN find core proto namenode datanode client-gateway cli -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/kdfs-namenode target/release/kdfs-datanode target/release/kdfs-gateway target/release/kdfs /out/

FROM debian:bookworm-slim
COPY --from=build /out/ /usr/local/bin/
# A fixed non-root uid/gid; Kubernetes manifests refer to it (runAsUser, fsGroup).
USER 65532:65532
WORKDIR /data
ENV KDFS_LOG_FORMAT=json
EXPOSE 8020 9870 9866 9864 8080
CMD ["kdfs", "--help"]

//! kdfs-deploy-tests: no library code; the static checks of `k8s/`, `deploy.sh` and the
//! Dockerfile live in `tests/`, sharing `tests/common/` (every manifest parsed into its
//! k8s-openapi type, and the binaries' clap flags read from their sources):
//!
//! - `workloads.rs`: every document parses and is listed by kustomize; the namenode,
//!   datanode and gateway workloads and their Services hold the deployment's invariants;
//! - `containers.rs`: every container probed, non-root, read-only, unprivileged and
//!   bounded, with its mTLS Secret (and the gateway's token) mounted as a directory that
//!   `deploy.sh` creates;
//! - `binaries.rs`: every flag and `KDFS_*` variable the manifests pass exists in its
//!   binary, and the image runs as the manifests' user and holds every binary they run;
//! - `deploy_dry_run.rs`: `deploy.sh` with each command README.md shows, against the
//!   fake docker, k3d and kubectl of `fakes/` (the real `kubectl kustomize`).
//!
//! The container cluster test is `scripts/container-test.sh`.

//! kdfs-deploy-tests: no library code; the checks of `k8s/` (manifests parsed into
//! their k8s-openapi types, DESIGN.md §9 invariants, flags against the binaries' clap
//! configs) live in `tests/manifests.rs`. The container cluster test is
//! `scripts/container-test.sh`.

//! The kdfs fault suite: real namenode, datanode and gateway processes killed,
//! restarted, corrupted, partitioned and starved while the files stored must survive.
//!
//! The scenarios are the integration tests in `tests/`; the cluster they drive is
//! `kdfs_testkit::ProcessCluster` (shared with `kdfs bench --local`), so this library
//! holds nothing. Environment knobs (read by the test kit):
//! - The binaries are taken from `target/debug/` and built (`cargo build -p
//!   kdfs-namenode -p kdfs-datanode -p kdfs-client-gateway`) once if one is missing.
//!   `KDFS_FAULT_BUILD=1` builds them in any case (so the suite never runs stale
//!   binaries).
//! - `KDFS_FAULT_KEEP=1` keeps every cluster's directory (logs, data) after the test.
//! - Small disks are a tmpfs mounted on the datanode's data dir when the process may
//!   mount (root in a container with the capability), else `--fixed-capacity`.

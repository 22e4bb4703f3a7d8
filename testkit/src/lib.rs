//! The kdfs test kit: the helpers every test suite and `kdfs bench --local` share, so
//! none of them keeps its own copy.
//!
//! - [`wait`]: poll a condition until it holds or a deadline passes, panicking with what
//!   was awaited ([`wait_until`], [`wait_for`], [`wait_until_blocking`]).
//! - [`data`]: deterministic random bytes, their content id, a slow reader.
//! - [`ports`]: free ports for servers started on fixed ports.
//! - [`tmpfiles`]: the unnamed temp files (writes in progress) a process holds open.
//! - The child-process cluster: [`ProcessCluster`] (in `cluster.rs`; its `/info`
//!   queries in `state.rs`, its disk inspection in `disk.rs`, its namenodes' roles,
//!   kills and partitions in `namenodes.rs` over the relays of [`links`]) built from
//!   [`Options`],
//!   each server a [`Proc`] (start, kill, stop, restart, peak RSS, CPU time, log),
//!   the binaries found by [`Binaries`], certificates made by [`pki`].
//! - [`api`]: the gateway's HTTP API as a blocking client; [`workload`]: uploads and
//!   deletes in the background, every outcome kept.
//!
//! This crate must not depend on `kdfs-namenode`, `kdfs-datanode` or
//! `kdfs-client-gateway`: those crates dev-depend on it, and a dependency back would
//! build a second copy of each whose types do not match the test's own. So the
//! in-process gateway cluster (`client-gateway/tests/common/cluster.rs`) stays in that
//! crate's tests and uses the waits, ports and HTTP client here; the child-process
//! cluster links nothing of the servers and drives them from outside.

pub mod api;
pub mod binaries;
pub mod cluster;
pub mod data;
pub mod disk;
pub mod links;
pub mod namenodes;
pub mod options;
pub mod pki;
pub mod ports;
pub mod proc;
pub mod state;
pub mod tmpfiles;
pub mod wait;
pub mod workload;

pub use api::{Api, HttpFailure, Stored, http_client, http_get, wait_http_ok};
pub use binaries::Binaries;
pub use cluster::ProcessCluster;
pub use data::{SlowReader, random_bytes, sha256_hex};
pub use disk::flip_byte;
pub use namenodes::RaftRole;
pub use options::Options;
pub use ports::free_ports;
pub use proc::Proc;
pub use state::datanode_entry;
pub use wait::{wait_for, wait_until, wait_until_blocking};
pub use workload::{Outcome, Workload};

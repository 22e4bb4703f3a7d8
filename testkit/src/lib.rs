//! The kdfs test kit: the helpers every test suite (and `kdfs bench --local`) shares, so
//! none of them keeps its own copy.
//!
//! - [`wait`]: poll a condition until it holds or a deadline passes, panicking with what
//!   was awaited ([`wait_until`], [`wait_for`], [`wait_until_blocking`]).
//! - [`tmpfiles`]: the unnamed temp files (writes in progress) a process holds open.
//!
//! This crate must not depend on `kdfs-namenode`, `kdfs-datanode` or
//! `kdfs-client-gateway`: those crates dev-depend on it, and a dependency back would
//! build a second copy of each with types that do not match the test's own. Fixtures
//! that run a server in process (the gateway's in-process cluster) therefore stay in
//! that crate's `tests/common/` and use the pieces here.

pub mod tmpfiles;
pub mod wait;

pub use wait::{wait_for, wait_until, wait_until_blocking};

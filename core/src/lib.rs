//! The shared core of kdfs: what every process agrees on and nothing more.
//!
//! - [`id`]: validated identifiers ([`BlockId`], [`FileId`], [`DatanodeId`]). A value of
//!   these types can only exist if it was well-formed, so code that holds one never
//!   re-checks it, and a path on disk is only ever derived from one.
//! - [`cas`]: the hash-sharded layout of content-addressed files (`ab/cd/abcd…`).
//! - [`units`]: byte sizes (`64MiB`) and durations (`3s`) as written in flags.
//! - [`telemetry`]: tracing setup, plain for people and JSON for pods.
//! - [`shutdown`]: SIGTERM/SIGINT turned into a `CancellationToken`.
//! - [`malloc`]: the glibc malloc bound every binary starts with, and its tuned runtime.
//!
//! This crate depends on no other kdfs crate; `kdfs-proto` builds on it.

pub mod cas;
pub mod id;
pub mod malloc;
pub mod shutdown;
pub mod telemetry;
pub mod units;

pub use id::{BlockId, DatanodeId, FileId, IdError};
pub use units::{ByteSize, HumanDuration};

/// The version of kdfs every binary reports (`/info`, registration).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

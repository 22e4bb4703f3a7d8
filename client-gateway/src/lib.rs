//! kdfs client library and HTTP gateway.
//!
//! - [`client`]: the **client library**, what moves bytes for anyone outside the
//!   cluster: [`Client`] with its metadata calls, `Client::upload` (pipelined block
//!   writes with on-the-fly hashing, pipeline recovery and a bounded memory footprint,
//!   small files in batches) and `Client::download` (read-ahead, verified reads with
//!   failover between replicas at the same offset).
//! - [`gateway`]: the **gateway** `kdfs-gateway`, the HTTP API and the browser page
//!   in front of the library. [`run`] is what `main.rs` and the tests call.
//! - [`s3`]: the gateway's **S3 port**, the S3 REST API over buckets and keys.
//! - [`error`]: the library's error type, which the gateway maps onto HTTP statuses.
//!
//! Dependencies go one way: `gateway` → `client` → `error`.

pub mod client;
pub mod error;
pub mod gateway;
pub mod s3;

pub use client::{
    BatchStats, ByteRange, Client, ClientOptions, ClusterInfo, Download, FileInfo, FileRecord,
    Listing, Uploaded,
};
pub use error::{Error, Result};
pub use gateway::config::{self, Config};
pub use gateway::http::{self, Listeners, run};

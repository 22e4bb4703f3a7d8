//! kdfs client library and HTTP gateway.
//!
//! The **client library** is what moves bytes for anyone outside the cluster:
//! - [`Client`] ([`client`]): metadata calls to the namenode and the domain types they
//!   return; one channel to the namenode and a [`kdfs_proto::pool::ChannelPool`] of datanode channels.
//! - [`upload`]: `Client::upload(stream, name, type)`: pipelined block writes with
//!   on-the-fly hashing, pipeline recovery and a bounded memory footprint.
//! - [`download`]: `Client::download(id, range)`: read-ahead, verified reads with
//!   failover between replicas at the same offset.
//!
//! The **gateway** (`kdfs-gateway`) puts DESIGN.md §8's HTTP API and the browser page
//! in front of it: [`config`] (flags), [`http`] (router, errors, the guard middleware,
//! shutdown), [`auth`] (bearer tokens, the failed-attempt limit), [`audit`] (one log
//! line per upload, delete and refused authentication), [`routes`] (one module per
//! resource), [`page`] (the HTML page). [`run`] is what `main.rs` and the tests call.

pub mod audit;
pub mod auth;
pub mod batch;
pub mod client;
pub mod config;
pub mod download;
pub mod error;
pub mod http;
pub mod page;
pub mod routes;
pub mod upload;

pub use batch::BatchStats;
pub use client::{Client, ClientOptions, ClusterInfo, FileInfo, FileRecord, Listing};
pub use config::Config;
pub use download::{ByteRange, Download};
pub use error::{Error, Result};
pub use http::run;
pub use upload::Uploaded;

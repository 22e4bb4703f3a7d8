//! The gateway's S3 port (`--s3-listen`, DESIGN.md §8b; README.md, "Use it with S3
//! tools"): the S3 REST API, spoken by the `s3s` crate, over buckets and keys that the
//! namenode keeps and content that is stored like any other kdfs file.
//!
//! - [`config`]: the `--s3-*` flags.
//! - [`serve`]: the port itself: s3s's service behind the gateway's connection loop.
//! - [`auth`]: key pairs (flags and a reloadable credentials file), the checks after
//!   the signature (no anonymous request, the region).
//! - [`host`]: virtual-hosted-style addressing (`--s3-domain`).
//! - [`keep_alive`]: a long CompleteMultipartUpload answered at once, kept alive with
//!   whitespace until its result follows.
//! - [`observe`]: metrics by operation and status, audit lines with the access key id;
//!   [`throttle`]: the failed-authentication limit (`SlowDown` after too many).
//! - [`service`]: the operations, each a call into [`crate::client`], by resource:
//!   `bucket`, `object`, `list`, `multipart`, `uploads` (ListMultipartUploads); [`body`]: request bodies counted and
//!   hashed (MD5, announced checksums) on their way into an upload; [`meta`]: DTO
//!   conversions;
//!   [`error`]: library errors as S3 errors; [`etag`]: ETags that are MD5s only when
//!   they say so; `versions`: the one version (`null`) of every object.

pub mod auth;
pub mod body;
mod bucket;
pub mod config;
pub mod error;
pub mod etag;
pub mod host;
pub mod keep_alive;
mod list;
pub mod meta;
mod multipart;
mod object;
pub mod observe;
pub mod serve;
pub mod service;
pub mod throttle;
mod uploads;
mod versions;

pub use serve::{S3Port, serve};

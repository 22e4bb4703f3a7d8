//! The kdfs wire protocol.
//!
//! - [`pb`]: the code tonic/prost generate from `proto/kdfs.proto` (the documentation of
//!   every rpc and field lives there).
//! - [`wire`]: turning untrusted wire values into checked domain types ([`BlockId`],
//!   [`FileId`], [`DatanodeId`]), with one mapping of a bad value to
//!   `Status::invalid_argument`.
//! - [`transport`]: the message-size and HTTP/2 window settings every client and server
//!   uses, so a 1 MiB chunk stream runs near the loopback ceiling everywhere.
//! - [`block_token`]: block access tokens, the namenode's signed grants that datanodes
//!   verify before they accept a write, read or transfer (keys, signing, checks).
//! - [`objects`]: the bucket/key namespace's names, limits and S3 error codes.
//! - [`leader`], [`namenodes`]: the "not the leader" refusal and its hint, and the
//!   follower datanodes and gateways call the namenode group through.
//! - [`framed`]: `WriteBlock`/`WriteBlocks` calls that send block bytes without
//!   copying them into tonic's encode buffer.
//! - [`pool`]: one lazily dialed, reused channel per peer address (gateway and
//!   datanode forwarding alike).
//! - [`tls`]: mutual TLS for every link (flags, reloadable certificates, the accept
//!   loop with concurrent handshakes, the dialing connector, the identity check).
//! - [`roles`]: the role a certificate carries (`spiffe://kdfs/role/<role>`);
//!   [`authz`]: the tower layer that authorizes every rpc by role from one table per
//!   service; [`plaintext`]: when a server may serve without TLS (`--allow-plaintext`).
//!
//! Only this crate and the code right at an rpc's edge touch prost types; the rest of
//! the workspace works with domain types.

pub mod authz;
pub mod block_token;
pub mod framed;
pub mod leader;
pub mod namenodes;
pub mod objects;
pub mod plaintext;
pub mod pool;
pub mod roles;
pub mod tls;
pub mod transport;
pub mod wire;

/// Generated messages, clients and servers (package `kdfs.v1`).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("kdfs.v1");
}

pub use kdfs_core::{BlockId, DatanodeId, FileId};

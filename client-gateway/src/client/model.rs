//! The client library's domain types: what the namenode's replies become once checked
//! (records, located blocks, listings, the cluster's state) and what an upload returns.
//! Nothing outside [`crate::client`] sees a prost message.

use kdfs_core::{BlockId, FileId};
use kdfs_proto::pb;
use kdfs_proto::wire::{self, Location};
use serde::Serialize;

use super::rpc::bad_reply;
use crate::error::{Error, Result};

/// A block of a file as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockRef {
    pub id: BlockId,
    pub length: u64,
}

/// A file's durable record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    pub id: FileId,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub created_ms: i64,
    pub replication: u32,
    pub blocks: Vec<BlockRef>,
}

impl TryFrom<&pb::FileRecord> for FileRecord {
    type Error = Error;
    fn try_from(f: &pb::FileRecord) -> Result<Self> {
        let map = |s: tonic::Status| Error::Internal(format!("namenode reply: {}", s.message()));
        Ok(Self {
            id: wire::file_id("file.id", &f.id).map_err(map)?,
            name: f.name.clone(),
            size: f.size,
            content_type: f.content_type.clone(),
            created_ms: f.created_ms,
            replication: f.replication,
            blocks: f
                .blocks
                .iter()
                .map(|b| {
                    Ok(BlockRef {
                        id: wire::block_id("file.blocks.id", &b.id).map_err(map)?,
                        length: b.length,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }
}

/// A block with where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedBlock {
    pub id: BlockId,
    pub offset: u64,
    pub length: u64,
    /// Live replicas, best first.
    pub replicas: Vec<Location>,
    /// The namenode's READ token for the block (opaque here; datanodes check it).
    pub token: Option<pb::BlockToken>,
}

impl TryFrom<&pb::LocatedBlock> for LocatedBlock {
    type Error = Error;
    fn try_from(b: &pb::LocatedBlock) -> Result<Self> {
        let map = |s: tonic::Status| Error::Internal(format!("namenode reply: {}", s.message()));
        Ok(Self {
            id: wire::block_id("blocks.id", &b.id).map_err(map)?,
            offset: b.offset,
            length: b.length,
            // A replica with a malformed address is skipped, not fatal: others may serve.
            replicas: b
                .replicas
                .iter()
                .filter_map(|l| Location::try_from(l).ok())
                .collect(),
            token: b.token.clone(),
        })
    }
}

/// A live file with its located blocks.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub record: FileRecord,
    pub blocks: Vec<LocatedBlock>,
}

impl FileInfo {
    /// The located blocks must tile `0..size` exactly, or range mapping would be wrong.
    pub(crate) fn check(&self) -> Result<()> {
        let mut at = 0u64;
        for b in &self.blocks {
            if b.offset != at {
                return Err(bad_reply("located blocks do not tile the file"));
            }
            at = at
                .checked_add(b.length)
                .ok_or_else(|| bad_reply("block lengths overflow"))?;
        }
        if at != self.record.size {
            return Err(bad_reply("block lengths do not add up to the file size"));
        }
        Ok(())
    }
}

/// One entry of a listing.
#[derive(Debug, Clone)]
pub struct FileSummary {
    pub record: FileRecord,
    pub min_live_replicas: u32,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Listing {
    pub files: Vec<FileSummary>,
    /// Cursor of the next page, if any.
    pub next: Option<String>,
}

/// What `/info` shows about the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub version: String,
    pub safe_mode: bool,
    pub reported_fraction: f64,
    pub files: u64,
    pub blocks: u64,
    pub bytes: u64,
    pub under_replicated: u64,
    pub missing: u64,
    pub replication: u32,
    pub min_replicas: u32,
    pub block_size: u64,
    /// Replicas reported where the namenode never placed them (not counted).
    pub unconfirmed_replicas: u64,
    /// Every known datanode by state.
    pub datanode_counts: DatanodeCounts,
    /// At most `INFO_NODE_LIMIT` of them, writable ones first.
    pub datanodes: Vec<DatanodeInfo>,
}

/// How many datanodes are in each state (`registering`: not heartbeated yet).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DatanodeCounts {
    pub live: usize,
    pub registering: usize,
    pub stale: usize,
    pub dead: usize,
    pub decommissioning: usize,
    pub maintenance: usize,
}

/// A datanode's state after an operator's decommission (or its cancellation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decommission {
    pub datanode: String,
    /// `decommissioning`, or `live` (etc.) after a cancellation.
    pub state: &'static str,
    /// Blocks it holds that are not yet at full replication elsewhere.
    pub blocks_left: u64,
    /// Every block it holds is at full replication elsewhere: it may stop.
    pub drained: bool,
}

impl ClusterInfo {
    /// Datanodes that heartbeat and take writes (from the counts, not the list).
    pub fn live_datanodes(&self) -> usize {
        self.datanode_counts.live
    }
}

/// One datanode as `/info` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DatanodeInfo {
    pub id: String,
    pub address: String,
    pub zone: String,
    pub state: &'static str,
    pub capacity: u64,
    pub used: u64,
    pub available: u64,
    pub blocks: u64,
    pub in_flight: u32,
    pub last_heartbeat_secs: f64,
    pub version: String,
}

/// The outcome of a successful upload.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub record: FileRecord,
    /// The content was already stored (the first upload's name is kept).
    pub existed: bool,
    /// Fewest replicas acknowledged for any block of this upload (the replication
    /// factor for an empty file, which has no blocks).
    pub replicas: u32,
}

//! [`Client`]: the kdfs client library's entry point, and the domain types it returns.
//!
//! A `Client` holds one channel to the namenode and a [`ChannelPool`] of datanode channels; it
//! is cheap to clone (everything is behind an `Arc`) and safe to share between every
//! request of the gateway. Uploads live in [`crate::upload`], downloads in
//! [`crate::download`]; this file has the thin metadata calls and the conversion of
//! prost messages into checked domain types (nothing above this module sees prost).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kdfs_core::{BlockId, ByteSize, FileId};
use kdfs_proto::pb::namenode_client::NamenodeClient;
use kdfs_proto::pool::ChannelPool;
use kdfs_proto::wire::{self, Location};
use kdfs_proto::{pb, transport};
use serde::Serialize;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::error::{Error, Result};

/// Default global byte budget for data held by uploads awaiting pipeline acks.
pub const DEFAULT_UPLOAD_BUDGET: ByteSize = ByteSize(512 * ByteSize::MIB);
/// Blocks of one upload that may be streaming or awaiting their ack at once.
pub const DEFAULT_BLOCKS_IN_FLIGHT: usize = 2;
/// Blocks of one download read ahead of the one being sent (plus the current one).
pub const DEFAULT_READ_AHEAD: usize = 1;
/// A transfer that moves no message for this long is considered stalled.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a batch of small files waits for the files the last batch's answers bring
/// back ([`crate::batch`]).
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_millis(3);
/// How many pipelines one block may be written to before the upload gives up.
pub const DEFAULT_PIPELINE_ATTEMPTS: usize = 4;
/// Unary namenode calls (metadata only) time out after this long.
pub const NAMENODE_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Budget permits are counted in KiB so that a `u32` permit count covers any budget.
pub(crate) const BUDGET_UNIT: u64 = 1024;

/// Tunables of a [`Client`]; the defaults suit a gateway.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bytes that all uploads of this client together may hold unacknowledged.
    pub upload_budget: ByteSize,
    /// Blocks in flight per upload (at least 1; 2 keeps one slow node from idling the rest).
    pub blocks_in_flight: usize,
    /// Blocks read ahead per download.
    pub read_ahead: usize,
    /// Per-message stall timeout for block writes and reads.
    pub stall_timeout: Duration,
    /// Pipelines tried per block before an upload fails.
    pub pipeline_attempts: usize,
    /// Replication asked for at BeginUpload; 0 means the namenode's default.
    pub replication: u32,
    /// Where blocks awaiting their ack are kept beyond their first
    /// [`crate::upload::MEMORY_PREFIX`] bytes (an unlinked temp file per block), so an
    /// upload's memory does not grow with the block size. `None`, or a directory where
    /// no file can be created, keeps whole blocks in memory.
    pub spool_dir: Option<PathBuf>,
    /// Bytes of each block kept in memory before the rest goes to `spool_dir`.
    pub memory_prefix: u64,
    /// mTLS towards the namenode and the datanodes (`None`: plaintext).
    pub tls: Option<Arc<kdfs_proto::tls::Tls>>,
    /// Store small uploads of known length in batches ([`crate::batch`]).
    pub batch_small_files: bool,
    /// How long a batch waits, after the last one ended, for as many files as that one
    /// carried; zero starts a batch as soon as the last one's blocks are written.
    pub batch_linger: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            upload_budget: DEFAULT_UPLOAD_BUDGET,
            blocks_in_flight: DEFAULT_BLOCKS_IN_FLIGHT,
            read_ahead: DEFAULT_READ_AHEAD,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            pipeline_attempts: DEFAULT_PIPELINE_ATTEMPTS,
            replication: 0,
            spool_dir: Some(std::env::temp_dir()),
            memory_prefix: crate::upload::MEMORY_PREFIX,
            tls: None,
            batch_small_files: true,
            batch_linger: DEFAULT_BATCH_LINGER,
        }
    }
}

/// The kdfs client: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) namenode_url: String,
    pub(crate) namenode: NamenodeClient<Channel>,
    pub(crate) pool: ChannelPool,
    pub(crate) options: ClientOptions,
    /// Bytes (in [`BUDGET_UNIT`]s) uploads may hold; see `upload.rs` for the bound.
    pub(crate) budget: Arc<Semaphore>,
    pub(crate) budget_units: u32,
    /// Spool files of finished blocks, for later blocks to overwrite.
    pub(crate) spool_files: Arc<crate::upload::SpoolFiles>,
    /// Gathers small uploads into batches (started by the first).
    pub(crate) batcher: crate::batch::Batcher,
}

impl Inner {
    /// Budget permits that hold `bytes` (at most the whole budget).
    pub(crate) fn budget_units_for(&self, bytes: u64) -> u32 {
        bytes
            .div_ceil(BUDGET_UNIT)
            .min(u64::from(self.budget_units)) as u32
    }
}

impl Client {
    /// A client for the namenode at `namenode` (`http://host:port` or `host:port`).
    /// Connects lazily: a namenode that is down now is an error only when used.
    pub fn new(namenode: &str, options: ClientOptions) -> Result<Self> {
        let channel = kdfs_proto::tls::channel(namenode, options.tls.as_ref())
            .map_err(|e| Error::InvalidInput(format!("namenode address {namenode:?}: {e}")))?;
        let namenode_client = NamenodeClient::new(channel)
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(transport::MAX_MESSAGE_SIZE);
        let units = options
            .upload_budget
            .bytes()
            .div_ceil(BUDGET_UNIT)
            .clamp(1, u64::from(u32::MAX >> 1)) as u32;
        Ok(Self {
            inner: Arc::new(Inner {
                namenode_url: namenode.to_owned(),
                namenode: namenode_client,
                pool: ChannelPool::new(options.tls.clone()),
                options,
                budget: Arc::new(Semaphore::new(units as usize)),
                budget_units: units,
                spool_files: Arc::default(),
                batcher: Default::default(),
            }),
        })
    }

    /// The namenode address this client talks to.
    pub fn namenode_url(&self) -> &str {
        &self.inner.namenode_url
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Bytes of the upload budget currently free.
    pub fn upload_budget_available(&self) -> u64 {
        self.inner.budget.available_permits() as u64 * BUDGET_UNIT
    }

    pub(crate) fn nn(&self) -> NamenodeClient<Channel> {
        self.inner.namenode.clone()
    }

    /// A file's record, blocks and live replica locations.
    pub async fn get(&self, id: FileId) -> Result<FileInfo> {
        let resp = unary(
            "GetFile",
            self.nn().get_file(pb::GetFileRequest {
                file_id: wire::raw(id.as_bytes()),
            }),
        )
        .await
        .map_err(not_found_as(id))?;
        if resp.state == pb::FileState::Deleted as i32 {
            return Err(Error::Deleted(id));
        }
        let record = resp
            .file
            .as_ref()
            .ok_or_else(|| bad_reply("GetFile without a file record"))
            .and_then(FileRecord::try_from)?;
        let blocks = resp
            .blocks
            .iter()
            .map(LocatedBlock::try_from)
            .collect::<Result<Vec<_>>>()?;
        let info = FileInfo { record, blocks };
        info.check()?;
        Ok(info)
    }

    /// One page of files, newest first.
    pub async fn list(&self, limit: u32, after: &str, name_contains: &str) -> Result<Listing> {
        let resp = unary(
            "ListFiles",
            self.nn().list_files(pb::ListFilesRequest {
                limit,
                after: after.to_owned(),
                name_contains: name_contains.to_owned(),
            }),
        )
        .await?;
        let files = resp
            .files
            .iter()
            .map(|s| {
                let record = s
                    .file
                    .as_ref()
                    .ok_or_else(|| bad_reply("ListFiles entry without a record"))
                    .and_then(FileRecord::try_from)?;
                Ok(FileSummary {
                    record,
                    min_live_replicas: s.min_live_replicas,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Listing {
            files,
            next: (!resp.next.is_empty()).then_some(resp.next),
        })
    }

    /// Tombstones a file; `Ok(false)` if it was already deleted.
    pub async fn delete(&self, id: FileId) -> Result<bool> {
        let resp = unary(
            "DeleteFile",
            self.nn().delete_file(pb::DeleteFileRequest {
                file_id: wire::raw(id.as_bytes()),
            }),
        )
        .await
        .map_err(not_found_as(id))?;
        Ok(resp.deleted)
    }

    /// The cluster's state, as `/info` shows it.
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        let r = unary(
            "ClusterInfo",
            self.nn().cluster_info(pb::ClusterInfoRequest {}),
        )
        .await?;
        Ok(ClusterInfo {
            cluster_id: r.cluster_id,
            version: r.version,
            safe_mode: r.safe_mode,
            reported_fraction: r.reported_fraction,
            files: r.files,
            blocks: r.blocks,
            bytes: r.bytes,
            under_replicated: r.under_replicated,
            missing: r.missing,
            replication: r.replication,
            min_replicas: r.min_replicas,
            block_size: r.block_size,
            datanodes: r
                .datanodes
                .into_iter()
                .map(|d| DatanodeInfo {
                    state: datanode_state(d.state),
                    id: d.id,
                    address: d.address,
                    zone: d.zone,
                    capacity: d.capacity,
                    used: d.used,
                    available: d.available,
                    blocks: d.blocks,
                    in_flight: d.in_flight,
                    last_heartbeat_secs: d.since_heartbeat_ms as f64 / 1000.0,
                    version: d.version,
                })
                .collect(),
        })
    }

    /// Tells the namenode a replica failed verification (best effort, logged on failure).
    pub(crate) fn report_bad_replica(&self, block: BlockId, node: &Location, reason: String) {
        let mut nn = self.nn();
        let req = pb::ReportBadReplicaRequest {
            block_id: wire::raw(block.as_bytes()),
            datanode_id: node.id.to_string(),
            reason,
        };
        let node = node.id;
        metrics::counter!("kdfs_gateway_bad_replicas_reported_total").increment(1);
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(NAMENODE_CALL_TIMEOUT, nn.report_bad_replica(req))
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map_err(|s| s.to_string()))
            {
                tracing::warn!(block = %block, node = %node, error = %e, "reporting a bad replica failed");
            }
        });
    }
}

/// Runs a unary namenode call with [`NAMENODE_CALL_TIMEOUT`] and maps its status.
pub(crate) async fn unary<T>(
    context: &'static str,
    call: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(NAMENODE_CALL_TIMEOUT, call).await {
        Err(_) => Err(Error::NamenodeUnreachable(format!(
            "{context} timed out after {NAMENODE_CALL_TIMEOUT:?}"
        ))),
        Ok(Err(status)) => Err(Error::namenode(context, status)),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

pub(crate) fn bad_reply(what: &str) -> Error {
    Error::Internal(format!("malformed namenode reply: {what}"))
}

fn datanode_state(s: i32) -> &'static str {
    match pb::DatanodeState::try_from(s) {
        Ok(pb::DatanodeState::Live) => "live",
        Ok(pb::DatanodeState::Stale) => "stale",
        Ok(pb::DatanodeState::Dead) => "dead",
        Ok(pb::DatanodeState::Decommissioning) => "decommissioning",
        _ => "unknown",
    }
}

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
    fn check(&self) -> Result<()> {
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
    pub datanodes: Vec<DatanodeInfo>,
}

impl ClusterInfo {
    pub fn live_datanodes(&self) -> usize {
        self.datanodes.iter().filter(|d| d.state == "live").count()
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

/// Turns the namenode's NOT_FOUND for `id` into [`Error::NotFound`]; other errors pass.
fn not_found_as(id: FileId) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::Rpc { status, .. } if status.code() == tonic::Code::NotFound => Error::NotFound(id),
        e => e,
    }
}

//! The kdfs client library: everything that moves bytes for someone outside the cluster.
//!
//! A [`Client`] holds the namenodes (a channel to each, calls following the leader:
//! [`Namenodes`]) and a [`ChannelPool`] of datanode channels; it is cheap to clone (everything is behind an `Arc`) and safe to share
//! between every request of the gateway. Its rooms, from the top:
//!
//! - [`upload`]: `Client::upload`: a byte stream in, a committed file out; it cuts the
//!   stream (`splitter`), hands blocks to block tasks (`driver`), each of which
//!   writes its block (`block`) down a pipeline (`attempt`), keeps it for a re-send
//!   (`spool`) and follows the `recovery` policy when a pipeline fails; `lease`
//!   renews and abandons the upload's lease.
//! - [`batch`]: small files of many uploads written and committed together.
//! - [`download`]: `Client::download`: verified reads with read-ahead and failover.
//! - `metadata`: the thin metadata calls; [`model`]: the checked types they return.
//! - [`objects`]: the bucket/key namespace the S3 port uses (docs/objects.md).
//! - [`roles`]: each namenode's role in the HA group, for `/info`.
//! - `rpc`, `source`: the helpers the others share (a unary call, reply checks, the
//!   caller's byte source).
//!
//! The only modules that see prost messages are these; the gateway works with
//! domain types.

pub(crate) mod attempt;
pub mod batch;
pub(crate) mod block;
pub(crate) mod budget;
pub(crate) mod conflict;
pub mod download;
pub(crate) mod driver;
pub(crate) mod lease;
mod metadata;
pub mod model;
pub mod objects;
pub(crate) mod proven;
pub(crate) mod recovery;
pub mod roles;
pub(crate) mod rpc;
pub(crate) mod source;
pub(crate) mod splitter;
pub(crate) mod spool;
pub mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kdfs_core::ByteSize;
use kdfs_proto::namenodes::Namenodes;
use kdfs_proto::pool::ChannelPool;

use crate::error::{Error, Result};

pub use batch::BatchStats;
pub use download::{ByteRange, Download};
pub use model::{
    BlockRef, ClusterInfo, DatanodeCounts, DatanodeInfo, Decommission, FileInfo, FileRecord,
    FileSummary, Listing, LocatedBlock, Uploaded,
};
pub use roles::NamenodeInfo;

/// Default global byte budget for data held by uploads awaiting pipeline acks.
pub const DEFAULT_UPLOAD_BUDGET: ByteSize = ByteSize(512 * ByteSize::MIB);
/// Blocks of one upload that may be streaming or awaiting their ack at once.
pub const DEFAULT_BLOCKS_IN_FLIGHT: usize = 2;
/// Blocks of one download read ahead of the one being sent (plus the current one).
pub const DEFAULT_READ_AHEAD: usize = 1;
/// A transfer that moves no message for this long is considered stalled.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a batch of small files waits for the files the last batch's answers bring
/// back ([`batch`]).
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_millis(3);
/// How many pipelines one block may be written to before the upload gives up.
pub const DEFAULT_PIPELINE_ATTEMPTS: usize = 4;
/// Unary namenode calls (metadata only) time out after this long (each attempt, when
/// a call follows the namenode leader).
pub const NAMENODE_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Chunks queued between the receiving task and a block task or the file hasher, and
/// between a block task and its pipeline stream or spool writer.
pub(crate) const QUEUE_CHUNKS: usize = 4;

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
    /// [`upload::MEMORY_PREFIX`] bytes (an unlinked temp file per block), so an
    /// upload's memory does not grow with the block size. `None`, or a directory where
    /// no file can be created, keeps whole blocks in memory.
    pub spool_dir: Option<PathBuf>,
    /// Bytes of each block kept in memory before the rest goes to `spool_dir`.
    pub memory_prefix: u64,
    /// mTLS towards the namenode and the datanodes (`None`: plaintext).
    pub tls: Option<Arc<kdfs_proto::tls::Tls>>,
    /// Store small uploads of known length in batches ([`batch`]).
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
            memory_prefix: spool::MEMORY_PREFIX,
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
    /// Every configured namenode and the one believed to lead; calls to the namenode
    /// service and its bucket/key namespace go through it.
    pub(crate) namenodes: Namenodes,
    pub(crate) pool: ChannelPool,
    pub(crate) options: ClientOptions,
    /// Bytes uploads may hold, counted as they arrive; see [`upload`] for the bound.
    pub(crate) budget: Arc<budget::ByteBudget>,
    /// Spool files of finished blocks, for later blocks to overwrite.
    pub(crate) spool_files: Arc<spool::SpoolFiles>,
    /// Gathers small uploads into batches (started by the first).
    pub(crate) batcher: batch::Batcher,
    /// Multi-block files whose block list this process saw hash to their id.
    pub(crate) proven: proven::ProvenFiles,
}

impl Client {
    /// A client for the namenode at `namenode` (`http://host:port` or `host:port`), or
    /// for the HA group at several, comma-separated. Connects lazily: a namenode that is
    /// down now is an error only when used.
    pub fn new(namenode: &str, options: ClientOptions) -> Result<Self> {
        let namenodes = Namenodes::new(namenode, options.tls.clone())
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        let budget = budget::ByteBudget::new(options.upload_budget.bytes());
        Ok(Self {
            inner: Arc::new(Inner {
                namenode_url: namenode.to_owned(),
                namenodes,
                pool: ChannelPool::new(options.tls.clone()),
                options,
                budget,
                spool_files: Arc::default(),
                batcher: Default::default(),
                proven: proven::ProvenFiles::new(proven::CAPACITY),
            }),
        })
    }

    /// The namenode address(es) this client was given (`--namenode`).
    pub fn namenode_url(&self) -> &str {
        &self.inner.namenode_url
    }

    /// The namenodes and the one believed to lead.
    pub fn namenodes(&self) -> &Namenodes {
        &self.inner.namenodes
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Bytes of the upload budget currently free.
    pub fn upload_budget_available(&self) -> u64 {
        self.inner.budget.available()
    }
}

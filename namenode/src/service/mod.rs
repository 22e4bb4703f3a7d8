//! The `Namenode` gRPC service: converts wire messages to checked domain values
//! (every id through `kdfs_proto::wire`), calls the [`NameSystem`], and converts the
//! answer back. No policy lives here.
//!
//! This file holds the service itself (its state, the datanode identity check) and
//! the `Namenode` trait impl, whose methods only name their tracing span and hand the
//! request to a body in `membership.rs` (datanodes and the cluster) or `files.rs`
//! (clients' uploads and reads); `convert.rs` holds the wire conversions both share.

mod convert;
mod files;
mod membership;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kdfs_core::DatanodeId;
use kdfs_core::telemetry::AUDIT_TARGET;
use kdfs_proto::pb::{self, namenode_server};
use kdfs_proto::tls::{self, PeerInfo};
use kdfs_proto::transport;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use crate::block_keys::BlockKeys;
use crate::namesystem::NameSystem;

pub(crate) use convert::{record, wire_location};

/// Most blocks one full report may carry in total: a bound on the memory a report
/// stream can make the namenode hold before applying it (~40 bytes per entry, so
/// 400 MB; a datanode of 64 MiB blocks would need 640 TB to reach it).
pub const MAX_REPORT_BLOCKS: usize = 10_000_000;
/// Most blocks one file may have (1 PiB at 64 MiB blocks).
pub const MAX_FILE_BLOCKS: usize = 16 << 20;
/// Full reports buffered at once: each may hold up to [`MAX_REPORT_BLOCKS`] entries,
/// so this bounds what report streams can make the namenode hold (registered senders
/// only; others are refused at their first chunk).
pub const REPORTS_AT_ONCE: usize = 2;
/// A full report's next chunk must arrive within this long.
pub const REPORT_CHUNK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Most targets one reported failed copy may name (a copy has fewer than the largest
/// replication factor).
pub const MAX_COPY_TARGETS: usize = 32;

/// The tonic service.
#[derive(Clone)]
pub struct NamenodeService {
    ns: Arc<NameSystem>,
    /// With mTLS: the host each datanode advertised when it registered, which its
    /// client certificate was checked to name. Heartbeats and reports for that node id
    /// must come with a certificate naming the same host, so one datanode's
    /// certificate cannot speak for another node.
    identities: Arc<Mutex<HashMap<DatanodeId, String>>>,
    /// Signs the block access tokens in replies (pipelines, located blocks, transfers).
    keys: Arc<BlockKeys>,
    /// Permits to buffer a full report ([`REPORTS_AT_ONCE`]).
    reports: Arc<tokio::sync::Semaphore>,
    /// The Raft term this namenode leads in, sent as `leader_term` with every reply
    /// that carries commands (0 without HA).
    term: u64,
}

impl NamenodeService {
    pub fn new(ns: Arc<NameSystem>) -> Self {
        let keys = Arc::new(BlockKeys::new(
            ns.settings.block_key_rotation,
            ns.settings.block_token_lifetime,
        ));
        Self::leading(ns, keys, 0)
    }

    /// The service of an HA leadership instance: its keys are the replicated ones, and
    /// its replies carry its `term`.
    pub fn leading(ns: Arc<NameSystem>, keys: Arc<BlockKeys>, term: u64) -> Self {
        Self {
            ns,
            identities: Arc::default(),
            keys,
            reports: Arc::new(tokio::sync::Semaphore::new(REPORTS_AT_ONCE)),
            term,
        }
    }

    /// The most a WRITE token lets a stream reserve: what the pipeline was chosen for
    /// (0, or more than a block: a whole block), as `NameSystem::allocate` does.
    fn write_room(&self, max_length: u64) -> u64 {
        let block = self.ns.settings.block_size;
        match max_length {
            0 => block,
            n => n.min(block),
        }
    }

    /// Refuses a datanode rpc whose client certificate does not name the host the
    /// node advertises (`claimed` at registration, the recorded one afterwards).
    /// Plaintext (no certificate) and nodes registered before a namenode restart pass:
    /// the latter are told to re-register, where the check runs.
    fn check_identity(
        &self,
        peer: Option<&PeerInfo>,
        id: &DatanodeId,
        claimed: Option<&str>,
        action: &'static str,
    ) -> Result<(), Status> {
        let Some(leaf) = peer.and_then(PeerInfo::leaf) else {
            return Ok(());
        };
        let host = match claimed {
            Some(address) => tls::host_of(address).to_owned(),
            None => match self
                .identities
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
            {
                Some(host) => host.clone(),
                None => return Ok(()),
            },
        };
        tls::check_names(leaf, &host).map_err(|reason| {
            let client = PeerInfo::client_address(peer);
            tracing::info!(
                target: AUDIT_TARGET,
                action,
                who = "tls-client",
                client = %client,
                datanode = %id,
                claimed_host = %host,
                result = "refused",
                reason = %reason,
                "datanode identity refused: {reason}"
            );
            Status::permission_denied(format!(
                "datanode {id} advertises {host}, but its client certificate is not \
                 valid for that name ({reason})"
            ))
        })
    }

    /// The keys its replies' block access tokens are signed with, for the other
    /// services of this namenode.
    pub fn keys(&self) -> Arc<BlockKeys> {
        self.keys.clone()
    }

    /// The service wrapped for a tonic router, with kdfs's message limit.
    pub fn into_server(self) -> namenode_server::NamenodeServer<Self> {
        namenode_server::NamenodeServer::new(self)
            .max_decoding_message_size(transport::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(transport::MAX_MESSAGE_SIZE)
    }
}

#[tonic::async_trait]
impl namenode_server::Namenode for NamenodeService {
    #[instrument(skip_all, fields(datanode = %request.get_ref().datanode_id))]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        self.serve_register(request).await
    }

    #[instrument(level = "debug", skip_all, fields(datanode = %request.get_ref().datanode_id))]
    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.serve_heartbeat(request).await
    }

    #[instrument(skip_all, fields(datanode = tracing::field::Empty))]
    async fn full_block_report(
        &self,
        request: Request<Streaming<pb::FullBlockReportChunk>>,
    ) -> Result<Response<pb::FullBlockReportResponse>, Status> {
        self.serve_full_block_report(request).await
    }

    #[instrument(level = "debug", skip_all, fields(datanode = %request.get_ref().datanode_id))]
    async fn incremental_block_report(
        &self,
        request: Request<pb::IncrementalBlockReportRequest>,
    ) -> Result<Response<pb::IncrementalBlockReportResponse>, Status> {
        self.serve_incremental_block_report(request).await
    }

    #[instrument(skip_all, fields(upload = tracing::field::Empty))]
    async fn begin_upload(
        &self,
        request: Request<pb::BeginUploadRequest>,
    ) -> Result<Response<pb::BeginUploadResponse>, Status> {
        self.serve_begin_upload(request).await
    }

    #[instrument(level = "debug", skip_all, fields(upload = %request.get_ref().upload_id))]
    async fn renew_lease(
        &self,
        request: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        self.serve_renew_lease(request).await
    }

    #[instrument(skip_all, fields(upload = %request.get_ref().upload_id))]
    async fn allocate_block(
        &self,
        request: Request<pb::AllocateBlockRequest>,
    ) -> Result<Response<pb::AllocateBlockResponse>, Status> {
        self.serve_allocate_block(request).await
    }

    #[instrument(skip_all, fields(upload = %request.get_ref().upload_id, file = %hex::encode(&request.get_ref().file_id)))]
    async fn commit_file(
        &self,
        request: Request<pb::CommitFileRequest>,
    ) -> Result<Response<pb::CommitFileResponse>, Status> {
        self.serve_commit_file(request).await
    }

    #[instrument(skip_all, fields(upload = %request.get_ref().upload_id, files = request.get_ref().files.len()))]
    async fn commit_files(
        &self,
        request: Request<pb::CommitFilesRequest>,
    ) -> Result<Response<pb::CommitFilesResponse>, Status> {
        self.serve_commit_files(request).await
    }

    #[instrument(skip_all, fields(upload = %request.get_ref().upload_id))]
    async fn abandon_upload(
        &self,
        request: Request<pb::AbandonUploadRequest>,
    ) -> Result<Response<pb::AbandonUploadResponse>, Status> {
        self.serve_abandon_upload(request).await
    }

    #[instrument(skip_all, fields(file = %hex::encode(&request.get_ref().file_id)))]
    async fn get_file(
        &self,
        request: Request<pb::GetFileRequest>,
    ) -> Result<Response<pb::GetFileResponse>, Status> {
        self.serve_get_file(request).await
    }

    #[instrument(skip_all)]
    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        self.serve_list_files(request).await
    }

    #[instrument(skip_all, fields(file = %hex::encode(&request.get_ref().file_id)))]
    async fn delete_file(
        &self,
        request: Request<pb::DeleteFileRequest>,
    ) -> Result<Response<pb::DeleteFileResponse>, Status> {
        self.serve_delete_file(request).await
    }

    #[instrument(skip_all, fields(block = %hex::encode(&request.get_ref().block_id), datanode = %request.get_ref().datanode_id))]
    async fn report_bad_replica(
        &self,
        request: Request<pb::ReportBadReplicaRequest>,
    ) -> Result<Response<pb::ReportBadReplicaResponse>, Status> {
        self.serve_report_bad_replica(request).await
    }

    #[instrument(level = "debug", skip_all)]
    async fn cluster_info(
        &self,
        request: Request<pb::ClusterInfoRequest>,
    ) -> Result<Response<pb::ClusterInfoResponse>, Status> {
        self.serve_cluster_info(request).await
    }

    async fn leaving(
        &self,
        request: Request<pb::LeavingRequest>,
    ) -> Result<Response<pb::LeavingResponse>, Status> {
        self.serve_leaving(request).await
    }

    async fn decommission_datanode(
        &self,
        request: Request<pb::DecommissionDatanodeRequest>,
    ) -> Result<Response<pb::DecommissionDatanodeResponse>, Status> {
        self.serve_decommission_datanode(request).await
    }

    async fn namenode_role(
        &self,
        request: Request<pb::NamenodeRoleRequest>,
    ) -> Result<Response<pb::NamenodeRoleResponse>, Status> {
        self.serve_namenode_role(request).await
    }
}

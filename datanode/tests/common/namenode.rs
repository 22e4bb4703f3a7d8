//! A recording namenode: a real tonic server implementing the datanode-facing rpcs,
//! noting what datanodes sent and handing out the commands a test queued, and the
//! test block key (so tests sign the block access tokens datanodes check).

use std::sync::{Arc, Mutex};

use kdfs_core::{BlockId, DatanodeId};
use kdfs_proto::block_token::{BlockKey, Grant, SECRET_LEN, now_ms};
use kdfs_proto::pb::namenode_server::{Namenode, NamenodeServer};
use kdfs_proto::pb::*;
use kdfs_proto::transport;
use kdfs_proto::wire::Location;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

/// What the fake namenode saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub registers: Vec<RegisterRequest>,
    pub heartbeats: usize,
    /// (capacity, used, available) of the latest heartbeat.
    pub last_space: Option<(u64, u64, u64)>,
    pub full_reports: Vec<Vec<BlockEntry>>,
    pub incrementals: Vec<IncrementalBlockReportRequest>,
    /// Commands handed out with the next heartbeat reply.
    pub pending: Vec<Command>,
    /// Answer the next heartbeat with `reregister`.
    pub reregister_next: bool,
    /// Failed replications reported with heartbeats.
    pub failed_copies: Vec<FailedCopy>,
    /// Refuse heartbeats that report failed copies with this code (and count them).
    pub refuse_copy_reports: Option<tonic::Code>,
    pub refused_copy_reports: usize,
    /// Answers to `Leaving`, in order; once empty: RESTART.
    pub leaving: std::collections::VecDeque<LeavingResponse>,
    /// `Leaving` questions asked.
    pub leaving_asked: usize,
    /// The `leader_term` its replies carry (0: no HA).
    pub term: u64,
    /// When set, it is not the leader: every rpc but `NamenodeRole` is refused with
    /// `kdfs_proto::leader::not_leader` naming this leader (`host:port`) or none.
    pub not_leader: Option<Option<String>>,
    /// Rpcs refused as "not the leader".
    pub refused_not_leader: usize,
}

/// A recording namenode: a real tonic server implementing just the datanode-facing
/// rpcs.
#[derive(Debug, Clone)]
pub struct FakeNamenode {
    pub cluster_id: String,
    /// Refuse datanodes of other clusters itself (as a real namenode does); when false
    /// the datanode's own check has to catch the mismatch.
    pub strict: bool,
    pub seen: Arc<Mutex<Seen>>,
}

impl FakeNamenode {
    pub fn new(cluster_id: &str) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            strict: true,
            seen: Arc::default(),
        }
    }

    /// A recording namenode serving on 127.0.0.1:0, its URL, and its server task.
    pub async fn start(cluster_id: &str) -> (Self, String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let nn = Self::new(cluster_id);
        let task = nn.serve(listener);
        (nn, url, task)
    }

    /// Serves on `listener` until the returned handle is aborted.
    pub fn serve(&self, listener: TcpListener) -> JoinHandle<()> {
        let svc = NamenodeServer::new(self.clone());
        tokio::spawn(async move {
            let _ = transport::server()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        })
    }

    pub fn seen<R>(&self, f: impl FnOnce(&mut Seen) -> R) -> R {
        f(&mut self.seen.lock().unwrap())
    }

    /// Leads from now on, in `term`.
    pub fn lead(&self, term: u64) {
        self.seen(|s| {
            s.term = term;
            s.not_leader = None;
        });
    }

    /// Refuses as a namenode that is not the leader, naming `leader` (`host:port`).
    pub fn follow(&self, leader: Option<&str>) {
        self.seen(|s| s.not_leader = Some(leader.map(str::to_owned)));
    }

    /// The "not the leader" refusal, when this namenode is not the leader.
    fn refuse_unless_leader(&self) -> Result<u64, Status> {
        self.seen(|s| match &s.not_leader {
            Some(leader) => {
                s.refused_not_leader += 1;
                Err(kdfs_proto::leader::not_leader(leader.as_deref()))
            }
            None => Ok(s.term),
        })
    }

    pub fn added(&self) -> Vec<BlockId> {
        self.seen(|s| {
            s.incrementals
                .iter()
                .flat_map(|r| r.added.iter().map(|e| BlockId::from_slice(&e.id).unwrap()))
                .collect()
        })
    }

    pub fn removed(&self) -> Vec<BlockId> {
        self.seen(|s| {
            s.incrementals
                .iter()
                .flat_map(|r| r.removed.iter().map(|e| BlockId::from_slice(e).unwrap()))
                .collect()
        })
    }
}

#[tonic::async_trait]
impl Namenode for FakeNamenode {
    async fn register(
        &self,
        r: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let leader_term = self.refuse_unless_leader()?;
        let r = r.into_inner();
        if self.strict && !r.cluster_id.is_empty() && r.cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "datanode of cluster {} does not belong to cluster {}",
                r.cluster_id, self.cluster_id
            )));
        }
        self.seen(|s| s.registers.push(r));
        Ok(Response::new(RegisterResponse {
            cluster_id: self.cluster_id.clone(),
            heartbeat_interval_ms: 100,
            block_report_interval_ms: 3_600_000,
            block_keys: vec![test_key().to_wire()],
            leader_term,
        }))
    }

    async fn heartbeat(
        &self,
        r: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let leader_term = self.refuse_unless_leader()?;
        let r = r.into_inner();
        if !r.failed_copies.is_empty()
            && let Some(code) = self.seen(|s| {
                s.refused_copy_reports += s.refuse_copy_reports.is_some() as usize;
                s.refuse_copy_reports
            })
        {
            return Err(Status::new(code, "failed-copy report refused (test)"));
        }
        let (commands, reregister) = self.seen(|s| {
            s.heartbeats += 1;
            s.last_space = Some((r.capacity, r.used, r.available));
            s.failed_copies.extend(r.failed_copies);
            (
                std::mem::take(&mut s.pending),
                std::mem::take(&mut s.reregister_next),
            )
        });
        Ok(Response::new(HeartbeatResponse {
            commands,
            reregister,
            block_keys: Vec::new(),
            leader_term,
        }))
    }

    async fn full_block_report(
        &self,
        r: Request<Streaming<FullBlockReportChunk>>,
    ) -> Result<Response<FullBlockReportResponse>, Status> {
        let leader_term = self.refuse_unless_leader()?;
        let mut stream = r.into_inner();
        let mut all = Vec::new();
        while let Some(chunk) = stream.message().await? {
            all.extend(chunk.blocks);
        }
        let accepted = all.len() as u64;
        self.seen(|s| s.full_reports.push(all));
        Ok(Response::new(FullBlockReportResponse {
            accepted,
            commands: vec![],
            leader_term,
        }))
    }

    async fn incremental_block_report(
        &self,
        r: Request<IncrementalBlockReportRequest>,
    ) -> Result<Response<IncrementalBlockReportResponse>, Status> {
        let leader_term = self.refuse_unless_leader()?;
        self.seen(|s| s.incrementals.push(r.into_inner()));
        Ok(Response::new(IncrementalBlockReportResponse {
            commands: vec![],
            leader_term,
        }))
    }

    async fn namenode_role(
        &self,
        _: Request<NamenodeRoleRequest>,
    ) -> Result<Response<NamenodeRoleResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn begin_upload(
        &self,
        _: Request<BeginUploadRequest>,
    ) -> Result<Response<BeginUploadResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn renew_lease(
        &self,
        _: Request<RenewLeaseRequest>,
    ) -> Result<Response<RenewLeaseResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn allocate_block(
        &self,
        _: Request<AllocateBlockRequest>,
    ) -> Result<Response<AllocateBlockResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn commit_file(
        &self,
        _: Request<CommitFileRequest>,
    ) -> Result<Response<CommitFileResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn commit_files(
        &self,
        _: Request<CommitFilesRequest>,
    ) -> Result<Response<CommitFilesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn abandon_upload(
        &self,
        _: Request<AbandonUploadRequest>,
    ) -> Result<Response<AbandonUploadResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_file(
        &self,
        _: Request<GetFileRequest>,
    ) -> Result<Response<GetFileResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_files(
        &self,
        _: Request<ListFilesRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn delete_file(
        &self,
        _: Request<DeleteFileRequest>,
    ) -> Result<Response<DeleteFileResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn report_bad_replica(
        &self,
        _: Request<ReportBadReplicaRequest>,
    ) -> Result<Response<ReportBadReplicaResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn cluster_info(
        &self,
        _: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn leaving(
        &self,
        _: Request<LeavingRequest>,
    ) -> Result<Response<LeavingResponse>, Status> {
        self.refuse_unless_leader()?;
        let next = self.seen(|s| {
            s.leaving_asked += 1;
            s.leaving.pop_front()
        });
        Ok(Response::new(next.unwrap_or(LeavingResponse {
            verdict: LeavingVerdict::Restart as i32,
            ..Default::default()
        })))
    }

    async fn decommission_datanode(
        &self,
        _: Request<DecommissionDatanodeRequest>,
    ) -> Result<Response<DecommissionDatanodeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A namenode address nobody listens on.
pub const NO_NAMENODE: &str = "http://127.0.0.1:1";

/// The block key every [`FakeNamenode`] hands out (valid for a day).
pub fn test_key() -> BlockKey {
    BlockKey::new(0x7e57, [0x7e; SECRET_LEN], now_ms() + 86_400_000)
}

/// A token expiry an hour from now.
fn later() -> u64 {
    now_ms() + 3_600_000
}

fn checked(chain: &[DatanodeLocation]) -> Vec<Location> {
    chain
        .iter()
        .map(|l| Location::try_from(l).expect("a test location"))
        .collect()
}

/// A write token for `chain` (of `TEST_UPLOAD`), signed with the test key.
pub fn write_token(chain: &[DatanodeLocation], max_length: u64) -> BlockToken {
    Grant::write(super::TEST_UPLOAD, &checked(chain), max_length, later()).sign(&test_key())
}

/// A read token for `block`, signed with the test key.
pub fn read_token(block: &BlockId) -> BlockToken {
    Grant::read(*block, later()).sign(&test_key())
}

/// A transfer token for `block` from `source` to `targets`, signed with the test key.
pub fn transfer_token(
    block: &BlockId,
    length: u64,
    source: DatanodeId,
    targets: &[DatanodeLocation],
) -> BlockToken {
    Grant::transfer(*block, length, source, &checked(targets), later()).sign(&test_key())
}

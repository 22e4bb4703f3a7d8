//! The bodies of the `Namenode` rpcs clients call: uploads (begin, lease, allocate,
//! commit, abandon), reads and listing, deletes and bad-replica reports, the side of
//! the service that hands out block access tokens for pipelines and reads.

use kdfs_proto::pb;
use kdfs_proto::{transport, wire};
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument, Span};

use super::NamenodeService;
use super::convert::{block_list, committed_blocks, raw_block, record, upload_id, wire_location};
use crate::error::Error;
use crate::namesystem::reads::FileView;
use crate::namesystem::uploads::FileToCommit;

impl NamenodeService {
    pub(super) async fn serve_begin_upload(
        &self,
        request: Request<pb::BeginUploadRequest>,
    ) -> Result<Response<pb::BeginUploadResponse>, Status> {
        let r = request.into_inner();
        let lease = self
            .ns
            .begin_upload(&r.name, &r.content_type, r.replication)
            .await?;
        Span::current().record("upload", &lease.id);
        let s = &self.ns.settings;
        // Best effort: an error here is AllocateBlock's to report.
        let pipeline = self
            .ns
            .allocate(&lease.id, &[], 0, r.max_size)
            .unwrap_or_default();
        // This pipeline may also carry a batch of small files (a WriteBlocks stream of
        // up to `max_size`, at most MAX_BATCH_BYTES), even where blocks are smaller.
        let room = self
            .write_room(r.max_size)
            .max(r.max_size.min(transport::MAX_BATCH_BYTES));
        let token = (!pipeline.is_empty()).then(|| self.keys.write(&lease.id, &pipeline, room));
        let pipeline = pipeline.iter().map(wire_location).collect();
        Ok(Response::new(pb::BeginUploadResponse {
            upload_id: lease.id,
            block_size: s.block_size,
            replication: lease.replication,
            min_replicas: s.min_replicas.min(lease.replication),
            lease_ttl_ms: s.lease_ttl.as_millis() as u64,
            pipeline,
            token,
        }))
    }

    pub(super) async fn serve_renew_lease(
        &self,
        request: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        let r = request.into_inner();
        self.ns.renew(upload_id(&r.upload_id)?)?;
        Ok(Response::new(pb::RenewLeaseResponse {
            lease_ttl_ms: self.ns.settings.lease_ttl.as_millis() as u64,
        }))
    }

    pub(super) async fn serve_allocate_block(
        &self,
        request: Request<pb::AllocateBlockRequest>,
    ) -> Result<Response<pb::AllocateBlockResponse>, Status> {
        let r = request.into_inner();
        let up = upload_id(&r.upload_id)?;
        let exclude = r
            .exclude
            .iter()
            .map(|d| wire::datanode_id("exclude", d))
            .collect::<Result<Vec<_>, _>>()?;
        let pipeline = self.ns.allocate(up, &exclude, r.replicas, r.max_length)?;
        let token = self
            .keys
            .write(up, &pipeline, self.write_room(r.max_length));
        Ok(Response::new(pb::AllocateBlockResponse {
            pipeline: pipeline.iter().map(wire_location).collect(),
            token: Some(token),
        }))
    }

    pub(super) async fn serve_commit_file(
        &self,
        request: Request<pb::CommitFileRequest>,
    ) -> Result<Response<pb::CommitFileResponse>, Status> {
        let r = request.into_inner();
        let up = upload_id(&r.upload_id)?.to_owned();
        let file_id = wire::file_id("file_id", &r.file_id)?;
        let blocks = committed_blocks(&r.blocks)?;
        let replaces = r.replaces.as_ref().map(block_list).transpose()?;
        // The commit must finish once started even if the caller disconnects: run it
        // in its own task so dropping this future cannot cut it in half.
        let ns = self.ns.clone();
        let committed = tokio::spawn(
            async move {
                ns.commit_replacing(&up, file_id, r.size, blocks, replaces, r.object_content)
                    .await
            }
            .in_current_span(),
        )
        .await
        .map_err(|e| Status::internal(format!("commit task failed: {e}")))?;
        Ok(Response::new(match committed {
            Ok((rec, existed)) => pb::CommitFileResponse {
                file: Some(record(&rec)),
                existed,
                conflict: None,
            },
            Err(Error::Conflict(existing)) => pb::CommitFileResponse {
                file: None,
                existed: false,
                conflict: Some(record(&existing)),
            },
            Err(e) => return Err(e.into()),
        }))
    }

    pub(super) async fn serve_commit_files(
        &self,
        request: Request<pb::CommitFilesRequest>,
    ) -> Result<Response<pb::CommitFilesResponse>, Status> {
        let r = request.into_inner();
        let up = upload_id(&r.upload_id)?.to_owned();
        // A bad id in any file refuses the whole batch: only a broken client sends one.
        let files = r
            .files
            .into_iter()
            .map(|f| {
                Ok(FileToCommit {
                    id: wire::file_id("files.file_id", &f.file_id)?,
                    blocks: committed_blocks(&f.blocks)?,
                    name: f.name,
                    content_type: f.content_type,
                    size: f.size,
                    object_content: f.object_content,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        // As a single commit: run in its own task so a disconnect cannot cut it short.
        let ns = self.ns.clone();
        let results =
            tokio::spawn(async move { ns.commit_files(&up, files).await }.in_current_span())
                .await
                .map_err(|e| Status::internal(format!("commit task failed: {e}")))??;
        let results = results
            .into_iter()
            .map(|r| match r {
                Ok((rec, existed)) => pb::FileCommitResult {
                    file: Some(record(&rec)),
                    existed,
                    code: Code::Ok as i32,
                    message: String::new(),
                    conflict: None,
                },
                Err(e) => {
                    let conflict = match &e {
                        Error::Conflict(existing) => Some(record(existing)),
                        _ => None,
                    };
                    let status = Status::from(e);
                    pb::FileCommitResult {
                        file: None,
                        existed: false,
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                        conflict,
                    }
                }
            })
            .collect();
        Ok(Response::new(pb::CommitFilesResponse { results }))
    }

    pub(super) async fn serve_abandon_upload(
        &self,
        request: Request<pb::AbandonUploadRequest>,
    ) -> Result<Response<pb::AbandonUploadResponse>, Status> {
        let r = request.into_inner();
        self.ns.abandon(upload_id(&r.upload_id)?).await?;
        Ok(Response::new(pb::AbandonUploadResponse {}))
    }

    pub(super) async fn serve_get_file(
        &self,
        request: Request<pb::GetFileRequest>,
    ) -> Result<Response<pb::GetFileResponse>, Status> {
        let id = wire::file_id("file_id", &request.get_ref().file_id)?;
        Ok(Response::new(match self.ns.get_file(&id).await? {
            FileView::Live {
                record: rec,
                blocks,
            } => pb::GetFileResponse {
                state: pb::FileState::Live as i32,
                file: Some(record(&rec)),
                blocks: blocks
                    .iter()
                    .map(|b| pb::LocatedBlock {
                        id: raw_block(&b.id),
                        length: b.length,
                        offset: b.offset,
                        replicas: b.replicas.iter().map(wire_location).collect(),
                        token: Some(self.keys.read(b.id)),
                    })
                    .collect(),
                deleted_ms: 0,
            },
            FileView::Deleted {
                record: rec,
                deleted_ms,
            } => pb::GetFileResponse {
                state: pb::FileState::Deleted as i32,
                file: Some(record(&rec)),
                blocks: Vec::new(),
                deleted_ms: deleted_ms as i64,
            },
        }))
    }

    pub(super) async fn serve_list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        let r = request.into_inner();
        let (files, next) = self
            .ns
            .list_with_replicas(r.limit, &r.after, &r.name_contains)
            .await?;
        let files = files
            .iter()
            .map(|(f, min_live_replicas)| pb::FileSummary {
                file: Some(record(f)),
                min_live_replicas: *min_live_replicas,
            })
            .collect();
        Ok(Response::new(pb::ListFilesResponse { files, next }))
    }

    pub(super) async fn serve_delete_file(
        &self,
        request: Request<pb::DeleteFileRequest>,
    ) -> Result<Response<pb::DeleteFileResponse>, Status> {
        let id = wire::file_id("file_id", &request.get_ref().file_id)?;
        let ns = self.ns.clone();
        // Like a commit, a delete runs to completion once started.
        let deleted = tokio::spawn(async move { ns.delete(id).await }.in_current_span())
            .await
            .map_err(|e| Status::internal(format!("delete task failed: {e}")))??;
        Ok(Response::new(pb::DeleteFileResponse { deleted }))
    }

    pub(super) async fn serve_report_bad_replica(
        &self,
        request: Request<pb::ReportBadReplicaRequest>,
    ) -> Result<Response<pb::ReportBadReplicaResponse>, Status> {
        let r = request.into_inner();
        let block = wire::block_id("block_id", &r.block_id)?;
        let node = wire::datanode_id("datanode_id", &r.datanode_id)?;
        let reason: String = r.reason.chars().take(512).collect();
        self.ns.bad_replica(&block, &node, &reason);
        Ok(Response::new(pb::ReportBadReplicaResponse {}))
    }
}

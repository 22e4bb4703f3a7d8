//! The `Namenode` gRPC service: converts wire messages to checked domain values
//! (every id through `kdfs_proto::wire`), calls the [`NameSystem`], and converts the
//! answer back. No policy lives here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kdfs_core::telemetry::AUDIT_TARGET;
use kdfs_core::{BlockId, DatanodeId};
use kdfs_proto::pb::{self, namenode_server};
use kdfs_proto::tls::{self, PeerInfo};
use kdfs_proto::{transport, wire};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{Instrument, Span, instrument};

use crate::block_keys::BlockKeys;
use crate::cluster::{Load, NodeState, Registration};
use crate::error::Error;
use crate::gc::Deletes;
use crate::meta::FileRecord;
use crate::namesystem::leaving::Verdict;
use crate::namesystem::membership::Outgoing;
use crate::namesystem::reads::FileView;
use crate::namesystem::reports::FailedCopy;
use crate::namesystem::uploads::{CommittedBlock, FileToCommit};
use crate::namesystem::{Location, NameSystem};

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
}

impl NamenodeService {
    pub fn new(ns: Arc<NameSystem>) -> Self {
        let keys = Arc::new(BlockKeys::new(
            ns.settings.block_key_rotation,
            ns.settings.block_token_lifetime,
        ));
        Self {
            ns,
            identities: Arc::default(),
            keys,
            reports: Arc::new(tokio::sync::Semaphore::new(REPORTS_AT_ONCE)),
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

fn upload_id(raw: &str) -> Result<&str, Status> {
    if raw.len() == 36 && uuid::Uuid::parse_str(raw).is_ok() {
        Ok(raw)
    } else {
        Err(Status::invalid_argument(
            "upload_id: not an upload id this namenode issued",
        ))
    }
}

/// A datanode's location as the wire carries it.
pub(crate) fn wire_location(l: &Location) -> pb::DatanodeLocation {
    pb::DatanodeLocation {
        id: l.id.to_string(),
        address: l.address.clone(),
    }
}

fn raw_block(b: &BlockId) -> bytes::Bytes {
    wire::raw(b.as_bytes())
}

pub(crate) fn record(r: &FileRecord) -> pb::FileRecord {
    pb::FileRecord {
        id: wire::raw(r.id.as_bytes()),
        name: r.name.clone(),
        size: r.size,
        content_type: r.content_type.clone(),
        created_ms: r.created_ms,
        replication: r.replication,
        blocks: r
            .blocks
            .iter()
            .map(|(b, len)| pb::BlockEntry {
                id: raw_block(b),
                length: *len,
                ..pb::BlockEntry::default()
            })
            .collect(),
    }
}

/// Commands for datanode `node`; each replication carries its TRANSFER token.
fn commands(out: Vec<Outgoing>, keys: &BlockKeys, node: DatanodeId) -> Vec<pb::Command> {
    out.into_iter()
        .map(|c| pb::Command {
            kind: Some(match c {
                Outgoing::Delete(d) => pb::command::Kind::Delete(delete_blocks(&d)),
                Outgoing::Verify(ids) => pb::command::Kind::Verify(pb::VerifyBlocks {
                    block_ids: ids.iter().map(raw_block).collect(),
                }),
                Outgoing::Replicate {
                    block,
                    length,
                    targets,
                } => pb::command::Kind::Replicate(pb::ReplicateBlock {
                    block_id: raw_block(&block),
                    length,
                    targets: targets.iter().map(wire_location).collect(),
                    token: Some(keys.transfer(block, length, node, &targets)),
                }),
            }),
        })
        .collect()
}

fn delete_blocks(d: &Deletes) -> pb::DeleteBlocks {
    pb::DeleteBlocks {
        block_ids: d.blocks.iter().map(raw_block).collect(),
        below_generation: d.below,
    }
}

/// A report's reply: its delete command, if it has blocks.
fn deletes(d: Option<Deletes>) -> Vec<pb::Command> {
    match d {
        Some(d) if !d.blocks.is_empty() => vec![pb::Command {
            kind: Some(pb::command::Kind::Delete(delete_blocks(&d))),
        }],
        _ => Vec::new(),
    }
}

/// A heartbeat's failed replications, every id checked (a bad one refuses the beat).
fn failed_copies(raw: &[pb::FailedCopy]) -> Result<Vec<FailedCopy>, Status> {
    if raw.len() > transport::MAX_FAILED_COPIES {
        return Err(Status::invalid_argument(format!(
            "failed_copies: at most {} per heartbeat",
            transport::MAX_FAILED_COPIES
        )));
    }
    raw.iter()
        .map(|f| {
            if f.targets.len() > MAX_COPY_TARGETS {
                return Err(Status::invalid_argument(format!(
                    "failed_copies.targets: at most {MAX_COPY_TARGETS}"
                )));
            }
            Ok(FailedCopy {
                block: wire::block_id("failed_copies.block_id", &f.block_id)?,
                targets: f
                    .targets
                    .iter()
                    .map(|t| wire::datanode_id("failed_copies.targets", t))
                    .collect::<Result<_, _>>()?,
                whole: f.whole,
            })
        })
        .collect()
}

/// Reported replicas: block id, length, write generation.
fn block_entries(field: &str, raw: &[pb::BlockEntry]) -> Result<Vec<(BlockId, u64, u64)>, Status> {
    raw.iter()
        .map(|e| Ok((wire::block_id(field, &e.id)?, e.length, e.generation)))
        .collect()
}

/// A commit's blocks, every id checked.
fn committed_blocks(raw: &[pb::CommittedBlock]) -> Result<Vec<CommittedBlock>, Status> {
    if raw.len() > MAX_FILE_BLOCKS {
        return Err(Status::invalid_argument("too many blocks"));
    }
    raw.iter()
        .map(|b| {
            Ok(CommittedBlock {
                id: wire::block_id("blocks.id", &b.id)?,
                length: b.length,
                replicas: b
                    .replicas
                    .iter()
                    .map(|d| wire::datanode_id("blocks.replicas", d))
                    .collect::<Result<_, Status>>()?,
            })
        })
        .collect()
}

/// The block list a commit replaces (`CommitFileRequest.replaces`).
fn block_list(raw: &pb::BlockList) -> Result<Vec<(BlockId, u64)>, Status> {
    if raw.blocks.len() > MAX_FILE_BLOCKS {
        return Err(Status::invalid_argument("replaces: too many blocks"));
    }
    raw.blocks
        .iter()
        .map(|b| Ok((wire::block_id("replaces.blocks.id", &b.id)?, b.length)))
        .collect()
}

/// A short free-text field: at most `max` bytes, no control characters.
fn bounded(s: &str, field: &str, max: usize) -> Result<String, Status> {
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{field}: at most {max} bytes without control characters"
        )));
    }
    Ok(s.to_owned())
}

#[tonic::async_trait]
impl namenode_server::Namenode for NamenodeService {
    #[instrument(skip_all, fields(datanode = %request.get_ref().datanode_id))]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let peer = PeerInfo::of(&request).cloned();
        let r = request.into_inner();
        let id = wire::datanode_id("datanode_id", &r.datanode_id)?;
        let address = wire::address("address", &r.address)?;
        self.check_identity(peer.as_ref(), &id, Some(&address), "register")?;
        let reg = Registration {
            id: Some(id),
            cluster_id: bounded(&r.cluster_id, "cluster_id", 64)?,
            address: address.clone(),
            zone: bounded(&r.zone, "zone", 253)?,
            version: bounded(&r.version, "version", 64)?,
            pod_name: bounded(&r.pod_name, "pod_name", 253)?,
            node_name: bounded(&r.node_name, "node_name", 253)?,
            load: Load {
                capacity: r.capacity,
                used: r.used,
                available: r.available,
                in_flight: 0,
                blocks: 0,
                write_generation: r.write_generation,
            },
        };
        let cluster_id = self.ns.register(id, &reg)?;
        if peer.as_ref().and_then(PeerInfo::leaf).is_some() {
            let mut identities = self.identities.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded like the namenode's node table: forgotten nodes' names go.
            if identities.len() >= crate::cluster::MAX_DATANODES {
                identities.retain(|id, _| self.ns.knows(id));
            }
            identities.insert(id, tls::host_of(&address).to_owned());
        }
        Ok(Response::new(pb::RegisterResponse {
            cluster_id,
            heartbeat_interval_ms: self.ns.settings.heartbeat_interval.as_millis() as u64,
            block_report_interval_ms: self.ns.settings.block_report_interval.as_millis() as u64,
            block_keys: self.keys.all(),
        }))
    }

    #[instrument(level = "debug", skip_all, fields(datanode = %request.get_ref().datanode_id))]
    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let peer = PeerInfo::of(&request).cloned();
        let r = request.into_inner();
        let id = wire::datanode_id("datanode_id", &r.datanode_id)?;
        self.check_identity(peer.as_ref(), &id, None, "heartbeat")?;
        let failed = failed_copies(&r.failed_copies)?;
        let load = Load {
            capacity: r.capacity,
            used: r.used,
            available: r.available,
            in_flight: r.in_flight,
            blocks: r.blocks,
            write_generation: r.write_generation,
        };
        self.ns.copies_failed(&id, &failed);
        Ok(Response::new(match self.ns.heartbeat(&id, load) {
            Some(out) => pb::HeartbeatResponse {
                commands: commands(out, &self.keys, id),
                reregister: false,
                block_keys: self.keys.unless_current(r.newest_block_key),
            },
            None => pb::HeartbeatResponse {
                commands: Vec::new(),
                reregister: true,
                block_keys: Vec::new(),
            },
        }))
    }

    #[instrument(skip_all, fields(datanode = tracing::field::Empty))]
    async fn full_block_report(
        &self,
        request: Request<Streaming<pb::FullBlockReportChunk>>,
    ) -> Result<Response<pb::FullBlockReportResponse>, Status> {
        let peer = PeerInfo::of(&request).cloned();
        let mut stream = request.into_inner();
        let mut sender: Option<DatanodeId> = None;
        let mut blocks = Vec::new();
        let mut _permit = None;
        // Nothing is applied until the stream ended cleanly: a broken report changes
        // nothing.
        loop {
            let next = tokio::time::timeout(REPORT_CHUNK_TIMEOUT, stream.next())
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "no block report chunk for {REPORT_CHUNK_TIMEOUT:?}"
                    ))
                })?;
            let Some(chunk) = next else {
                break;
            };
            let chunk = chunk?;
            let id = wire::datanode_id("datanode_id", &chunk.datanode_id)?;
            match sender {
                None => {
                    Span::current().record("datanode", tracing::field::display(&id));
                    self.check_identity(peer.as_ref(), &id, None, "block-report")?;
                    // Refused before a single entry is buffered.
                    self.ns.check_reporter(&id)?;
                    _permit =
                        Some(
                            self.reports.clone().acquire_owned().await.map_err(|_| {
                                Status::unavailable("the namenode is shutting down")
                            })?,
                        );
                    sender = Some(id);
                }
                Some(s) if s != id => {
                    return Err(Status::invalid_argument(
                        "datanode_id differs between chunks of one report",
                    ));
                }
                Some(_) => {}
            }
            if chunk.blocks.len() > transport::MAX_REPORT_CHUNK
                || blocks.len() + chunk.blocks.len() > MAX_REPORT_BLOCKS
            {
                return Err(Status::invalid_argument("block report too large"));
            }
            blocks.reserve(chunk.blocks.len());
            for e in &chunk.blocks {
                blocks.push((wire::block_id("blocks.id", &e.id)?, e.length));
            }
        }
        let Some(id) = sender else {
            return Err(Status::invalid_argument(
                "empty block report stream: send at least one chunk",
            ));
        };
        let ns = self.ns.clone();
        // Applying a million entries takes a fraction of a second of CPU: keep it off
        // the async workers.
        let span = Span::current();
        let (accepted, dels) =
            tokio::task::spawn_blocking(move || span.in_scope(|| ns.full_report(&id, blocks)))
                .await
                .map_err(|e| Status::internal(format!("report task failed: {e}")))??;
        Ok(Response::new(pb::FullBlockReportResponse {
            accepted,
            commands: deletes(dels),
        }))
    }

    #[instrument(level = "debug", skip_all, fields(datanode = %request.get_ref().datanode_id))]
    async fn incremental_block_report(
        &self,
        request: Request<pb::IncrementalBlockReportRequest>,
    ) -> Result<Response<pb::IncrementalBlockReportResponse>, Status> {
        let peer = PeerInfo::of(&request).cloned();
        let r = request.into_inner();
        let id = wire::datanode_id("datanode_id", &r.datanode_id)?;
        self.check_identity(peer.as_ref(), &id, None, "block-report")?;
        let added = block_entries("added.id", &r.added)?;
        let removed = wire::block_ids("removed", &r.removed)?;
        let corrupt = wire::block_ids("corrupt", &r.corrupt)?;
        let dels = self
            .ns
            .incremental_report(&id, &added, &removed, &corrupt)?;
        Ok(Response::new(pb::IncrementalBlockReportResponse {
            commands: deletes(dels),
        }))
    }

    #[instrument(skip_all, fields(upload = tracing::field::Empty))]
    async fn begin_upload(
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

    #[instrument(level = "debug", skip_all, fields(upload = %request.get_ref().upload_id))]
    async fn renew_lease(
        &self,
        request: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        let r = request.into_inner();
        self.ns.renew(upload_id(&r.upload_id)?)?;
        Ok(Response::new(pb::RenewLeaseResponse {
            lease_ttl_ms: self.ns.settings.lease_ttl.as_millis() as u64,
        }))
    }

    #[instrument(skip_all, fields(upload = %request.get_ref().upload_id))]
    async fn allocate_block(
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

    #[instrument(skip_all, fields(upload = %request.get_ref().upload_id, file = %hex::encode(&request.get_ref().file_id)))]
    async fn commit_file(
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

    #[instrument(skip_all, fields(upload = %request.get_ref().upload_id, files = request.get_ref().files.len()))]
    async fn commit_files(
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

    #[instrument(skip_all, fields(upload = %request.get_ref().upload_id))]
    async fn abandon_upload(
        &self,
        request: Request<pb::AbandonUploadRequest>,
    ) -> Result<Response<pb::AbandonUploadResponse>, Status> {
        let r = request.into_inner();
        self.ns.abandon(upload_id(&r.upload_id)?).await?;
        Ok(Response::new(pb::AbandonUploadResponse {}))
    }

    #[instrument(skip_all, fields(file = %hex::encode(&request.get_ref().file_id)))]
    async fn get_file(
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

    #[instrument(skip_all)]
    async fn list_files(
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

    #[instrument(skip_all, fields(file = %hex::encode(&request.get_ref().file_id)))]
    async fn delete_file(
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

    #[instrument(skip_all, fields(block = %hex::encode(&request.get_ref().block_id), datanode = %request.get_ref().datanode_id))]
    async fn report_bad_replica(
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

    #[instrument(level = "debug", skip_all)]
    async fn cluster_info(
        &self,
        request: Request<pb::ClusterInfoRequest>,
    ) -> Result<Response<pb::ClusterInfoResponse>, Status> {
        let ns = self.ns.clone();
        let limit = request.get_ref().node_limit as usize;
        let st = tokio::task::spawn_blocking(move || ns.status_limited(limit))
            .await
            .map_err(|e| Status::internal(format!("status task failed: {e}")))?;
        let s = &self.ns.settings;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::ClusterInfoResponse {
            cluster_id: st.cluster_id,
            version: kdfs_core::VERSION.to_owned(),
            safe_mode: st.safe_mode,
            reported_fraction: st.reported_fraction,
            files: st.files,
            blocks: st.stats.blocks,
            bytes: st.bytes,
            under_replicated: st.stats.under_replicated,
            missing: st.stats.missing,
            replication: s.replication,
            min_replicas: s.min_replicas,
            block_size: s.block_size,
            live_datanodes: count(st.counts.live),
            registering_datanodes: count(st.counts.pending),
            stale_datanodes: count(st.counts.stale),
            dead_datanodes: count(st.counts.dead),
            decommissioning_datanodes: count(st.counts.decommissioning),
            maintenance_datanodes: count(st.counts.maintenance),
            unconfirmed_replicas: st.stats.unconfirmed,
            datanodes: st
                .nodes
                .iter()
                .map(|n| pb::DatanodeStatus {
                    id: n.node.id.to_string(),
                    address: n.node.address.clone(),
                    zone: n.node.zone.clone(),
                    state: wire_state(n.node.state) as i32,
                    capacity: n.node.load.capacity,
                    used: n.node.load.used,
                    available: n.node.load.available,
                    blocks: n.blocks,
                    in_flight: n.node.load.in_flight,
                    since_heartbeat_ms: n.since_heartbeat.as_millis() as u64,
                    version: n.node.version.clone(),
                })
                .collect(),
        }))
    }

    async fn leaving(
        &self,
        request: Request<pb::LeavingRequest>,
    ) -> Result<Response<pb::LeavingResponse>, Status> {
        let peer = PeerInfo::of(&request).cloned();
        let id = wire::datanode_id("datanode_id", &request.get_ref().datanode_id)?;
        self.check_identity(peer.as_ref(), &id, None, "leaving")?;
        let ns = self.ns.clone();
        let verdict = tokio::task::spawn_blocking(move || ns.leaving(&id))
            .await
            .map_err(|e| Status::internal(format!("leaving task failed: {e}")))??;
        Ok(Response::new(match verdict {
            Verdict::Restart => pb::LeavingResponse {
                verdict: pb::LeavingVerdict::Restart as i32,
                ..Default::default()
            },
            Verdict::Drain { blocks_left } => pb::LeavingResponse {
                verdict: pb::LeavingVerdict::Drain as i32,
                drained: blocks_left == 0,
                blocks_left,
            },
            Verdict::Wait => pb::LeavingResponse {
                verdict: pb::LeavingVerdict::Wait as i32,
                ..Default::default()
            },
        }))
    }

    async fn decommission_datanode(
        &self,
        request: Request<pb::DecommissionDatanodeRequest>,
    ) -> Result<Response<pb::DecommissionDatanodeResponse>, Status> {
        let r = request.into_inner();
        let id = wire::datanode_id("datanode_id", &r.datanode_id)?;
        let ns = self.ns.clone();
        let (state, blocks_left) =
            tokio::task::spawn_blocking(move || ns.operator_decommission(&id, r.cancel))
                .await
                .map_err(|e| Status::internal(format!("decommission task failed: {e}")))??;
        tracing::info!(
            target: AUDIT_TARGET,
            node = %id,
            cancel = r.cancel,
            state = state.as_str(),
            blocks_left,
            "datanode decommission requested"
        );
        Ok(Response::new(pb::DecommissionDatanodeResponse {
            state: wire_state(state) as i32,
            blocks_left,
        }))
    }
}

/// A node's state on the wire.
fn wire_state(state: NodeState) -> pb::DatanodeState {
    match state {
        NodeState::Live => pb::DatanodeState::Live,
        NodeState::Stale => pb::DatanodeState::Stale,
        NodeState::Dead => pb::DatanodeState::Dead,
        NodeState::Decommissioning => pb::DatanodeState::Decommissioning,
        NodeState::Maintenance => pb::DatanodeState::Maintenance,
    }
}
